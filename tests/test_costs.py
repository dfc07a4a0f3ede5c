"""What executions cost and who spent it: the split of each machine's bill (pure, then on the fake cloud
with the real daemon), the cost report that adds up to the bill, and budgets that hold work."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import VhOrch, eventually, make_project
from test_users import PASSWORD, with_stdin
from vh_orch.orchestrator.costs import BilledMachine, Hold, attribute, period_start

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- the split, pure ---------------------------------------------------------------------------------

def test_a_machines_bill_is_split_by_who_held_it_and_the_rest_is_idle() -> None:
    # $3.6 an hour: a tenth of a cent a second. Machine 1 lives 100 s: A alone 10-30, A and B 30-50
    # (B asks for 3 GPUs: three shares to A's one), nobody 50-100. Machine 2 (another environment)
    # lives 0-40 with C on it 0-40.
    machines = [BilledMachine(1, "gpu", 3.6, at(0), at(100)), BilledMachine(2, "cpu", 3.6, at(0), at(40))]
    holds = [Hold(1, 1, at(10), at(50), 1.0), Hold(2, 1, at(30), at(50), 3.0), Hold(3, 2, at(0), at(40), 1.0)]
    split = attribute(machines, holds, None, at(200))
    assert split.executions[1].cost_usd == pytest.approx(0.020 + 0.005)
    assert split.executions[2].cost_usd == pytest.approx(0.015)
    assert split.executions[3].cost_usd == pytest.approx(0.040)
    assert split.idle["gpu"].cost_usd == pytest.approx(0.010 + 0.050)  # 0-10 booting, 50-100 idle
    assert split.idle["cpu"].cost_usd == pytest.approx(0.0)
    billed = sum(s.cost_usd for s in split.executions.values()) + sum(s.cost_usd for s in split.idle.values())
    assert billed == pytest.approx(split.total_usd) == pytest.approx(0.100 + 0.040)
    assert split.executions[1].machine_seconds == pytest.approx(20 + 5)


def test_a_window_cuts_the_bill_and_a_running_machine_counts_until_now() -> None:
    machines = [BilledMachine(1, "gpu", 3.6, at(0), None)]
    holds = [Hold(1, 1, at(0), None, 1.0)]
    split = attribute(machines, holds, at(20), at(50))
    assert split.executions[1].cost_usd == pytest.approx(0.030)
    assert split.total_usd == pytest.approx(0.030)
    assert attribute(machines, holds, at(60), at(50)).total_usd == 0  # an empty window


@pytest.mark.parametrize(("period", "start"), [
    ("day", datetime(2026, 12, 9, tzinfo=UTC)),
    ("week", datetime(2026, 12, 7, tzinfo=UTC)),  # a Monday
    ("month", datetime(2026, 12, 1, tzinfo=UTC)),
])
def test_budget_periods_start_at_midnight_utc(period: str, start: datetime) -> None:
    assert period_start(period, datetime(2026, 12, 9, 15, 30, tzinfo=UTC)) == start


# -- on the fake cloud ----------------------------------------------------------------------------------

PRICE = 36.0  # USD an hour: a cent a second, so that a few seconds show
ENVS = f"""
environments:
  - name: shared
    cloud: fake
    max_scale: 1
    slots: 2
    idle_timeout: 1s
    price_per_hour: {PRICE}
    fake: {{boot_seconds: 0.3, runtime: process}}
  - name: single
    cloud: fake
    max_scale: 2
    slots: 1
    idle_timeout: 1s
    price_per_hour: {PRICE}
    fake: {{boot_seconds: 0.3, runtime: process}}
"""
STEPS = """
- step:
    name: nap
    image: vh-orch/busybox:test
    command:
      - sleep {parameters}
      - echo done > "$VH_OUTPUTS_DIR/done.txt"
    parameters:
      - name: seconds
        type: float
        default: 1
        pass-as: "{v}"
- step:
    name: hold
    image: vh-orch/busybox:test
    command:
      - echo early | tee "$VH_OUTPUTS_DIR/early.txt"
      - sleep 300
- pipeline:
    name: two-naps
    nodes:
      - name: first
        type: execution
        step: nap
      - name: second
        type: execution
        step: nap
    edges:
      - [first.parameter.seconds, second.parameter.seconds]
- task:
    step: nap
    name: pair
    type: grid_search
    parameters:
      - name: seconds
        style: multiple
        rules: {items: [0.5, 0.6]}
"""


@pytest.fixture
def world(vh: VhOrch, tmp_path: Path) -> VhOrch:
    (tmp_path / "envs.yaml").write_text(ENVS)
    vh("env", "apply", str(tmp_path / "envs.yaml"))
    vh("project", "add", "alpha")
    vh("project", "add", "beta")
    vh.project_dir = make_project(tmp_path, "steps", STEPS)  # type: ignore[attr-defined]
    return vh


def run(vh: VhOrch, user: str, project: str, env: str, seconds: float = 1.0, step: str = "nap") -> int:
    vh.env["VH_ORCH_USER"] = user
    try:
        return int(vh.run_json(step, "--project", project, "--adhoc", str(vh.project_dir), "--env", env,  # type: ignore[attr-defined]
                               *(["-p", f"seconds={seconds}"] if step == "nap" else []))["id"])
    finally:
        vh.env["VH_ORCH_USER"] = "tester"


def the_bill(vh: VhOrch) -> float:
    """What the fake cloud's machines cost: each from its row's creation to its termination."""
    db = sqlite3.connect(vh.home / "state.db")
    try:
        rows = db.execute("SELECT machine.created_at, terminated_at FROM machine JOIN environment e ON e.id = environment_id "
                          "WHERE e.cloud = 'fake' AND terminated_at IS NOT NULL").fetchall()
    finally:
        db.close()
    return sum((datetime.fromisoformat(t) - datetime.fromisoformat(c)).total_seconds() for c, t in rows) * PRICE / 3600


def machines_gone(vh: VhOrch) -> bool:
    db = sqlite3.connect(vh.home / "state.db")
    try:
        return db.execute("SELECT count(*) FROM machine JOIN environment e ON e.id = environment_id "
                          "WHERE e.cloud = 'fake' AND terminated_at IS NULL").fetchone()[0] == 0
    finally:
        db.close()


@pytest.mark.slow  # a daemon on the fake cloud
def test_costs_add_up_to_the_bill_by_user_project_and_environment(world: VhOrch) -> None:
    vh = world
    vh.start_daemon()
    # alice's two at once share the one machine of `shared`; bob's go one to a machine on `single`.
    made = {"a1": run(vh, "alice", "alpha", "shared", 1.5), "a2": run(vh, "alice", "alpha", "shared", 1.5),
            "b1": run(vh, "bob", "beta", "single", 1.0), "b2": run(vh, "bob", "alpha", "single", 1.0)}
    infos = {name: vh.wait(i) for name, i in made.items()}
    assert {info["status"] for info in infos.values()} == {"complete"}, infos
    eventually("every machine to be retired", lambda: machines_gone(vh))
    bill = the_bill(vh)
    assert bill > 0.02
    costs = {name: vh.json("exec", "info", str(i))["cost_usd"] for name, i in made.items()}
    assert all(c > 0 for c in costs.values()), costs
    for name in ("b1", "b2"):  # alone on its machine: its whole run at the price
        info = infos[name]
        ran = (datetime.fromisoformat(info["ended_at"]) - datetime.fromisoformat(info["started_at"])).total_seconds()
        assert costs[name] == pytest.approx(ran * PRICE / 3600, abs=2e-4)
    reports = {by: vh.json("cost", "report", "--by", by, "--days", "1") for by in ("user", "project", "environment")}
    for by, rows in reports.items():
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(bill, abs=0.002), (by, rows)
        idle = [r for r in rows if r["idle"]]
        assert {r["key"] for r in idle} == {"shared", "single"} and all(r["executions"] == 0 for r in idle)
    by_user = {r["key"]: r for r in reports["user"] if not r["idle"]}
    assert by_user["alice"]["cost_usd"] == pytest.approx(costs["a1"] + costs["a2"], abs=2e-4)
    assert by_user["bob"]["cost_usd"] == pytest.approx(costs["b1"] + costs["b2"], abs=2e-4)
    assert by_user["alice"]["executions"] == 2
    by_project = {r["key"]: r["cost_usd"] for r in reports["project"] if not r["idle"]}
    assert by_project["alpha"] == pytest.approx(costs["a1"] + costs["a2"] + costs["b2"], abs=2e-4)
    # Shared: the two held the one machine together for most of their runs, so each paid less than
    # its own run time at the price.
    for name in ("a1", "a2"):
        info = infos[name]
        ran = (datetime.fromisoformat(info["ended_at"]) - datetime.fromisoformat(info["started_at"])).total_seconds()
        assert costs[name] < ran * PRICE / 3600
    table = vh("cost", "report", "--by", "user").stdout
    assert "alice" in table and "idle (shared)" in table and "total" in table

    # A pipeline's cost is its executions'.
    vh.env["VH_ORCH_USER"] = "bob"
    pipeline = vh.json("pipeline", "run", "two-naps", "--project", "beta", "--env", "single", "--adhoc",
                       str(vh.project_dir))["id"]  # type: ignore[attr-defined]
    vh.env["VH_ORCH_USER"] = "tester"
    done = eventually("the pipeline to end", lambda: (lambda p: p if p["status"] == "complete" else None)(
        vh.json("pipeline", "info", str(pipeline))))
    ran = [i for node in done["nodes"] for i in node["executions"]]
    assert len(ran) == 2
    assert done["cost_usd"] == pytest.approx(sum(vh.json("exec", "info", str(i))["cost_usd"] for i in ran), abs=2e-4)
    assert done["cost_usd"] > 0
    eventually("every machine to be retired", lambda: machines_gone(vh))
    reports = {by: vh.json("cost", "report", "--by", by, "--days", "1") for by in ("user", "pipeline")}
    by_pipeline = {r["key"]: r["cost_usd"] for r in reports["pipeline"] if not r["idle"]}
    assert by_pipeline[pipeline] == pytest.approx(done["cost_usd"], abs=2e-4)
    assert sum(r["cost_usd"] for r in reports["pipeline"]) == pytest.approx(the_bill(vh), abs=0.002)

    # Costs are stored rows: a daemon that stops and starts again (or none at all) reads the same back.
    vh.stop_daemon()
    assert vh.json("cost", "report", "--by", "user", "--days", "1") == reports["user"]
    vh.start_daemon()
    assert vh.json("cost", "report", "--by", "user", "--days", "1") == reports["user"]
    assert vh.json("exec", "info", str(made["a1"]))["cost_usd"] == costs["a1"]
    vh.stop_daemon()

    # The installation's own history replayed: the four runs, on its environments or at another price.
    trace = vh.home.parent / "history.csv"
    [own] = vh.json("simulate", "--from-history", "--days", "1", "--policy", "idle-timeout:1s", "--out", str(trace))
    assert len(trace.read_text().splitlines()) == 1 + 6  # four executions and the pipeline's two
    (vh.home.parent / "double.yaml").write_text(ENVS.replace(f"price_per_hour: {PRICE}", f"price_per_hour: {2 * PRICE}"))
    [double] = vh.json("simulate", "--from-history", "--days", "1", "--policy", "idle-timeout:1s",
                       "--envs", str(vh.home.parent / "double.yaml"))
    assert own["cost"] > 0 and double["cost"] == pytest.approx(2 * own["cost"], abs=2e-4)


@pytest.mark.slow  # a daemon on the fake cloud
def test_a_user_over_budget_waits_while_others_run_and_a_raised_budget_lets_them_go(world: VhOrch) -> None:
    vh = world
    vh.start_daemon()
    first = run(vh, "alice", "alpha", "single", 0.5)
    assert vh.wait(first)["status"] == "complete"
    assert vh.json("exec", "info", str(first))["cost_usd"] > 0
    vh("budget", "set", "--user", "alice", "--usd", "0.001")
    [budget] = vh.json("budget", "list")
    assert budget["scope"] == "user" and budget["name"] == "alice" and budget["period"] == "month"
    assert budget["spent_usd"] >= budget["usd"]

    held = run(vh, "alice", "alpha", "single", 0.5)
    other = run(vh, "bob", "alpha", "single", 0.5)
    assert vh.wait(other)["status"] == "complete"  # bob is not held, even in the same project
    info = vh.json("exec", "info", str(held))
    assert info["status"] == "created"
    assert info["status_reason"].startswith("user alice has spent $") and "budget" in info["status_reason"]

    # A task's children wait too.
    vh.env["VH_ORCH_USER"] = "alice"
    task_id = int(vh.json("task", "run", "pair", "--project", "alpha", "--env", "single", "--adhoc",
                           str(vh.project_dir))["id"])  # type: ignore[attr-defined]
    vh.env["VH_ORCH_USER"] = "tester"
    children = eventually("the task's children", lambda: vh.json("task", "info", str(task_id))["executions"])
    for child in children:
        child_info = vh.json("exec", "info", str(child))
        assert child_info["status"] == "created", child_info
        assert child_info["status_reason"].startswith("user alice has spent $")

    vh("budget", "set", "--user", "alice", "--usd", "100")
    assert vh.wait(held)["status"] == "complete"
    for child in children:
        assert vh.wait(child)["status"] == "complete"
    assert vh.json("task", "info", str(task_id))["cost_usd"] > 0


@pytest.mark.slow  # a daemon on the fake cloud
def test_a_hard_budget_stops_running_work_with_its_outputs_kept(world: VhOrch) -> None:
    vh = world
    vh.start_daemon()
    running = run(vh, "alice", "alpha", "single", step="hold")
    eventually("its first output to be written", lambda: "early" in vh("exec", "logs", str(running)).stdout)
    vh("budget", "set", "--project", "alpha", "--usd", "0", "--hard")
    info = vh.wait(running)
    assert info["status"] == "stopped", info
    assert info["status_reason"].startswith("project alpha has spent $") and "hard budget" in info["status_reason"]
    assert [o["name"] for o in info["outputs"]] == ["early.txt"]
    vh("budget", "rm", "--project", "alpha")
    assert vh.json("budget", "list") == []


@pytest.mark.parametrize("case", [
    (["budget", "set", "--usd", "5"], "give --user NAME or --project NAME"),
    (["budget", "set", "--usd", "5", "--user", "a", "--project", "alpha"], "give --user NAME or --project NAME"),
    (["budget", "set", "--usd", "-1", "--project", "alpha"], "--usd must be a number from 0"),
    (["budget", "set", "--usd", "nan", "--project", "alpha"], "--usd must be a number from 0"),
    (["budget", "set", "--usd", "5", "--project", "alpha", "--period", "year"], "--period must be one of"),
    (["budget", "set", "--usd", "5", "--project", "nope"], "no project named 'nope'"),
    (["budget", "set", "--usd", "5", "--user", "nobody"], "no user named 'nobody'"),
    (["budget", "rm", "--project", "alpha"], "project alpha has no budget"),
    (["cost", "report", "--by", "colour"], "cannot split costs by 'colour'"),
    (["cost", "report", "--since", "yesterday"], "is not a date or time"),
    (["cost", "report", "--since", "2026-01-01", "--days", "3"], "give --since or --days, not both"),
    (["cost", "report", "--days", "0"], "--days must be more than 0"),
    (["simulate", "--from-history", "--days", "0"], "--days must be more than 0"),
    (["simulate", "trace.csv", "--from-history"], "give a trace file or --from-history, not both"),
    (["simulate", "--from-history", "--days", "1"], "no execution ran and ended in that window"),
])
def test_bad_budget_and_report_input_is_refused_and_changes_nothing(world: VhOrch, case: tuple[list[str], str]
                                                                   ) -> None:
    args, message = case
    result = world(*args, check=False)
    assert result.returncode != 0 and message in result.stderr, result
    assert world.json("budget", "list") == []


@pytest.mark.slow  # a daemon on the fake cloud
def test_the_api_shows_each_user_only_the_costs_of_projects_they_can_see(world: VhOrch) -> None:
    vh = world
    with_stdin(vh, PASSWORD + "\n", "user", "add", "carol", "--password-stdin")
    vh("project", "add", "gamma", "--owner", "carol")
    vh.start_daemon()
    made = [run(vh, "carol", "gamma", "single", 0.3), run(vh, "alice", "alpha", "single", 0.3)]
    for i in made:
        assert vh.wait(i)["status"] == "complete"
    api = vh.api_url()
    token = vh.json("user", "token", "carol")["token"]
    seen = requests.get(f"{api}/api/v0/cost/", params={"by": "project"}, timeout=30,
                        headers={"Authorization": f"Token {token}"})
    assert seen.status_code == 200, seen.text
    rows: list[dict[str, Any]] = seen.json()["rows"]
    assert [r["key"] for r in rows] == ["gamma"] and rows[0]["cost_usd"] > 0
    assert not any(r["idle"] for r in rows)
    admin = vh.json("user", "token", "admin")["token"]
    every = requests.get(f"{api}/api/v0/cost/", params={"by": "project", "days": "1"}, timeout=30,
                         headers={"Authorization": f"Token {admin}"}).json()
    keys = {r["key"] for r in every["rows"] if not r["idle"]}
    assert keys == {"gamma", "alpha"} and any(r["idle"] for r in every["rows"])
    bad = requests.get(f"{api}/api/v0/cost/", params={"by": "colour"}, timeout=30,
                       headers={"Authorization": f"Token {token}"})
    assert bad.status_code == 400 and "colour" in bad.text
    # Without `by`: the operators' hourly series, still administrators' only.
    assert requests.get(f"{api}/api/v0/cost/", timeout=30,
                        headers={"Authorization": f"Token {token}"}).status_code == 404


@pytest.mark.slow
def test_the_pages_show_what_executions_and_people_spent(world: VhOrch) -> None:
    """In chromium: an execution's cost among its facts, its project's month so far, and the operations
    page's spend per user and per project with the idle machines' share."""
    from selenium.webdriver.common.by import By

    from test_api_security import Client, project_id
    from test_web import chromium, csp_refusals, sign_in, wait_for

    vh = world
    with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--admin", "--password-stdin")
    vh.start_daemon()
    made = run(vh, "alice", "alpha", "single", 0.5)
    assert vh.wait(made)["status"] == "complete"
    eventually("every machine to be retired", lambda: machines_gone(vh))
    cost = vh.json("exec", "info", str(made))["cost_usd"]
    shown = f"${cost:.4f}"
    api = vh.api_url()
    pid = project_id(Client(api, vh.json("user", "token", "alice")["token"]), "alpha")
    with chromium() as browser:
        sign_in(browser, api, "/operations/")
        row = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, '#spend-users tr[data-key="alice"]'),
                       "no spend row for alice on the operations page")[0]
        assert shown in row.text and "1" in row.text.split()
        assert shown in browser.find_element(By.CSS_SELECTOR, '#spend-projects tr[data-key="alpha"]').text
        assert "idle machines: single $" in browser.find_element(By.ID, "spend-idle").text
        browser.get(f"{api}/executions/{made}/")
        wait_for(lambda: [e for e in browser.find_elements(By.ID, "cost") if e.text == shown],
                 "the execution's cost is not shown")
        browser.get(f"{api}/projects/{pid}/")
        wait_for(lambda: [e for e in browser.find_elements(By.ID, "month-cost")
                          if e.text.startswith(f"This month: {shown} (1 execution")],
                 "the project's month so far is not shown")
        assert not csp_refusals(browser)


@pytest.mark.slow  # a daemon on the fake cloud
def test_a_budget_80_percent_spent_warns_its_projects_webhooks_once_a_period(world: VhOrch) -> None:
    import json

    from quietserver import shut
    from test_webhooks import Receiver

    vh = world
    receiver = Receiver()
    try:
        hook = vh.json("webhook", "add", "-p", "alpha", "--url", receiver.url + "/budget", "--events", "budget.warning")
        vh.start_daemon()
        first = run(vh, "alice", "alpha", "single", 0.5)
        assert vh.wait(first)["status"] == "complete"
        spent = vh.json("exec", "info", str(first))["cost_usd"]
        vh("budget", "set", "--project", "alpha", "--usd", str(spent / 0.9))  # 90 % spent: a warning, no hold
        _, _, body = eventually("the budget warning", lambda: receiver.posts_to("/budget"))[0]
        warning = json.loads(body)
        assert warning["event"] == "budget.warning"
        assert warning["budget"]["scope"] == "project" and warning["budget"]["name"] == "alpha"
        # 90 % of what `exec info` shows, which is rounded to 1/100 of a cent: about half a cent here, so
        # the rounding alone moves the percentage by up to 1 point either way.
        assert warning["budget"]["percent"] == pytest.approx(90, abs=2)
        again = run(vh, "alice", "alpha", "single", 0.1)  # still under the budget: it runs
        assert vh.wait(again)["status"] == "complete"
        assert len(receiver.posts_to("/budget")) == 1  # once a period
        assert [d["event"] for d in vh.json("webhook", "deliveries", str(hook["id"]))] == ["budget.warning"]
    finally:
        shut(receiver.server)
