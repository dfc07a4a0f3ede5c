"""The input cache end to end: executions on a real sshd host, reached through a TCP proxy that
counts every byte the daemon sends the machine."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaos_faults import TcpProxy
from conftest import BUSYBOX, SSHPool, VhOrch, eventually, make_project
from test_input_cache import MiB, blob

STEPS = f"""
- step:
    name: use
    image: {BUSYBOX}
    command:
      - sha256sum /valohai/inputs/data/*
      - tr -d '\\n' < /valohai/config/inputs.json; echo
      - for f in /valohai/inputs/data/*; do (echo damage >> "$f") 2>/dev/null && echo writable || echo read-only; done
      - sleep {{parameter-value:pause}}
    inputs:
      - name: data
    parameters:
      - name: pause
        type: float
        default: 0
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def proxied(vh: VhOrch, tmp_path: Path, ssh_pool: SSHPool, docker_images: None) -> Iterator[tuple[VhOrch, TcpProxy]]:
    """One SSH host (two slots) reached through a byte-counting proxy, and a project stepping on it."""
    host = ssh_pool.hosts[0]
    proxy = TcpProxy(("127.0.0.1", free_port()), (host.address, host.port))
    proxy.start()
    workdir = tmp_path / "workdir"
    doc = {"environments": [{
        "name": "onprem", "cloud": "ssh", "idle_timeout": "1h", "pull_policy": "never", "slots": 2,
        "input_cache_gb": 1,
        "ssh": {"user": "root", "private_key_file": str(ssh_pool.client_key), "connect_timeout": "3s",
                "hosts": [{"address": "127.0.0.1", "port": proxy.listen[1], "host_key": host.host_key,
                           "workdir": str(workdir)}]},
    }]}
    (tmp_path / "pool.yaml").write_text(json.dumps(doc))
    vh("env", "apply", str(tmp_path / "pool.yaml"))
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "proj", STEPS)  # type: ignore[attr-defined]
    vh.workdir = workdir  # type: ignore[attr-defined]
    vh.start_daemon()
    try:
        yield vh, proxy
    finally:
        vh.stop_daemon()
        proxy.stop()


def run(vh: VhOrch, data: Path, pause: float = 0) -> int:
    return vh.run_json("use", "--project", "p", "--adhoc", str(vh.project_dir),  # type: ignore[attr-defined]
                       "--env", "onprem", "-i", f"data={data}", "-p", f"pause={pause}")["id"]


def seen(vh: VhOrch, execution_id: int) -> tuple[str, dict, str]:  # type: ignore[type-arg]
    """The sha256 of the input the execution saw, its inputs.json, and whether it could write to the input."""
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    lines = [json.loads(line)["text"] for line in out.splitlines() if json.loads(line).get("kind") == "log"]
    return lines[0].split()[0], json.loads(lines[1]), lines[2]


def seen_sha(vh: VhOrch, execution_id: int) -> str:
    return seen(vh, execution_id)[0]


def cache_of(vh: VhOrch) -> dict:  # type: ignore[type-arg]
    machines = [m for m in vh.json("machine", "list", "--all") if m["environment"] == "onprem"]
    assert len(machines) == 1
    return machines[0]["input_cache"]  # type: ignore[no-any-return]


def test_the_second_execution_with_a_200_mb_input_moves_no_input_byte(
        proxied: tuple[VhOrch, TcpProxy], tmp_path: Path) -> None:
    vh, proxy = proxied
    data = tmp_path / "big.bin"
    digest = blob(data, 200 * MiB, 11)
    first = vh.wait(run(vh, data), timeout=300)
    assert first["status"] == "complete", first
    sent_first = proxy.upstream_bytes
    assert sent_first > 200 * MiB
    second = vh.wait(run(vh, data), timeout=300)
    assert second["status"] == "complete", second
    sent_second = proxy.upstream_bytes - sent_first
    print(f"bytes through the proxy: first {sent_first}, second {sent_second}")
    assert sent_second < 2 * MiB, "the second execution sent its input again"
    assert seen_sha(vh, first["id"]) == seen_sha(vh, second["id"]) == digest
    assert cache_of(vh) == {"bytes": 200 * MiB, "hits": 1, "misses": 1, "hit_rate": 0.5}
    # Ended, the executions no longer hold their entry: it may be evicted.
    eventually("the ended executions' pins to go", lambda: not list(
        (vh.workdir / "input-cache").glob("*/pins/*")))  # type: ignore[attr-defined]
    env = vh.json("env", "show", "onprem")
    assert env["input_cache"]["hits"] == 1 and env["input_cache"]["bound_gb"] == 1
    # A file from the cache is described as a fetched one: size and sha256 in inputs.json; the container
    # has it mounted read-only (it runs as root: only the mount stops it from writing to the cache).
    for info in (first, second):
        _, config, writable = seen(vh, info["id"])
        assert writable == "read-only"
        files = config["data"]["files"]
        assert [(f["name"], f["size"], f["checksums"]["sha256"], f["path"]) for f in files] == \
            [("big.bin", 200 * MiB, digest, "/valohai/inputs/data/big.bin")]
    # A damaged entry is found and fetched again; the execution still gets the right bytes.
    entry = next(p for p in (vh.workdir / "input-cache").iterdir() if p.is_dir())  # type: ignore[attr-defined]
    with open(entry / "data", "r+b") as fh:
        fh.seek(100 * MiB)
        fh.write(b"rot")
    before = proxy.upstream_bytes
    third = vh.wait(run(vh, data), timeout=300)
    assert third["status"] == "complete", third
    assert proxy.upstream_bytes - before > 200 * MiB
    assert seen_sha(vh, third["id"]) == digest
    assert cache_of(vh)["misses"] == 2


def test_two_executions_at_once_share_one_download(proxied: tuple[VhOrch, TcpProxy], tmp_path: Path) -> None:
    vh, proxy = proxied
    data = tmp_path / "shared.bin"
    digest = blob(data, 64 * MiB, 12)
    ids = [run(vh, data, pause=1) for _ in range(2)]
    infos = [vh.wait(i, timeout=300) for i in ids]
    assert [i["status"] for i in infos] == ["complete", "complete"], infos
    assert infos[0]["machine"] == infos[1]["machine"]
    print(f"bytes through the proxy: {proxy.upstream_bytes}")
    assert 64 * MiB < proxy.upstream_bytes < 80 * MiB, "the input went to the machine more than once"
    assert [seen_sha(vh, i) for i in ids] == [digest, digest]
    assert cache_of(vh)["hits"] == 1 and cache_of(vh)["misses"] == 1


def test_images_are_pulled_only_when_missing_and_a_failed_pull_is_reported_not_raised(ssh_pool: SSHPool) -> None:
    from test_ssh_transport import target

    from vh_orch.bootstrap.remote import pull_images
    from vh_orch.bootstrap.ssh import SSHTransport

    transport = SSHTransport(target(ssh_pool))
    try:
        # Present: nothing is pulled (a pull would reach for a registry, which the network guard forbids).
        assert pull_images(transport, [BUSYBOX], "if-missing") == []
        assert pull_images(transport, ["127.0.0.1:9/vh-orch/missing:1"], "never") == []
        assert pull_images(transport, [BUSYBOX, "127.0.0.1:9/vh-orch/missing:1"], "if-missing") == \
            ["127.0.0.1:9/vh-orch/missing:1"]
    finally:
        transport.close()


def test_a_machine_whose_disk_runs_low_loses_the_images_vh_orch_left_unused(ssh_pool: SSHPool, tmp_path: Path) -> None:
    """Only images vh-orch ran there (a marker per image), unused for the time given, and not used by a container."""
    import os
    import subprocess
    import time

    from test_ssh_transport import target

    from vh_orch.bootstrap.remote import RemoteDockerRuntime
    from vh_orch.bootstrap.ssh import SSHTransport

    old, fresh, held = (f"vh-orch/tidy-{name}:{os.getpid()}" for name in ("old", "fresh", "held"))
    for tag in (old, fresh, held):  # images of their own (a tag of busybox would share its containers)
        base = f"vh-orch-tidy-base-{os.getpid()}"
        subprocess.run(["docker", "create", "--name", base, BUSYBOX, "true"], check=True, capture_output=True,
                       timeout=60)
        subprocess.run(["docker", "commit", "-c", f"LABEL tidy={tag}", base, tag], check=True, capture_output=True,
                       timeout=60)
        subprocess.run(["docker", "rm", base], check=True, capture_output=True, timeout=60)
    holder = f"vh-orch-tidy-holder-{os.getpid()}"
    subprocess.run(["docker", "create", "--name", holder, held, "true"], check=True, capture_output=True, timeout=60)
    transport = SSHTransport(target(ssh_pool))
    runtime = RemoteDockerRuntime(transport, str(tmp_path / "workdir"))
    try:
        images = tmp_path / "workdir" / "images"
        images.mkdir(parents=True)
        hour_ago = time.time() - 3600
        for n, tag in enumerate((old, fresh, held)):
            (images / f"m{n}").write_text(tag + "\n")
            if tag != fresh:
                os.utime(images / f"m{n}", (hour_ago, hour_ago))
        assert runtime.tidy_images(600, low_percent=0) == []  # the disk is not low: nothing goes
        assert runtime.tidy_images(600, low_percent=101) == [old]
        present = {tag: subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0
                   for tag in (old, fresh, held, BUSYBOX)}
        assert present == {old: False, fresh: True, held: True, BUSYBOX: True}
        assert sorted(p.name for p in images.iterdir()) == ["m1", "m2"]
    finally:
        transport.close()
        subprocess.run(["docker", "rm", "-f", holder], capture_output=True, timeout=60)
        for tag in (old, fresh, held):
            subprocess.run(["docker", "image", "rm", tag], capture_output=True, timeout=60)
