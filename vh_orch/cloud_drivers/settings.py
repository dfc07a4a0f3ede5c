"""An environment's settings, typed: one model per cloud, chosen by `cloud`, with every default.

The `settings` JSON column holds what vh_orch.config.environments validated from an environments
file (durations already in seconds, `instance_type` as `instance_types`); these models read it. A
key that is absent reads as its default here and nowhere else, and the field descriptions are the
settings' documentation. Reading never fails on a key it does not know (rows written by another
version stay readable).

Each cloud's model says, in the same words for every cloud, what the orchestrator asks of its
settings: the zones it launches in, the runtime it wants on this host, a simulated boot time.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from vh_orch.bootstrap.isolation import DEFAULT_NETWORK, DEFAULT_PIDS_LIMIT
from vh_orch.errors import ConfigError

EVERYONE = "everyone"  # an environment's `users`: who may submit to it over the API
ADMINS = "admins"
DEFAULT_WORKDIR = "/var/lib/vh-orch"  # vh-orch's folder on a machine it logs in to
DEFAULT_GCP_IMAGE = "projects/debian-cloud/global/images/family/debian-12"


class _Reading(BaseModel):
    """Reads what the column holds: an unknown key is skipped, a key set to null reads as its default."""

    # defer_build: the schemas are built when settings are first read, not by every import.
    model_config = ConfigDict(frozen=True, extra="ignore", coerce_numbers_to_str=True, defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, Mapping) else data


# -- the sections named after a cloud ---------------------------------------------------


class HostSection(_Reading):
    """`local:` — an environment whose one machine is the daemon's own host."""

    runtime: str | None = Field(
        default=None,
        description="auto (Docker when an engine answers, else plain processes), "
                    "docker or process; unset: the top-level `runtime`, else auto")


class FakeSection(HostSection):
    """`fake:` — in-memory instances on a virtual clock (tests and simulations); what runs on them runs here."""

    boot_seconds: float = Field(default=0.0, description="how long an instance takes to boot")
    zones: tuple[str, ...] = Field(
        default=(),
        description="zones to launch in, in order (a `fake:` section without them gets fake-a); none: no zone")
    interrupt_after: float | None = Field(
        default=None,
        description="the first `interrupt_count` instances vanish this "
                    "long after booting, like reclaimed spot instances")
    interrupt_count: int = Field(default=0, description="how many instances are interrupted")
    state_file: str | None = Field(
        default=None,
        description="an absolute path: every process naming the same file shares the fake cloud's instances")
    gpus: int | None = Field(
        default=None,
        description="the GPUs each instance is expected to have, as a cloud's instance type tells (simulations)")


class PoolHostSetting(_Reading):
    """One server of an SSH pool (`ssh.hosts[]`)."""

    address: str = Field(description="host name or address")
    port: int = Field(default=22, description="its sshd's port")
    host_key: str = Field(description="its public host key ('ssh-ed25519 AAAA...'), pinned, never learned")
    workdir: str | None = Field(default=None, description="vh-orch's folder on this host; unset: the section's")

    @property
    def id(self) -> str:
        return f"{self.address}:{self.port}"


class SSHSection(_Reading):
    """`ssh:` — how vh-orch logs in: to an SSH pool's hosts, or to the VMs of an aws or gcp environment."""

    user: str | None = Field(
        default=None,
        description="the user to log in as; unset: root on pool hosts, ubuntu on aws, vh on gcp")
    private_key_file: str = Field(default="", description="the private key vh-orch logs in with")
    hosts: tuple[PoolHostSetting, ...] = Field(default=(), description="an SSH pool's servers")
    port: int = Field(default=22, description="sshd's port on VMs")
    address: Literal["public", "private"] = Field(default="public", description="which of a VM's addresses to use")
    endpoint_resolver: str | None = Field(
        default=None,
        description="'module:function' that returns a VM's {host, port, host_key?} (bastions, VPNs, tests)")
    install_docker_command: str | None = Field(
        default=None,
        description="run by the bootstrap on a machine without Docker; unset: Docker must be there")
    gpu_setup_command: str | None = Field(
        default=None,
        description="run (as root) by the bootstrap on a machine whose nvidia-smi reports GPUs and whose Docker "
                    "has no NVIDIA runtime; unset: nvidia-container-toolkit from the image's package sources, "
                    "registered with `nvidia-ctk runtime configure`, Docker restarted")
    connect_timeout: float = Field(default=10.0, description="seconds to wait for an SSH connection")
    unreachable_timeout: float = Field(default=60.0, description="a pool host unreachable this long counts as gone")
    workdir: str = Field(default=DEFAULT_WORKDIR, description="vh-orch's folder on the machines")


class AWSSection(_Reading):
    """`aws:` — EC2 instances. Credentials come only from boto3's standard chain."""

    ami: str = Field(default="", description="an AMI id or an SSM parameter name that EC2 resolves")
    zones: tuple[str, ...] = Field(default=(), description="availability zones to launch in, in order")
    subnet_ids: tuple[str, ...] = Field(default=(), description="subnets to launch in, in order (instead of zones)")
    security_group_ids: tuple[str, ...] = Field(default=(), description="security groups of the instances")
    key_name: str | None = Field(default=None, description="an EC2 key pair, besides vh-orch's own key")
    iam_instance_profile: str | None = Field(default=None, description="an instance profile's name or ARN")
    root_volume_gb: int | None = Field(default=None, description="the root volume's size; unset: the AMI's")
    tags: dict[str, str] = Field(default_factory=dict, description="tags on instances and volumes")
    endpoint_url: str | None = Field(default=None, description="another EC2 endpoint (tests, emulators)")
    spot_max_price: float | None = Field(default=None, description="the most a spot instance may cost per hour")


class GCPAccelerator(_Reading):
    type: str = Field(description="an accelerator type, e.g. nvidia-l4")
    count: int = Field(default=1, description="how many per instance")


class GCPSection(_Reading):
    """`gcp:` — Compute Engine instances."""

    project: str | None = Field(default=None, description="the project id")
    zones: tuple[str, ...] = Field(default=(), description="zones to launch in, in order")
    image: str = Field(default=DEFAULT_GCP_IMAGE, description="the boot disk's image")
    disk_gb: int = Field(default=50, description="the boot disk's size")
    network: str = Field(default="default", description="a network name or path")
    service_account: str | None = Field(default=None, description="the instances' service account")
    labels: dict[str, str] = Field(default_factory=dict, description="labels on instances and disks")
    accelerators: tuple[GCPAccelerator, ...] = Field(default=(), description="GPUs attached to each instance")
    api_endpoint: str | None = Field(default=None, description="another Compute endpoint (tests, emulators)")
    credentials: Literal["default", "anonymous"] = Field(
        default="default",
        description="default (Application Default Credentials) or anonymous (with an api_endpoint)")


# -- every environment's settings, and one model per cloud ------------------------------


class EnvSettings(_Reading):
    """What every environment's settings hold, whatever its cloud."""

    cloud: str
    instance_types: tuple[str, ...] = Field(
        default=(),
        description="instance types to launch, in order of preference (the file's `instance_type`: a name or a list)")
    pull_policy: str = Field(default="if-missing", description="when images are pulled: if-missing, always or never")
    idle_policy: str = Field(
        default="timeout",
        description="when idle machines are retired: timeout (after idle_timeout) "
                    "or adaptive (when waiting longer costs more than it saves)")
    launch_timeout_s: float = Field(default=300.0, description="seconds a launch may take before it counts as failed")
    boot_timeout_s: float = Field(default=600.0, description="seconds a machine may take to boot")
    bootstrap_timeout_s: float = Field(default=1200.0, description="seconds a machine's set-up may take")
    capacity_block_s: float = Field(
        default=300.0,
        description="seconds a zone and instance type are skipped after the cloud had no capacity there")
    description: str | None = Field(default=None, description="free text for people")
    wait_cost_per_hour: float = Field(
        default=1.0,
        description="what an hour of an execution waiting is worth, in the "
                    "units of price_per_hour (the adaptive idle policy)")
    input_cache_gb: float = Field(default=20.0, description="the size of each machine's input cache; 0 turns it off")
    image_disk_low_percent: float = Field(
        default=15.0,
        description="when a machine's disk has less free than this, images unused for image_keep are removed; 0: never")
    image_keep_s: float = Field(default=7 * 86400.0, description="how long an unused image is kept on a low disk")
    pids_limit: int = Field(default=DEFAULT_PIDS_LIMIT, description="processes per container; 0: no limit")
    container_network: str = Field(default=DEFAULT_NETWORK, description="bridge, or none: no network at all")
    users: str | tuple[str, ...] = Field(
        default=EVERYONE,
        description="who may submit over the API: everyone, admins, or a list of user names")
    datastore: str | dict[str, Any] | None = Field(
        default=None,
        description="where outputs go: a file://, s3:// or gs:// URI or a mapping; unset: the data folder")
    draining: bool = Field(
        default=False,
        description="set by `env rm --drain`: its work finishes, no machine is launched, "
                    "idle ones retire, then the environment is removed")
    runtime: str | None = Field(default=None, description="the runtime on this host where the section names none")
    gpu: str = Field(default="", description="what the API's environment list shows as gpu_spec")
    gpus_per_execution: int = Field(
        default=0,
        description="GPUs each execution asks for when its step's resources.devices (or --gpus) says nothing")

    @field_validator("gpu", mode="before")
    @classmethod
    def _text_only(cls, value: Any) -> Any:
        return value if isinstance(value, str) else ""

    @property
    def zones(self) -> tuple[str | None, ...]:
        """Where machines are launched, in order of preference; (None,): wherever the cloud likes."""
        return (None,)

    @property
    def wanted_runtime(self) -> str:
        """The runtime an environment that runs executions on this host is set to: auto, docker or process."""
        return self.runtime or "auto"

    @property
    def simulated_boot_s(self) -> float | None:
        """The boot time a simulated cloud is set to; None where boots are real (and measured)."""
        return None

    @property
    def login(self) -> SSHSection | None:
        """How vh-orch logs in to the machines (the `ssh:` section); None where it never does."""
        return None


class LocalSettings(EnvSettings):
    cloud: Literal["local"] = "local"
    local: HostSection = Field(default_factory=HostSection, description="the runtime on this host")

    @property
    def wanted_runtime(self) -> str:
        return self.local.runtime or self.runtime or "auto"


class FakeSettings(EnvSettings):
    cloud: Literal["fake"] = "fake"
    fake: FakeSection = Field(default_factory=FakeSection, description="the simulated cloud")

    @property
    def zones(self) -> tuple[str | None, ...]:
        return self.fake.zones or (None,)

    @property
    def wanted_runtime(self) -> str:
        return self.fake.runtime or self.runtime or "auto"

    @property
    def simulated_boot_s(self) -> float | None:
        return self.fake.boot_seconds


class SSHPoolSettings(EnvSettings):
    cloud: Literal["ssh"] = "ssh"
    ssh: SSHSection = Field(default_factory=SSHSection, description="the pool's hosts and how vh-orch logs in")

    @property
    def zones(self) -> tuple[str | None, ...]:
        """A pool's zones are its hosts."""
        return tuple(h.id for h in self.ssh.hosts) or (None,)

    @property
    def login(self) -> SSHSection | None:
        return self.ssh


class VMSettings(EnvSettings):
    """What the clouds that launch VMs share: vh-orch logs in to each over SSH."""

    ssh: SSHSection = Field(default_factory=SSHSection, description="how vh-orch logs in to the VMs")

    @property
    def login(self) -> SSHSection | None:
        return self.ssh


class AWSSettings(VMSettings):
    cloud: Literal["aws"] = "aws"
    aws: AWSSection = Field(default_factory=AWSSection, description="the EC2 instances")

    @property
    def zones(self) -> tuple[str | None, ...]:
        return self.aws.zones or self.aws.subnet_ids or (None,)


class GCPSettings(VMSettings):
    cloud: Literal["gcp"] = "gcp"
    gcp: GCPSection = Field(default_factory=GCPSection, description="the Compute Engine instances")

    @property
    def zones(self) -> tuple[str | None, ...]:
        return self.gcp.zones or (None,)


CLOUD_SETTINGS: tuple[type[EnvSettings], ...] = (LocalSettings, FakeSettings, SSHPoolSettings, AWSSettings,
                                                  GCPSettings)
# The sections an environments file may hold, each under its own key.
SECTIONS: dict[str, type[BaseModel]] = {"local": HostSection, "fake": FakeSection, "ssh": SSHSection,
                                        "aws": AWSSection, "gcp": GCPSection}


class HasSettings(Protocol):
    """An environment as a row, a parsed entry or a driver's spec: its cloud and its settings."""

    @property
    def cloud(self) -> str: ...

    @property
    def settings(self) -> Mapping[str, Any]: ...


@cache
def _by_cloud() -> TypeAdapter[EnvSettings]:
    return TypeAdapter(Annotated[LocalSettings | FakeSettings | SSHPoolSettings | AWSSettings | GCPSettings,
                                 Field(discriminator="cloud")])


# Settings read before, by their JSON: a reconcile pass reads every environment's settings
# several times, and a validation costs about a millisecond. The models are frozen, so one
# object may serve every reader. Cleared when full (environments are few; their edits fewer).
_read: dict[tuple[str, str], EnvSettings] = {}
_read_lock = threading.Lock()
READ_CACHE_SIZE = 256


def env_settings(cloud: str, settings: Mapping[str, Any] | None) -> EnvSettings:
    """The typed settings of an environment of `cloud` (ConfigError when they do not read)."""
    try:
        key = (cloud, json.dumps(settings or {}, sort_keys=True))
    except (TypeError, ValueError):  # not JSON (a parsed file's dates, say): read it every time
        return _validate(cloud, settings)
    found = _read.get(key)
    if found is None:
        found = _validate(cloud, settings)
        with _read_lock:
            if len(_read) >= READ_CACHE_SIZE:
                _read.clear()
            _read[key] = found
    return found


def _validate(cloud: str, settings: Mapping[str, Any] | None) -> EnvSettings:
    try:
        return _by_cloud().validate_python({**(settings or {}), "cloud": cloud})
    except ValidationError as exc:
        raise ConfigError(f"the settings of a {cloud} environment do not read: {exc}") from None


def settings_of(env: HasSettings) -> EnvSettings:
    """The typed settings of an environment (a row, a parsed entry, a driver's spec)."""
    return env_settings(env.cloud, env.settings)
