"""Tasks: searches over a step's parameters, through the real CLI and a real daemon in the
process runtime (plus pure checks of orchestrator/tasks/, where exact values are the point).

Every time-related check reads the times vh-orch stored (created/queued/started/ended, metadata
`_time`), never live state sampled while a task runs; no test asserts how long anything took."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import WAIT_S, VhOrch, installation, make_project
from vh_orch.config.steps import parse_config
from vh_orch.orchestrator.tasks.definition import body_from_yaml, parse_spec
from vh_orch.orchestrator.tasks.search import plan
from vh_orch.orchestrator.tasks.spec import TaskSpec, Variant
from vh_orch.errors import UserInputError

# --- the project every daemon test runs -------------------------------------------------------

STEPS = """
- step:
    name: train
    image: vh-orch/busybox:test
    command: echo {parameters}
    parameters:
      - name: lr
        type: float
        default: 0.5
      - name: n
        type: integer
        default: 3
      - name: opt
        type: string
        default: adam
      - name: depth
        type: integer
        default: 7
- step:
    name: draw
    image: vh-orch/busybox:test
    command: echo {parameters}
    parameters:
      - name: a
        type: float
        default: 0
      - name: b
        type: float
        default: 0
      - name: k
        type: integer
        default: 0
- step:
    name: nap
    image: vh-orch/busybox:test
    command: sleep 0.4
    parameters:
      - name: i
        type: integer
        default: 0
- step:
    name: maybe
    image: vh-orch/busybox:test
    command:
      - echo "nap {parameter-value:nap} code {parameter-value:code}"
      - sleep {parameter-value:nap}
      - exit {parameter-value:code}
    parameters:
      - name: nap
        type: float
        default: 0
      - name: code
        type: integer
        default: 0
- step:
    name: converge
    image: vh-orch/busybox:test
    command: python -u converge.py
    stop-condition: loss < 0.5
- step:
    name: race
    image: vh-orch/busybox:test
    command: python -u race.py {parameters}
    parameters:
      - name: speed
        type: integer
        default: 1
- step:
    name: curve
    image: vh-orch/busybox:test
    command: python -u curve.py {parameters}
    parameters:
      - name: x
        type: float
        default: 0.5
        min: 0
        max: 1
- task:
    step: train
    name: grid
    type: grid_search
    parameters:
      - name: lr
        style: linear
        rules: {start: 0.1, end: 0.3, step: 0.1}
      - name: n
        style: logspace
        rules: {start: 1, end: 2, count: 2, base: 2}
- task:
    step: train
    name: linear-grid
    type: grid_search
    parameters:
      - name: lr
        style: linear
        rules: {start: 0.1, end: 0.3, step: 0.1}
      - name: n
        style: linear
        rules: {start: 1, end: 6, step: 2}
- task:
    step: train
    name: log-grid
    type: grid_search
    parameters:
      - name: lr
        style: logspace
        rules: {start: -3, end: -1, count: 3}
      - name: n
        style: logspace
        rules: {start: 1, end: 3, count: 3, base: 2}
- task:
    step: train
    name: manual
    type: manual_search
    parameter-sets:
      - {lr: 0.1, n: 1}
      - {lr: 0.25, n: 5}
      - {lr: 0.7, n: 9}
- task:
    step: draw
    name: random
    type: random_search
    execution-count: 5
    parameters:
      - name: a
        style: random
        rules: {min: 2, max: 5}
      - name: b
        style: random
        rules: {min: 0.0001, max: 0.1, distribution: loguniform}
      - name: k
        style: random
        rules: {min: 1, max: 6, integerify: true}
- task:
    step: nap
    name: naps
    type: grid_search
    parameters:
      - name: i
        style: linear
        rules: {start: 1, end: 6, step: 1}
- task:
    step: maybe
    name: one-fails
    type: manual_search
    parameter-sets:
      - {nap: 0, code: 0}
      - {nap: 0, code: 3}
      - {nap: 0.3, code: 0}
- task:
    step: maybe
    name: fail-stops-all
    type: manual_search
    parameter-sets:
      - {nap: 30, code: 0}
      - {nap: 0, code: 3}
      - {nap: 30, code: 0}
      - {nap: 30, code: 0}
- task:
    step: race
    name: race
    type: grid_search
    stop-condition: acc > 0.9
    parameters:
      - name: speed
        style: multiple
        rules: {items: [1, 50, 1, 1]}
- task:
    step: curve
    name: curves
    type: random_search
    execution-count: 6
    execution-batch-size: 3
    optimization-target-metric: acc
    parameters:
      - name: x
        style: random
        rules: {min: 0, max: 1}
- step:
    name: bayes
    image: vh-orch/busybox:test
    command: python -u bayes.py {parameters}
    parameters:
      - name: x
        type: float
        default: 0.5
- task:
    step: bayes
    name: tpe
    type: bayesian_tpe
    execution-count: 6
    execution-batch-size: 2
    optimization-target-metric: score
    on-child-error: continue-and-complete
    parameters:
      - name: x
        style: random
        rules: {min: 0, max: 1}
"""

CONVERGE = """
import json, os, time
with open(os.path.join(os.environ["VH_OUTPUTS_DIR"], "model.txt"), "w") as f:
    f.write("weights")
for i in range(300):  # 30 s unless the stop condition ends it
    print(json.dumps({"loss": round(0.9 - 0.05 * i, 2)}))
    time.sleep(0.1)
"""

RACE = """
import json, sys, time
speed = int(sys.argv[1].split("=")[1])
for i in range(300):
    print(json.dumps({"acc": min(1.0, speed * i / 100)}))
    time.sleep(0.1)
"""

# A child with x >= 0.5 learns (acc rises with the step); one below diverges (acc falls).
CURVE = """
import json, sys, time
x = float(sys.argv[1].split("=")[1])
for step in range(15):
    acc = step / 10 if x >= 0.5 else -(step + 1) / 10
    print(json.dumps({"step": step, "acc": acc}))
    time.sleep(0.2)
"""

BAYES = """
import json, os, sys, time
x = float(sys.argv[1].split("=")[1])
with open(os.environ["RUNS_FILE"], "a") as f:  # every real start of the command, one line each
    f.write(os.environ["VH_EXECUTION_ID"] + "\\n")
print("begin", flush=True)
time.sleep(0.5)
print(json.dumps({"score": -(x - 0.3) ** 2}))
"""

SCRIPTS = {"converge.py": CONVERGE, "race.py": RACE, "curve.py": CURVE, "bayes.py": BAYES}
FINAL = ("complete", "error", "stopped")


# --- helpers ------------------------------------------------------------------------------------
# `task ...` commands load the whole CLI (a second or two of CPU each); `exec info --json` and
# `exec list --json` answer on the quick path, so the tests read children through those.


def run_task(vh: VhOrch, name: str, *args: str) -> int:
    folder = vh.project_dir  # type: ignore[attr-defined]
    return int(vh.json("task", "run", name, "--project", "p", "--adhoc", str(folder), *args)["id"])


def parallel(*calls: Callable[[], Any]) -> list[Any]:
    """Run these at once (each `vh-orch` command mostly loads Python) and return their results."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [f.result() for f in futures]


def wait_task(vh: VhOrch, task_id: int, timeout: float = WAIT_S) -> dict[str, Any]:
    """`task info` of a task once it ended. The wait itself watches the task's stored status (each
    `task` command costs a second of CPU to start); `task wait` has tests of its own."""
    deadline = time.monotonic() + timeout
    while stored(vh, "SELECT status FROM task WHERE id = ?", task_id)[0][0] not in FINAL:
        assert time.monotonic() < deadline, f"task {task_id} did not end: {vh.json('task', 'info', str(task_id))}"
        time.sleep(0.1)
    return vh.json("task", "info", str(task_id))  # type: ignore[no-any-return]


def wait_status(vh: VhOrch, task_id: int) -> int:
    """`task wait`'s exit status for a task that ended: 0 only when it is complete."""
    return vh("task", "wait", str(task_id), "--timeout", "10", check=False).returncode


def wait_exec(vh: VhOrch, execution_id: int, timeout: float = WAIT_S) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (info := vh.json("exec", "info", str(execution_id)))["status"] not in FINAL:
        assert time.monotonic() < deadline, f"execution {execution_id} did not end: {info}"
        time.sleep(0.2)
    return info  # type: ignore[no-any-return]


def children(vh: VhOrch, info: dict[str, Any]) -> list[dict[str, Any]]:
    """`exec info` of every child, in task order."""
    return [vh.json("exec", "info", str(e)) for e in info["executions"]]


def stored(vh: VhOrch, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Rows of the installation's database, read-only: a task's status to wait on, and every
    status change of its children (`exec logs --json` shows them one execution at a time)."""
    with sqlite3.connect(f"file:{vh.home / 'state.db'}?mode=ro", uri=True) as db:
        return db.execute(query, args).fetchall()


def task_indexes(vh: VhOrch, task_id: int) -> dict[int, int]:
    """Execution id -> its index in the task, for every execution `exec list` shows in the task."""
    return {e["id"]: e["task"]["index"] for e in vh.json("exec", "list") if (e["task"] or {}).get("id") == task_id}


def at(stamp: str | None) -> datetime | None:
    return None if stamp is None else datetime.fromisoformat(stamp)


def most_at_once(intervals: list[tuple[Any, Any]]) -> int:
    """The largest number of half-open intervals [start, end) that hold at one moment."""
    edges = sorted([(end, -1) for _, end in intervals] + [(start, 1) for start, _ in intervals])
    most = now = 0
    for _, delta in edges:  # at equal times an end sorts before a start
        now += delta
        most = max(most, now)
    return most


def statuses(kids: list[dict[str, Any]]) -> list[str]:
    return [k["status"] for k in kids]


def yaml_spec(yaml_text: str, task: str, seed: int | None = 0) -> TaskSpec:
    config = parse_config(yaml_text)
    yaml_task = config.tasks[task]
    return parse_spec(body_from_yaml(yaml_task), config.steps[yaml_task.step], seed=seed)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VhOrch]:
    """One installation and daemon for the tests of this module, which each wait for what they
    start: the process runtime, six slots on `local`, project `p` and an ad-hoc folder with
    STEPS and the scripts (`vh.project_dir`)."""
    root = tmp_path_factory.mktemp("tasks")
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "process", "--slots", "6")
        vh("project", "add", "p")
        vh.project_dir = make_project(root, "proj", STEPS, SCRIPTS)  # type: ignore[attr-defined]
        vh.start_daemon()
        yield vh


@pytest.fixture(scope="module")
def launched(shared: VhOrch) -> dict[str, int]:
    """The tasks (and one execution) whose tests check only what they ended with, started all at
    once, so that they run side by side; each test then waits for its own."""
    folder = str(shared.project_dir)  # type: ignore[attr-defined]
    starts: dict[str, Callable[[], int]] = {
        "grid": lambda: run_task(shared, "grid", "-p", "opt=sgd"),
        "manual": lambda: run_task(shared, "manual"),
        "random": lambda: run_task(shared, "random", "--seed", "7"),
        "naps": lambda: run_task(shared, "naps", "--batch-size", "2", "--max-queued", "1"),
        "continue-and-complete": lambda: run_task(shared, "one-fails", "--on-child-error", "continue-and-complete"),
        "continue-and-error": lambda: run_task(shared, "one-fails", "--on-child-error", "continue-and-error"),
        "stop-all-and-error": lambda: run_task(shared, "fail-stops-all", "--on-child-error", "stop-all-and-error",
                                               "--batch-size", "2"),
        "race": lambda: run_task(shared, "race"),
        "converge": lambda: shared.json("exec", "run", "converge", "--project", "p", "--adhoc", folder)["id"],
    }
    return dict(zip(starts, parallel(*starts.values()), strict=True))


# --- 1. grids, manual searches, fixed values ---------------------------------------------------------


@pytest.mark.parametrize(("rules", "values"), [
    ({"start": 0.1, "end": 0.5, "step": 0.1}, [0.1, 0.2, 0.3, 0.4, 0.5]),  # inclusive end, no float noise
    ({"start": 0, "end": 1, "step": 0.1}, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    ({"start": 0, "end": 0.3, "step": 0.1}, [0.0, 0.1, 0.2, 0.3]),  # 0.3 / 0.1 is 2.9999999999999996
    ({"start": 1, "end": 9, "step": 4}, [1, 5, 9]),
    ({"start": 0, "end": 10, "step": 3}, [0, 3, 6, 9]),  # an end off the steps is not passed
    ({"start": 1, "end": 0, "step": -0.25}, [1.0, 0.75, 0.5, 0.25, 0.0]),
    ({"start": 2.5, "end": 2.5, "step": 1}, [2.5]),
])
def test_linear_values_are_exact_and_include_the_end(rules: dict[str, Any], values: list[Any]) -> None:
    spec = TaskSpec(type="grid_search", variants=(Variant("lr", "linear", rules),))
    got = [child["lr"] for child in plan(spec)]
    assert got == values
    assert [repr(v) for v in got] == [repr(v) for v in values]  # 0.3, never 0.30000000000000004
    whole = all(isinstance(rules[k], int) for k in ("start", "end", "step"))
    assert all(type(v) is (int if whole else float) for v in got)


@pytest.mark.parametrize(("rules", "values"), [
    ({"start": -3, "end": -1, "count": 3}, [0.001, 0.01, 0.1]),
    ({"start": 0, "end": 2, "count": 5}, [1.0, 10**0.5, 10.0, 10**1.5, 100.0]),
    ({"start": 0, "end": 4, "count": 5, "base": 2}, [1.0, 2.0, 4.0, 8.0, 16.0]),
    ({"start": 1, "end": 1, "count": 1, "base": 2}, [2.0]),
])
def test_logspace_values_are_powers_of_the_base(rules: dict[str, Any], values: list[float]) -> None:
    spec = TaskSpec(type="grid_search", variants=(Variant("lr", "logspace", rules),))
    got = [child["lr"] for child in plan(spec)]
    assert got == pytest.approx(values, rel=1e-12)
    assert got[0] == values[0] and got[-1] == values[-1]  # the ends exactly: 0.001, not 0.0010000000000000002


def test_grid_is_the_product_with_the_last_parameter_fastest() -> None:
    spec = TaskSpec(type="grid_search", variants=(
        Variant("a", "multiple", {"items": ["x", "y"]}),
        Variant("b", "linear", {"start": 1, "end": 3, "step": 1}),
        Variant("c", "single", {"value": True}),
    ))
    assert plan(spec) == [{"a": a, "b": b, "c": True} for a in ("x", "y") for b in (1, 2, 3)]


def test_valohai_yaml_tasks_plan_their_grids_and_parameter_sets() -> None:
    assert plan(yaml_spec(STEPS, "linear-grid")) == [
        {"lr": lr, "n": n} for lr in (0.1, 0.2, 0.3) for n in (1, 3, 5)]
    assert plan(yaml_spec(STEPS, "log-grid")) == [
        {"lr": lr, "n": n} for lr in (0.001, 0.01, 0.1) for n in (2.0, 4.0, 8.0)]
    assert plan(yaml_spec(STEPS, "manual")) == [{"lr": 0.1, "n": 1}, {"lr": 0.25, "n": 5}, {"lr": 0.7, "n": 9}]


def test_children_get_exact_values_fixed_values_and_step_defaults(
        shared: VhOrch, launched: dict[str, int]) -> None:
    vh = shared
    grid, manual = parallel(lambda: wait_task(vh, launched["grid"]), lambda: wait_task(vh, launched["manual"]))
    info = grid
    assert info["status"] == "complete", info
    kids = children(vh, info)
    want = [{"lr": lr, "n": n, "opt": "sgd", "depth": 7} for lr in (0.1, 0.2, 0.3) for n in (2, 4)]
    assert [k["parameters"] for k in kids] == want
    assert all(type(k["parameters"]["n"]) is int for k in kids)  # 2.0 ** 1 is the integer 2 here
    assert [k["command"] for k in kids] == [f"echo --lr={w['lr']} --n={w['n']} --opt=sgd --depth=7" for w in want]
    assert statuses(kids) == ["complete"] * 6
    assert task_indexes(vh, grid["id"]) == {k["id"]: i for i, k in enumerate(kids)}

    info = manual
    assert info["status"] == "complete", info
    kids = children(vh, info)
    assert [k["parameters"] for k in kids] == [
        {"lr": 0.1, "n": 1, "opt": "adam", "depth": 7},
        {"lr": 0.25, "n": 5, "opt": "adam", "depth": 7},
        {"lr": 0.7, "n": 9, "opt": "adam", "depth": 7},
    ]
    assert kids[1]["command"] == "echo --lr=0.25 --n=5 --opt=adam --depth=7"


# --- 2. random draws ------------------------------------------------------------------------------


RANDOM_SPEC: dict[str, Any] = dict(type="random_search", execution_count=400, variants=(
    Variant("a", "random", {"min": 2, "max": 5}),
    Variant("b", "random", {"min": 1e-4, "max": 0.1, "distribution": "loguniform"}),
    Variant("k", "random", {"min": 1, "max": 6, "integerify": True}),
    Variant("opt", "multiple", {"items": ["adam", "sgd"]}),
))


def test_random_draws_repeat_with_a_seed_and_differ_with_another() -> None:
    one = plan(TaskSpec(**RANDOM_SPEC, seed=7))
    assert one == plan(TaskSpec(**RANDOM_SPEC, seed=7))
    other = plan(TaskSpec(**RANDOM_SPEC, seed=8))
    assert len(one) == len(other) == 400
    for name in ("a", "b"):
        assert not {c[name] for c in one} & {c[name] for c in other}
    assert [c["k"] for c in one] != [c["k"] for c in other]


def test_random_draws_stay_inside_their_bounds() -> None:
    drawn = plan(TaskSpec(**RANDOM_SPEC, seed=3))
    a = [c["a"] for c in drawn]
    b = [c["b"] for c in drawn]
    k = [c["k"] for c in drawn]
    assert all(2 <= v <= 5 for v in a) and len(set(a)) == 400
    assert all(1e-4 <= v <= 0.1 for v in b)
    assert all(type(v) is int and 1 <= v <= 6 for v in k)
    assert set(k) == {1, 2, 3, 4, 5, 6}
    assert {c["opt"] for c in drawn} == {"adam", "sgd"}
    # loguniform: about as many draws below the geometric middle (10 ** -2.5) as above it, and
    # about a third below 1e-3 (a uniform draw would put under 1 % there); uniform a: half below 3.5
    assert 140 < sum(1 for v in b if v < 10**-2.5) < 260
    assert 80 < sum(1 for v in b if v < 1e-3) < 190
    assert 140 < sum(1 for v in a if v < 3.5) < 260


def test_a_random_task_draws_what_its_seed_says(shared: VhOrch, launched: dict[str, int]) -> None:
    vh = shared
    info = wait_task(vh, launched["random"])
    assert info["status"] == "complete" and info["seed"] == 7, info
    kids = children(vh, info)
    drawn = {k["task"]["index"]: {n: k["parameters"][n] for n in ("a", "b", "k")} for k in kids}
    assert all(k["task"]["id"] == info["id"] for k in kids)
    # the same seed gives the same children (the plan is pure: any process, any restart) ...
    assert drawn == dict(enumerate(plan(yaml_spec(STEPS, "random", seed=7))))
    # ... and another seed others
    for index, values in enumerate(plan(yaml_spec(STEPS, "random", seed=8))):
        assert values != drawn[index]
    for values in drawn.values():
        assert 2 <= values["a"] <= 5 and 1e-4 <= values["b"] <= 0.1
        assert type(values["k"]) is int and 1 <= values["k"] <= 6
    assert f"--k={drawn[0]['k']}" in kids[0]["command"]


# --- 3. batch size and maximum queued -------------------------------------------------------------------


def test_batch_size_and_max_queued_hold_at_every_moment(shared: VhOrch, launched: dict[str, int]) -> None:
    vh = shared  # six slots: without the limits, all six children would be made at once and run
    info = wait_task(vh, launched["naps"])
    assert info["status"] == "complete", info
    assert info["execution_batch_size"] == 2 and info["maximum_queued_executions"] == 1
    kids = children(vh, info)
    assert statuses(kids) == ["complete"] * 6
    assert [k["parameters"]["i"] for k in kids] == list(range(1, 7))
    for k in kids:
        assert at(k["created_at"]) <= at(k["queued_at"]) <= at(k["started_at"]) <= at(k["ended_at"])  # type: ignore[operator]
    # from the stored times: created..ended counts against the batch, created..started as waiting
    assert most_at_once([(at(k["created_at"]), at(k["ended_at"])) for k in kids]) <= 2
    assert most_at_once([(at(k["created_at"]), at(k["started_at"])) for k in kids]) <= 1


# --- 4. on-child-error ------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "task_status", "exit_status"), [
    ("continue-and-complete", "complete", 0),
    ("continue-and-error", "error", 1),
])
def test_continue_policies_run_every_child_and_end_complete_or_error(
        shared: VhOrch, launched: dict[str, int], policy: str, task_status: str, exit_status: int) -> None:
    vh = shared
    info = wait_task(vh, launched[policy])
    assert info["status"] == task_status, info
    assert wait_status(vh, info["id"]) == exit_status
    assert info["on_child_error"] == policy
    kids = children(vh, info)
    assert statuses(kids) == ["complete", "error", "complete"]
    assert kids[1]["exit_code"] == 3
    assert at(info["ended_at"]) >= max(at(k["ended_at"]) for k in kids)  # type: ignore[operator, type-var]
    if policy == "continue-and-error":
        assert "1 of 3 executions" in info["status_reason"] and policy in info["status_reason"]


def test_stop_all_and_error_stops_the_rest_and_names_the_failed_child(
        shared: VhOrch, launched: dict[str, int]) -> None:
    vh = shared  # batch of two: the first child sleeps 30 s, the second fails at once
    info = wait_task(vh, launched["stop-all-and-error"])
    assert info["status"] == "error", info
    kids = children(vh, info)
    failed = [k for k in kids if k["status"] == "error"]
    assert len(failed) == 1 and failed[0]["parameters"]["code"] == 3
    assert f"execution #{failed[0]['counter']} failed" in info["status_reason"]
    assert "stop-all-and-error" in info["status_reason"]
    others = [k for k in kids if k["id"] != failed[0]["id"]]
    assert others and statuses(others) == ["stopped"] * len(others)
    assert kids[0]["status"] == "stopped" and kids[0]["exit_code"] != 0  # stopped while it slept
    assert len(kids) < 4  # the children after the failure were never created


# --- 6. stop conditions ---------------------------------------------------------------------------------


def test_a_step_stop_condition_stops_its_execution_and_keeps_outputs(
        shared: VhOrch, launched: dict[str, int]) -> None:
    vh = shared
    info = wait_exec(vh, launched["converge"])
    assert info["status"] == "stopped", info
    assert "loss < 0.5" in info["status_reason"]
    assert [o["name"] for o in info["outputs"]] == ["model.txt"]
    points = vh.json("exec", "metadata", str(info["id"]))
    losses = [p["loss"] for p in points]
    assert losses[:10] == [0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45]
    met = losses.index(0.45)  # the first point below 0.5
    assert len(losses) - 1 - met <= 10, losses  # it stopped there, not 300 points (30 s) later
    assert at(points[met]["_time"]) <= at(info["ended_at"])  # type: ignore[operator]


def test_a_task_stop_condition_ends_the_task_complete_and_stops_its_children(
        shared: VhOrch, launched: dict[str, int]) -> None:
    vh = shared  # four children: the second reaches acc 1.0 within 0.2 s, the others never would
    info = wait_task(vh, launched["race"])
    assert info["status"] == "complete", info
    assert info["stop_condition"] == "acc > 0.9" and "acc > 0.9" in info["status_reason"]
    kids = children(vh, info)
    assert statuses(kids) == ["stopped"] * 4
    fast = kids[1]
    assert f"by execution #{fast['counter']}" in info["status_reason"]
    assert fast["metadata_latest"]["acc"] > 0.9
    for k in kids:
        assert "acc > 0.9" in k["status_reason"], k["status_reason"]
    for slow in (kids[0], kids[2], kids[3]):
        assert slow["metadata_latest"].get("acc", 0) < 0.9


# --- 8. median stopping -----------------------------------------------------------------------------------


def test_median_stopping_stops_diverging_children(shared: VhOrch) -> None:
    vh = shared

    def diverging(seed: int) -> list[bool]:
        return [c["x"] < 0.5 for c in plan(yaml_spec(STEPS, "curves", seed=seed))]

    # A seed whose first three children (the first batch) learn and whose last three diverge,
    # found with the pure plan the daemon follows: three finish before any diverging one starts.
    seed = next(s for s in range(10_000) if diverging(s) == [False] * 3 + [True] * 3)
    info = wait_task(vh, run_task(vh, "curves", "--median-stopping", "--seed", str(seed)))
    assert info["status"] == "complete", info
    kids = children(vh, info)
    assert [k["parameters"]["x"] < 0.5 for k in kids] == diverging(seed)
    assert statuses(kids[:3]) == ["complete"] * 3
    pruned = [k for k in kids if k["status"] == "stopped"]
    assert pruned and all(k["parameters"]["x"] < 0.5 for k in pruned), statuses(kids)
    for k in pruned:
        assert k["status_reason"].startswith("median stopping"), k["status_reason"]
        assert k["metadata_latest"]["step"] < 14  # it did not run its 15 steps
    assert info["median_stopping"]["stopped"] == len(pruned)
    assert info["median_stopping"]["machine_hours_saved"] > 0, info["median_stopping"]



def test_median_savings_count_the_children_that_ended_stopped_not_those_the_rule_reached() -> None:
    """A child the rule stops in its last step may complete before its stop lands: it saved
    nothing, and the task's count agrees with the children's statuses."""
    from datetime import timedelta

    from vh_orch.orchestrator.models import Execution
    from vh_orch.orchestrator.tasks.search import MEDIAN_REASON
    from vh_orch.orchestrator.tasks.summary import _median_savings

    t0 = datetime(2026, 1, 1)

    def child(status: str, minutes: int, reason: str | None = None) -> Execution:
        return Execution(status=status, status_reason=reason, started_at=t0,
                         ended_at=t0 + timedelta(minutes=minutes), command="true", environment_id=1, project_id=1)

    rule = f"{MEDIAN_REASON}: loss = 3 at step 2 trails the median of 3 finished executions"
    kids = [child("complete", 10), child("complete", 12), child("complete", 14),
            child("stopped", 4, rule), child("complete", 13, rule), child("stopped", 5, "stopped by request")]
    assert _median_savings(kids, t0) == {"stopped": 1, "machine_hours_saved": round(8.5 * 60 / 3600, 4)}  # median 12.5 - 4

# --- 7. bad input ----------------------------------------------------------------------------------------

BAD_STEP = """
- step:
    name: train
    image: vh-orch/busybox:test
    command: echo {parameters}
    parameters:
      - name: lr
        type: float
        default: 0.5
        min: 0
        max: 1
"""


def bad_task(lines: str) -> str:
    return BAD_STEP + "- task:\n    step: train\n    name: t\n" + "".join(
        f"    {line}\n" for line in lines.strip("\n").splitlines())


ONE_VALUE = """
parameters:
  - name: lr
    style: multiple
    rules: {items: [0.1]}"""

BAD_CASES: dict[str, tuple[str, list[str], str]] = {
    "unknown task name": (bad_task(ONE_VALUE), ["nope"], "unknown task 'nope'; valohai.yaml defines: t"),
    "parameter not in the step": (bad_task("""
parameters:
  - name: momentum
    style: single
    rules: {value: 1}"""), ["t"], "task parameter 'momentum' is not a parameter of step 'train'"),
    "bad style": (bad_task("""
parameters:
  - name: lr
    style: wobbly
    rules: {value: 1}"""), ["t"], "style: 'wobbly' is not one of"),
    "linear step 0": (bad_task("""
parameters:
  - name: lr
    style: linear
    rules: {start: 0, end: 1, step: 0}"""), ["t"], "step 0 never goes from 0 to 1"),
    "loguniform from 0": (bad_task("""
type: random_search
execution-count: 3
parameters:
  - name: lr
    style: random
    rules: {min: 0, max: 1, distribution: loguniform}"""), ["t"], "a loguniform distribution needs min above 0"),
    "random search without a count": (bad_task("""
type: random_search
parameters:
  - name: lr
    style: random
    rules: {min: 0, max: 1}"""), ["t"], "a random_search task needs execution-count"),
    "bayesian without a target": (bad_task("""
type: bayesian_tpe
execution-count: 3
parameters:
  - name: lr
    style: random
    rules: {min: 0, max: 1}"""), ["t"], "a bayesian_tpe task needs optimization-target-metric"),
    "invalid stop condition": (bad_task('stop-condition: "loss <"' + ONE_VALUE), ["t"], "loss <"),
    "value over the step's max": (bad_task("""
parameters:
  - name: lr
    style: linear
    rules: {start: 0.5, end: 1.5, step: 0.5}"""), ["t"], "execution 3 of the task"),
    "unknown on-child-error": (bad_task(ONE_VALUE), ["t", "--on-child-error", "shrug"],
                               "on-child-error 'shrug' is not one of"),
}


def test_bad_task_input_is_refused_with_a_clear_error_and_creates_nothing(
        shared: VhOrch, tmp_path: Path) -> None:
    vh = shared
    vh("project", "add", "bad")

    def attempt(case: str) -> tuple[str, Any]:
        yaml_text, args, _ = BAD_CASES[case]
        folder = make_project(tmp_path, f"bad{list(BAD_CASES).index(case)}", yaml_text)
        return case, vh("task", "run", args[0], "--project", "bad", "--adhoc", str(folder), *args[1:], "--json",
                        check=False)

    results = dict(parallel(*(lambda c=case: attempt(c) for case in BAD_CASES)))
    for case, result in results.items():
        message = BAD_CASES[case][2]
        assert result.returncode != 0, f"{case}: {result}"
        assert message in result.stderr, f"{case}: {result.stderr}"
        assert "Traceback" not in result.stderr, f"{case}: {result.stderr}"
    assert "loss <" in results["invalid stop condition"].stderr
    assert "stop-condition" in results["invalid stop condition"].stderr
    assert "1.5" in results["value over the step's max"].stderr
    assert [t for t in vh.json("task", "list") if t["project"] == "bad"] == []
    assert [e for e in vh.json("exec", "list") if e["project"] == "bad"] == []


def test_a_value_over_the_max_is_named_before_anything_is_made() -> None:
    step = parse_config(BAD_STEP).steps["train"]
    with pytest.raises(UserInputError, match=r"execution 3 of the task: .*1\.5.*nothing was created"):
        parse_spec({"type": "grid_search", "parameters": {"lr": {"style": "linear", "rules": {
            "start": 0.5, "end": 1.5, "step": 0.5}}}}, step)


# --- 5. a daemon killed in the middle of a Bayesian search (last: it restarts the shared daemon) --------


def test_daemon_killed_mid_bayesian_task_resumes_without_losing_or_repeating_children(
        shared: VhOrch, tmp_path: Path) -> None:
    vh = shared
    runs = tmp_path / "runs.txt"
    runs.touch()
    task_id = run_task(vh, "tpe", "-e", f"RUNS_FILE={runs}", "--seed", "11")

    def made() -> int:
        return len(task_indexes(vh, task_id))

    deadline = time.monotonic() + WAIT_S
    while made() < 3:  # some children made (two ran, a third is on its way), not all six
        assert time.monotonic() < deadline, "the task made no third execution in time"
        time.sleep(0.1)
    assert vh.stop_daemon(signal.SIGKILL) == -signal.SIGKILL
    made_before = made()
    assert 3 <= made_before < 6

    vh.start_daemon()
    waited = vh("task", "wait", str(task_id), "--timeout", str(WAIT_S), check=False, timeout=WAIT_S + 30)
    info = vh.json("task", "info", str(task_id))
    assert (info["status"], waited.returncode) == ("complete", 0), info
    kids = children(vh, info)
    assert len(kids) == 6 == info["planned"]
    indexes = task_indexes(vh, task_id)  # every execution of the task, as `exec list` has them
    assert sorted(indexes.values()) == list(range(6)) and set(indexes) == {k["id"] for k in kids}
    assert [k["task"] for k in kids] == [{"id": task_id, "index": i} for i in range(6)]
    for k in kids:
        assert k["status"] in ("complete", "error"), k
        if k["status"] == "error":  # running when the daemon died: ended, not resumed (local)
            assert "daemon stopped" in k["status_reason"], k
        else:
            assert "score" in k["metadata_latest"]
        assert k["attempt"] == 1
    # its status history: every child started once at most
    started = stored(vh, "SELECT e.execution_id, COUNT(*) FROM execution_event e JOIN execution x "
                         "ON x.id = e.execution_id WHERE x.task_id = ? AND e.kind = 'status' "
                         "AND (e.text = 'started' OR e.text LIKE 'started:%') GROUP BY e.execution_id", task_id)
    assert all(n == 1 for _, n in started), started
    # and what really ran: each child's command at most once, every complete one once
    ran = runs.read_text().split()
    assert len(ran) == len(set(ran)), f"a child's command ran twice: {ran}"
    assert set(ran) <= {str(k["id"]) for k in kids}
    assert {str(k["id"]) for k in kids if k["status"] == "complete"} <= set(ran)
    assert sum(k["status"] == "complete" for k in kids) >= 6 - made_before  # all made after the kill ran
    assert len({k["parameters"]["x"] for k in kids}) == 6
    assert all(0 <= k["parameters"]["x"] <= 1 for k in kids)
    assert info["best"]["value"] == max(k["metadata_latest"]["score"] for k in kids if k["status"] == "complete")
