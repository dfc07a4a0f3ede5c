"""`vh-orch simulate` and the adaptive idle policy: traces, the replay, the Pareto claim, bad input,
and the same policy deciding in real reconcile passes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from conftest import VhOrch
from test_reconcile import make_world
from vh_orch.orchestrator.idle import keep_alive_s
from vh_orch.simulation.plot import pareto_front
from vh_orch.simulation.engine import Result

ENVS = """
environments:
  - name: gpu
    cloud: fake
    max_scale: 12
    idle_timeout: 20m
    price_per_hour: 1.2
    fake: {boot_seconds: 90}
"""
FIXED = ["idle-timeout:5m", "idle-timeout:15m", "idle-timeout:20m", "idle-timeout:3d", "static"]


@pytest.fixture
def cli(tmp_path: Path) -> VhOrch:
    vh = VhOrch(tmp_path / "home")  # simulate needs no installation
    (tmp_path / "envs.yaml").write_text(ENVS)
    return vh


def generated(cli: VhOrch, tmp_path: Path, kind: str, executions: int, days: float) -> Path:
    path = tmp_path / f"{kind}.csv"
    cli("simulate", "--generate", kind, "--executions", str(executions), "--days", str(days), "--seed", "7",
        "--out", str(path))
    return path


@pytest.mark.parametrize("kind,executions,days", [("steady", 1500, 3), ("bursty", 1500, 3), ("sparse", 60, 3)])
def test_adaptive_is_on_the_pareto_front_against_fixed_timeouts_and_static(cli: VhOrch, tmp_path: Path, kind: str,
                                                                          executions: int, days: float) -> None:
    trace = generated(cli, tmp_path, kind, executions, days)
    rows = cli.json("simulate", str(trace), "--envs", str(tmp_path / "envs.yaml"), "--policy", "all", "--json")
    assert [r["policy"] for r in rows] == ["adaptive", *FIXED]
    lines = trace.read_text().count("\n") - 1
    for r in rows:
        assert r["executions"] == lines
        assert set(r) == {"policy", "executions", "cost", "ideal_cost", "machine_hours", "idle_machine_hours",
                          "launches", "wait_p50_s", "wait_p95_s", "wait_max_s"}
        assert r["cost"] >= r["ideal_cost"] > 0, "no policy runs the work for less than the work costs"
        assert r["cost"] == pytest.approx(r["machine_hours"] * 1.2, rel=1e-3)
        assert 0 <= r["idle_machine_hours"] < r["machine_hours"]
        assert 0 <= r["wait_p50_s"] <= r["wait_p95_s"] <= r["wait_max_s"]
    by = {r["policy"]: r for r in rows}
    assert by["static"]["launches"] == 12, "static: max_scale machines, launched once"
    results = [Result(**r) for r in rows]
    assert "adaptive" in [r.policy for r in pareto_front(results)], rows
    assert by["adaptive"]["cost"] < by["idle-timeout:5m"]["cost"]


def test_generated_traces_are_seeded_and_well_formed(cli: VhOrch, tmp_path: Path) -> None:
    for kind in ("steady", "bursty", "sparse", "daily"):
        first = cli("simulate", "--generate", kind, "--executions", "300", "--days", "2", "--seed", "3").stdout
        again = cli("simulate", "--generate", kind, "--executions", "300", "--days", "2", "--seed", "3").stdout
        other = cli("simulate", "--generate", kind, "--executions", "300", "--days", "2", "--seed", "4").stdout
        assert first == again and first != other
        rows = list(csv.reader(io.StringIO(first)))
        assert rows[0] == ["submit_s", "duration_s", "environment"]
        submits = [float(r[0]) for r in rows[1:]]
        assert submits == sorted(submits) and 0 <= submits[0] and submits[-1] <= 2 * 86400 + 60
        assert 150 <= len(submits) <= 600, (kind, len(submits))
        assert all(0 < float(r[1]) <= 86400 and r[2] == "gpu" for r in rows[1:])
    daily = list(csv.reader(io.StringIO(cli("simulate", "--generate", "daily", "--executions", "500").stdout)))[1:]
    hours = [(float(r[0]) % 86400) / 3600 for r in daily]
    assert all(8 <= h < 20 for h in hours), "daily cycles: nothing at night"


def test_the_plot_is_a_png(cli: VhOrch, tmp_path: Path) -> None:
    trace = generated(cli, tmp_path, "sparse", 40, 2)
    out = cli("simulate", str(trace), "--envs", str(tmp_path / "envs.yaml"), "--policy", "adaptive",
              "--policy", "idle-timeout:5m", "--plot", str(tmp_path / "p.png"))
    assert "adaptive" in out.stdout and "idle-timeout:5m" in out.stdout
    data = (tmp_path / "p.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000


@pytest.mark.parametrize("content,message", [
    ("submit,duration,env\n1,2,gpu\n", "header"),
    ("submit_s,duration_s,environment\n1,-2,gpu\n", "not negative"),
    ("submit_s,duration_s,environment\nx,2,gpu\n", "numbers"),
    ("submit_s,duration_s,environment\n1,2\n", "3 fields"),
    ("submit_s,duration_s,environment\n1,2,cpu\n", "'cpu'"),
    ("submit_s,duration_s,environment\n", "no submissions"),
    ("submit_s,duration_s,environment\nnan,2,gpu\n", "finite"),
])
def test_bad_traces_are_refused_clearly(cli: VhOrch, tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "t.csv").write_text(content)
    out = cli("simulate", str(tmp_path / "t.csv"), "--envs", str(tmp_path / "envs.yaml"),
              "--plot", str(tmp_path / "p.png"), check=False)
    assert out.returncode == 1 and message in out.stderr, out.stderr
    assert not (tmp_path / "p.png").exists()


@pytest.mark.parametrize("args,message", [
    (["--policy", "idle-timeout:soon"], "not a duration"),
    (["--policy", "greedy"], "unknown policy"),
    (["--plot", "p.jpg"], ".png"),
    (["--envs", "missing.yaml"], "cannot read"),
])
def test_bad_options_are_refused_clearly(cli: VhOrch, tmp_path: Path, args: list[str], message: str) -> None:
    trace = generated(cli, tmp_path, "sparse", 20, 1)
    base = {"--envs": str(tmp_path / "envs.yaml")}
    if args[0] == "--envs":
        base["--envs"] = str(tmp_path / args[1])
        args = []
    out = cli("simulate", str(trace), *[x for kv in base.items() for x in kv], *args, check=False, cwd=tmp_path)
    assert out.returncode == 1 and message in out.stderr, out.stderr
    assert not list(tmp_path.glob("p.*"))


def test_unknown_generator_kind_is_refused(cli: VhOrch) -> None:
    out = cli("simulate", "--generate", "chaotic", check=False)
    assert out.returncode == 1 and "steady, bursty, sparse, daily" in out.stderr


# -- the adaptive rule itself ----------------------------------------------------------------


def test_keep_alive_follows_the_arrivals() -> None:
    boot = 120.0
    sparse = tuple(i * 3600.0 for i in range(50))  # one an hour: waiting never pays
    assert keep_alive_s(sparse, 1, boot, cap_s=1200) == 0
    dense = tuple(i * 20.0 for i in range(200))  # one every 20 s: keep the next machine for the next one
    assert keep_alive_s(dense, 1, boot, cap_s=1200) == pytest.approx(20)
    assert keep_alive_s(dense, 3, boot, cap_s=1200) == pytest.approx(60), "the third idle machine: 3 arrivals"
    sweeps = tuple(h * 7200.0 + s * 2.0 for h in range(10) for s in range(20))  # bursts, hours apart
    assert keep_alive_s(sweeps, 1, boot, cap_s=1200) == pytest.approx(2), "within a sweep, not across sweeps"
    assert keep_alive_s(dense, 1, boot, cap_s=10) == 10, "never beyond idle_timeout"
    assert keep_alive_s(dense[:5], 1, boot, cap_s=600) == 600, "too little history: idle_timeout"
    cheap = keep_alive_s(tuple(i * 400.0 for i in range(100)), 1, boot, cap_s=3600, weight=20)
    dear = keep_alive_s(tuple(i * 400.0 for i in range(100)), 1, boot, cap_s=3600, weight=0.05)
    assert cheap == pytest.approx(400) and dear == 0, "cheap machines are kept, dear ones retire"


def test_the_daemon_policy_retires_at_once_when_arrivals_are_hours_apart(tmp_path: Path) -> None:
    w = make_world(tmp_path, idle_policy="adaptive", idle_timeout="30m", price_per_hour=1.0,
                   fake={"boot_seconds": 30})
    for _ in range(12):  # one submission an hour, each run to completion, then a few idle seconds
        w.submit(1)
        w.run(3, step_s=30)
        w.host.complete_all()
        w.run(3, step_s=1)
        w.clock.advance(3600)
    ended = [m for m in w.machines() if m.state in ("terminating", "terminated")]
    assert len(ended) >= 3, [(m.state, m.reason) for m in w.machines()]
    assert all("(adaptive)" in (m.reason or "") for m in ended)
    assert w.machines("ready", "busy") == [], "no machine waits an hour for the next submission"


def test_the_daemon_policy_keeps_a_machine_while_work_arrives_often(tmp_path: Path) -> None:
    w = make_world(tmp_path, idle_policy="adaptive", idle_timeout="30m", price_per_hour=1.0,
                   fake={"boot_seconds": 30})
    for _ in range(40):  # one submission a minute, each finishing at once
        w.submit(1)
        w.run(1, step_s=30)
        w.host.complete_all()
        w.run(1, step_s=30)
    machines = w.machines("ready", "busy")
    assert len(machines) == 1, "one machine serves them all, kept between submissions"
    assert len([m for m in w.machines() if m.instance_id]) <= 2


def test_several_environments_and_slots_in_one_trace(tmp_path: Path) -> None:
    from vh_orch.config.environments import parse_file_text
    from vh_orch.simulation.engine import simulate
    from vh_orch.simulation.trace import generate

    specs = parse_file_text("""
environments:
  - {name: gpu, cloud: fake, max_scale: 3, min_scale: 1, slots: 2, price_per_hour: 2.0, fake: {boot_seconds: 60}}
  - {name: cpu, cloud: fake, max_scale: 5, price_per_hour: 0.1}
""", "envs")
    trace = sorted(generate("steady", 200, 1, "gpu", seed=2) + generate("bursty", 200, 1, "cpu", seed=3),
                   key=lambda s: s.submit_s)
    results = simulate(specs, trace, ["adaptive", "idle-timeout:5m", "static"])
    for r in results:
        assert r.executions == len(trace)
        assert r.cost >= r.ideal_cost, r  # two executions share a gpu machine: the ideal counts half a machine
    by = {r.policy: r for r in results}
    assert by["static"].launches == 3 + 5
    assert by["adaptive"].launches >= 2, "the gpu environment keeps its min_scale machine and adds more"
