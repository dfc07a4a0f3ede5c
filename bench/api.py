"""The HTTP API under load: a sorted list of 10,000 executions, the live stream's latency, and execution
detail with 50 concurrent clients. Each beside its reference, measured in the same run.

    .venv/bin/python bench/api.py [--executions 10000] [--repeat 200] [--lines 100] [--clients 50] [--seconds 10]

1. GET /api/v0/executions/?ordering=-accuracy&limit=100 over N executions with metadata: p50/p95.
   Reference: the same query run by SQLite alone (stdlib sqlite3, no HTTP, no JSON shaping).
2. An execution prints a line with its wall-clock time every 50 ms; the SSE stream client and
   `vh-orch exec logs --follow` (the reference) follow it at once: latency from print to arrival.
3. GET /api/v0/executions/{id}/ from 50 threads for a few seconds: requests/s. Reference: the
   cheapest authenticated route, GET /api/v0/users/me/, under the same load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_home, percentile, print_table  # noqa: E402

from vh_orch.orchestrator.models import Execution  # noqa: E402
from vh_orch.orchestrator.users import new_token  # noqa: E402
from vh_orch.timeutil import utcnow  # noqa: E402

TICKER_YAML = """\
- step:
    name: ticker
    image: vh-orch/example-python:3.11
    command: python3 ticker.py {lines}
"""
TICKER_PY = """\
import sys, time
time.sleep(3)  # both followers are attached before the first tick
for i in range(int(sys.argv[1])):
    print("tick", repr(time.time()), flush=True)
    time.sleep(0.05)
time.sleep(1)
"""


def seed(store, project_id: int, env_id: int, commit_id: int, n: int) -> None:  # type: ignore[no-untyped-def]
    """n finished executions with metadata, written in one transaction."""
    rng = random.Random(7)
    now = utcnow()
    rows = [Execution(project_id=project_id, counter=i + 1, commit_id=commit_id, step="train", command="true",
                      environment_id=env_id, status="complete", user="bench", created_at=now, started_at=now,
                      ended_at=now, parameters={"lr": rng.random()},
                      metadata_latest={"accuracy": rng.random(), "loss": rng.random(), "epoch": rng.randint(1, 50)})
            for i in range(n)]
    with store.write() as s:
        s.add_all(rows)
    with store.write() as s:
        from sqlalchemy import update

        from vh_orch.orchestrator.models import Project
        s.execute(update(Project).where(Project.id == project_id).values(execution_counter=n))


def start_daemon(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen([str(Path(sys.executable).parent / "vh-orch"), "serve"], env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "HTTP API on " in line:
                return proc, line.split("HTTP API on ", 1)[1].split()[0]
        time.sleep(0.05)
    raise SystemExit(f"vh-orch serve did not start:\n{log.read_text()}")


def timed(fn, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def list_bench(api: str, headers: dict[str, str], db: Path, project_id: str, repeat: int) -> list[list[object]]:
    session = requests.Session()
    session.headers.update(headers)
    url = f"{api}/api/v0/executions/?project={project_id}&ordering=-accuracy&limit=100"
    first = session.get(url, timeout=60).json()
    accuracies = [r["metadata"]["accuracy"] for r in first["results"]]
    assert accuracies == sorted(accuracies, reverse=True) and len(accuracies) == 100, "not sorted"
    api_times = timed(lambda: session.get(url, timeout=60).raise_for_status(), repeat)
    conn = sqlite3.connect(db)
    sql = ("SELECT * FROM execution WHERE project_id = 1 ORDER BY json_extract(metadata_latest, '$.accuracy') "
           "IS NULL, json_extract(metadata_latest, '$.accuracy') DESC, id DESC LIMIT 100")
    sql_times = timed(lambda: conn.execute(sql).fetchall(), repeat)
    ms = lambda xs, q: f"{percentile(xs, q) * 1000:.1f} ms"  # noqa: E731
    return [["list, sorted by a metadata key (p50 / p95)", f"{ms(api_times, 50)} / {ms(api_times, 95)}",
             f"SQLite alone: {ms(sql_times, 50)} / {ms(sql_times, 95)}", f"total {first['count']}"]]


def stream_bench(api: str, headers: dict[str, str], env: dict[str, str], folder: Path,
                 project_id: str, lines: int) -> list[list[object]]:
    session = requests.Session()
    session.headers.update(headers)
    upload = subprocess.run(["tar", "-czf", "-", "-C", str(folder), "valohai.yaml", "ticker.py"],
                            capture_output=True, check=True)
    commit = session.post(f"{api}/api/v0/projects/{project_id}/import-package/",
                          files={"data": ("data.tgz", upload.stdout)}, timeout=60).json()["identifier"]
    created = session.post(f"{api}/api/v0/executions/", json={"project": project_id, "commit": commit,
                                                               "step": "ticker"}, timeout=60).json()
    stream_lat: list[float] = []
    follow_lat: list[float] = []

    def follow_sse() -> None:
        with session.get(created["urls"]["stream"], stream=True, timeout=120) as answer:
            event = None
            for raw in answer.iter_lines(decode_unicode=True):
                if raw.startswith("event: "):
                    event = raw[7:]
                elif raw.startswith("data: ") and event == "log":
                    message = json.loads(raw[6:])["message"]
                    if message.startswith("tick "):
                        stream_lat.append(time.time() - float(message.split()[1]))
                elif raw.startswith("data: ") and event == "end":
                    return

    def follow_cli() -> None:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "vh-orch"), "exec", "logs", str(created["id"]),
                                 "--follow"], env=env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("tick "):
                follow_lat.append(time.time() - float(line.split()[1]))
        proc.wait(60)

    threads = [threading.Thread(target=follow_sse), threading.Thread(target=follow_cli)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert len(stream_lat) == lines, f"the stream saw {len(stream_lat)} of {lines} lines"
    ms = lambda xs, q: f"{percentile(xs, q) * 1000:.0f} ms"  # noqa: E731
    return [["live stream: line printed -> SSE client (p50 / p95)", f"{ms(stream_lat, 50)} / {ms(stream_lat, 95)}",
             f"`exec logs --follow`: {ms(follow_lat, 50)} / {ms(follow_lat, 95)}", f"{lines} lines"]]


def load_bench(api: str, headers: dict[str, str], execution_id: int, clients: int, seconds: float
               ) -> list[list[object]]:
    def hammer(url: str) -> float:
        stop = time.monotonic() + seconds
        done = [0] * clients

        def worker(i: int) -> None:
            session = requests.Session()
            session.headers.update(headers)
            while time.monotonic() < stop:
                session.get(url, timeout=60).raise_for_status()
                done[i] += 1

        t0 = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(worker, range(clients)))
        return sum(done) / (time.monotonic() - t0)

    detail = hammer(f"{api}/api/v0/executions/{execution_id}/")
    me = hammer(f"{api}/api/v0/users/me/")
    return [[f"execution detail, {clients} concurrent clients", f"{detail:,.0f} req/s",
             f"GET users/me/ (the cheapest authenticated route): {me:,.0f} req/s", f"{seconds:g} s each"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--lines", type=int, default=100)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()

    settings, store = fresh_home("api")
    project = store.get_project("bench")
    env = store.get_environment("local")
    commit = store.get_or_create_commit(project.id, "adhoc", "0" * 64, "[]")  # type: ignore[arg-type]
    seed(store, project.id, env.id, commit.id, args.executions)  # type: ignore[arg-type]
    store.create_user("benchuser", is_admin=True)
    token, digest = new_token()
    store.add_token(store.get_user("benchuser").id, digest)  # type: ignore[arg-type]
    folder = settings.home / "ticker"
    folder.mkdir()
    (folder / "valohai.yaml").write_text(TICKER_YAML.format(lines=args.lines))
    (folder / "ticker.py").write_text(TICKER_PY)
    daemon_env = dict(os.environ, VH_ORCH_HOME=str(settings.home), VH_ORCH_LISTEN="127.0.0.1:0")
    proc, api = start_daemon(daemon_env, settings.home / "serve.log")
    headers = {"Authorization": f"Token {token}"}
    pid = requests.get(f"{api}/api/v0/projects/", headers=headers, timeout=60).json()["results"][0]["id"]
    try:
        rows = list_bench(api, headers, settings.home / "state.db", pid, args.repeat)
        rows += stream_bench(api, headers, daemon_env, folder, pid, args.lines)
        rows += load_bench(api, headers, args.executions // 2, args.clients, args.seconds)
    finally:
        proc.terminate()
        proc.wait(60)
    runtime = store.get_environment("local").settings.get("runtime")
    print_table(f"HTTP API, {args.executions:,} executions on SQLite (local runtime: {runtime})",
                ["measure", "vh-orch", "reference", "note"], rows)


if __name__ == "__main__":
    main()
