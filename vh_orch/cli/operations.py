"""`vh-orch status`, `vh-orch quota ...` and `vh-orch cleanup`."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from vh_orch.cli.common import open_store, print_json, print_table, settings
from vh_orch.cli.terminal import visible
from vh_orch.errors import UserInputError
from vh_orch.services.views import status_rows

quota_app = typer.Typer(help="Per-user limits on executions queued or running at once.", no_args_is_help=True)


def status(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Per environment: live machines by state, queued and running executions, cost per hour, last launch failure.

    Live machines are those not terminated, failed or lost; the cost per hour is that of the
    machines that have an instance (provisioning to terminating; nothing for `local`). Executions
    held back by a quota count as queued (`held_by_quota` in --json)."""
    store = open_store()
    rows = status_rows(store)
    if json_out:
        print_json(rows)
        return
    print_table("vh-orch status", ["environment", "cloud", "machines", "queued", "running", "cost/h",
                                   "last launch failure"],
                [[r["environment"], r["cloud"],
                  ", ".join(f"{k} {v}" for k, v in r["machines"].items()) or "none",
                  r["queued"] + r["held_by_quota"], r["running"], f"{r['cost_per_hour']:.2f}",
                  "" if r["last_launch_failure"] is None else
                  f"{r['last_launch_failure']['time']} {r['last_launch_failure']['kind']}: "
                  f"{r['last_launch_failure']['message']}"]
                 for r in rows])
    print_replicas(replica_rows(store))


def replicas(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The daemons serving this database (one on SQLite, any number of replicas on PostgreSQL): host,
    pid, last heartbeat, and what each owns now (the cluster jobs, environments, executions)."""
    rows = replica_rows(open_store())
    if json_out:
        print_json(rows)
        return
    print_replicas(rows)


def replica_rows(store: Any) -> list[dict[str, Any]]:
    from datetime import timedelta

    from vh_orch.timeutil import iso

    names = store.environment_names()
    out = []
    for r in store.replicas(timedelta(seconds=settings().heartbeat_stale_s)):
        envs = [names.get(int(k.split(":", 1)[1]), k) for k in r.owns if k.startswith("env:")]
        out.append({"id": r.id, "hostname": r.hostname, "pid": r.pid, "started_at": iso(r.started_at),
                    "heartbeat_at": iso(r.heartbeat_at), "cluster_jobs": "cluster" in r.owns,
                    "environments": sorted(envs),
                    "executions": sorted(int(k.split(":", 1)[1]) for k in r.owns if k.startswith("exec:"))})
    return out


def print_replicas(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no daemon has a fresh heartbeat: start one with `vh-orch serve`")
        return
    print_table("replicas", ["id", "host", "pid", "heartbeat", "owns"],
                [[r["id"], r["hostname"], r["pid"], r["heartbeat_at"],
                  "; ".join(part for part in (
                      "cluster jobs" if r["cluster_jobs"] else "",
                      ("environments " + ", ".join(r["environments"])) if r["environments"] else "",
                      f"{len(r['executions'])} execution(s)" if r["executions"] else "") if part) or "nothing yet"]
                 for r in rows])


@quota_app.command("set")
def quota_set(
    user: Annotated[str, typer.Argument(help="User name, or --default")] = "",
    limit: Annotated[int | None, typer.Argument(help="Executions queued or running at once")] = None,
    default: Annotated[bool, typer.Option("--default", help="Set the limit for users without one")] = False,
    unset: Annotated[bool, typer.Option("--unset", help="Remove the limit")] = False,
) -> None:
    """Limit how many executions USER may have queued or running; the rest wait as `created`."""
    from vh_orch.orchestrator.store.lifecycle import DEFAULT_QUOTA_USER

    if default:
        if user and limit is None and user.isdigit():
            user, limit = "", int(user)
        user = DEFAULT_QUOTA_USER
    if not user:
        raise UserInputError("name a user, or use --default")
    if not unset and (limit is None or limit < 1):
        raise UserInputError("the limit must be a whole number of at least 1 (or use --unset)")
    open_store().set_quota(user, None if unset else limit)
    who = "the default" if user == DEFAULT_QUOTA_USER else user
    print(f"quota for {who}: {'none' if unset else limit}")


@quota_app.command("list")
def quota_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Quotas by user (`*` is the default)."""
    quotas = open_store().quotas()
    if json_out:
        print_json(quotas)
        return
    print_table("quotas", ["user", "max queued or running"], [[u, n] for u, n in sorted(quotas.items())])


def cleanup(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be removed, remove nothing")] = False,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run every cleanup job of the daemon's settings once."""
    from vh_orch.orchestrator.cleanup import load_jobs, run_job

    s = settings()
    store = open_store(s)
    report = {job.job: run_job(job, store, s, dry_run) for job in load_jobs(s)}
    if json_out:
        print_json({"dry_run": dry_run, "removed": report})
        return
    verb = "would remove" if dry_run else "removed"
    for job, items in report.items():
        # items may name what executions made (output files): their control characters show
        print(f"{job}: {verb} {len(items)}" + "".join(f"\n  {visible(str(i))}" for i in items))
