"""Machines vh-orch logs in to (capabilities: reached_over_ssh): setting them up and keeping them tidy.

A machine in `bootstrapping` is set up over SSH in a thread of its own, once at a time: Docker
checked (or installed), the images its environment's queue needs or used last pulled (its first
executions start without waiting for a pull), and what a killed daemon left there swept. Its
writes go through the store fenced by its environment's lease: a replica that lost the environment
writes nothing, and the new owner sets the machine up. At start, every serving machine is swept;
every few minutes, machines whose disk runs low lose the images nothing used for a while. The
runtime that runs an execution on such a machine (RemoteDockerRuntime) is built here too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from vh_orch import failpoints
from vh_orch.bootstrap.runtimes import RuntimeFailure
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.errors import ConfigError, LeaseLost
from vh_orch.orchestrator.drivers import Drivers
from vh_orch.orchestrator.models import Environment, Machine
from vh_orch.orchestrator.store import Store
from vh_orch.values import ExecutionStatus

if TYPE_CHECKING:
    from vh_orch.bootstrap.gpus import GPU
    from vh_orch.bootstrap.remote import RemoteDockerRuntime
    from vh_orch.bootstrap.ssh import SSHTransport

log = logging.getLogger(__name__)

S = ExecutionStatus
PREPULL_IMAGES = 3  # images a new machine pulls while it is set up
PREPULL_TIMEOUT_S = 900  # for each of them
SERVING = ("ready", "busy")  # machines that are set up: swept and tidied


class MachineSetup:
    def __init__(self, store: Store, drivers: Drivers, cluster_id: str, wake: Callable[[], object]) -> None:
        self.store = store  # for reads; writes about a machine go through its environment's fenced store
        self.drivers = drivers
        self.cluster_id = cluster_id
        self._wake = wake  # a pass now: a machine set up (or failed) is news for the reconciler
        self._bootstrapping: set[int] = set()
        self._lock = threading.Lock()

    def remote_runtime(self, env: Environment, machine: Machine) -> RemoteDockerRuntime:
        from vh_orch.bootstrap.remote import RemoteDockerRuntime
        from vh_orch.bootstrap.ssh import transport_for

        driver = self.drivers.ssh_machines(env)
        return RemoteDockerRuntime(transport_for(driver.target(machine)), driver.workdir(machine),
                                   direct_data=capabilities(env.cloud).direct_data, machine_id=machine.id)

    def bootstrap(self, env: Environment, machine: Machine, store: Store) -> None:
        """Set a machine up over SSH in a thread of its own (once at a time per machine), writing
        through `store`, fenced by its environment's lease."""
        assert machine.id is not None
        with self._lock:
            if machine.id in self._bootstrapping:
                return
            self._bootstrapping.add(machine.id)
        thread = threading.Thread(target=self._bootstrap, args=(env, machine, store), name=f"bootstrap-{machine.id}",
                                  daemon=True)
        thread.start()

    def _bootstrap(self, env: Environment, machine: Machine, store: Store) -> None:
        from vh_orch.bootstrap.docker_host import BootstrapError, GPUSetupError, bootstrap
        from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHError, transport_for

        machine_id = machine.id
        assert machine_id is not None
        try:
            driver = self.drivers.ssh_machines(env)
            transport = transport_for(driver.target(machine))
            settings = settings_of(env)
            cloud = self.drivers.driver(env)
            # The GPUs its instance type has: a machine that shows none then lacks its driver.
            expected_gpus = cloud.expected_gpus(machine.instance_type) if cloud is not None else None

            def step(name: str) -> None:
                store.set_bootstrap_step(machine_id, name)
                failpoints.hit("bootstrap-step")

            gpus = bootstrap(transport, driver.workdir(machine),
                             step,
                             deadline_s=settings.bootstrap_timeout_s,
                             install_command=settings.login.install_docker_command if settings.login else None,
                             first_boot=capabilities(env.cloud).first_boot,
                             expected_gpus=expected_gpus,
                             gpu_setup_command=settings.login.gpu_setup_command if settings.login else None)
            self._record_gpus(machine_id, gpus, store)
            self._pull_likely_images(env, transport, step)
            # A host this installation used before may hold what a killed daemon left there.
            self.sweep(env, machine)
            store.advance_machine(machine_id, "ready", "ready", None)
        except LeaseLost as exc:
            log.warning("machine %s: %s; its new owner sets it up", machine_id, exc)
        except HostKeyMismatch as exc:
            log.error("machine %s: %s; it will never be used", machine_id, exc)
            _quietly(store.bootstrap_failed, machine_id, str(exc), never_use=True)
        except ConfigError as exc:
            # Every machine of this environment would fail the same way (no address, a broken
            # endpoint resolver): stop launching until the environment is fixed, end this one.
            log.error("machine %s cannot be reached: %s", machine_id, exc)
            _quietly(store.record_launch_failure, env.id, "fatal", machine.zone, machine.instance_type,
                     f"machine {machine_id} cannot be reached: {exc}")
            _quietly(store.bootstrap_failed, machine_id, f"cannot be reached: {exc}", never_use=False)
        except GPUSetupError as exc:
            log.warning("machine %s: bootstrap failed: %s", machine_id, exc)
            if exc.gpus:  # what it has, shown beside why containers cannot have them
                _quietly(self._record_gpus, machine_id, exc.gpus, store)
            if exc.every_machine and capabilities(env.cloud).launches_vms:
                # Its image lacks the driver: every GPU VM launched from it would boot, cost and fail alike.
                _quietly(store.record_launch_failure, env.id, "fatal", machine.zone, machine.instance_type,
                         f"machine {machine_id}: {exc}")
            _quietly(store.bootstrap_failed, machine_id, f"bootstrap failed: {exc}", never_use=False)
        except (BootstrapError, SSHError) as exc:
            log.warning("machine %s: bootstrap failed: %s", machine_id, exc)
            _quietly(store.bootstrap_failed, machine_id, f"bootstrap failed: {exc}", never_use=False)
        except Exception as exc:
            log.exception("machine %s: bootstrap failed", machine_id)
            _quietly(store.bootstrap_failed, machine_id, f"bootstrap failed: {exc}", never_use=False)
        finally:
            with self._lock:
                self._bootstrapping.discard(machine_id)
            self._wake()

    @staticmethod
    def _record_gpus(machine_id: int, gpus: list[GPU], store: Store) -> None:
        """The GPUs its bootstrap found (nvidia-smi), recorded before it serves: the dispatcher gives them out."""
        from vh_orch.bootstrap.gpu_inventory import summary

        count, model = summary(gpus)
        store.record_gpus(machine_id, count, model)
        if count:
            log.info("machine %s has %d GPU(s): %s", machine_id, count, model)

    def _pull_likely_images(self, env: Environment, transport: SSHTransport, step: Callable[[str], None]) -> None:
        """A new machine pulls the images its environment's queue needs, or used last, before it is ready:
        its first executions start without waiting for a pull (never with pull_policy: never)."""
        from vh_orch.bootstrap.remote import pull_images

        assert env.id is not None
        if settings_of(env).pull_policy == "never":
            return
        images = self.store.recent_images(env.id, limit=PREPULL_IMAGES)
        if images:
            step("pulling images")
            failed = pull_images(transport, images, "if-missing", timeout_s=PREPULL_TIMEOUT_S)
            log.info("%s: pulled %d of the environment's recent images%s", transport.target.label,
                     len(images) - len(failed), f" ({', '.join(failed)} failed)" if failed else "")

    def _serving(self, environment_ids: set[int] | None = None) -> list[tuple[Environment, Machine]]:
        """The set-up machines reached over SSH (of the given environments, or of all)."""
        envs = {e.id: e for e in self.store.active_environments()
                if environment_ids is None or e.id in environment_ids}
        found = []
        for machine in self.store.fleet():
            env = envs.get(machine.environment_id)
            if env is not None and capabilities(env.cloud).reached_over_ssh and machine.state in SERVING:
                found.append((env, machine))
        return found

    def sweep_all(self) -> None:
        """At start: sweep every set-up machine, each in a thread of its own (see sweep)."""
        for env, machine in self._serving():
            threading.Thread(target=self.sweep, args=(env, machine), daemon=True,
                             name=f"sweep-{machine.id}").start()

    def sweep(self, env: Environment, machine: Machine) -> None:
        """Remove the containers and folders of executions that no longer run on a remote machine."""
        from vh_orch.bootstrap.ssh import SSHError

        def live() -> set[tuple[int, int]]:
            return {(e.id, e.attempt) for e in self.store.executions_in([S.STARTED, S.STOPPING]) if e.id is not None}

        try:
            ended = self.remote_runtime(env, machine).sweep(self.cluster_id, live)
        except (SSHError, ConfigError, OSError) as exc:
            log.info("machine %s: looking for leftovers failed: %s", machine.id, exc)
            return
        if ended:
            log.info("machine %s: removed what executions %s left behind", machine.id, ended)

    def tidy_images(self, environment_ids: set[int]) -> None:
        """On the remote machines of the given environments (those this replica holds): when a machine's
        disk runs low (less than `image_disk_low_percent` free, default 15), remove the images vh-orch ran
        there that nothing used for `image_keep` (default 7d)."""
        from vh_orch.bootstrap.ssh import SSHError

        for env, machine in self._serving(environment_ids):
            settings = settings_of(env)
            if not settings.image_disk_low_percent:
                continue
            try:
                removed = self.remote_runtime(env, machine).tidy_images(settings.image_keep_s,
                                                                        settings.image_disk_low_percent)
            except (SSHError, ConfigError, OSError, RuntimeFailure) as exc:
                log.info("machine %s: tidying images failed: %s", machine.id, exc)
                continue
            if removed:
                log.info("machine %s: its disk is low; removed images unused for a while: %s", machine.id,
                         ", ".join(removed))


def _quietly(write: Callable[..., object], *args: object, **kwargs: object) -> None:
    """A fenced write whose lease may be gone: then the new owner decides, nothing is written."""
    try:
        write(*args, **kwargs)
    except LeaseLost as exc:
        log.warning("%s", exc)
