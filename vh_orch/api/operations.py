"""What operators watch (administrators only; anyone else gets 404): machines, recent launch failures,
and what the machines cost hour by hour."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import field_error, not_found, store_of
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.orchestrator.models import User
from vh_orch.services.costs import cost_report, window_start
from vh_orch.services.views import input_cache_dict, machine_gpus
from vh_orch.timeutil import as_utc, iso, utcnow
from vh_orch.values import BILLED_MACHINE

router = APIRouter(prefix="/api/v0")
MAX_HOURS = 24 * 31


def require_admin(user: User) -> None:
    if not user.is_admin:
        raise not_found()


@router.get("/machines/")
def machines(request: Request, user: CurrentUser, all: bool = False) -> list[dict[str, Any]]:  # noqa: A002
    """Live machines (with `all=true` the terminated, failed and lost ones too)."""
    require_admin(user)
    return [{"id": m.id, "environment": env, "state": m.state, "instance_id": m.instance_id,
             "address": m.address, "zone": m.zone, "instance_type": m.instance_type, "reason": m.reason,
             "created_at": iso(m.created_at), "state_changed_at": iso(m.state_changed_at),
             "idle_since": iso(m.idle_since), "terminated_at": iso(m.terminated_at), "last_error": m.last_error,
             "input_cache": input_cache_dict(m.input_cache_hits, m.input_cache_misses, m.input_cache_bytes),
             **machine_gpus(m)}
            for m, env in store_of(request).list_machines(include_finished=all)]


@router.get("/launch-failures/")
def launch_failures(request: Request, user: CurrentUser, limit: int = 10) -> dict[str, list[dict[str, Any]]]:
    """Per environment, its most recent launch failures with the cloud's reason."""
    require_admin(user)
    store = store_of(request)
    return {env.name: [{"time": iso(f.time), "kind": f.kind, "zone": f.zone, "instance_type": f.instance_type,
                        "message": f.message} for f in store.recent_failures(env.id, limit=min(max(limit, 1), 100))]
            for env in store.list_environments()}


@router.get("/cost/")
def cost(request: Request, user: CurrentUser, hours: int = 24, by: str | None = None, since: str | None = None,
         days: float | None = None) -> dict[str, Any]:
    """Without `by` (administrators): cost per hour over the last `hours` (at most a month), per environment:
    each machine counts from its creation to its termination (or now) at its environment's price; `local`
    costs nothing. With `by` (user, project, environment, task or pipeline): the cost report over `since`
    (a date or time) or the last `days` (default 30), rows `{key, cost_usd, machine_hours, executions, idle}`;
    an administrator's rows (each environment's idle time included) add up to the bill, anyone else sees
    only the executions of projects they can see."""
    if by is not None:
        now = utcnow()
        start = window_start(since, days, now)
        return cost_report(store_of(request), by, start, now, user=user).as_dict()
    require_admin(user)
    if not 1 <= hours <= MAX_HOURS:
        raise field_error("hours", f"give 1 to {MAX_HOURS} hours")
    store = store_of(request)
    now = utcnow().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = now - timedelta(hours=hours)
    prices = {e.name: (e.price_per_hour if capabilities(e.cloud).billed else 0.0) for e in store.list_environments()}
    series: dict[str, list[float]] = {name: [0.0] * hours for name in prices}
    for m, env in store.list_machines(include_finished=True):
        if not prices.get(env) or (m.state not in BILLED_MACHINE and m.terminated_at is None):
            continue
        begin = max(as_utc(m.created_at), start)
        end = min(as_utc(m.terminated_at) if m.terminated_at else utcnow(), now)
        while begin < end:
            bucket = int((begin - start).total_seconds() // 3600)
            bucket_end = start + timedelta(hours=bucket + 1)
            used = (min(end, bucket_end) - begin).total_seconds() / 3600
            series[env][bucket] += used * prices[env]
            begin = bucket_end
    return {"hours": [iso(start + timedelta(hours=i)) for i in range(hours)],
            "environments": {name: [round(v, 4) for v in values] for name, values in series.items()}}
