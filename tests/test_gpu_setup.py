"""GPU set-up in the bootstrap, on sshd hosts whose nvidia-smi is the stand-in (tests/fakegpu).

This machine's Docker has no NVIDIA runtime and no GPU, so a host whose nvidia-smi reports GPUs can
only fail its set-up: the reason must name what is missing. The toolkit set-up is the operator's
`ssh.gpu_setup_command` here, harmless (the built-in one would install packages on this machine).
Hosts whose nvidia-smi fails or reports no GPU, and hosts without one, are set up as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import BUSYBOX, SSHPool, VhOrch, eventually, make_project
from vh_orch.bootstrap.docker_host import GPUSetupError, bootstrap, setup_gpus
from vh_orch.bootstrap.ssh import SSHTarget, SSHTransport
from vh_orch.config.environments import parse_entry
from vh_orch.errors import ConfigError

FAKEGPU = Path(__file__).parent / "fakegpu"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What each host's sshd puts in the environment of every command: its nvidia-smi is the stand-in.
HOSTS = {"gpus": "FAKE_NVIDIA_GPUS=2", "broken": "FAKE_NVIDIA_FAIL=1", "none": "FAKE_NVIDIA_GPUS=0"}
HARMLESS_SETUP = "echo 'toolkit set-up left out by the test' >&2"  # succeeds, installs nothing
FAILING_SETUP = "echo 'E: Unable to locate package nvidia-container-toolkit' >&2; exit 100"
STEPS = f"""
- step:
    name: hello
    image: {BUSYBOX}
    command: echo hello
"""


@pytest.fixture(scope="module")
def gpu_hosts(ssh_pool: SSHPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """sshd hosts on spare addresses of the pool's net, named as in HOSTS, and `bare` (a pool host: no
    nvidia-smi at all)."""
    import sshhosts

    root = tmp_path_factory.mktemp("gpuhosts")
    hosts: dict[str, Any] = {}
    try:
        for n, (name, env) in enumerate(HOSTS.items(), start=40):
            host = sshhosts.make_host(root, n, ssh_pool.net)
            host.start(ssh_pool.client_public, extra_config=f"SetEnv PATH={FAKEGPU}:{SYSTEM_PATH} {env}\n")
            hosts[name] = host
        yield {**hosts, "bare": ssh_pool.hosts[0]}
    finally:
        for host in hosts.values():
            host.stop()


def transport(pool: SSHPool, host: Any) -> SSHTransport:
    return SSHTransport(SSHTarget(host.address, host.port, "root", str(pool.client_key), host.host_key, 5))


def test_the_hosts_nvidia_smi_is_the_stand_in(ssh_pool: SSHPool, gpu_hosts: dict[str, Any]) -> None:
    """The world the tests below stand on: each host answers as HOSTS says."""
    assert transport(ssh_pool, gpu_hosts["gpus"]).run("nvidia-smi -L").stdout.count("GPU ") == 2
    assert transport(ssh_pool, gpu_hosts["broken"]).run("nvidia-smi -L").code == 9
    assert transport(ssh_pool, gpu_hosts["bare"]).run("nvidia-smi -L").code == 127


def test_gpus_docker_cannot_give_to_containers_fail_the_set_up_naming_the_toolkit(
        ssh_pool: SSHPool, gpu_hosts: dict[str, Any], tmp_path: Path, docker_images: None) -> None:
    steps: list[str] = []
    with pytest.raises(GPUSetupError) as caught:
        bootstrap(transport(ssh_pool, gpu_hosts["gpus"]), str(tmp_path / "work"), steps.append, deadline_s=120,
                  gpu_setup_command=HARMLESS_SETUP)
    message = str(caught.value)
    assert message.startswith("the machine has 2 GPU(s) but Docker cannot give them to containers"), message
    assert "nvidia-container-toolkit is missing or not configured for Docker" in message
    assert 'could not select device driver "" with capabilities: [[gpu]]' in message, "Docker's own word is kept"
    assert not caught.value.every_machine
    # No NVIDIA runtime: the toolkit was set up (here: the harmless command), then checked in a container.
    assert steps[-3:] == ["checking GPUs", "setting up the NVIDIA container toolkit", "checking GPUs in a container"]
    assert not (tmp_path / "work" / "bootstrap-version").exists(), "a machine that failed is not marked set up"


def test_a_failing_toolkit_set_up_is_the_reason(ssh_pool: SSHPool, gpu_hosts: dict[str, Any], tmp_path: Path,
                                                 docker_images: None) -> None:
    with pytest.raises(GPUSetupError, match=r"^the machine has 2 GPU\(s\) but Docker has no NVIDIA runtime, and "
                                            r"setting up nvidia-container-toolkit failed \(exit 100\): "
                                            r"E: Unable to locate package nvidia-container-toolkit$"):
        bootstrap(transport(ssh_pool, gpu_hosts["gpus"]), str(tmp_path / "work"), lambda step: None, deadline_s=120,
                  gpu_setup_command=FAILING_SETUP)


@pytest.mark.parametrize("name", ["broken", "none", "bare"])
def test_a_host_whose_nvidia_smi_fails_or_shows_none_is_set_up_as_before(
        ssh_pool: SSHPool, gpu_hosts: dict[str, Any], tmp_path: Path, docker_images: None, name: str) -> None:
    steps: list[str] = []
    found = bootstrap(transport(ssh_pool, gpu_hosts[name]), str(tmp_path / "work"), steps.append, deadline_s=120,
                      gpu_setup_command=FAILING_SETUP)
    assert found == []
    assert steps[-2:] == ["checking GPUs", "ready"], steps
    assert (tmp_path / "work" / "bootstrap-version").exists()
    # Set up once: the next bootstrap finds the marker, and still looks at the GPUs (one nvidia-smi).
    steps.clear()
    bootstrap(transport(ssh_pool, gpu_hosts[name]), str(tmp_path / "work"), steps.append, deadline_s=120)
    assert steps == ["waiting for SSH", "checking Docker", "checking GPUs", "ready"]


def test_an_instance_type_with_gpus_and_no_driver_on_its_image_fails_for_every_machine(
        ssh_pool: SSHPool, gpu_hosts: dict[str, Any]) -> None:
    with pytest.raises(GPUSetupError) as caught:
        setup_gpus(transport(ssh_pool, gpu_hosts["bare"]), lambda step: None, end=time.monotonic() + 60, expected=1,
                   driver_wait_s=0)
    assert str(caught.value) == ("its instance type has 1 NVIDIA GPU(s) but no driver answers (nvidia-smi is not "
                                 "installed): use an image with the NVIDIA driver (AWS Deep Learning AMIs, GCE "
                                 "common-cu* images)")
    assert caught.value.every_machine, "the image lacks the driver: every machine launched from it would fail"


def test_a_driver_that_fails_on_an_instance_type_with_gpus_is_the_reason(
        ssh_pool: SSHPool, gpu_hosts: dict[str, Any]) -> None:
    with pytest.raises(GPUSetupError) as caught:
        setup_gpus(transport(ssh_pool, gpu_hosts["broken"]), lambda step: None, end=time.monotonic() + 60, expected=2,
                   driver_wait_s=0)
    assert "nvidia-smi failed (exit 9): NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA " \
           "driver." in str(caught.value)
    assert not caught.value.every_machine, "one machine's broken driver says nothing of the others"


def test_the_toolkit_set_up_command_must_be_a_command() -> None:
    entry = {"name": "pool", "cloud": "ssh", "ssh": {"user": "root", "private_key_file": "/k", "gpu_setup_command": " ",
                                                     "hosts": [{"address": "h", "host_key": "ssh-ed25519 AAAA"}]}}
    with pytest.raises(ConfigError, match=r"ssh\.gpu_setup_command: a shell command is expected"):
        parse_entry(entry, "test")


def pool_file(pool: SSHPool, tmp_path: Path, envs: dict[str, list[Any]], **ssh: Any) -> str:
    doc = {"environments": [{
        "name": name, "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never",
        "ssh": {"user": "root", "private_key_file": str(pool.client_key), "connect_timeout": "3s",
                "hosts": [{"address": h.address, "port": 22, "host_key": h.host_key,
                           "workdir": str(tmp_path / name / h.address)} for h in hosts], **ssh},
    } for name, hosts in envs.items()]}
    path = tmp_path / "pool.yaml"
    path.write_text(json.dumps(doc))
    return str(path)


def test_the_daemon_fails_a_gpu_host_without_the_runtime_and_serves_the_others(
        vh: VhOrch, ssh_pool: SSHPool, gpu_hosts: dict[str, Any], tmp_path: Path, docker_images: None) -> None:
    vh("env", "apply", pool_file(ssh_pool, tmp_path, {"gpu": [gpu_hosts["gpus"]],
                                                      "cpu": [gpu_hosts["broken"], gpu_hosts["none"]]},
                                 gpu_setup_command=HARMLESS_SETUP))
    vh("project", "add", "p")
    project = make_project(tmp_path, "proj", STEPS)
    vh.start_daemon()
    ids = [vh.run_json("hello", "--project", "p", "--adhoc", str(project), "--env", env)["id"]
           for env in ("cpu", "cpu", "gpu")]

    def gpu_machine_failed() -> list[dict[str, Any]]:
        return [m for m in vh.json("machine", "list", "--all") if m["environment"] == "gpu"
                and "nvidia-container-toolkit" in (m["reason"] or "")]

    failed = eventually("the GPU host's machine failing its set-up", gpu_machine_failed)[0]
    assert failed["reason"].startswith("bootstrap failed: the machine has 2 GPU(s) but Docker cannot give them to "
                                       "containers"), failed
    # The hosts whose nvidia-smi fails or shows no GPU serve as before.
    assert [vh.wait(i)["status"] for i in ids[:2]] == ["complete", "complete"]
    assert vh.json("exec", "info", str(ids[2]))["status"] == "queued", "no GPU-less machine ran the gpu environment's"
