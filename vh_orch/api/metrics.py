"""GET /metrics: Prometheus' text format, for the client addresses `--metrics-allow` names.

No user token admits a scraper (Prometheus has none to give), and none is needed: the address
is what admits. What the database knows is read from it at scrape time (StateCollector), so it
is right whichever process wrote it; what only the daemon process knows (reconcile pass
durations, log lines stored, bytes moved) comes from its DaemonMetrics.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from vh_orch.api.allowlist import Network, is_allowed
from vh_orch.orchestrator.reconcile import FAILURE_KINDS
from vh_orch.orchestrator.store.fleet import LIVE_MACHINE
from vh_orch.services.views import status_rows
from vh_orch.timeutil import utcnow
from vh_orch.values import ExecutionStatus

if TYPE_CHECKING:
    from vh_orch.orchestrator.metrics import DaemonMetrics
    from vh_orch.orchestrator.store import Store


def allowed_client(request: Request) -> None:
    allowed: Sequence[Network] = request.app.state.metrics_allow
    host = request.client.host if request.client else None
    if not is_allowed(host, allowed):
        raise HTTPException(
            403, f"/metrics answers only the addresses in --metrics-allow ({','.join(map(str, allowed))}); "
                 f"{host or 'this client'} is not one of them. To allow it, add it (or its network) to "
                 "`vh-orch serve --metrics-allow CIDR[,CIDR...]` or VH_ORCH_METRICS_ALLOW and restart vh-orch serve")


class StateCollector:
    """What the database says now: queues, machines, executions, launch failures, cost."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterable[Metric]:
        store = self.store
        rows = status_rows(store)  # the same figures as `vh-orch status --json`
        names = {env.id: env.name for env in store.list_environments()}
        ids = {name: env_id for env_id, name in names.items()}
        oldest = store.oldest_queued()
        now = utcnow()

        queue = GaugeMetricFamily("vh_orch_queue_length", "Executions queued, per environment",
                                  labels=["environment"])
        wait = GaugeMetricFamily("vh_orch_queue_oldest_wait_seconds",
                                 "How long the longest-waiting queued execution has waited (0: none queued)",
                                 labels=["environment"])
        machines = GaugeMetricFamily("vh_orch_machines", "Live machines, per environment and state",
                                     labels=["environment", "state"])
        cost = GaugeMetricFamily("vh_orch_cost_per_hour",
                                 "Price per hour of the environment's billed machines (as `vh-orch status`)",
                                 labels=["environment"])
        for row in rows:
            env = row["environment"]
            queue.add_metric([env], row["queued"])
            since = oldest.get(ids.get(env))  # type: ignore[arg-type]
            wait.add_metric([env], max(0.0, (now - since).total_seconds()) if since is not None else 0.0)
            for state in LIVE_MACHINE:
                machines.add_metric([env, str(state)], row["machines"].get(str(state), 0))
            cost.add_metric([env], row["cost_per_hour"])

        executions = GaugeMetricFamily("vh_orch_executions", "Executions, per status", labels=["status"])
        counts = store.execution_counts()
        for status in ExecutionStatus:
            executions.add_metric([str(status)], counts.get(str(status), 0))

        failures = CounterMetricFamily("vh_orch_launch_failures", "Launch failures recorded, per environment and kind",
                                       labels=["environment", "kind"])
        failed = store.launch_failure_counts()
        kinds = sorted({k for _, k, _ in FAILURE_KINDS} | {"fatal"} | {k for _, k in failed})
        for env_id, env in sorted(names.items(), key=lambda item: item[1]):
            for kind in kinds:
                failures.add_metric([env, kind], failed.get((env_id, kind), 0))
        return [queue, wait, machines, executions, failures, cost]


def build_registry(store: Store, daemon_metrics: DaemonMetrics | None = None) -> CollectorRegistry:
    """A registry of its own per app (never the global one): the database's figures, and the
    daemon process's counters when this app runs inside `vh-orch serve`."""
    registry = CollectorRegistry()
    registry.register(StateCollector(store))
    if daemon_metrics is not None:
        registry.register(daemon_metrics.registry)  # a registry is a collector too
    return registry


router = APIRouter()


@router.get("/metrics", dependencies=[Depends(allowed_client)], include_in_schema=False)
def metrics(request: Request) -> Response:
    """Every metric, in the format the scraper asks for (Prometheus text, or OpenMetrics)."""
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(request.app.state.metrics_registry), media_type=content_type)
