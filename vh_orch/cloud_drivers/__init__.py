"""Cloud drivers, one module per cloud; SDKs are imported only by the driver that needs them."""

from __future__ import annotations

from vh_orch.cloud_drivers.base import CloudDriver, EnvironmentSpec
from vh_orch.errors import ConfigError


def make_driver(env: EnvironmentSpec, cluster_id: str) -> CloudDriver | None:
    """The driver of an environment's cloud; None for `local`, whose one machine is this host.

    The orchestrator builds `env` from its row (vh_orch.orchestrator.drivers.driver_spec)."""
    if env.cloud == "local":
        return None
    if env.cloud == "fake":
        from vh_orch.cloud_drivers.fake import FakeCloud, FakeDriver

        fake = env.settings.get("fake", {})
        cloud = FakeCloud.named(env.region or "default", state_file=fake.get("state_file"))
        return FakeDriver(cloud, cluster_id, env.name,
                          float(fake.get("boot_seconds", 0)), fake.get("interrupt_after"),
                          int(fake.get("interrupt_count", 0)))
    if env.cloud == "ssh":
        from vh_orch.cloud_drivers.ssh_pool import SSHPoolDriver

        return SSHPoolDriver(cluster_id, env.name, env.settings.get("ssh", {}))
    if env.cloud == "aws":
        from vh_orch.cloud_drivers.aws import AWSDriver

        return AWSDriver(cluster_id, env)
    if env.cloud == "gcp":
        from vh_orch.cloud_drivers.gcp import GCPDriver

        return GCPDriver(cluster_id, env)
    raise ConfigError(f"environment {env.name!r}: the {env.cloud} cloud driver is not available yet")
