"""Bombs and floods against `vh-orch serve`, as a non-admin API user: what each costs the daemon.

    .venv/bin/python bench/security.py [--keys 200000] [--samples 200] [--reference DIR]

1. Bombs: a 200 MiB pax header and a 200 MiB GNU long name (each ~200 KB gzipped), 300,000
   empty tar members, a nested-alias valohai.yaml, a 300 MiB multipart text field. Per bomb:
   the answer, its time, and the daemon's peak memory (VmHWM): how much it grew, and after.
2. A metadata-key flood: an execution (busybox, Docker) printing --keys distinct keys. The
   latency of GET /api/v0/users/me/ (p50/p95/max) while it runs, against the same idle; the
   keys kept in metadata_latest and its size.

--reference DIR runs the same against the vh-orch code in DIR (another checkout: the code
before a change) in the same run, with its own home and daemon, for a before/after table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, print_table  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from bombs import ALIAS_BOMB, header_bomb, package  # noqa: E402

MiB = 1 << 20
IMAGE = "vh-orch/busybox:test"
ROOT = Path(__file__).resolve().parent.parent


def flood_command(keys: int) -> str:
    return f'i=0; while [ $i -lt {keys} ]; do echo "{{\\"key_$i\\": $i}}"; i=$((i+1)); done'


def steps(keys: int) -> bytes:
    return yaml.safe_dump([{"step": {"name": "flood", "image": IMAGE, "command": flood_command(keys)}}]).encode()




def field_bomb(size: int, keys: int) -> Iterator[bytes]:
    yield (b'--b0mb\r\nContent-Disposition: form-data; name="data"; filename="d.tgz"\r\n\r\n'
           + package({"valohai.yaml": steps(keys)}) + b"\r\n")
    yield b'--b0mb\r\nContent-Disposition: form-data; name="description"\r\n\r\n'
    chunk = b"d" * MiB
    for _ in range(size // MiB):
        yield chunk
    yield b"\r\n--b0mb--\r\n"


class Daemon:
    """`vh-orch serve` from the code in `code` (None: this checkout), in a fresh home, with one
    non-admin user and her project; the local environment runs Docker containers."""

    def __init__(self, code: Path | None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="vh-orch-bench-security-")) / "home"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("VH_ORCH_")}
        self.env.update(VH_ORCH_HOME=str(self.home), VH_ORCH_LISTEN="127.0.0.1:0",
                        PYTHONPATH=str(code) if code else "")
        self.cli("init")
        self.cli("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        self.cli("user", "add", "mallory")
        self.cli("project", "add", "bombs", "--owner", "mallory")
        token = json.loads(self.cli("user", "token", "mallory", "--json"))["token"]
        self.headers = {"Authorization": f"Token {token}"}
        self.log = open(self.home.parent / "serve.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-c", "from vh_orch.cli import main; main()", "serve"],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.home.parent)
        self.api = self._address()
        self.project = requests.get(f"{self.api}/api/v0/projects/", headers=self.headers, timeout=30
                                    ).json()["results"][0]["id"]

    def cli(self, *args: str) -> str:
        # cwd: not this checkout, whose vh_orch `python -c` would import before PYTHONPATH's
        return subprocess.run([sys.executable, "-c", "from vh_orch.cli import main; main()", *args], env=self.env,
                              check=True, capture_output=True, text=True, timeout=120, cwd=self.home.parent).stdout

    def _address(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in (self.home.parent / "serve.log").read_text(errors="replace").splitlines():
                if "HTTP API on " in line:
                    return line.split("HTTP API on ", 1)[1].split()[0]
            time.sleep(0.1)
        raise RuntimeError("the daemon did not start")

    def peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def upload(self, data: bytes | Iterator[bytes], multipart: bool = False) -> requests.Response:
        url = f"{self.api}/api/v0/projects/{self.project}/import-package/"
        if multipart:
            return requests.post(url, data=data, timeout=600,
                                 headers={**self.headers, "Content-Type": "multipart/form-data; boundary=b0mb"})
        return requests.post(url, files={"data": ("d.tgz", data)}, headers=self.headers, timeout=600)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def bombs(daemon: Daemon, keys: int) -> list[list[object]]:
    cases = [
        ("pax header, 200 MiB", lambda: header_bomb(tarfile.XHDTYPE, 200 * MiB), False),
        ("GNU long name, 200 MiB", lambda: header_bomb(tarfile.GNUTYPE_LONGNAME, 200 * MiB), False),
        ("300,000 empty members", lambda: gzip.compress(tarfile.TarInfo("e").tobuf() * 300_000 + bytes(1024)),
         False),
        ("alias-bomb valohai.yaml", lambda: package({"valohai.yaml": ALIAS_BOMB}), False),
        ("text field, 300 MiB", lambda: field_bomb(300 * MiB, keys), True),
    ]
    rows: list[list[object]] = []
    for name, make, multipart in cases:
        body = make()
        size = f"{len(body) / 1024:,.0f} KiB" if isinstance(body, bytes) else "300 MiB (chunked)"
        before = daemon.peak_kib()
        start = time.perf_counter()
        answer = daemon.upload(body, multipart)
        took = time.perf_counter() - start
        after = daemon.peak_kib()
        text = json.dumps(answer.json())[:70] if answer.headers.get("content-type", "").startswith(
            "application/json") else answer.text[:70]
        rows.append([name, size, answer.status_code, f"{took:.2f}", f"{(after - before) / 1024:.1f}",
                     f"{after / 1024:.0f}", text])
    return rows


def latencies(daemon: Daemon, samples: int, running: int | None = None) -> list[float]:
    """GET /users/me/ one after another (a connection each, as a browser's first request), `samples`
    of them, or while execution `running` runs."""
    out: list[float] = []
    url = f"{daemon.api}/api/v0/users/me/"
    while len(out) < samples:
        start = time.perf_counter()
        requests.get(url, headers=daemon.headers, timeout=60).raise_for_status()
        out.append(time.perf_counter() - start)
        if running is not None and len(out) % 20 == 0:
            status = requests.get(f"{daemon.api}/api/v0/executions/{running}/", headers=daemon.headers,
                                 timeout=60).json()["status"]
            if status in ("complete", "error", "stopped"):
                break
        time.sleep(0.01)
    return out


def flood(daemon: Daemon, keys: int, samples: int) -> list[list[object]]:
    idle = latencies(daemon, samples)
    commit = daemon.upload(package({"valohai.yaml": steps(keys)})).json()["identifier"]
    created = requests.post(f"{daemon.api}/api/v0/executions/", headers=daemon.headers, timeout=60,
                            json={"project": daemon.project, "commit": commit, "step": "flood"}).json()
    start = time.perf_counter()
    busy = latencies(daemon, 10**9, running=created["id"])
    while True:  # the flood's end, then its figures
        info = requests.get(f"{daemon.api}/api/v0/executions/{created['id']}/", headers=daemon.headers,
                            timeout=60).json()
        if info["status"] in ("complete", "error", "stopped"):
            break
        time.sleep(0.2)
    took = time.perf_counter() - start
    latest = requests.get(f"{daemon.api}/api/v0/executions/{created['id']}/metadata/", headers=daemon.headers,
                          timeout=600).json()["latest"]

    def row(name: str, values: list[float], extra: str) -> list[object]:
        ms = [v * 1000 for v in values]
        return [name, len(ms), f"{percentile(ms, 50):.1f}", f"{percentile(ms, 95):.1f}", f"{max(ms):.1f}", extra]

    return [row("idle", idle, ""),
            row(f"during a {keys:,}-key flood", busy,
                f"{info['status']} in {took:.1f} s; {len(latest):,} keys kept, {len(json.dumps(latest)):,} bytes")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--reference", type=Path, help="another checkout of vh-orch, run the same way for comparison")
    args = parser.parse_args()
    for label, code in [("this checkout", None), *([("reference: " + str(args.reference), args.reference)]
                                                   if args.reference else [])]:
        daemon = Daemon(code)
        try:
            print_table(f"Bombs ({label}): answer, seconds, the daemon's peak memory (VmHWM): its growth and "
                        "its value after, MiB (a bomb after a larger one raises no new peak)",
                        ["bomb", "upload", "status", "s", "peak +MiB", "peak MiB", "answer"],
                        bombs(daemon, args.keys))
            print_table(f"GET /api/v0/users/me/ latency in ms ({label})",
                        ["while", "n", "p50", "p95", "max", "flood"], flood(daemon, args.keys, args.samples))
        finally:
            daemon.stop()


if __name__ == "__main__":
    main()
