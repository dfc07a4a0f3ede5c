"""Cloud drivers, one module per cloud; SDKs are imported only by the driver that needs them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.errors import ConfigError

if TYPE_CHECKING:  # importing the package (capabilities, for the CLI's quick path) loads no driver
    from vh_orch.cloud_drivers.base import CloudDriver, EnvironmentSpec


def make_driver(env: EnvironmentSpec, cluster_id: str) -> CloudDriver | None:
    """The driver of an environment's cloud; None where the one machine is this host (`local`).

    The orchestrator builds `env` from its row (vh_orch.orchestrator.drivers.driver_spec)."""
    from vh_orch.cloud_drivers.settings import AWSSettings, FakeSettings, GCPSettings, SSHPoolSettings

    if capabilities(env.cloud).machine_is_this_host:
        return None
    settings = env.settings
    if isinstance(settings, FakeSettings):
        from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver

        fake = settings.fake
        cloud = FakeCloud.named(env.region or "default", state_file=fake.state_file)
        return FakeDriver(cloud, cluster_id, env.name, fake.boot_seconds, fake.interrupt_after, fake.interrupt_count,
                          fake.gpus)
    if isinstance(settings, SSHPoolSettings):
        from vh_orch.cloud_drivers.ssh_pool import SSHPoolDriver

        return SSHPoolDriver(cluster_id, env.name, settings.ssh)
    if isinstance(settings, AWSSettings):
        from vh_orch.cloud_drivers.aws import AWSDriver

        return AWSDriver(cluster_id, env)
    if isinstance(settings, GCPSettings):
        from vh_orch.cloud_drivers.gcp import GCPDriver

        return GCPDriver(cluster_id, env)
    raise ConfigError(f"environment {env.name!r}: the {env.cloud} cloud driver is not available yet")
