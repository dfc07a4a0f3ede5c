"""The `fake` cloud: instances with a boot time and injectable faults.

One FakeCloud per process (per `region` name) holds the instances in memory; drivers for
each environment see the instances tagged with their cluster and environment. The clock is
injectable, so tests replay hours in milliseconds. Its machines run executions on
this host through the local runtime.

With a state file (the environment setting `fake: {state_file: /abs/path.json}`) the
instances live in that JSON file instead, so every process naming the same file sees the
same cloud, as daemon replicas sharing one database see one real cloud. Each call locks
the file, reads it, acts and writes it back. Faults and `calls` stay per process.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from vh_orch.cloud_drivers.base import (
    TAG_CLUSTER,
    TAG_ENVIRONMENT,
    TAG_MACHINE,
    LaunchSpec,
    machine_id_from_tag,
)
from vh_orch.errors import CapacityError, CloudError, QuotaExceeded, TransientCloudError
from vh_orch.values import PENDING, RUNNING, TERMINATED, CloudInstance

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
    launch_token: str | None = None  # the idempotency token the launch carried (kept for checks, not enforced)


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

    def __init__(self, clock: Clock = wall_clock, state_file: str | Path | None = None) -> None:
        self.clock = clock
        # With a state file, `instances` is the copy the last call read; the file is the truth.
        self.instances: dict[str, FakeInstance] = {}
        self.faults = Faults()
        self.calls: list[tuple[str, str]] = []
        self._next_id = 1
        self._mutex = threading.RLock()
        self._state = _StateFile(Path(state_file)) if state_file is not None else None
        self._in_session = False

    @classmethod
    def named(cls, name: str = "default", state_file: str | None = None) -> FakeCloud:
        """The process's cloud of this name; with a state file, the one cloud of that file."""
        key = f"file:{os.path.abspath(state_file)}" if state_file else name
        with cls._lock:
            if key not in cls._clouds:
                cls._clouds[key] = FakeCloud(state_file=state_file)
            return cls._clouds[key]

    @classmethod
    def reset(cls) -> None:
        with cls._lock:
            cls._clouds.clear()

    @contextmanager
    def _session(self) -> Iterator[None]:
        """One call's view of the instances: in memory, or locked, read and written back."""
        with self._mutex:
            # A nested call would flock the file again through a new descriptor and wait on itself.
            if self._state is None or self._in_session:
                yield
                return
            with self._state.locked():
                self._next_id, self.instances = self._state.load()
                self._in_session = True
                try:
                    yield
                finally:
                    self._in_session = False
                    # Also after a raise: a fault may fire after the instance was made.
                    self._state.save(self._next_id, self.instances)

    # -- what tests use -----------------------------------------------------------

    def vanish(self, instance_id: str, reason: str = "Server.SpotInstanceTermination") -> None:
        """The instance disappears under us, as a spot interruption does."""
        with self._session():
            self._vanish(self.instances[instance_id], reason)

    def _vanish(self, inst: FakeInstance, reason: str = "Server.SpotInstanceTermination") -> None:
        inst.state = TERMINATED
        inst.state_reason = reason
        inst.terminated_at = self.clock()

    def live(self, environment: str | None = None) -> list[FakeInstance]:
        with self._session():
            return [
                i for i in self.instances.values()
                if i.state != TERMINATED and (environment is None or i.tags.get(TAG_ENVIRONMENT) == environment)
            ]

    def launched(self) -> list[FakeInstance]:
        """Every instance ever launched, terminated ones included, oldest first."""
        with self._session():
            return list(self.instances.values())

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

    def run_instance(self, spec: LaunchSpec, boot_seconds: float, vanish_after: float | None = None) -> FakeInstance:
        """Launch one instance; with `vanish_after`, it is interrupted that many seconds after booting."""
        self._slow()
        with self._session():
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
            now = self.clock()
            instance = FakeInstance(
                instance_id=f"fake-{self._next_id:06d}",
                tags=spec.all_tags(),
                zone=spec.zone,
                instance_type=spec.instance_type,
                launched_at=now,
                boot_seconds=boot_seconds,
                launch_token=spec.launch_token,
            )
            self._next_id += 1
            if vanish_after is not None:
                instance.vanish_at = now + timedelta(seconds=boot_seconds + vanish_after)
            self.instances[instance.instance_id] = instance
            if f.raise_after_launch:
                f.raise_after_launch -= 1
                raise TransientCloudError("connection reset after the launch request was sent")
            return instance

    def describe(self, cluster_id: str, environment: str) -> list[FakeInstance]:
        self._slow()
        with self._session():
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
                    self._vanish(inst)
                out.append(inst)
            return out

    def terminate(self, instance_ids: list[str]) -> None:
        self._slow()
        with self._session():
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


_TIMES = ("launched_at", "terminated_at", "vanish_at")


class _StateFile:
    """A fake cloud's instances in a JSON file, shared by every process that names it.

    Callers hold `locked()` (an exclusive flock on a sibling `.lock` file, which is never
    replaced, unlike the state file) around a load and a save.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock_path = path.with_name(path.name + ".lock")
        self._text: str | None = None  # what the last load read, to skip writing an unchanged state

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def load(self) -> tuple[int, dict[str, FakeInstance]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            text = ""
        self._text = text
        if not text.strip():
            return 1, {}
        try:
            data = json.loads(text)
            instances = [_instance_from_json(raw) for raw in data["instances"]]
            return int(data["next_id"]), {i.instance_id: i for i in instances}
        except (ValueError, KeyError, TypeError) as exc:
            raise CloudError(f"the fake cloud's state file {self.path} is unreadable ({exc}); "
                             "delete it to start an empty fake cloud") from None

    def save(self, next_id: int, instances: dict[str, FakeInstance]) -> None:
        text = json.dumps({"next_id": next_id, "instances": [_instance_to_json(i) for i in instances.values()]},
                          indent=1)
        if text == self._text:
            return
        # No fsync: the file only has to survive other processes, not a power cut.
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._text = text


def _instance_to_json(inst: FakeInstance) -> dict[str, Any]:
    raw = dataclasses.asdict(inst)
    for key in _TIMES:
        if raw[key] is not None:
            raw[key] = raw[key].isoformat()
    return raw


def _instance_from_json(raw: dict[str, Any]) -> FakeInstance:
    raw = dict(raw)
    for key in _TIMES:
        if raw.get(key) is not None:
            raw[key] = datetime.fromisoformat(raw[key])
    return FakeInstance(**raw)


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
        gpus: int | None = None,
    ) -> None:
        self.cloud = cloud
        self.cluster_id = cluster_id
        self.environment = environment
        self.boot_seconds = boot_seconds
        # The first `interrupt_count` instances vanish `interrupt_after` seconds after booting.
        self.interrupt_after = interrupt_after
        self.interrupt_left = interrupt_count
        self.gpus = gpus  # what every instance type of the environment is said to have

    def launch(self, spec: LaunchSpec) -> CloudInstance:
        vanish_after = None
        if self.interrupt_after is not None and self.interrupt_left > 0:
            vanish_after = self.interrupt_after
        inst = self.cloud.run_instance(spec, self.boot_seconds, vanish_after)
        if vanish_after is not None:
            self.interrupt_left -= 1
        return _view(inst)

    def list_instances(self) -> list[CloudInstance]:
        return [_view(i) for i in self.cloud.describe(self.cluster_id, self.environment)]

    def terminate(self, instance_ids: list[str]) -> None:
        self.cloud.terminate(instance_ids)

    def expected_gpus(self, instance_type: str | None) -> int | None:
        return self.gpus


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
