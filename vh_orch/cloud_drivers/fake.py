"""The `fake` cloud: in-memory instances with a boot time and injectable faults.

One FakeCloud per process (per `region` name) holds the instances; drivers for each
environment see the instances tagged with their cluster and environment. The clock is
injectable, so tests replay hours in milliseconds. Its machines run executions on
this host through the local runtime.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from vh_orch.cloud_drivers.base import (
    PENDING,
    RUNNING,
    TAG_CLUSTER,
    TAG_ENVIRONMENT,
    TAG_MACHINE,
    TERMINATED,
    CloudInstance,
    LaunchSpec,
    machine_id_from_tag,
)
from vh_orch.errors import CapacityError, CloudError, QuotaExceeded, TransientCloudError

Clock = Callable[[], datetime]


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class FakeInstance:
    instance_id: str
    tags: dict[str, str]
    zone: str | None
    instance_type: str | None
    launched_at: datetime
    boot_seconds: float
    state: str = PENDING
    state_reason: str | None = None
    terminated_at: datetime | None = None
    vanish_at: datetime | None = None  # a scheduled spot interruption


@dataclass
class Faults:
    """What the fake cloud should get wrong. Counts are decremented as faults fire."""

    capacity_zones: dict[str, int] = field(default_factory=dict)  # zone -> failures left (-1: forever)
    capacity_types: dict[str, int] = field(default_factory=dict)  # instance type -> failures left
    quota_exceeded: int = 0
    transient_errors: int = 0
    fatal_errors: int = 0
    list_errors: int = 0
    terminate_failures: int = 0
    slow_call_s: float = 0.0
    # Create the instance, then raise: a crash between the cloud call and the database update.
    raise_after_launch: int = 0


class FakeCloud:
    _clouds: dict[str, FakeCloud] = {}
    _lock = threading.Lock()

    def __init__(self, clock: Clock = wall_clock) -> None:
        self.clock = clock
        self.instances: dict[str, FakeInstance] = {}
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self._ids = itertools.count(1)
        self._mutex = threading.RLock()

    @classmethod
    def named(cls, name: str = "default") -> FakeCloud:
        with cls._lock:
            if name not in cls._clouds:
                cls._clouds[name] = FakeCloud()
            return cls._clouds[name]

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._clouds.clear()

    # -- what tests use -----------------------------------------------------------

    def vanish(self, instance_id: str, reason: str = "Server.SpotInstanceTermination") -> None:
        """The instance disappears under us, as a spot interruption does."""
        with self._mutex:
            inst = self.instances[instance_id]
            inst.state = TERMINATED
            inst.state_reason = reason
            inst.terminated_at = self.clock()

    def live(self, environment: str | None = None) -> list[FakeInstance]:
        with self._mutex:
            return [
                i for i in self.instances.values()
                if i.state != TERMINATED and (environment is None or i.tags.get(TAG_ENVIRONMENT) == environment)
            ]

    # -- the cloud API ------------------------------------------------------------------

    def _slow(self) -> None:
        if self.faults.slow_call_s:
            time.sleep(self.faults.slow_call_s)

    @staticmethod
    def _take(counter: dict[str, int], key: str | None) -> bool:
        if key is None or key not in counter or counter[key] == 0:
            return False
        if counter[key] > 0:
            counter[key] -= 1
        return True

    def run_instance(self, spec: LaunchSpec, boot_seconds: float) -> FakeInstance:
        self._slow()
        with self._mutex:
            f = self.faults
            self.calls.append(("launch", str(spec.machine_id)))
            if f.fatal_errors:
                f.fatal_errors -= 1
                raise CloudError("UnauthorizedOperation: the fake cloud refuses this account")
            if f.transient_errors:
                f.transient_errors -= 1
                raise TransientCloudError("RequestLimitExceeded: slow down")
            if f.quota_exceeded:
                f.quota_exceeded -= 1
                raise QuotaExceeded("InstanceLimitExceeded: the fake account's instance limit is reached")
            if self._take(f.capacity_zones, spec.zone):
                raise CapacityError(f"InsufficientInstanceCapacity in {spec.zone}")
            if self._take(f.capacity_types, spec.instance_type):
                raise CapacityError(f"InsufficientInstanceCapacity for {spec.instance_type}")
            instance = FakeInstance(
                instance_id=f"fake-{next(self._ids):06d}",
                tags=spec.all_tags(),
                zone=spec.zone,
                instance_type=spec.instance_type,
                launched_at=self.clock(),
                boot_seconds=boot_seconds,
            )
            self.instances[instance.instance_id] = instance
            if f.raise_after_launch:
                f.raise_after_launch -= 1
                raise TransientCloudError("connection reset after the launch request was sent")
            return instance

    def describe(self, cluster_id: str, environment: str) -> list[FakeInstance]:
        self._slow()
        with self._mutex:
            self.calls.append(("list", environment))
            if self.faults.list_errors:
                self.faults.list_errors -= 1
                raise TransientCloudError("ServiceUnavailable: listing failed")
            now = self.clock()
            out = []
            for inst in self.instances.values():
                if inst.tags.get(TAG_CLUSTER) != cluster_id or inst.tags.get(TAG_ENVIRONMENT) != environment:
                    continue
                if inst.state == PENDING and now >= inst.launched_at + timedelta(seconds=inst.boot_seconds):
                    inst.state = RUNNING
                if inst.vanish_at is not None and inst.state != TERMINATED and now >= inst.vanish_at:
                    self.vanish(inst.instance_id)
                out.append(inst)
            return out

    def terminate(self, instance_ids: list[str]) -> None:
        self._slow()
        with self._mutex:
            self.calls.append(("terminate", ",".join(instance_ids)))
            if self.faults.terminate_failures:
                self.faults.terminate_failures -= 1
                raise TransientCloudError("InternalError: termination failed, try again")
            for instance_id in instance_ids:
                inst = self.instances.get(instance_id)
                if inst is not None and inst.state != TERMINATED:
                    inst.state = TERMINATED
                    inst.state_reason = "terminated on request"
                    inst.terminated_at = self.clock()


class FakeDriver:
    """The CloudDriver of one `fake` environment."""

    def __init__(
        self,
        cloud: FakeCloud,
        cluster_id: str,
        environment: str,
        boot_seconds: float,
        interrupt_after: float | None = None,
        interrupt_count: int = 0,
    ) -> None:
        self.cloud = cloud
        self.cluster_id = cluster_id
        self.environment = environment
        self.boot_seconds = boot_seconds
        # The first `interrupt_count` instances vanish `interrupt_after` seconds after booting.
        self.interrupt_after = interrupt_after
        self.interrupt_left = interrupt_count

    def launch(self, spec: LaunchSpec) -> CloudInstance:
        inst = self.cloud.run_instance(spec, self.boot_seconds)
        if self.interrupt_after is not None and self.interrupt_left > 0:
            self.interrupt_left -= 1
            inst.vanish_at = inst.launched_at + timedelta(seconds=self.boot_seconds + self.interrupt_after)
        return _view(inst)

    def list_instances(self) -> list[CloudInstance]:
        return [_view(i) for i in self.cloud.describe(self.cluster_id, self.environment)]

    def terminate(self, instance_ids: list[str]) -> None:
        self.cloud.terminate(instance_ids)


def _view(inst: FakeInstance) -> CloudInstance:
    return CloudInstance(
        instance_id=inst.instance_id,
        machine_id=machine_id_from_tag(inst.tags.get(TAG_MACHINE)),
        state=inst.state,
        zone=inst.zone,
        instance_type=inst.instance_type,
        address="127.0.0.1",
        launched_at=inst.launched_at,
        state_reason=inst.state_reason,
    )
