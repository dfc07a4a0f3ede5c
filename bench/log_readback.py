"""Reading a finished execution's log back: 1,000,000 stored lines, each way out, beside the SQL alone.

A throw-away home on SQLite holds one execution whose log was stored as the SSH path stores it
(docker's stamped lines, in chunks of 2,000 lines, 1 MB blocks). Timed, median of --repeat runs:

- `vh-orch exec logs ID > /dev/null 2>&1` (a subprocess, start to exit: what a user waits for);
- `vh-orch exec logs ID --json > /dev/null`;
- GET /api/v0/executions/ID/log.txt (the whole log, streamed) from a running `vh-orch serve`;
- the API's events read through in pages of 5,000 (`after=SEQ`), as a client catching up would.
Reference, in the same run: the `sqlite3` shell selecting every block's text to /dev/null (the
bytes the database hands over, with no Python at all), and `cat` of the same text from a file.
Goal: `exec logs` of 1,000,000 lines in <= 2 s.

    .venv/bin/python bench/log_readback.py [--lines 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fresh_home, print_table  # noqa: E402
from api import start_daemon  # noqa: E402

from vh_orch.orchestrator.models import Execution  # noqa: E402
from vh_orch.orchestrator.store.logs import LogChunk  # noqa: E402
from vh_orch.orchestrator.users import new_token  # noqa: E402
from vh_orch.timeutil import utcnow  # noqa: E402

CHUNK = 2000


def seed_log(store, execution_id: int, lines: int) -> None:  # type: ignore[no-untyped-def]
    """`lines` stamped stdout lines (a stderr chunk every 50), stored as the SSH ingester stores them."""
    for start in range(0, lines, CHUNK * 50):
        chunks = []
        for first in range(start, min(lines, start + CHUNK * 50), CHUNK):
            n = min(CHUNK, lines - first)
            stream = "stderr" if first // CHUNK % 50 == 49 else "stdout"
            texts = [f"2026-12-07T10:{i // 60000 % 60:02d}:{i // 1000 % 60:02d}.{i % 1000:03d}000000Z "
                     f"line {i} of the training log: loss=0.{i % 997:03d}" for i in range(first, first + n)]
            chunks.append(LogChunk(stream, texts, "2026-12-07 10:00:00.000000", stamped=True))
        store.append_chunks(execution_id, chunks)


def median_time(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    settings, store = fresh_home("readback")
    project = store.get_project("bench")
    env = store.get_environment("local")
    commit = store.get_or_create_commit(project.id, "adhoc", "0" * 64, "[]")  # type: ignore[arg-type]
    now = utcnow()
    with store.write() as s:
        row = Execution(project_id=project.id, counter=1, commit_id=commit.id, step="train",  # type: ignore[arg-type]
                        command="python train.py", environment_id=env.id, status="complete",  # type: ignore[arg-type]
                        user="bench", created_at=now, started_at=now, ended_at=now)
        s.add(row)
        s.flush()
        execution_id = row.id
    seed_log(store, execution_id, args.lines)  # type: ignore[arg-type]
    db = settings.home / "state.db"
    text_file = settings.home / "log.txt"
    blocks = int(subprocess.run(["sqlite3", str(db), "SELECT count(*) FROM log_block"], capture_output=True,
                                text=True, check=True).stdout)

    env_vars = dict(os.environ, VH_ORCH_HOME=str(settings.home))
    vh = str(Path(sys.executable).parent / "vh-orch")

    def cli(*extra: str) -> Callable[[], object]:
        return lambda: subprocess.run([vh, "exec", "logs", str(execution_id), *extra], env=env_vars, check=True,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    got = subprocess.run([vh, "exec", "logs", str(execution_id)], env=env_vars, check=True, capture_output=True)
    printed = got.stdout.count(b"\n") + got.stderr.count(b"\n")
    assert printed == args.lines, f"exec logs printed {printed} lines of {args.lines}"
    text_file.write_bytes(got.stdout)

    def sql_alone() -> object:
        return subprocess.run(["sqlite3", str(db), "SELECT texts FROM log_block WHERE execution_id = "
                               f"{execution_id} ORDER BY first_seq"], check=True, stdout=subprocess.DEVNULL)

    def cat() -> object:
        return subprocess.run(["cat", str(text_file)], check=True, stdout=subprocess.DEVNULL)

    store.create_user("benchuser", is_admin=True)
    token, digest = new_token()
    store.add_token(store.get_user("benchuser").id, digest)  # type: ignore[arg-type]
    proc, api = start_daemon(dict(env_vars, VH_ORCH_LISTEN="127.0.0.1:0"), settings.home / "serve.log")
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    ref = f"{api}/api/v0/executions/{execution_id}"

    def log_txt() -> object:
        size = 0
        with session.get(f"{ref}/log.txt", stream=True, timeout=600) as response:
            response.raise_for_status()
            for part in response.iter_content(1 << 20):
                size += len(part)
        return size

    def events_walk() -> object:
        after, seen = 0, 0
        while True:
            page = session.get(f"{ref}/events/", params={"after": after, "limit": 5000}, timeout=600).json()["events"]
            if not page:
                return seen
            seen += len(page)
            after = page[-1]["seq"]

    try:
        rows = []
        figures = {name: median_time(fn, args.repeat) for name, fn in [
            ("sql", sql_alone), ("cat", cat), ("cli", cli()), ("cli_json", cli("--json")),
            ("log_txt", log_txt), ("events", events_walk)]}
    finally:
        proc.terminate()
        proc.wait(60)
    size = text_file.stat().st_size
    reference = f"sqlite3 alone {figures['sql']:.2f} s; cat {figures['cat']:.2f} s"
    for name, label in [("cli", "vh-orch exec logs ID > /dev/null"), ("cli_json", "vh-orch exec logs ID --json"),
                        ("log_txt", "GET .../log.txt"), ("events", "GET .../events/ in pages of 5,000")]:
        rows.append([label, f"{figures[name]:.2f} s", f"{args.lines / figures[name] / 1000:,.0f}k lines/s",
                     reference])
    print_table(f"Log read-back: {args.lines:,} stored lines ({size / 1e6:.0f} MB of text, {blocks} blocks), "
                f"median of {args.repeat}", ["way out", "time", "rate", "reference (same run)"], rows)


if __name__ == "__main__":
    main()
