"""Environment definitions through the CLI: add, update, rm, apply; and the fake cloud end to end."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest

from conftest import VhOrch, make_project
from vh_orch.config.environments import parse_duration, parse_entry
from vh_orch.errors import ConfigError

ENVS = """
environments:
  - name: gpu
    cloud: fake
    instance_type: [g5.xlarge, g4dn.xlarge]
    region: test-1
    min_scale: 0
    max_scale: 2
    idle_timeout: 10m
    spot: true
    price_per_hour: 1.006
    slots: 1
    max_attempts: 2
    fake: {boot_seconds: 5, zones: [a, b]}
  - name: cpu
    cloud: fake
    max_scale: 4
    idle_timeout: 90s
"""


def env_rows(vh: VhOrch) -> list[tuple]:  # type: ignore[type-arg]
    db = sqlite3.connect(vh.home / "state.db")
    try:
        return db.execute("SELECT name, cloud, min_scale, max_scale, idle_timeout_s, settings, updated_at "
                          "FROM environment ORDER BY name").fetchall()
    finally:
        db.close()


def write(tmp_path: Path, text: str, name: str = "envs.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_apply_is_idempotent(vh: VhOrch, tmp_path: Path) -> None:
    path = write(tmp_path, ENVS)
    first = vh.json("env", "apply", path)
    assert first == {"created": ["gpu", "cpu"], "updated": [], "unchanged": [], "removed": []}
    rows = env_rows(vh)
    second = vh.json("env", "apply", path)
    assert second == {"created": [], "updated": [], "unchanged": ["gpu", "cpu"], "removed": []}
    assert env_rows(vh) == rows
    shown = vh.json("env", "show", "gpu")
    assert shown["instance_type"] == ["g5.xlarge", "g4dn.xlarge"] and shown["idle_timeout"] == "10m"
    assert shown["fake"] == {"boot_seconds": 5.0, "zones": ["a", "b"], "runtime": "auto"}

    changed = write(tmp_path, ENVS.replace("max_scale: 4", "max_scale: 6"), "changed.yaml")
    assert vh.json("env", "apply", changed)["updated"] == ["cpu"]


def test_prune_removes_what_the_file_no_longer_defines_but_keeps_local(vh: VhOrch, tmp_path: Path) -> None:
    vh("env", "apply", write(tmp_path, ENVS))
    only_gpu = write(tmp_path, ENVS[: ENVS.index("  - name: cpu")], "gpu.yaml")
    report = vh.json("env", "apply", only_gpu, "--prune")
    assert report == {"created": [], "updated": [], "unchanged": ["gpu"], "removed": ["cpu"]}
    assert sorted(e["name"] for e in vh.json("env", "list")) == ["gpu", "local"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("environments:\n  - {name: x, cloud: fake, flavour: big}\n", "unknown key 'flavour'"),
        ("environments:\n  - {name: x, cloud: moon}\n", "cloud: 'moon' is not a known cloud"),
        ("environments:\n  - {name: x, cloud: fake, min_scale: 3, max_scale: 2}\n", "min_scale (3) is greater than max_scale (2)"),
        ("environments:\n  - {name: x, cloud: fake, idle_timeout: -5m}\n", "idle_timeout: '-5m' is negative"),
        ("environments:\n  - {name: x, cloud: fake, idle_timeout: soon}\n", "idle_timeout: 'soon' is not a duration"),
        ("environments:\n  - {name: x, cloud: fake, idle_timeout: -3}\n", "idle_timeout: -3 is negative"),
        ("environments:\n  - {name: x, cloud: fake, fake: {boot: 1}}\n", "fake: unknown key 'boot'"),
        ("environments:\n  - {name: x, cloud: fake, fake: {state_file: fake.json}}\n",
         "fake.state_file: 'fake.json' is not an absolute path to a file"),
        ("environments:\n  - {name: x, cloud: fake, fake: {gpus: -1}}\n", "fake.gpus: -1 is not a number of GPUs (0 to 64)"),
        ("environments:\n  - {name: x, cloud: fake, aws: {ami: a}}\n", "the `aws:` section does not apply to cloud fake"),
        ("environments:\n  - {name: x, cloud: fake, slots: 0}\n", "slots: 0 is less than 1"),
        ("environments:\n  - {name: x, cloud: fake, max_scale: two}\n", "max_scale: 'two' is not a whole number"),
        ("environments:\n  - {name: x, cloud: fake, spot: maybe}\n", "spot: 'maybe' is not true or false"),
        ("environments:\n  - {name: x, cloud: fake, input_cache_gb: -1}\n", "input_cache_gb: -1 is not a size in GB"),
        ("environments:\n  - {name: x, cloud: fake, input_cache_gb: lots}\n",
         "input_cache_gb: 'lots' is not a size in GB (a number, 0 or more; 0 turns the cache off)"),
        ("environments:\n  - {name: X Y, cloud: fake}\n", "name: 'X Y' is not a valid name"),
        ("environments:\n  - {name: x, cloud: fake}\n  - {name: x, cloud: fake}\n", "'x' is defined more than once"),
        ("envs: []\n", "expected a top-level `environments:` list"),
        ("environments: [\n", "is not valid YAML"),
    ],
)
def test_an_invalid_file_changes_nothing_and_names_the_key(vh: VhOrch, tmp_path: Path, text: str, message: str) -> None:
    vh("env", "apply", write(tmp_path, ENVS))
    before = env_rows(vh)
    # A valid environment first, then the broken one: the whole file or nothing.
    broken = write(tmp_path, text.replace("environments:\n", "environments:\n  - {name: new, cloud: fake}\n", 1)
                   if text.startswith("environments:\n  -") else text, "broken.yaml")
    result = vh("env", "apply", broken, check=False)
    assert result.returncode == 1 and message in result.stderr, result.stderr
    assert env_rows(vh) == before


def test_prune_refuses_an_environment_in_use_and_changes_nothing(vh: VhOrch, tmp_path: Path) -> None:
    vh("env", "apply", write(tmp_path, ENVS))
    vh("project", "add", "p")
    folder = make_project(tmp_path, "proj", "- step:\n    name: s\n    image: busybox\n    command: echo\n")
    vh("exec", "run", "s", "--project", "p", "--adhoc", str(folder), "--env", "cpu")
    before = env_rows(vh)
    only_gpu = write(tmp_path, ENVS[: ENVS.index("  - name: cpu")].replace("max_scale: 2", "max_scale: 3"), "g.yaml")
    result = vh("env", "apply", only_gpu, "--prune", check=False)
    assert result.returncode == 1 and "cannot prune environment 'cpu'" in result.stderr
    assert env_rows(vh) == before


def test_add_update_and_rm(vh: VhOrch, tmp_path: Path) -> None:
    vh("env", "add", "spare", "--cloud", "fake", "--max-scale", "3", "--idle-timeout", "2h",
       "--instance-type", "a1", "--instance-type", "a2", "--set", "fake.boot_seconds=2")
    shown = vh.json("env", "show", "spare")
    assert shown["max_scale"] == 3 and shown["idle_timeout"] == "2h" and shown["instance_type"] == ["a1", "a2"]
    assert "already exists" in vh("env", "add", "spare", "--cloud", "fake", check=False).stderr
    vh("env", "update", "spare", "--min-scale", "1", "--spot")
    shown = vh.json("env", "show", "spare")
    assert shown["min_scale"] == 1 and shown["spot"] is True and shown["max_scale"] == 3
    bad = vh("env", "update", "spare", "--min-scale", "5", check=False)
    assert "min_scale (5) is greater than max_scale (3)" in bad.stderr
    assert vh.json("env", "show", "spare")["min_scale"] == 1

    vh("project", "add", "p")
    folder = make_project(tmp_path, "proj", "- step:\n    name: s\n    image: busybox\n    command: echo\n")
    vh("exec", "run", "s", "--project", "p", "--adhoc", str(folder), "--env", "spare")
    refused = vh("env", "rm", "spare", check=False)
    assert refused.returncode == 1 and "is in use" in refused.stderr and "--drain" in refused.stderr
    vh("exec", "stop", "1")
    vh("env", "rm", "spare")
    assert "spare" not in [e["name"] for e in vh.json("env", "list")]
    assert vh.json("exec", "info", "1")["status"] == "stopped"


def test_quota_holds_work_as_created(vh: VhOrch, tmp_path: Path) -> None:
    vh("quota", "set", "tester", "1")
    vh("project", "add", "p")
    folder = make_project(tmp_path, "proj", "- step:\n    name: s\n    image: busybox\n    command: echo\n")
    runs = [vh.run_json("s", "--project", "p", "--adhoc", str(folder)) for _ in range(2)]
    assert [r["status"] for r in runs] == ["queued", "created"]
    vh("exec", "stop", str(runs[0]["id"]))
    assert vh.json("quota", "list") == {"tester": 1}
    assert "at least 1" in vh("quota", "set", "tester", "0", check=False).stderr


@pytest.mark.parametrize("value", ["fake.json", "./fake.json", "", "/var/tmp/", 5, ["/a.json"], None])
def test_a_fake_state_file_other_than_an_absolute_file_path_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"test \(x\)\.fake\.state_file: .* is not an absolute path to a file"):
        parse_entry({"name": "x", "cloud": "fake", "fake": {"state_file": value}}, "test")


def test_a_fake_state_file_is_kept_in_the_settings(tmp_path: Path) -> None:
    spec = parse_entry({"name": "x", "cloud": "fake", "fake": {"state_file": str(tmp_path / "fake.json")}}, "test")
    assert spec.settings["fake"]["state_file"] == str(tmp_path / "fake.json")


def test_durations() -> None:
    assert parse_duration("1h30m", "x") == 5400 and parse_duration(45, "x") == 45 and parse_duration("2d", "x") == 172800
    for bad in ("", "5 minutes", "1x", True):
        with pytest.raises(ConfigError):
            parse_duration(bad, "x")


def test_five_executions_on_a_fake_environment_use_at_most_two_machines(vh: VhOrch, tmp_path: Path) -> None:
    """End to end: `vh-orch serve` launches fake machines, runs real commands on them, retires them."""
    vh("env", "apply", write(tmp_path, """
environments:
  - name: burst
    cloud: fake
    max_scale: 2
    idle_timeout: 3s
    price_per_hour: 2.5
    fake: {boot_seconds: 1, runtime: process}
"""))
    vh("project", "add", "p")
    folder = make_project(tmp_path, "proj",
                          "- step:\n    name: s\n    image: busybox\n    command: sleep 1; echo ran on $VH_EXECUTION_ID\n")
    vh.start_daemon()
    ids = [vh.run_json("s", "--project", "p", "--adhoc", str(folder), "--env", "burst")["id"] for _ in range(5)]
    infos = [vh.wait(i, timeout=120) for i in ids]
    assert [i["status"] for i in infos] == ["complete"] * 5, infos
    status = {row["environment"]: row for row in vh.json("status")}
    assert status["burst"]["queued"] == 0
    deadline = time.monotonic() + 60
    while [m for m in vh.json("machine", "list") if m["environment"] == "burst" and m["state"] != "terminated"]:
        assert time.monotonic() < deadline, "machines were not retired after the idle timeout"
        time.sleep(0.5)
    machines = [m for m in vh.json("machine", "list", "--all") if m["environment"] == "burst"]
    assert {m["state"] for m in machines} == {"terminated"}
    assert all("idle for more than 3 s" in m["reason"] for m in machines)
    # Counted from the stored rows, not sampled: never more than max_scale machines alive at once
    # (a machine lives from its creation to its last state change, its termination), and every
    # execution ran on one of them.
    lives = [(m["created_at"], m["state_changed_at"]) for m in machines]
    assert max(sum(1 for start, end in lives if start <= t < end) for t, _ in lives) <= 2, machines
    assert {i["machine"] for i in infos} <= {m["id"] for m in machines}
    assert vh.json("status")[0]["cost_per_hour"] == 0


def test_cleanup_removes_scratch_folders_of_finished_executions(vh: VhOrch, tmp_path: Path) -> None:
    vh("project", "add", "p")
    folder = make_project(tmp_path, "proj", "- step:\n    name: s\n    image: busybox\n    command: echo\n")
    created = vh.run_json("s", "--project", "p", "--adhoc", str(folder))
    vh("exec", "stop", str(created["id"]))
    leftover = vh.home / "executions" / str(created["id"])
    leftover.mkdir(parents=True)
    dry = vh.json("cleanup", "--dry-run")
    assert dry["removed"]["scratch"] == [str(leftover)] and leftover.exists()
    vh("cleanup")
    assert not leftover.exists()
    (vh.home / "daemon.yaml").write_text("cleanup:\n  - {job: scratch, cron: 'every minute'}\n")
    assert "is not a crontab expression" in vh("cleanup", check=False).stderr
    assert json.loads(vh("cleanup", "--json", check=False).stdout or "null") is None


def test_a_spot_interruption_requeues_a_running_execution_and_it_completes(vh: VhOrch, tmp_path: Path) -> None:
    """The real runner is abandoned when its machine vanishes; the second attempt completes."""
    vh("env", "apply", write(tmp_path, """
environments:
  - name: spot
    cloud: fake
    spot: true
    max_scale: 1
    idle_timeout: 1h
    max_attempts: 3
    fake: {boot_seconds: 0, runtime: process, interrupt_after: 6s, interrupt_count: 1}
"""))
    vh("project", "add", "p")
    folder = make_project(tmp_path, "proj",
                          "- step:\n    name: s\n    image: busybox\n    command: echo attempt; sleep 12; echo finished\n")
    vh.start_daemon()
    created = vh.run_json("s", "--project", "p", "--adhoc", str(folder), "--env", "spot")
    info = vh.wait(created["id"], timeout=90)
    assert info["status"] == "complete" and info["attempt"] == 2, info
    statuses = [json.loads(line)["text"] for line in vh("exec", "logs", str(created["id"]), "--json").stdout.splitlines()
                if json.loads(line)["kind"] == "status"]
    assert statuses[:3] == ["created", "queued", "started"]
    assert "Server.SpotInstanceTermination" in statuses[3] and statuses[3].startswith("queued")
    assert statuses[-2:] == ["started: attempt 2", "complete"]
    plain = vh("exec", "logs", str(created["id"]))
    assert plain.stdout.splitlines() == ["attempt", "attempt", "finished"]
    marks = [line for line in plain.stderr.splitlines() if line.startswith("-- ")]
    assert marks[0] == "-- attempt 1 started"
    assert marks[1].startswith("-- attempt 1 ended: machine") and "requeued after attempt 1 of 3" in marks[1]
    assert marks[2:] == ["-- attempt 2 started"]
    machines = [m for m in vh.json("machine", "list", "--all") if m["environment"] == "spot"]
    assert [m["state"] for m in machines][:1] == ["lost"]
