"""Large inputs to an SSH host over the OpenSSH client (bootstrap/openssh.py), into the machine's input
cache, against a real sshd host: the bytes, a cut connection, a changed host key, a key the client
refuses, and the daemon's memory."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chaos_faults import TcpProxy
from conftest import SSHPool, eventually
from test_input_cache import MiB, blob
from test_input_cache_ssh import free_port
from test_ssh_transport import target

from vh_orch.bootstrap import openssh
from vh_orch.bootstrap.remote import SSHShell
from vh_orch.bootstrap.ssh import HostKeyMismatch, SSHError, SSHTarget, SSHTransport
from vh_orch.storage.input_cache import Identity, InputCache, InputCacheError, file_source

pytestmark = pytest.mark.skipif(openssh.client() is None, reason="no OpenSSH client on this host")


class Counting:
    """The shell's bulk path, counting the files it sent (True) and refused to take (False)."""

    def __init__(self, bulk: openssh.OpenSSHBulk) -> None:
        self.bulk = bulk
        self.min_bytes = MiB
        self.results: list[bool] = []

    def send(self, script, args, chunks):  # type: ignore[no-untyped-def]
        ok = self.bulk.send(script, args, chunks)
        self.results.append(ok)
        return ok


def shell_for(t: SSHTarget, bulk_target: SSHTarget | None = None) -> tuple[SSHShell, Counting]:
    shell = SSHShell(SSHTransport(t))
    ssh = openssh.client()
    assert ssh is not None
    counting = Counting(openssh.OpenSSHBulk(bulk_target or t, ssh))
    shell.bulk = counting  # type: ignore[assignment]
    return shell, counting


def leftovers(root: Path) -> list[str]:
    """What a cut placement could have left in the cache: entries, part files, digests."""
    return sorted(os.path.relpath(os.path.join(folder, name), root)  # os.walk: a folder removed meanwhile is skipped
                  for folder, _, names in os.walk(root) for name in names if not name.endswith(".lock"))


def test_a_large_file_goes_over_the_openssh_client_and_arrives_whole(ssh_pool: SSHPool, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    digest = blob(src, 48 * MiB, 21)
    shell, bulk = shell_for(target(ssh_pool))
    root = tmp_path / "cache"
    try:
        cache = InputCache(shell, str(root), 1 << 30, "c-1-1", wait_s=60)
        placed = cache.place(Identity("k-bulk", 48 * MiB), str(tmp_path / "e1" / "big.bin"), None,
                             lambda: file_source(src), mount=True)
        assert bulk.results == [True]
        assert (placed.size, placed.sha256, placed.sent, placed.hit) == (48 * MiB, digest, 48 * MiB, False)
        assert placed.mount is not None
        assert hashlib.sha256(Path(placed.mount).read_bytes()).hexdigest() == digest
        entry = Path(placed.mount).parent
        assert (entry / "sha256").read_text().strip() == digest
        assert sorted(p.name for p in entry.iterdir()) == ["data", "pins", "sha256", "size", "stamp", "used"]
        # A source that is not a local file (a stream) goes through a pipe to the client.
        stream = cache.place(Identity("k-stream"), str(tmp_path / "e2" / "big.bin"), None,
                             lambda: (48 * MiB, iter([src.read_bytes()[i:i + MiB] for i in range(0, 48 * MiB, MiB)])))
        assert bulk.results == [True, True] and stream.sha256 == digest
        # A file the datum says is something else is refused, and nothing of it is kept.
        with pytest.raises(InputCacheError, match="arrived damaged"):
            cache.place(Identity("sha256-" + "0" * 64, 48 * MiB, "0" * 64), str(tmp_path / "e3" / "x.bin"), None,
                        lambda: file_source(src))
        assert not (root / ("sha256-" + "0" * 64)).exists()
        # Small files keep to the cache script's own channel.
        small = tmp_path / "small.bin"
        blob(small, MiB // 2, 22)
        cache.place(Identity("k-small"), str(tmp_path / "e4" / "small.bin"), None, lambda: file_source(small))
        assert bulk.results == [True, True, True]
    finally:
        shell.transport.close()


@pytest.mark.parametrize("source_kind", ["file", "stream"])
def test_a_cut_connection_leaves_nothing_in_the_cache_and_a_retry_succeeds(
        ssh_pool: SSHPool, tmp_path: Path, source_kind: str) -> None:
    host = ssh_pool.hosts[0]
    proxy = TcpProxy(("127.0.0.1", free_port()), (host.address, host.port))
    proxy.start()
    src = tmp_path / "big.bin"
    digest = blob(src, 96 * MiB, 23)
    shell, bulk = shell_for(target(ssh_pool, host="127.0.0.1", port=proxy.listen[1]))
    root = tmp_path / "cache"
    cut = threading.Event()

    def cut_when_half_way() -> None:  # the file itself goes to the client: watch it arrive
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cut.is_set():
            if any(os.path.getsize(p) > 16 * MiB for p in glob.glob(f"{root}/*/data.*.part")):
                cut.set()  # before the cut: the placement may fail before this thread runs again
                proxy.cut()
            time.sleep(0.001)

    def stream() -> tuple[int, Iterator[bytes]]:
        def chunks() -> Iterator[bytes]:
            with src.open("rb") as fh:
                while chunk := fh.read(MiB):
                    if fh.tell() > 32 * MiB and not cut.is_set():
                        cut.set()
                        proxy.cut()
                    yield chunk
        return 96 * MiB, chunks()

    try:
        cache = InputCache(shell, str(root), 1 << 30, "c-1-1", wait_s=60)
        source = stream if source_kind == "stream" else (lambda: file_source(src))
        if source_kind == "file":
            threading.Thread(target=cut_when_half_way, daemon=True).start()
        with pytest.raises((InputCacheError, SSHError)):
            cache.place(Identity("k-cut"), str(tmp_path / "e1" / "big.bin"), None, source)
        assert cut.is_set() and bulk.results == []
        eventually("the cut placement's files to go", lambda: not leftovers(root))
        assert leftovers(root) == []
        placed = cache.place(Identity("k-cut"), str(tmp_path / "e2" / "big.bin"), None, source)
        assert (placed.sha256, placed.hit, bulk.results) == (digest, False, [True])
        assert leftovers(root) == ["k-cut/data", "k-cut/pins/c-1-1", "k-cut/sha256", "k-cut/size", "k-cut/stamp",
                                   "k-cut/used"]
    finally:
        shell.transport.close()
        proxy.stop()


def test_a_host_showing_another_key_to_the_openssh_client_gets_nothing(ssh_pool: SSHPool, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    blob(src, 4 * MiB, 24)
    right = target(ssh_pool)
    # The cache script's connection (paramiko) sees the pinned key; the bulk connection is made to expect
    # another host's key: the client must refuse the host rather than learn its key.
    wrong = replace(right, host_key=ssh_pool.hosts[1].host_key)
    shell, bulk = shell_for(right, wrong)
    root = tmp_path / "cache"
    try:
        cache = InputCache(shell, str(root), 1 << 30, "c-1-1", wait_s=60)
        with pytest.raises(HostKeyMismatch, match="not the pinned one"):
            cache.place(Identity("k-key"), str(tmp_path / "e1" / "big.bin"), None, lambda: file_source(src))
        assert bulk.results == []
        assert wrong not in openssh._unusable  # refused, not mistaken for a client that cannot be used
        eventually("the refused placement's files to go", lambda: not leftovers(root))
        assert leftovers(root) == []
    finally:
        shell.transport.close()
    # And paramiko, the cache script's own connection, refuses a host with another key as ever.
    with pytest.raises(HostKeyMismatch):
        SSHShell(SSHTransport(wrong)).start("true", [])


def test_a_key_file_the_openssh_client_refuses_falls_back_to_paramiko(ssh_pool: SSHPool, tmp_path: Path) -> None:
    key = tmp_path / "readable_key"
    shutil.copy(ssh_pool.client_key, key)
    os.chmod(key, 0o644)  # OpenSSH ignores a private key others can read; paramiko takes it
    t = target(ssh_pool, private_key_file=str(key))
    src = tmp_path / "big.bin"
    digest = blob(src, 4 * MiB, 25)
    shell, bulk = shell_for(t)
    try:
        cache = InputCache(shell, str(tmp_path / "cache"), 1 << 30, "c-1-1", wait_s=60)
        placed = cache.place(Identity("k-fallback"), str(tmp_path / "e1" / "big.bin"), None, lambda: file_source(src))
        assert (placed.sha256, placed.sent, bulk.results) == (digest, 4 * MiB, [False])
        assert t in openssh._unusable
        again = cache.place(Identity("k-fallback-2"), str(tmp_path / "e2" / "big.bin"), None,
                            lambda: file_source(src))
        assert again.sha256 == digest and bulk.results == [False, False]
    finally:
        shell.transport.close()
        openssh._unusable.pop(t, None)


MEMORY = r"""
import json, os, sys
from pathlib import Path
from vh_orch.bootstrap.remote import SSHShell
from vh_orch.bootstrap.ssh import SSHTarget, SSHTransport
from vh_orch.storage.input_cache import Identity, InputCache, file_source

def peak():
    return next(int(l.split()[1]) for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmHWM:"))

t = SSHTarget(**json.loads(sys.argv[1]))
src, root = Path(sys.argv[2]), sys.argv[3]
shell = SSHShell(SSHTransport(t))
cache = InputCache(shell, root, 1 << 40, "c-1-1", wait_s=60)
cache.place(Identity("warm"), root + "/e0/x", None, lambda: file_source(Path(sys.argv[4])))  # paramiko warmed up
result = {"idle_kb": peak()}
for path, bulk in (("bulk", shell.bulk), ("paramiko", None)):
    shell.bulk = bulk
    placed = cache.place(Identity(path), f"{root}/e-{path}/x", None, lambda: file_source(src))
    result[path] = [peak(), placed.size, placed.sha256]
print(json.dumps(result))
"""


def test_a_file_larger_than_the_daemons_memory_budget_is_never_held_in_memory(
        ssh_pool: SSHPool, tmp_path: Path) -> None:
    src, small = tmp_path / "big.bin", tmp_path / "small.bin"
    with src.open("wb") as fh:  # 320 MiB of a repeated block: the daemon gets no chance to hold it
        block = os.urandom(MiB)
        for _ in range(320):
            fh.write(block)
    digest = hashlib.sha256(block * 320).hexdigest()
    blob(small, MiB, 26)
    t = target(ssh_pool)
    fields = {k: getattr(t, k) for k in ("host", "port", "user", "private_key_file", "host_key", "connect_timeout_s")}
    out = subprocess.run([sys.executable, "-c", MEMORY, json.dumps(fields), str(src), str(tmp_path / "cache"),
                          str(small)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for path in ("bulk", "paramiko"):
        peak_kb, size, sha = result[path]
        assert (size, sha) == (320 * MiB, digest)
        assert peak_kb - result["idle_kb"] < 48 * 1024, f"{path}: the peak RSS grew by {peak_kb - result['idle_kb']} kB"
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)
    src.unlink()



def test_s3_and_http_inputs_stream_through_the_daemon_to_the_host(
        ssh_pool: SSHPool, tmp_path: Path, moto) -> None:  # type: ignore[no-untyped-def]
    """Nothing lands on the daemon's disk: the object's bytes go on as they arrive, and a source that
    ends short of what it said it holds leaves nothing in the cache."""
    import http.server

    from vh_orch.storage.inputs import stream_file

    src = tmp_path / "object.bin"
    digest = blob(src, 8 * MiB, 27)
    moto.client("s3").create_bucket(Bucket="stream-in", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    moto.client("s3").upload_file(str(src), "stream-in", "data/object.bin")
    settings = {"uri": "s3://stream-in", "endpoint_url": moto.url, "region": "eu-west-1"}

    class Server(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = src.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2] if self.path == "/short" else body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    shell, bulk = shell_for(target(ssh_pool))
    root = tmp_path / "cache"
    try:
        cache = InputCache(shell, str(root), 1 << 30, "c-1-1", wait_s=60)
        for n, uri in enumerate(["s3://stream-in/data/object.bin", f"{url}/object.bin"]):
            streamed = stream_file(uri, "data", settings)
            assert streamed is not None and streamed[0] == 8 * MiB
            placed = cache.place(Identity(f"k-stream-{n}"), str(tmp_path / f"e{n}" / "object.bin"), None,
                                 lambda: streamed)
            assert placed.sha256 == digest
        assert bulk.results == [True, True]
        assert not list(tmp_path.glob("**/.fetch"))
        for shell_bulk in (bulk, None):  # over the bulk path and over the script's own channel
            shell.bulk = shell_bulk  # type: ignore[assignment]
            with pytest.raises(InputCacheError, match="cannot read the input: .*IncompleteRead"):
                cache.place(Identity("k-short"), str(tmp_path / "e9" / "object.bin"), None,
                            lambda: stream_file(f"{url}/short", "data", settings))  # type: ignore[arg-type,return-value]
            eventually("the short placement's files to go", lambda: not [p for p in leftovers(root) if "short" in p])
    finally:
        shell.transport.close()
        server.shutdown()
