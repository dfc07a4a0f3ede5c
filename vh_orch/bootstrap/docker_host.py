"""Bootstrap a machine over SSH, in named steps: waiting for SSH → (waiting for
the first-boot setup, on a new cloud VM) → checking Docker → installing Docker → checking
GPUs (→ setting up the NVIDIA container toolkit → checking GPUs in a container) → ready.

Idempotent: a marker with the bootstrap version in the machine's workdir means an
unchanged machine is not set up twice. Every step has a deadline.

A machine whose nvidia-smi reports GPUs is ready only once a container started with
`--gpus all` sees them (setup_gpus); one without GPUs costs one nvidia-smi call.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

from vh_orch.bootstrap.gpu_inventory import INVENTORY_TIMEOUT_S, remote_inventory_command
from vh_orch.bootstrap.gpus import GPU, parse_inventory
from vh_orch.bootstrap.ssh import HostKeyMismatch, RunResult, SSHError, SSHTransport

BOOTSTRAP_VERSION = "1"
DEFAULT_INSTALL = ("if command -v apt-get >/dev/null; then export DEBIAN_FRONTEND=noninteractive; "
                   "apt-get update -qq && apt-get install -y -qq docker.io; "
                   "else echo 'no apt-get: set ssh.install_docker_command' >&2; exit 1; fi; "
                   "(systemctl enable --now docker 2>/dev/null || service docker start 2>/dev/null || true)")

# -- GPUs -------------------------------------------------------------------------------
# Docker hands GPUs to containers (`--gpus`) through nvidia-container-toolkit: its runtime, or
# its hook on PATH, which Docker calls for `--gpus` even where the runtime is not registered.
NVIDIA_RUNTIME_CHECK = ("docker info --format '{{json .Runtimes}}' 2>/dev/null | grep -q '\"nvidia\"' || "
                        "command -v nvidia-container-runtime-hook >/dev/null")
# The toolkit from the image's package sources (AWS Deep Learning AMIs and GCE's common-cu images
# carry it, or NVIDIA's repository), registered with Docker, which restarts. `ssh.gpu_setup_command`
# replaces it.
GPU_SETUP = ("if ! command -v nvidia-ctk >/dev/null; then "
             "if command -v apt-get >/dev/null; then export DEBIAN_FRONTEND=noninteractive; "
             "apt-get update -qq && apt-get install -y -qq nvidia-container-toolkit || exit 1; "
             "elif command -v dnf >/dev/null; then dnf install -y -q nvidia-container-toolkit || exit 1; "
             "else echo 'neither apt-get nor dnf: set ssh.gpu_setup_command' >&2; exit 1; fi; fi; "
             "nvidia-ctk runtime configure --runtime=docker && "
             "(systemctl restart docker 2>/dev/null || service docker restart)")
# What `docker run --gpus all` runs nvidia-smi in: an image made on the machine from its own files,
# the loader and C library its nvidia-smi links (the toolkit mounts nvidia-smi and the driver's
# libraries in as the container starts) and the files that tell the toolkit where libraries go.
# No registry, no pull, a few MB, made once; any other image may lack a C library or be absent.
GPU_CHECK_IMAGE = "vh-orch/gpu-check:1"
GPU_CHECK_BUILD = (
    f"docker image inspect {GPU_CHECK_IMAGE} >/dev/null 2>&1 || {{ "
    "libs=$(ldd \"$(command -v nvidia-smi)\" 2>/dev/null | "
    "awk '$2 == \"=>\" && $3 ~ /^\\// {print $3} $1 ~ /^\\// {print $1}'); "
    "tar -chf - $libs /etc/ld.so.conf /etc/ld.so.conf.d /etc/debian_version 2>/dev/null | "
    f"docker import -m 'vh-orch: nvidia-smi in a container' - {GPU_CHECK_IMAGE} >/dev/null; }}")
GPU_CHECK_RUN = (f"docker run --rm --pull never --network none --gpus all -e NVIDIA_DRIVER_CAPABILITIES=utility "
                 f"{GPU_CHECK_IMAGE} nvidia-smi -L")
# A new cloud VM's image may still be installing its driver at first boot (GCE's common-cu images):
# a VM whose instance type has GPUs waits this long for nvidia-smi before it counts as driverless.
DRIVER_WAIT_S = 300.0
DRIVER_IMAGES = "AWS Deep Learning AMIs, GCE common-cu* images"
NO_NVIDIA_SMI = "nvidia-smi is not installed"

# A new cloud VM sets itself up at first boot (cloud-init user-data on AWS, a startup
# script on GCP; see cloud_drivers/vm.py), then writes FIRST_BOOT_DONE.
FIRST_BOOT_DONE = "/var/lib/vh-orch-first-boot-done"
FIRST_BOOT_WAIT = ("if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null || true; fi; "
                   "if command -v google_metadata_script_runner >/dev/null; then "
                   f"while [ ! -f {FIRST_BOOT_DONE} ]; do sleep 2; done; fi; true")

# Containers must never reach a cloud VM's instance metadata service (its credentials, its startup
# script with our host key): a rule in DOCKER-USER, the chain Docker leaves to its operator and
# jumps to for every container's forwarded packet (the host's own requests never pass it). It is
# added after Docker starts, by a systemd drop-in whenever dockerd (re)starts (a reboot empties
# the tables), and again at each bootstrap check. REJECT, not DROP: a client that probes the
# service fails at once instead of waiting out its timeouts.
METADATA_ADDRESS = "169.254.169.254/32"
METADATA_RULE = f"DOCKER-USER -d {METADATA_ADDRESS} -j REJECT"
# Idempotent, and safe under `set -e`. Docker keeps a DOCKER-USER chain it finds (and jumps to it).
BLOCK_METADATA = (f"iptables -N DOCKER-USER 2>/dev/null || true; iptables -C {METADATA_RULE} 2>/dev/null || "
                  f"iptables -I {METADATA_RULE}")
METADATA_DROPIN_PATH = "/etc/systemd/system/docker.service.d/vh-orch-metadata.conf"
METADATA_DROPIN = f"[Service]\nExecStartPost=/bin/sh -c '{BLOCK_METADATA}'\n"

Step = Callable[[str], None]


class BootstrapError(Exception):
    """Bootstrap failed or missed a deadline; the message is the machine's reason."""


class GPUSetupError(BootstrapError):
    """The machine's GPUs cannot reach containers; the message says what is missing.

    every_machine: its image lacks it (no nvidia-smi at all on an instance type with GPUs), so
    every machine launched from that image would fail the same way. gpus: those nvidia-smi listed."""

    def __init__(self, message: str, every_machine: bool = False, gpus: list[GPU] | None = None) -> None:
        super().__init__(message)
        self.every_machine = every_machine
        self.gpus = gpus or []


@dataclass(frozen=True)
class GPUInventory:
    """What nvidia-smi reported: the GPUs, or why there are none (not installed, or its error)."""

    gpus: list[GPU]
    problem: str | None = None


def _sudo(user: str, command: str) -> str:
    return command if user == "root" else f"sudo -n sh -c {shlex.quote(command)}"


def bootstrap(
    transport: SSHTransport,
    workdir: str,
    on_step: Step,
    deadline_s: float = 1200.0,
    install_command: str | None = None,
    first_boot: bool = False,
    expected_gpus: int | None = None,
    gpu_setup_command: str | None = None,
) -> list[GPU]:
    """Make sure Docker answers on the machine, and gives containers its GPUs if it has any
    (setup_gpus); returns the GPUs nvidia-smi reported. Raises HostKeyMismatch or BootstrapError.

    first_boot: a new cloud VM, whose first-boot setup may still be installing Docker and
    our host key; wait for it to finish before looking (and never race it for the
    package manager). Its containers are kept from the instance metadata service (BLOCK_METADATA),
    at every bootstrap: a machine where that fails is never used.
    expected_gpus: the GPUs its instance type has (None: unknown), gpu_setup_command: see setup_gpus."""
    end = time.monotonic() + deadline_s
    user = transport.target.user
    marker = shlex.quote(f"{workdir}/bootstrap-version")

    on_step("waiting for SSH")
    last: Exception | None = None
    while True:
        try:
            transport.run("true", timeout=30)
            break
        except HostKeyMismatch as exc:
            # A new VM may show the key its image made until its first-boot script installs
            # ours; nothing is sent to it meanwhile (the key is checked before we log in).
            if not first_boot or time.monotonic() > end:
                raise
            last = exc
            time.sleep(2)
        except SSHError as exc:
            last = exc
            if time.monotonic() > end:
                raise BootstrapError(f"SSH did not answer within {deadline_s:g} s: {last}") from None
            time.sleep(2)

    if first_boot:
        on_step("waiting for the first-boot setup")
        result = transport.run(FIRST_BOOT_WAIT, timeout=max(1.0, end - time.monotonic()))
        if result.code != 0:
            raise BootstrapError("the first-boot setup (cloud-init or startup script) did not finish")

    on_step("checking Docker")
    check = transport.run(f"cat {marker} 2>/dev/null; echo; {_sudo(user, 'docker info --format {{.ServerVersion}}')}",
                          timeout=60)
    lines = check.stdout.splitlines()
    if check.code == 0 and lines and lines[0].strip() == BOOTSTRAP_VERSION:
        gpus = setup_gpus(transport, on_step, end, expected_gpus, gpu_setup_command)
        if first_boot:
            _block_metadata(transport, user)
        on_step("ready")
        return gpus
    if transport.run("command -v docker", timeout=30).code != 0:
        on_step("installing Docker")
        result = transport.run(_sudo(user, install_command or DEFAULT_INSTALL),
                               timeout=max(1.0, end - time.monotonic()))
        if result.code != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BootstrapError(f"installing Docker failed (exit {result.code}): {tail[0]}")

    on_step("waiting for Docker")
    _wait_for_docker(transport, end, deadline_s)
    gpus = setup_gpus(transport, on_step, end, expected_gpus, gpu_setup_command)
    if first_boot:
        _block_metadata(transport, user)
    transport.run(f"mkdir -p {shlex.quote(workdir)} && echo {BOOTSTRAP_VERSION} > {marker}", timeout=30)
    on_step("ready")
    return gpus


def _wait_for_docker(transport: SSHTransport, end: float, deadline_s: float) -> None:
    while transport.run(_sudo(transport.target.user, "docker info >/dev/null 2>&1"), timeout=60).code != 0:
        if time.monotonic() > end:
            raise BootstrapError(f"Docker did not answer within {deadline_s:g} s")
        time.sleep(2)


def _tail(result: RunResult) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return lines[-1][:500] if lines else "no output"


def _docker_error(result: RunResult) -> str:
    """The daemon's own word (`docker: Error response from daemon: ...`), not the help hint after it."""
    said = [line for line in result.stderr.splitlines() if line.startswith("docker: ")]
    return said[-1][:500] if said else _tail(result)


def read_gpus(transport: SSHTransport) -> GPUInventory:
    """The machine's NVIDIA GPUs (INVENTORY_COMMAND); absent or failing nvidia-smi: none, and why."""
    result = transport.run(remote_inventory_command(), timeout=INVENTORY_TIMEOUT_S)
    if result.code == 127:
        return GPUInventory([], NO_NVIDIA_SMI)
    if result.code != 0:
        return GPUInventory([], f"nvidia-smi failed (exit {result.code}): {_tail(result)}")
    return GPUInventory(parse_inventory(result.stdout))


def setup_gpus(transport: SSHTransport, on_step: Step, end: float, expected: int | None = None,
               setup_command: str | None = None, driver_wait_s: float = DRIVER_WAIT_S) -> list[GPU]:
    """Make sure containers get the machine's GPUs: where nvidia-smi reports some and Docker has no
    NVIDIA runtime, nvidia-container-toolkit is set up (GPU_SETUP, or `setup_command`); then a
    container started with `--gpus all` must list them. Returns the GPUs; raises GPUSetupError
    naming what is missing (the driver, the toolkit). A machine without GPUs is left as it is,
    unless its instance type has some (`expected`): then its image lacks the driver."""
    on_step("checking GPUs")
    found = read_gpus(transport)
    if not found.gpus and expected:
        wait_end = min(end, time.monotonic() + driver_wait_s)
        while not found.gpus and time.monotonic() < wait_end:
            time.sleep(5)
            found = read_gpus(transport)
        if not found.gpus:
            raise GPUSetupError(f"its instance type has {expected} NVIDIA GPU(s) but no driver answers "
                                f"({found.problem or 'nvidia-smi lists no GPU'}): use an image with the NVIDIA "
                                f"driver ({DRIVER_IMAGES})", every_machine=found.problem == NO_NVIDIA_SMI)
    if not found.gpus:
        return []
    user = transport.target.user
    if transport.run(_sudo(user, NVIDIA_RUNTIME_CHECK), timeout=60).code != 0:
        on_step("setting up the NVIDIA container toolkit")
        result = transport.run(_sudo(user, setup_command or GPU_SETUP), timeout=max(1.0, end - time.monotonic()))
        if result.code != 0:
            raise GPUSetupError(f"the machine has {len(found.gpus)} GPU(s) but Docker has no NVIDIA runtime, and "
                                f"setting up nvidia-container-toolkit failed (exit {result.code}): {_tail(result)}", gpus=found.gpus)
        _wait_for_docker(transport, end, end - time.monotonic())
    on_step("checking GPUs in a container")
    built = transport.run(_sudo(user, GPU_CHECK_BUILD), timeout=max(1.0, end - time.monotonic()))
    if built.code != 0:
        raise GPUSetupError(f"could not make the image that checks GPUs in a container, {GPU_CHECK_IMAGE} "
                            f"(exit {built.code}): {_docker_error(built)}", gpus=found.gpus)
    run = transport.run(_sudo(user, GPU_CHECK_RUN), timeout=max(1.0, end - time.monotonic()))
    seen = sum(1 for line in run.stdout.splitlines() if line.startswith("GPU "))
    if run.code != 0 or not seen:
        raise GPUSetupError(f"the machine has {len(found.gpus)} GPU(s) but Docker cannot give them to containers "
                            f"(`docker run --gpus all`, exit {run.code}: {_docker_error(run)}): nvidia-container-toolkit "
                            "is missing or not configured for Docker", gpus=found.gpus)
    if seen < len(found.gpus):
        raise GPUSetupError(f"a container started with --gpus all sees {seen} of the machine's {len(found.gpus)} "
                            "GPUs: check nvidia-container-toolkit's configuration", gpus=found.gpus)
    return found.gpus


def _block_metadata(transport: SSHTransport, user: str) -> None:
    result = transport.run(_sudo(user, BLOCK_METADATA), timeout=60)
    if result.code != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BootstrapError(f"could not keep containers from the instance metadata service (iptables, "
                             f"exit {result.code}): {tail[0]}")
