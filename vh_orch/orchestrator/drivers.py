"""What the cloud drivers are told of an environment: its row, as a plain value.

The conversion lives here, not in vh_orch.cloud_drivers, so that nothing below the
orchestrator imports the database models.
"""

from __future__ import annotations

from vh_orch.cloud_drivers.base import EnvironmentSpec
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.orchestrator.models import Environment


def driver_spec(env: Environment) -> EnvironmentSpec:
    """The EnvironmentSpec of an environment row; its settings are read into their cloud's
    (frozen) model, so a driver never shares (or changes) the row's JSON."""
    return EnvironmentSpec(name=env.name, cloud=env.cloud, region=env.region, spot=env.spot,
                           settings=settings_of(env))
