"""The one interface every cloud sits behind, and the values that cross it.

A driver launches an instance for a machine row, lists the instances this
installation owns (by the cluster tag) and terminates instances. Drivers see plain
values (EnvironmentSpec, LaunchSpec, MachineRef), never database rows, so the
database's shape stays inside vh_orch.orchestrator. Cloud SDK types never leave a
driver; errors are the family in vh_orch.errors:
CapacityError (try another zone or type), QuotaExceeded (stop until someone raises
the limit), TransientCloudError (back off and retry), anything else is fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from vh_orch.values import CloudInstance

if TYPE_CHECKING:
    from vh_orch.bootstrap.ssh import SSHTarget
    from vh_orch.cloud_drivers.settings import EnvSettings

TAG_CLUSTER = "vh-orch-cluster"
TAG_MACHINE = "vh-orch-machine"
TAG_ENVIRONMENT = "vh-orch-environment"


@dataclass(frozen=True)
class EnvironmentSpec:
    """What a driver knows of its environment: the row's settings, typed, not the row."""

    name: str
    cloud: str
    settings: EnvSettings  # its cloud's model: the `aws`, `gcp`, `ssh` and `fake` sections
    region: str | None = None
    spot: bool = False


class MachineRef(Protocol):
    """What a driver reads of a machine to reach it; the orchestrator's machine row has these."""

    @property
    def instance_id(self) -> str | None: ...

    @property
    def zone(self) -> str | None: ...


@dataclass(frozen=True)
class LaunchSpec:
    machine_id: int
    launch_token: str  # the cloud's idempotency token (ClientToken, requestId)
    cluster_id: str
    environment: str
    zone: str | None
    instance_type: str | None
    spot: bool = False
    tags: dict[str, str] = field(default_factory=dict)

    def all_tags(self) -> dict[str, str]:
        return {
            **self.tags,
            TAG_CLUSTER: self.cluster_id,
            TAG_MACHINE: str(self.machine_id),
            TAG_ENVIRONMENT: self.environment,
        }




class CloudDriver(Protocol):
    def launch(self, spec: LaunchSpec) -> CloudInstance:
        """Start one instance tagged for spec's machine row; may raise a CloudError."""
        ...

    def list_instances(self) -> list[CloudInstance]:
        """Every instance of this installation's cluster in this environment, terminated ones included or not."""
        ...

    def terminate(self, instance_ids: list[str]) -> None:
        """Ask the cloud to terminate instances; confirmation comes from later listings."""
        ...

    def expected_gpus(self, instance_type: str | None) -> int | None:
        """The NVIDIA GPUs an instance of this type comes with, as the cloud describes it (before any
        boots; cached per type); None where the cloud does not tell, or could not be asked just now."""
        ...


@dataclass(frozen=True)
class LaunchOutcome:
    """A launch the cloud accepted and later reported as failed (nothing was created)."""

    machine_id: int
    error: Exception
    zone: str | None
    instance_type: str | None


@runtime_checkable
class SSHMachines(Protocol):
    """A driver whose machines vh-orch logs in to (capabilities: reached_over_ssh)."""

    def target(self, machine: MachineRef) -> SSHTarget:
        """The SSHTarget (address, port, user, key, pinned host key) of a machine."""
        ...

    def workdir(self, machine: MachineRef) -> str:
        """The folder vh-orch owns on the machine."""
        ...


def machine_id_from_tag(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
