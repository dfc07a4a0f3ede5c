"""SSH pool hosts as an operator sees them: who holds one, and releasing a claim nobody uses.

A host is claimed by `<workdir>/held/owner` (see cloud_drivers/ssh_pool.py). The daemon
releases its own claims when it retires a machine; a claim whose owner is gone (its
daemon's database deleted, a machine row pruned) blocks the host until someone releases
it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.models import LaunchFailure
from vh_orch.orchestrator.store import Store


BUSY_MARK = " is busy: held by "


@dataclass(frozen=True)
class BusyHost:
    environment: str
    host: str
    held_by: str
    seen_at: datetime


def busy_hosts(store: Store) -> list[BusyHost]:
    """Pool hosts another holder kept this installation from claiming, as the daemon last saw them:
    the latest launch failure of each host says `busy: held by ...`, and no live machine of ours
    has claimed it since."""
    ours = {(m.environment_id, m.zone) for m in store.fleet() if m.state != "requested"}  # claimed, not trying
    found = []
    for env in store.active_environments():
        if not capabilities(env.cloud).host_pool:
            continue
        latest: dict[str, LaunchFailure] = {}
        for failure in store.recent_failures(env.id, limit=200):  # type: ignore[arg-type]
            if failure.zone:
                latest[failure.zone] = failure
        for zone, failure in sorted(latest.items()):
            if (env.id, zone) not in ours and BUSY_MARK in failure.message:
                found.append(BusyHost(env.name, zone, failure.message.split(BUSY_MARK, 1)[1], failure.time))
    return found


@dataclass(frozen=True)
class Released:
    host: str
    environment: str
    message: str


def release_host(store: Store, name: str, force: bool) -> list[Released]:
    """Release the claim on the pool host NAME (ADDRESS or ADDRESS:PORT) in every SSH environment
    that lists it. Refused (UserInputError, nothing changed) when the claim belongs to a live
    machine of this installation, or to another installation unless `force`, and even then
    while that installation's containers still run on the host."""
    from vh_orch.bootstrap.ssh import SSHError
    from vh_orch.cloud_drivers import make_driver
    from vh_orch.cloud_drivers.ssh_pool import SSHPoolDriver
    from vh_orch.orchestrator.drivers import driver_spec

    cluster = store.cluster_id()
    found = []
    for env in store.active_environments():
        if not capabilities(env.cloud).host_pool:
            continue
        driver = make_driver(driver_spec(env), cluster)
        assert isinstance(driver, SSHPoolDriver), env.cloud  # the one driver of a host pool
        host = driver.host_for(name)
        if host is not None:
            found.append((env.name, driver, host))
    if not found:
        raise UserInputError(f"no SSH pool environment has a host {name!r}: give ADDRESS or ADDRESS:PORT as in "
                             f"the environment's ssh.hosts (see `vh-orch env show ENV`)")
    live = {m.id: m for m in store.fleet()}
    done = []
    for env_name, driver, host in found:
        try:
            claim = driver.read_claim(host)
            if claim is None:
                done.append(Released(host.id, env_name, f"host {host.id} ({env_name}) is not held by anyone"))
                continue
            if claim.cluster_id == cluster:
                machine = live.get(claim.machine_id)
                if machine is not None:
                    raise UserInputError(
                        f"host {host.id} is held by machine {machine.id} of this installation, which is "
                        f"{machine.state}: it is released when that machine is retired (idle timeout, "
                        f"`vh-orch env rm {env_name} --drain`)")
                driver.terminate([host.id])  # our own release: also ends our leftovers there
                done.append(Released(host.id, env_name, f"released host {host.id} ({env_name}): machine "
                                                        f"{claim.machine_id} of this installation is gone"))
                continue
            if not force:
                raise UserInputError(
                    f"host {host.id} is held by {claim.describe()}, not by this installation; if that "
                    f"installation is gone (its database deleted), release it with "
                    f"`vh-orch machine release {name} --force`")
            if claim.cluster_id is not None:
                running = driver.running_containers(host, claim.cluster_id)
                if running:
                    raise UserInputError(
                        f"host {host.id} is held by {claim.describe()}, whose containers still run there "
                        f"({', '.join(running[:5])}); not released: stop them first")
            driver.force_release(host)
            done.append(Released(host.id, env_name, f"released host {host.id} ({env_name}), held by "
                                                    f"{claim.describe()}"))
        except SSHError as exc:
            raise UserInputError(f"cannot reach host {host.id} ({env_name}): {exc}") from None
    return done
