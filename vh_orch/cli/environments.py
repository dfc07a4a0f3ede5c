"""`vh-orch env ...` and `vh-orch machine ...`"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from vh_orch.cli.common import human_bytes, open_store, print_fields, print_json, print_table
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.errors import ConfigError, UserInputError
from vh_orch.services.views import QUEUED, RUNNING, input_cache_dict, machine_gpus
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Environment, Machine
    from vh_orch.orchestrator.store import Store
    from vh_orch.services.environments import EnvironmentChange

app = typer.Typer(help="Environments: named machine kinds, each with its own queue.", no_args_is_help=True)
machine_app = typer.Typer(help="Machines serving the environments.", no_args_is_help=True)

FINISHED_MACHINE_STATES = ("terminated", "failed", "lost")


def _env_dict(store: Store, env: Environment, detail: bool = False) -> dict[str, Any]:
    from vh_orch.cloud_drivers.settings import settings_of
    from vh_orch.config.environments import format_duration
    from vh_orch.services.environments import env_entry

    data = env_entry(env)
    data["idle_timeout"] = format_duration(env.idle_timeout_s)
    if settings_of(env).draining:
        data["draining"] = True
    if detail:
        if capabilities(env.cloud).runs_on_this_host:
            from vh_orch.orchestrator.local_host import choose_runtime

            runtime, why = choose_runtime(env)
            data["runtime"] = runtime
            data["runtime_reason"] = why
        data["input_cache"] = _cache_summary(env, [m for m, name in store.list_machines(include_finished=True)
                                                   if name == env.name])
        data["gpus"] = [{"machine": m.id, "state": m.state, **machine_gpus(m)}
                        for m, name in store.list_machines() if name == env.name]
        data["launch_failures"] = [
            {"time": iso(f.time), "kind": f.kind, "zone": f.zone, "instance_type": f.instance_type,
             "message": f.message}
            for f in store.recent_failures(env.id, limit=10)  # type: ignore[arg-type]
        ]
    return data


def _cache_summary(env: Environment, machines: list[Machine]) -> dict[str, Any]:
    """The input cache of an environment's machines: hits and misses of all of them, ever; the size of
    the live ones' caches (machines whose executions run on this host share one cache here: its size once)."""
    from vh_orch.cloud_drivers.settings import settings_of
    from vh_orch.storage.input_cache import GiB, cache_bound_bytes

    live = [m.input_cache_bytes or 0 for m in machines if m.state not in FINISHED_MACHINE_STATES]
    size = (max(live) if capabilities(env.cloud).runs_on_this_host else sum(live)) if live else 0
    data = input_cache_dict(sum(m.input_cache_hits for m in machines), sum(m.input_cache_misses for m in machines), size)
    return {"bound_gb": cache_bound_bytes(settings_of(env).input_cache_gb) / GiB, **data}


def _gpu_text(g: dict[str, Any]) -> str:
    """'2 × NVIDIA A10G', '1 (expected)' before the machine is set up, '' for none."""
    if not g["gpus"]:
        return ""
    return f"{g['gpus']}{' × ' + g['gpu_model'] if g['gpu_model'] else ''}{' (expected)' if g['gpus_expected'] else ''}"


def _cache_text(cache: dict[str, Any]) -> str:
    if not cache["hits"] and not cache["misses"]:
        return ""
    return f"{human_bytes(cache['bytes'] or 0)}, {cache['hit_rate']:.0%} of {cache['hits'] + cache['misses']}"


# Options shared by `env add` and `env update`; None means "not given".
MinScale = Annotated[int | None, typer.Option("--min-scale", help="Machines kept even when idle")]
MaxScale = Annotated[int | None, typer.Option("--max-scale", help="Most machines at once")]
IdleTimeout = Annotated[str | None, typer.Option("--idle-timeout", help="e.g. 30s, 10m, 2h")]
InstanceType = Annotated[list[str] | None, typer.Option("--instance-type", help="Repeat for fallbacks, in order")]
Region = Annotated[str | None, typer.Option("--region")]
Spot = Annotated[bool | None, typer.Option("--spot/--on-demand")]
Price = Annotated[float | None, typer.Option("--price-per-hour")]
Slots = Annotated[int | None, typer.Option("--slots", help="Executions at a time per machine")]
MaxAttempts = Annotated[int | None, typer.Option("--max-attempts", help="Runs of an execution whose machine is lost")]
PullPolicy = Annotated[str | None, typer.Option("--pull-policy", help="if-missing, always or never")]
Runtime = Annotated[str | None, typer.Option("--runtime", help="local and fake: auto, docker or process")]
PidsLimit = Annotated[int | None, typer.Option("--pids-limit", help="Most processes per container (0: no limit; "
                                                                    "default 4096)")]
ContainerNetwork = Annotated[str | None, typer.Option("--container-network",
                                                      help="bridge (default) or none: no network in the container")]
GpusPerExecution = Annotated[int | None, typer.Option(
    "--gpus-per-execution", help="GPUs each execution asks for unless its step's resources.devices says (default 0)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Cloud setting SECTION.KEY=VALUE (YAML value)")]
Users = Annotated[str | None, typer.Option("--users", metavar="NAME[,NAME...]",
                                           help="Only these users (and administrators) may submit to it over the API")]
Everyone = Annotated[bool, typer.Option("--everyone", help="Every user may submit to it over the API (the default)")]
Admins = Annotated[bool, typer.Option("--admins", help="Only administrators may submit to it over the API")]


def _change(users: str | None, everyone: bool, admins: bool, instance_type: list[str] | None, runtime: str | None,
            set_: list[str] | None, **opts: Any) -> EnvironmentChange:
    """The options of `env add` and `env update` as typed values."""
    from vh_orch.services.environments import EnvironmentChange

    given = [v for v in (users, "everyone" if everyone else None, "admins" if admins else None) if v is not None]
    if len(given) > 1:
        raise UserInputError("--users, --everyone and --admins exclude each other: give one")
    return EnvironmentChange(users=given[0] if given else None,
                             instance_type=None if instance_type is None else tuple(instance_type),
                             runtime=runtime, cloud_settings=tuple(_cloud_setting(item) for item in set_ or []),
                             **opts)


def _cloud_setting(item: str) -> tuple[str, str, Any]:
    """`--set SECTION.KEY=VALUE`; the value is read as YAML (a number, a list), or else taken as text."""
    import yaml

    path, sep, raw = item.partition("=")
    section, dot, key = path.partition(".")
    if not sep or not dot or not key:
        raise UserInputError(f"--set {item!r} is not of the form SECTION.KEY=VALUE (e.g. fake.boot_seconds=5)")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return section, key, value


@app.command("add")
def add(
    name: Annotated[str, typer.Argument()],
    cloud: Annotated[str, typer.Option("--cloud", help="local, ssh, aws, gcp or fake")],
    min_scale: MinScale = None, max_scale: MaxScale = None, idle_timeout: IdleTimeout = None,
    instance_type: InstanceType = None, region: Region = None, spot: Spot = None, price_per_hour: Price = None,
    slots: Slots = None, max_attempts: MaxAttempts = None, pull_policy: PullPolicy = None, runtime: Runtime = None,
    pids_limit: PidsLimit = None, container_network: ContainerNetwork = None,
    gpus_per_execution: GpusPerExecution = None,
    set_: SetOpt = None, users: Users = None, everyone: Everyone = False, admins: Admins = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Define a new environment."""
    from vh_orch.services.environments import add_environment

    store = open_store()
    change = _change(min_scale=min_scale, max_scale=max_scale, idle_timeout=idle_timeout, instance_type=instance_type,
                     region=region, spot=spot, price_per_hour=price_per_hour, slots=slots, max_attempts=max_attempts,
                     pull_policy=pull_policy, runtime=runtime, pids_limit=pids_limit,
                     container_network=container_network, gpus_per_execution=gpus_per_execution, set_=set_,
                     users=users, everyone=everyone, admins=admins)
    _done(store, add_environment(store, name, cloud, change), "created", json_out)


@app.command("update")
def update(
    name: Annotated[str, typer.Argument()],
    min_scale: MinScale = None, max_scale: MaxScale = None, idle_timeout: IdleTimeout = None,
    instance_type: InstanceType = None, region: Region = None, spot: Spot = None, price_per_hour: Price = None,
    slots: Slots = None, max_attempts: MaxAttempts = None, pull_policy: PullPolicy = None, runtime: Runtime = None,
    pids_limit: PidsLimit = None, container_network: ContainerNetwork = None,
    gpus_per_execution: GpusPerExecution = None,
    set_: SetOpt = None, users: Users = None, everyone: Everyone = False, admins: Admins = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Change an environment's settings (also lifts a stop after a fatal launch error)."""
    from vh_orch.services.environments import update_environment

    store = open_store()
    change = _change(min_scale=min_scale, max_scale=max_scale, idle_timeout=idle_timeout, instance_type=instance_type,
                     region=region, spot=spot, price_per_hour=price_per_hour, slots=slots, max_attempts=max_attempts,
                     pull_policy=pull_policy, runtime=runtime, pids_limit=pids_limit,
                     container_network=container_network, gpus_per_execution=gpus_per_execution, set_=set_,
                     users=users, everyone=everyone, admins=admins)
    _done(store, update_environment(store, name, change), "updated", json_out)


def _wake() -> None:
    """A running daemon acts on the change in its next pass, now rather than in a few seconds."""
    from vh_orch.cli.common import settings
    from vh_orch.orchestrator.wakeup import notify_daemon

    notify_daemon(settings())


def _done(store: Store, env: Environment, what: str, json_out: bool) -> None:
    _wake()
    if json_out:
        print_json(_env_dict(store, env))
    else:
        print(f"environment {env.name} {what}")


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument()],
    drain: Annotated[bool, typer.Option("--drain", help="Finish its work, retire its machines, then remove")] = False,
) -> None:
    """Remove an environment; refused while machines or unfinished executions use it, unless --drain."""
    result = open_store().remove_environment(name, drain)
    _wake()
    print(f"environment {name} {'removed' if result == 'removed' else 'is draining: removed once its work is done'}")


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(help="YAML with a top-level `environments:` list")],
    prune: Annotated[bool, typer.Option("--prune", help="Remove environments the file does not define")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Create or update environments from a file, idempotently: the whole file or nothing."""
    from vh_orch.config.environments import BUILTIN_ENVIRONMENT, parse_file_text

    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {file}: {exc.strerror}") from None
    specs = parse_file_text(text, str(file))
    report = open_store().apply_environments([(s.name, s.cloud, s.columns, s.settings) for s in specs],
                                             prune=prune, keep=frozenset({BUILTIN_ENVIRONMENT}))
    _wake()
    if json_out:
        print_json(report)
        return
    for key in ("created", "updated", "unchanged", "removed"):
        if report[key]:
            print(f"{key}: {', '.join(report[key])}")


@app.command("list")
def list_(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List environments with their queues."""
    from vh_orch.config.environments import format_duration

    store = open_store()
    envs = store.list_environments()
    queued = store.executions_in(QUEUED)
    running = store.executions_in(RUNNING)
    rows = []
    for env in envs:
        q = sum(1 for e in queued if e.environment_id == env.id)
        r = sum(1 for e in running if e.environment_id == env.id)
        rows.append((env, q, r))
    if json_out:
        print_json([{**_env_dict(store, env), "queued": q, "running": r} for env, q, r in rows])
        return
    print_table("environments", ["name", "cloud", "type", "slots", "scale", "idle", "queued", "running"],
                [[env.name, env.cloud, env.instance_type or "", env.slots, f"{env.min_scale}..{env.max_scale}",
                  format_duration(env.idle_timeout_s), q, r] for env, q, r in rows])


@app.command("show")
def show(
    name: Annotated[str, typer.Argument()],
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """One environment: its settings, its runtime (local, fake) and its recent launch failures."""
    store = open_store()
    data = _env_dict(store, store.get_environment(name), detail=True)
    if json_out:
        print_json(data)
        return
    failures = data.pop("launch_failures")
    gpus = data.pop("gpus")
    print_fields(f"environment {name}", data)
    if any(g["gpus"] for g in gpus):
        print_table("GPUs of its machines", ["machine", "state", "GPUs"],
                    [[g["machine"], g["state"], _gpu_text(g)] for g in gpus])
    if failures:
        print_table("recent launch failures", ["time", "kind", "zone", "type", "message"],
                    [[f["time"], f["kind"], f["zone"], f["instance_type"], f["message"]] for f in failures])


@machine_app.command("list")
def machine_list(
    all_: Annotated[bool, typer.Option("--all", help="Include terminated, failed and lost machines")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Live machines (not terminated, failed or lost), their state and why; --all adds the finished ones."""
    store = open_store()
    machines = store.list_machines(include_finished=all_)
    busy = store.executions_in(RUNNING)
    rows = []
    for m, env_name in machines:
        running = [e.id for e in busy if e.machine_id == m.id]
        rows.append({
            "id": m.id, "environment": env_name, "state": m.state, "reason": m.reason,
            "instance_id": m.instance_id, "zone": m.zone, "instance_type": m.instance_type,
            "address": m.address, "bootstrap_step": m.bootstrap_step, **machine_gpus(m),
            "executions": running,
            "terminate_attempts": m.terminate_attempts, "last_error": m.last_error,
            "created_at": m.created_at, "state_changed_at": m.state_changed_at, "idle_since": m.idle_since,
            "input_cache": input_cache_dict(m.input_cache_hits, m.input_cache_misses, m.input_cache_bytes),
        })
    if json_out:
        print_json(rows)
        return
    from vh_orch.orchestrator.hosts import busy_hosts

    print_table("machines", ["id", "environment", "state", "step", "instance", "GPUs", "executions",
                             "input cache, hits", "reason"],
                [[r["id"], r["environment"], r["state"], r["bootstrap_step"], r["instance_id"], _gpu_text(r),
                  ",".join(map(str, r["executions"])), _cache_text(r["input_cache"]), r["reason"]] for r in rows])
    busy = busy_hosts(store)
    if busy:
        print_table("SSH hosts held by others (`vh-orch machine release HOST` if the holder is gone)",
                    ["environment", "host", "held by", "seen at"],
                    [[b.environment, b.host, b.held_by, iso(b.seen_at)] for b in busy])


@machine_app.command("release")
def machine_release(
    host: Annotated[str, typer.Argument(help="ADDRESS or ADDRESS:PORT of a host of an SSH pool")],
    force: Annotated[bool, typer.Option("--force", help="Also release another installation's claim")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Release an SSH pool host whose claim outlived its owner (never one a live machine uses)."""
    from vh_orch.orchestrator.hosts import release_host

    done = release_host(open_store(), host, force)
    if json_out:
        print_json([{"host": d.host, "environment": d.environment, "message": d.message} for d in done])
        return
    for d in done:
        print(d.message)
