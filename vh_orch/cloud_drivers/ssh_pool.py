"""The `ssh` cloud: a pool of servers that already exist.

"Launching" claims a free host and "terminating" releases it; hosts are never powered
off. The claim lives on the host itself, in `<workdir>/held/owner` (cluster id, machine
row id, environment), created with an atomic mkdir: it plays the part of a cloud's
tags, so listing, adoption and orphan handling work as for any cloud. Each host is a
"zone": a host that is unreachable or whose key does not match is blocked for a while
and the next one is tried.
"""

from __future__ import annotations

import logging
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from vh_orch.bootstrap.remote import LABEL_WORKDIR
from vh_orch.bootstrap.runtimes import LABEL_CLUSTER
from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHError, SSHTarget, transport_for
from vh_orch.cloud_drivers.base import LaunchSpec, MachineRef
from vh_orch.cloud_drivers.settings import SSHSection
from vh_orch.errors import CapacityError, TransientCloudError
from vh_orch.values import RUNNING, CloudInstance

log = logging.getLogger(__name__)



class HostKeyRefused(CapacityError):
    """The host's key did not match the pinned one: the host is never used."""


@dataclass(frozen=True)
class PoolHost:
    address: str
    port: int
    host_key: str
    workdir: str

    @property
    def id(self) -> str:
        return f"{self.address}:{self.port}"


@dataclass(frozen=True)
class Claim:
    """What `<workdir>/held/owner` says: which installation's machine row holds the host."""

    cluster_id: str | None
    machine_id: int | None
    environment: str | None
    raw: str

    @classmethod
    def parse(cls, text: str) -> Claim:
        parts = text.split()
        if len(parts) == 3 and parts[1].isdigit():
            return cls(parts[0], int(parts[1]), parts[2], text.strip())
        return cls(None, None, None, text.strip())

    def describe(self) -> str:
        if self.cluster_id is None:
            return f"an unreadable claim ({self.raw[:80]!r})" if self.raw else "a claim with no owner file"
        return f"installation {self.cluster_id} (machine {self.machine_id}, environment {self.environment})"


def pool_hosts(ssh: SSHSection) -> list[PoolHost]:
    return [PoolHost(h.address, h.port, h.host_key, h.workdir or ssh.workdir) for h in ssh.hosts]


class SSHPoolDriver:
    def __init__(self, cluster_id: str, environment: str, ssh: SSHSection) -> None:
        self.cluster_id = cluster_id
        self.environment = environment
        self.user = ssh.user or "root"
        self.key_file = ssh.private_key_file
        self.connect_timeout_s = ssh.connect_timeout
        self.unreachable_s = ssh.unreachable_timeout
        self.hosts = {h.id: h for h in pool_hosts(ssh)}
        self._last_seen: dict[str, tuple[datetime, CloudInstance]] = {}
        self._lock = threading.Lock()

    def target(self, machine: MachineRef) -> SSHTarget:
        return self._target(machine.zone or "")  # a pool machine's zone is its host

    def workdir(self, machine: MachineRef) -> str:
        return self.hosts[machine.zone or ""].workdir

    def _target(self, host_id: str) -> SSHTarget:
        h = self.hosts[host_id]
        return SSHTarget(h.address, h.port, self.user, self.key_file, h.host_key, self.connect_timeout_s)

    def _owner_line(self, machine_id: int) -> str:
        return f"{self.cluster_id} {machine_id} {self.environment}"

    def launch(self, spec: LaunchSpec) -> CloudInstance:
        host = self.hosts.get(spec.zone or "")
        if host is None:
            raise CapacityError(f"no host {spec.zone!r} in the pool")
        held = shlex.quote(f"{host.workdir}/held")
        owner = shlex.quote(self._owner_line(spec.machine_id))
        script = (f"mkdir -p {shlex.quote(host.workdir)} && "
                  f"if mkdir {held} 2>/dev/null; then printf '%s\\n' {owner} > {held}/owner; fi; "
                  f"cat {held}/owner")
        try:
            result = transport_for(self._target(host.id)).run(script, timeout=self.connect_timeout_s + 20)
        except HostKeyMismatch as exc:
            raise HostKeyRefused(str(exc)) from None
        except SSHError as exc:
            raise CapacityError(f"host {host.id} is unreachable: {exc}") from None
        if result.stdout.strip() != self._owner_line(spec.machine_id):
            claim = Claim.parse(result.stdout)
            if claim.cluster_id == self.cluster_id:
                # Ours, on its way out (a machine being released): worth another try soon, not a
                # capacity block of minutes.
                raise TransientCloudError(f"host {host.id} is still held by machine {claim.machine_id} of this "
                                          f"installation", maybe_created=False)
            raise CapacityError(f"host {host.id} is busy: held by {claim.describe()}")
        instance = self._instance(host, spec.machine_id)
        with self._lock:
            self._last_seen[host.id] = (datetime.now(UTC), instance)
        return instance

    def host_for(self, name: str) -> PoolHost | None:
        """The pool host named ADDRESS or ADDRESS:PORT, if this pool has it."""
        return self.hosts.get(name) or self.hosts.get(f"{name}:22")

    def read_claim(self, host: PoolHost) -> Claim | None:
        """Who holds a host (its owner file), or None when nobody does; SSHError if unreachable."""
        out = transport_for(self._target(host.id)).run(
            f"cat {shlex.quote(host.workdir + '/held/owner')} 2>/dev/null || "
            f"test -d {shlex.quote(host.workdir + '/held')} && echo; echo vh-orch-end",
            timeout=self.connect_timeout_s + 10).stdout
        if not out.rstrip().endswith("vh-orch-end"):
            raise SSHError(f"reading the claim on {host.id} was cut short")
        text = out.rstrip()[: -len("vh-orch-end")]
        if not text:
            return None  # no held/ folder at all
        return Claim.parse(text)

    def running_containers(self, host: PoolHost, cluster_id: str) -> list[str]:
        """Names of the running containers of installation cluster_id on the host."""
        result = transport_for(self._target(host.id)).run(
            f"docker ps --filter label={LABEL_CLUSTER}={shlex.quote(cluster_id)} --format '{{{{.Names}}}}'",
            timeout=self.connect_timeout_s + 30)
        if result.code != 0:
            raise SSHError(f"cannot list containers on {host.id}: {result.stderr.strip()}")
        return result.stdout.split()

    def force_release(self, host: PoolHost) -> None:
        """Remove a host's claim whoever holds it (the caller has checked that nobody uses it)."""
        transport_for(self._target(host.id)).run(f"rm -rf {shlex.quote(host.workdir + '/held')}",
                                                 timeout=self.connect_timeout_s + 20)

    def _instance(self, host: PoolHost, machine_id: int) -> CloudInstance:
        return CloudInstance(instance_id=host.id, machine_id=machine_id, state=RUNNING, zone=host.id,
                             address=host.address)

    def list_instances(self) -> list[CloudInstance]:
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(self.hosts)))) as pool:
            found = list(pool.map(self._look, self.hosts.values()))
        return [i for i in found if i is not None]

    def _look(self, host: PoolHost) -> CloudInstance | None:
        now = datetime.now(UTC)
        try:
            # The sentinel tells "not held" (no file) from a read cut short.
            out = transport_for(self._target(host.id)).run(
                f"cat {shlex.quote(host.workdir + '/held/owner')} 2>/dev/null; echo vh-orch-end",
                timeout=self.connect_timeout_s + 10,
            ).stdout.split()
            if not out or out[-1] != "vh-orch-end":
                raise SSHError("the listing was cut short")
            owner = out[:-1]
        except (SSHError, OSError, TimeoutError, EOFError) as exc:
            with self._lock:
                seen = self._last_seen.get(host.id)
            # An unreachable host keeps its machine until unreachable_timeout passes; then it is lost.
            if seen is not None and now - seen[0] < timedelta(seconds=self.unreachable_s):
                log.warning("host %s unreachable (%s); keeping its machine for now", host.id, exc)
                return seen[1]
            return None
        if len(owner) != 3 or owner[0] != self.cluster_id or owner[2] != self.environment:
            with self._lock:
                self._last_seen.pop(host.id, None)
            return None
        try:
            instance = self._instance(host, int(owner[1]))
        except ValueError:
            return None
        with self._lock:
            self._last_seen[host.id] = (now, instance)
        return instance

    def terminate(self, instance_ids: list[str]) -> None:
        for host_id in instance_ids:
            host = self.hosts.get(host_id)
            if host is None:
                continue
            held = shlex.quote(f"{host.workdir}/held")
            mine = shlex.quote(self.cluster_id)
            ours = shlex.quote(f"{host.workdir.rstrip('/')}/{self.cluster_id}")
            # Release only what this installation holds, and leave nothing of it behind: containers
            # a killed daemon did not clean up (found by the cluster label), execution folders.
            script = (f"if grep -q '^'{mine}' ' {held}/owner 2>/dev/null; then "
                      f"docker ps -aq --filter label={LABEL_CLUSTER}={mine} "
                      f"--filter label={shlex.quote(LABEL_WORKDIR + '=' + host.workdir.rstrip('/'))} "
                      f"| xargs -r docker rm -f >/dev/null 2>&1; "
                      f"rm -rf {ours} {held}; fi")
            try:
                transport_for(self._target(host.id)).run(script, timeout=self.connect_timeout_s + 20)
            except SSHError as exc:
                raise TransientCloudError(f"cannot release host {host_id}: {exc}") from None
            with self._lock:
                self._last_seen.pop(host_id, None)

    def expected_gpus(self, instance_type: str | None) -> int | None:
        """A pool's servers have no instance type: their GPUs are found when each is set up."""
        return None
