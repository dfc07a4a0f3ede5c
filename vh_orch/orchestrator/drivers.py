"""The cloud drivers of the environments: one registry, made once per process.

What the drivers are told of an environment is its row as a plain value (`driver_spec`). The
conversion lives here, not in vh_orch.cloud_drivers, so that nothing below the orchestrator
imports the database models.

The registry makes each environment's driver when it is first needed and keeps it: a driver holds
clients and (the fake cloud's) state that every part of the daemon must share. The reconciler
launches, lists and terminates through it; machine setup logs in to machines through it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from vh_orch.cloud_drivers import make_driver
from vh_orch.cloud_drivers.base import CloudDriver, EnvironmentSpec, SSHMachines
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.orchestrator.models import Environment


def driver_spec(env: Environment) -> EnvironmentSpec:
    """The EnvironmentSpec of an environment row; its settings are read into their cloud's
    (frozen) model, so a driver never shares (or changes) the row's JSON."""
    return EnvironmentSpec(name=env.name, cloud=env.cloud, region=env.region, spot=env.spot,
                           settings=settings_of(env))


class Drivers:
    """Each environment's driver, made on first use (None where the one machine is this host)."""

    def __init__(self, cluster_id: str, made: Mapping[int, CloudDriver] | None = None) -> None:
        self.cluster_id = cluster_id
        self._made: dict[int, CloudDriver] = dict(made or {})  # `made`: a test's or a benchmark's own
        self._lock = threading.Lock()  # the reconciler and the bootstrap threads ask at once

    def driver(self, env: Environment) -> CloudDriver | None:
        """The environment's driver; may raise ConfigError (no SDK, broken settings)."""
        assert env.id is not None
        with self._lock:
            if env.id not in self._made:
                driver = make_driver(driver_spec(env), self.cluster_id)
                if driver is None:
                    return None
                self._made[env.id] = driver
            return self._made[env.id]

    def made(self, env: Environment) -> CloudDriver | None:
        """The environment's driver if one was made already (nothing is made here)."""
        assert env.id is not None
        return self._made.get(env.id)

    def ssh_machines(self, env: Environment) -> SSHMachines:
        """The driver of an environment whose machines vh-orch logs in to (capabilities: reached_over_ssh)."""
        driver = self.driver(env)
        assert isinstance(driver, SSHMachines), f"environment {env.name}: its machines are not reached over SSH"
        return driver
