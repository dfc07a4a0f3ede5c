"""This host: the runtime its executions run in, its GPUs, and what dead daemons left on it.

An environment whose machine is this host (or a fake cloud's) runs executions in Docker when an
engine answers, else as processes (its `runtime` setting may insist on one); the probe is cached
briefly, and a change is logged. Its GPUs are found once per daemon (nvidia-smi). A daemon
killed mid-start or before it cleaned up leaves containers, commands and input cache pins here:
they are removed, only ever those that carry this installation's cluster id.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable

from vh_orch.bootstrap.runtimes import (
    DockerRuntime,
    ProcessRuntime,
    Runtime,
    RuntimeFailure,
    container_name,
    docker_available,
    kill_leftover_process,
    local_containers,
    remove_attempt,
    remove_container,
)
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.orchestrator.models import Environment, Execution
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings
from vh_orch.values import ExecutionStatus

log = logging.getLogger(__name__)

S = ExecutionStatus
RUNTIME_PROBE_TTL_S = 30.0


def choose_runtime(env: Environment) -> tuple[str, str]:
    """The runtime an environment that runs on this host uses now, and why."""
    wanted = settings_of(env).wanted_runtime
    if wanted == "process":
        return "process", "the environment's runtime is set to process"
    ok, why = docker_available()
    if wanted == "docker":
        return "docker", why if ok else f"set to docker, but {why}"
    return ("docker", why) if ok else ("process", f"no Docker engine: {why}")


class LocalHost:
    def __init__(self, store: Store, settings: Settings, cluster_id: str) -> None:
        self.store = store
        self.settings = settings
        self.cluster_id = cluster_id
        self._runtime_cache: dict[tuple[object, ...], tuple[float, str]] = {}
        self._gpus: tuple[int, str | None] | None = None
        self._gpus_lock = threading.Lock()

    def gpus(self) -> tuple[int, str | None]:
        """This host's GPUs (count, the first one's name), found once per daemon; none without nvidia-smi."""
        with self._gpus_lock:
            if self._gpus is None:
                from vh_orch.bootstrap.gpu_inventory import gpus_here, summary

                self._gpus = summary(gpus_here())
                if self._gpus[0]:
                    log.info("this host has %d GPU(s): %s", *self._gpus)
            return self._gpus

    def runtime_for(self, env: Environment) -> Runtime:
        """Docker or process for an environment that runs here; the Docker probe is cached briefly."""
        key = (env.id, settings_of(env).wanted_runtime)
        cached = self._runtime_cache.get(key)
        now = time.monotonic()
        if cached is None or now - cached[0] > RUNTIME_PROBE_TTL_S:
            name, why = choose_runtime(env)
            if cached is None or cached[1] != name:
                log.info("environment %s runs executions with the %s runtime (%s)", env.name, name, why)
            cached = self._runtime_cache[key] = (now, name)
        return DockerRuntime() if cached[1] == "docker" else ProcessRuntime()

    def sweep(self, owned: Callable[[], set[int]]) -> None:
        """Remove this installation's containers on this host's engine whose execution is not in
        `owned` (what a runner of this replica or another one runs; asked after the listing, so a
        container started meanwhile is not taken for a leftover). Only ever containers labelled
        with this installation's cluster id and started by a local runtime. And release the local
        input cache entries of attempts that no longer run."""
        self._release_stale_pins()
        try:
            ok, _ = docker_available()
            if not ok:
                return
            found = local_containers(self.cluster_id)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not look for leftover containers: %s", exc)
            return
        running = owned()
        for container_id, execution_id, attempt in found:
            if execution_id not in running:
                log.info("removing leftover container of execution %s (attempt %s)", execution_id, attempt)
                remove_container(container_id)

    def _release_stale_pins(self) -> None:
        """Input cache entries on this host pinned by attempts of this installation that no longer run
        (a daemon killed before its runner released them) may be evicted again."""
        prefix = f"{self.cluster_id}-"
        pins = list(self.settings.input_cache_dir.glob(f"env-*/*/pins/{prefix}*"))
        if not pins:
            return
        live = {f"{prefix}{e.id}-{e.attempt}" for e in self.store.executions_in([S.STARTED, S.STOPPING])}
        for pin in pins:
            if pin.name not in live:
                pin.unlink(missing_ok=True)

    def end_leftover(self, execution: Execution) -> None:
        """End what an execution that ran on this host left running (its daemon died): its
        container or its command, so that nothing runs twice."""
        assert execution.id is not None
        try:
            if execution.runtime == "docker":
                remove_attempt(container_name(self.cluster_id, execution.id), execution.attempt)
            else:
                kill_leftover_process(self.settings.executions_dir / str(execution.id) / str(execution.attempt))
        except (OSError, subprocess.SubprocessError, RuntimeFailure) as exc:
            log.warning("could not end what execution %s left running: %s", execution.id, exc)
