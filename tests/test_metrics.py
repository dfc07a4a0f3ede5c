"""GET /metrics and `serve --log-format json`: a real `vh-orch serve`, real HTTP on loopback.

One daemon (JSON logs, the default allow-list) is shared by the tests that only read from it.
"""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from conftest import WAIT_S, VhOrch, installation, make_project
from vh_orch.api.allowlist import parse_allow
from vh_orch.api.metrics import StateCollector
from vh_orch.api.server import ApiServer
from vh_orch.cli.logsetup import JsonFormatter
from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.daemon import QUIET_PASS_S
from vh_orch.orchestrator.db import upgrade
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.submit import SubmitRequest, submit
from vh_orch.settings import Settings

LINES = 25
STEPS = f"""
- step:
    name: work
    image: vh-orch/busybox:test
    command:
      - for i in $(seq 1 {LINES}); do echo "line $i"; done
      - cat "$VH_INPUTS_DIR/data/data.bin" > "$VH_OUTPUTS_DIR/copy.bin"
    inputs:
      - name: data
        filename: data.bin
"""
DATA = b"x" * 5000
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """GET from a chosen loopback source address (all of 127.0.0.0/8 reaches `lo`)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30, source_address=(source, 0))
    try:
        conn.request("GET", parts.path, headers=headers or {})
        answer = conn.getresponse()
        return answer.status, answer.read().decode()
    finally:
        conn.close()


def samples_of(families: Iterable[Metric]) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def samples(text: str) -> Samples:
    return samples_of(text_string_to_metric_families(text))


def value(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def scrape(api: str) -> Samples:
    status, body = get(f"{api}/metrics")
    assert status == 200, body
    return samples(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VhOrch]:
    """A daemon logging JSON, after one execution on `local` (process runtime) that printed
    LINES lines, read an input of len(DATA) bytes and stored it back as an output."""
    tmp = tmp_path_factory.mktemp("metrics")
    with installation(tmp / "home") as vh:
        vh("env", "update", "local", "--runtime", "process")
        vh("project", "add", "p")
        folder = make_project(tmp, "proj", STEPS)
        (tmp / "data.bin").write_bytes(DATA)
        vh.start_daemon("--log-format", "json", "--trusted-proxy", "127.0.0.1")
        created = vh.run_json("work", "--project", "p", "--adhoc", str(folder), "-i", f"data={tmp / 'data.bin'}")
        info = vh.wait(created["id"])
        assert info["status"] == "complete", info
        yield vh


def test_metrics_show_a_finished_execution_to_a_loopback_client_without_a_token(served: VhOrch) -> None:
    found = scrape(served.api_url())
    assert value(found, "vh_orch_executions", status="complete") >= 1
    assert value(found, "vh_orch_executions", status="started") == 0
    assert value(found, "vh_orch_log_lines_total") >= LINES
    assert value(found, "vh_orch_reconcile_pass_seconds_count") > 0
    assert value(found, "vh_orch_reconcile_pass_seconds_bucket", le="+Inf") > 0
    assert value(found, "vh_orch_transferred_bytes_total", kind="input") >= len(DATA)
    assert value(found, "vh_orch_transferred_bytes_total", kind="output") >= len(DATA)
    machines = {labels: v for (name, labels), v in found.items() if name == "vh_orch_machines"}
    assert {dict(labels)["state"] for labels in machines} >= {"ready", "busy", "provisioning"}
    assert sum(v for labels, v in machines.items() if dict(labels)["environment"] == "local") == 1  # this host
    assert value(found, "vh_orch_queue_length", environment="local") == 0
    assert value(found, "vh_orch_queue_oldest_wait_seconds", environment="local") == 0
    assert value(found, "vh_orch_cost_per_hour", environment="local") == 0
    assert value(found, "vh_orch_launch_failures_total", environment="local", kind="capacity") == 0


def test_queue_machines_and_cost_are_read_from_the_database_at_scrape_time(served: VhOrch, tmp_path: Path) -> None:
    # A fake cloud whose machine boots for longer than the test: the execution waits in the queue
    # behind a billed machine. The CLI wrote all of it; the daemon's /metrics reads it.
    served("env", "add", "slow", "--cloud", "fake", "--max-scale", "1", "--price-per-hour", "0.5",
           "--set", "fake.boot_seconds=3600")
    folder = make_project(tmp_path, "waits", "- step:\n    name: s\n    image: busybox\n    command: echo hi\n")
    served.run_json("s", "--project", "p", "--adhoc", str(folder), "--env", "slow")
    deadline = time.monotonic() + WAIT_S
    while True:
        (row,) = [r for r in served.json("status") if r["environment"] == "slow"]
        if row["machines"].get("provisioning"):
            break
        assert time.monotonic() < deadline, row
        time.sleep(0.1)
    found = scrape(served.api_url())
    assert value(found, "vh_orch_queue_length", environment="slow") == row["queued"] == 1
    assert value(found, "vh_orch_queue_oldest_wait_seconds", environment="slow") >= 0
    assert value(found, "vh_orch_machines", environment="slow", state="provisioning") == 1
    assert value(found, "vh_orch_cost_per_hour", environment="slow") == row["cost_per_hour"] == 0.5
    assert value(found, "vh_orch_executions", status="queued") >= 1


def test_a_client_behind_a_trusted_proxy_is_judged_by_its_forwarded_address(served: VhOrch) -> None:
    status, body = get(f"{served.api_url()}/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 403
    detail = json.loads(body)["detail"]
    assert "203.0.113.9" in detail and "--metrics-allow" in detail and "VH_ORCH_METRICS_ALLOW" in detail
    # From an address that is not a trusted proxy the header is ignored: the client is who connected.
    status, _ = get(f"{served.api_url()}/metrics", source="127.0.0.2", headers={"X-Forwarded-For": "203.0.113.9"})
    assert status == 200


def test_log_format_json_makes_every_line_of_serve_a_json_object(served: VhOrch) -> None:
    served.api_url()  # the HTTP server logs its address a moment after the daemon says it started
    lines = served.daemon_log.read_text().splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record), record
        assert record["time"].endswith("Z") and datetime.fromisoformat(record["time"])
    messages = [r["message"] for r in records]
    assert any("vh-orch daemon started" in m for m in messages)
    assert any(m.startswith("HTTP API on http://127.0.0.1:") for m in messages)


def test_metrics_admit_by_address_never_by_token(vh: VhOrch) -> None:
    vh("user", "add", "alice")
    token = vh.json("user", "token", "alice")["token"]
    vh.start_daemon("--metrics-allow", "127.0.0.2/32")
    url = f"{vh.api_url()}/metrics"
    status, body = get(url)
    assert status == 403
    assert "127.0.0.2/32" in json.loads(body)["detail"] and "127.0.0.1" in json.loads(body)["detail"]
    assert get(url, headers={"Authorization": f"Token {token}"})[0] == 403
    assert get(f"{vh.api_url()}/api/v0/users/me/", headers={"Authorization": f"Token {token}"})[0] == 200
    status, body = get(url, source="127.0.0.2")
    assert status == 200 and "vh_orch_executions" in body


def test_a_bad_metrics_allow_or_log_format_stops_serve_before_it_starts(vh: VhOrch) -> None:
    runs = {  # side by side: each is a Python start-up
        name: subprocess.Popen([vh.exe, "serve", *args], env={**vh.env, **env}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        for name, args, env in [
            ("cidr", ["--metrics-allow", "10.0.0.0/33"], {}),
            ("envvar", [], {"VH_ORCH_METRICS_ALLOW": "127.0.0.1,banana"}),
            ("format", ["--log-format", "xml"], {}),
            ("json", ["--log-format", "json", "--metrics-allow", ""], {}),
        ]
    }
    results = {name: (proc.wait(60), proc.communicate()[1]) for name, proc in runs.items()}
    for name in ("cidr", "envvar"):
        code, stderr = results[name]
        assert code == 1, stderr
        assert "--metrics-allow" in stderr and "is not an address or a CIDR network" in stderr
        assert "daemon started" not in stderr
    code, stderr = results["format"]
    assert code == 1 and "--log-format 'xml' is not one of text, json" in stderr
    # With JSON logs, the refusal is a JSON line too.
    code, stderr = results["json"]
    assert code == 1
    (record,) = [json.loads(line) for line in stderr.splitlines()]
    assert record["level"] == "ERROR" and "--metrics-allow" in record["message"]


def test_launch_failures_are_counted_per_environment_and_kind(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    store = Store(url)
    entry = parse_entry({"name": "gpu", "cloud": "fake", "max_scale": 2}, "gpu")
    env, _ = store.ensure_environment("gpu", "fake", settings=entry.settings, **entry.columns)
    for kind in ("capacity", "capacity", "quota"):
        store.record_launch_failure(env.id, kind, "fake-a", "big", f"no {kind}")  # type: ignore[arg-type]
    found = samples_of(StateCollector(store).collect())
    assert value(found, "vh_orch_launch_failures_total", environment="gpu", kind="capacity") == 2
    assert value(found, "vh_orch_launch_failures_total", environment="gpu", kind="quota") == 1
    assert value(found, "vh_orch_launch_failures_total", environment="gpu", kind="transient") == 0

    # The app takes its allow-list as an argument: this one admits 127.0.0.2 only.
    settings = Settings(home=tmp_path, db_url=url)
    server = ApiServer(store, settings, "127.0.0.1:0", metrics_allow=parse_allow("127.0.0.2"))
    api = server.start()
    try:
        assert get(f"{api}/metrics")[0] == 403
        status, body = get(f"{api}/metrics", source="127.0.0.2")
        assert status == 200
        assert value(samples(body), "vh_orch_launch_failures_total", environment="gpu", kind="capacity") == 2
    finally:
        server.stop()


def test_json_log_lines_carry_the_traceback_in_exc() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("vh_orch.x", logging.ERROR, __file__, 1, "failed: %s", ("it",), sys.exc_info())
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert (parsed["level"], parsed["logger"], parsed["message"]) == ("ERROR", "vh_orch.x", "failed: it")
    assert parsed["exc"].startswith("Traceback") and "ValueError: boom" in parsed["exc"]


def test_a_daemon_without_work_passes_seldom_and_still_starts_work_nobody_woke_it_for(tmp_path: Path) -> None:
    """With nothing to do, a whole pass runs every QUIET_PASS_S (a one-query look for work each
    interval instead): work written by another process that sends no wake-up (a replica on
    another host) is still started."""
    with installation(tmp_path / "home") as vh:
        vh("env", "update", "local", "--runtime", "process")
        vh("project", "add", "p")
        folder = make_project(tmp_path, "proj", "- step:\n    name: s\n    image: busybox\n    command: echo hi\n")
        vh.start_daemon()
        api = vh.api_url()
        time.sleep(2)  # its first passes (this host's machine) are behind it
        before, start = value(scrape(api), "vh_orch_reconcile_pass_seconds_count"), time.monotonic()
        time.sleep(QUIET_PASS_S + 1)
        passes = value(scrape(api), "vh_orch_reconcile_pass_seconds_count") - before
        elapsed = time.monotonic() - start
        assert passes <= elapsed / QUIET_PASS_S + 2, (passes, elapsed)  # not one a second

        settings = Settings.from_env(vh.env)
        execution = submit(Store(settings.db_url), settings,
                           SubmitRequest(project="p", step="s", adhoc=folder, user="tester"))
        info = vh.wait(execution.id)
        assert info["status"] == "complete", info
