"""What each cloud's machines are and can do, declared once, beside the drivers.

The rest of vh-orch asks these (`capabilities(env.cloud).reached_over_ssh`), never a cloud's
name: a new cloud declares what it can do here, and every caller follows. `local` is a cloud
like the others; its one machine happens to be this host.
"""

from __future__ import annotations

from dataclasses import dataclass

from vh_orch.errors import ConfigError


@dataclass(frozen=True)
class Capabilities:
    # The environment's one machine is the host the daemon runs on: always there, never launched,
    # listed or retired (no driver), and it costs nothing.
    machine_is_this_host: bool = False
    # Executions run on the daemon's own host, in Docker or as plain processes (the environment's
    # `runtime`), whatever its machines are.
    runs_on_this_host: bool = False
    # vh-orch logs in to the machines over SSH: executions run there, leftovers are swept there.
    reached_over_ssh: bool = False
    # A new machine is set up (bootstrapped) before it serves: Docker checked or installed.
    needs_bootstrap: bool = False
    # Machines are new VMs launched from an instance type in a region, reached with the
    # environment's SSH key.
    launches_vms: bool = False
    # Machines are new VMs that set themselves up at first boot (cloud-init, a startup script);
    # their bootstrap waits for that to finish.
    first_boot: bool = False
    # Machines move inputs and outputs to and from object stores themselves, through signed URLs.
    direct_data: bool = False
    # Machines are existing servers of a pool: each zone is one host, which serves one machine at
    # a time and is claimed on the host itself.
    host_pool: bool = False
    # Machines cost their environment's price per hour while they live.
    billed: bool = True

    @property
    def lists_instances(self) -> bool:
        """Whether a driver lists the environment's instances (every cloud but this host)."""
        return not self.machine_is_this_host


CAPABILITIES: dict[str, Capabilities] = {
    "local": Capabilities(machine_is_this_host=True, runs_on_this_host=True, billed=False),
    "ssh": Capabilities(reached_over_ssh=True, needs_bootstrap=True, host_pool=True),
    "aws": Capabilities(reached_over_ssh=True, needs_bootstrap=True, launches_vms=True, first_boot=True,
                         direct_data=True),
    "gcp": Capabilities(reached_over_ssh=True, needs_bootstrap=True, launches_vms=True, first_boot=True,
                         direct_data=True),
    # In-memory instances (tests, simulations); what runs on them runs here.
    "fake": Capabilities(runs_on_this_host=True),
}


def capabilities(cloud: str) -> Capabilities:
    """The capabilities of a cloud (ConfigError for a cloud vh-orch does not know)."""
    try:
        return CAPABILITIES[cloud]
    except KeyError:
        raise ConfigError(f"{cloud!r} is not a known cloud; use one of {', '.join(CAPABILITIES)}") from None
