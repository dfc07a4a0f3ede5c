"""`vh-orch exec ...`: submit, inspect, follow and stop executions."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vh_orch.cli.common import open_store, print_fields, print_json, print_table, settings
from vh_orch.cli.logprint import AttemptMarks, LogPrinter, print_stored
from vh_orch.cli.options import AdhocOption, CommitOption, ProjectOption
from vh_orch.errors import NoDaemon, UserInputError
from vh_orch.services.views import execution_info, execution_summary, output_dict
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

app = typer.Typer(help="Executions: runs of a step.", no_args_is_help=True)
FOLLOW_POLL_S = 0.2


@app.command("run")
def run(
    step: Annotated[str, typer.Argument(help="Step name from valohai.yaml")],
    project: ProjectOption,
    commit: CommitOption = None,
    adhoc: AdhocOption = None,
    env: Annotated[str | None, typer.Option("--env", help="Environment (default: local)")] = None,
    param: Annotated[list[str] | None, typer.Option("-p", "--param", help="NAME=VALUE, repeatable")] = None,
    input_: Annotated[list[str] | None, typer.Option("-i", "--input", help="NAME=URL or path, repeatable")] = None,
    image: Annotated[str | None, typer.Option("--image", help="Docker image (default: the step's)")] = None,
    env_var: Annotated[list[str] | None, typer.Option("-e", "--env-var", help="NAME=VALUE, repeatable")] = None,
    pull: Annotated[str | None, typer.Option("--pull", help="Image pull policy: if-missing, always, never")] = None,
    title: Annotated[str | None, typer.Option("--title")] = None,
    priority: Annotated[int, typer.Option("--priority", help="Higher runs first")] = 0,
    gpus: Annotated[int | None, typer.Option("--gpus", help="GPUs it gets to itself (default: the step's "
                                             "resources.devices, else the environment's gpus_per_execution)")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream logs until it ends")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the new execution as JSON")] = False,
) -> None:
    """Submit an execution of STEP; it is queued for its environment."""
    from vh_orch.cli.common import note
    from vh_orch.config.steps import parse_assignments
    from vh_orch.orchestrator.submit import SubmitRequest, submit
    from vh_orch.orchestrator.wakeup import notify_daemon
    from vh_orch.values import ExecutionStatus

    s = settings()
    store = open_store(s)
    execution = submit(
        store,
        s,
        SubmitRequest(
            project=project,
            step=step,
            commit=commit,
            adhoc=Path(adhoc) if adhoc is not None else None,
            environment=env,
            parameters=parse_assignments(param or [], "parameter"),
            inputs=parse_assignments(input_ or [], "input"),
            environment_variables=parse_assignments(env_var or [], "environment variable"),
            image=image,
            pull_policy=pull,
            title=title,
            priority=priority,
            gpus=gpus,
        ),
    )
    notify_daemon(s)
    if json_out:
        print_json(execution_info(store, execution))
    else:
        note(f"execution {execution.id} (#{execution.counter} in {project}) queued")
    if follow:
        final = follow_logs(store, s, execution.id, after_seq=0)  # type: ignore[arg-type]
        raise typer.Exit(0 if final == ExecutionStatus.COMPLETE else 1)


@app.command("list")
def list_(
    project: Annotated[str | None, typer.Option("--project")] = None,
    status: Annotated[str | None, typer.Option("--status", help="created, queued, started, ...")] = None,
    sort: Annotated[
        str | None, typer.Option("--sort", help="KEY or -KEY: a column or a metadata key (latest value)")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List executions, newest first unless --sort says otherwise."""
    from vh_orch.orchestrator.store.queries import ExecutionFilter
    from vh_orch.services.executions import list_executions, ordering
    from vh_orch.values import ExecutionStatus

    store = open_store()
    if status is not None and status not in {st.value for st in ExecutionStatus}:
        raise UserInputError(f"unknown status {status!r}: use one of {', '.join(st.value for st in ExecutionStatus)}")
    project_id = store.get_project(project).id if project else None
    if sort and not sort.lstrip("-+"):
        raise UserInputError("--sort needs a key, e.g. --sort -accuracy")
    order = ordering(sort or "", default="-id")
    where = ExecutionFilter(project_ids=None if project_id is None else [project_id],
                            statuses=() if status is None else (status,))
    # A negative --limit cuts from the end, as a Python slice does.
    _, executions = list_executions(store, where, order, limit=limit if limit is not None and limit >= 0 else None)
    if limit is not None and limit < 0:
        executions = executions[:limit]
    projects = store.project_names()
    envs = store.environment_names()
    if json_out:
        print_json([execution_summary(e, projects, envs) for e in executions])
        return
    metadata_key = order.key if order.by_metadata else None
    columns = ["id", "project", "#", "step", "status", "environment", "created"]
    if metadata_key:
        columns.append(metadata_key)
    rows = []
    for e in executions:
        row = [e.id, projects.get(e.project_id), e.counter, e.step, e.status, envs.get(e.environment_id),
               e.created_at.strftime("%Y-%m-%d %H:%M:%S")]
        if metadata_key:
            row.append(e.metadata_latest.get(metadata_key))
        rows.append(row)
    print_table("executions", columns, rows)


@app.command("info")
def info(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Everything about one execution."""
    store = open_store()
    data = execution_info(store, store.get_execution(execution_id))
    if json_out:
        print_json(data)
        return
    # For people: the valohai.yaml is one `--json` away; outputs get a table of their own.
    outs = data.pop("outputs")
    data.pop("valohai_yaml")
    data["commit"] = f"{data['commit']['kind']} {data['commit']['identifier']}"
    source = data.pop("rerun_of")
    if source is not None:  # made by "Run again" in the web UI
        data["re-run of"] = f"#{source['counter']} (id {source['id']})"
    print_fields(f"execution {execution_id}", data)
    if outs:
        print_table("outputs", ["name", "size", "sha256", "datum"],
                    [[o["name"], o["size"], o["sha256"], o["datum"]] for o in outs])


@app.command("logs")
def logs(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming until it ends")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
    raw: Annotated[bool, typer.Option("--raw", help="Write the lines exactly as printed, terminal escapes "
                                                    "included (by default control characters show as \\x1b)")] = False,
) -> None:
    """Print an execution's log lines (stdout and stderr, in order)."""
    from vh_orch.values import ExecutionStatus

    s = settings()
    store = open_store(s)
    execution = store.get_execution(execution_id)
    if follow:
        final = follow_logs(store, s, execution_id, after_seq=0, json_lines=json_out, raw=raw)
        raise typer.Exit(0 if final == ExecutionStatus.COMPLETE else 1)
    printer = LogPrinter(json_out, raw, marks=AttemptMarks() if execution.attempt > 1 else None)
    print_stored(store, printer, execution_id, after=0)
    printer.flush()


@app.command("metadata")
def metadata(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every metadata point an execution printed, with its _time."""
    store = open_store()
    store.get_execution(execution_id)
    points = [{**p.data, "_time": iso(p.time)} for p in store.metadata_points(execution_id)]
    if json_out:
        print_json(points)
        return
    keys: list[str] = []
    for point in points:
        keys.extend(k for k in point if k not in keys and k != "_time")
    print_table(f"metadata of execution {execution_id}", ["_time", *keys],
                [[p["_time"], *(p.get(k) for k in keys)] for p in points])


@app.command("utilization")
def utilization(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Hardware use sampled while an execution ran: CPU (100 % is one core), memory, and each of its GPUs."""
    from vh_orch.cli.common import human_bytes, note
    from vh_orch.services.utilization import samples

    store = open_store()
    execution = store.get_execution(execution_id)
    rows = samples(store, execution_id)
    if json_out:
        print_json(rows)
        return
    if not rows:
        note(f"execution {execution_id}: no hardware use sampled" + (" yet" if execution.ended_at is None else ""))
        return
    indices = sorted({g["index"] for r in rows for g in r["gpus"]})

    def size(value: int | None) -> str:
        return "" if value is None else human_bytes(value)

    table = []
    for r in rows:
        gpus = {g["index"]: g for g in r["gpus"]}
        table.append([r["time"], "" if r["cpu_percent"] is None else f"{r['cpu_percent']:.1f}", size(r["memory_bytes"]),
                      *(cell for i in indices for cell in (
                          f"{gpus[i]['utilization_percent']:g}" if i in gpus else "",
                          size(gpus[i]["memory_used_bytes"]) if i in gpus else ""))])
    columns = ["time", "cpu %", "memory", *(c for i in indices for c in (f"gpu {i} %", f"gpu {i} memory"))]
    peak = f" (peak memory {human_bytes(execution.peak_memory_bytes)})" if execution.peak_memory_bytes else ""
    print_table(f"hardware use of execution {execution_id}{peak}", columns, table)


@app.command("outputs")
def outputs(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    download: Annotated[Path | None, typer.Option("--download", help="Copy the outputs into this folder")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """An execution's outputs: name, size, sha256 and datum:// address."""
    from vh_orch.cli.common import note
    from vh_orch.storage.datastores import download_uri

    store = open_store()
    store.get_execution(execution_id)
    outs = store.outputs_of(execution_id)
    if download is not None:
        for out in outs:
            dest = (download / out.name).resolve()
            if download.resolve() not in dest.parents:
                raise UserInputError(f"output name {out.name!r} would leave {download}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            download_uri(out.uri, dest)
        note(f"{len(outs)} file(s) downloaded to {download}")
    rows = [output_dict(o) for o in outs]
    if json_out:
        print_json(rows)
    elif download is None:
        print_table(f"outputs of execution {execution_id}", ["name", "size", "sha256", "datum"],
                    [[r["name"], r["size"], r["sha256"], r["datum"]] for r in rows])


@app.command("stop")
def stop(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Stop an execution: a queued one at once, a running one within a few seconds."""
    from vh_orch.cli.common import note
    from vh_orch.orchestrator.wakeup import notify_daemon

    s = settings()
    store = open_store(s)
    execution = store.request_stop(execution_id, "stopped by request")
    notify_daemon(s)
    if json_out:
        print_json(execution_info(store, execution))
    else:
        note(f"execution {execution_id}: {execution.status}")


@app.command("wait")
def wait(
    execution_id: Annotated[int, typer.Argument(metavar="ID")],
    timeout: Annotated[float | None, typer.Option("--timeout", help="Give up after this many seconds")] = None,
) -> None:
    """Wait until an execution ends; exit status 0 only when it ends `complete`."""
    from vh_orch.values import FINAL_STATUSES, ExecutionStatus

    s = settings()
    store = open_store(s)
    wait_until_final(store, s, f"execution {execution_id}", lambda: store.get_execution(execution_id),
                     FINAL_STATUSES, ExecutionStatus.COMPLETE, timeout)


def wait_until_final(store: Store, s: Settings, what: str, read: Any, final: Any, complete: str,
                     timeout: float | None) -> None:
    """Poll `read()` until its status is final: exit 0 when it is `complete`, 1 otherwise, 2 at the timeout."""
    from vh_orch.cli.common import note

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        row = read()
        if row.status in final:
            note(f"{what}: {row.status}" + (f" ({row.status_reason})" if row.status_reason else ""))
            raise typer.Exit(0 if row.status == complete else 1)
        require_daemon(store, s)
        if deadline is not None and time.monotonic() >= deadline:
            note(f"{what} is still {row.status} after {timeout:g} s")
            raise typer.Exit(2)
        time.sleep(FOLLOW_POLL_S)


def require_daemon(store: Store, s: Settings) -> None:
    if store.fresh_daemon(timedelta(seconds=s.heartbeat_stale_s)) is None:
        raise NoDaemon(
            f"no vh-orch daemon is running for this database (no heartbeat in the last {s.heartbeat_stale_s:g} s), "
            "so nothing will run this execution: start one with `vh-orch serve`"
        )


def follow_logs(store: Store, s: Settings, execution_id: int, after_seq: int, json_lines: bool = False,
                raw: bool = False) -> str:
    """Print events as they are stored until the execution ends; returns its final status."""
    from vh_orch.values import FINAL_STATUSES

    printer = LogPrinter(json_lines, raw, show_status=True)
    last = after_seq
    while True:
        execution = store.get_execution(execution_id)
        printed = print_stored(store, printer, execution_id, last)
        printer.flush()
        if printed > last:
            last = printed
            continue
        if execution.status in FINAL_STATUSES and last >= execution.last_seq:
            return execution.status
        require_daemon(store, s)
        time.sleep(FOLLOW_POLL_S)
