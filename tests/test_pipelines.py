"""Pipelines: valohai.yaml DAGs of executions and tasks, through the real CLI and one real daemon
in the process runtime. Each test starts its own pipeline and waits for it; the rows say what ran
(executions per node and try are counted from the database, never from timing)."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import WAIT_S, VhOrch, installation, make_project

STEPS = """
- step:
    name: prep
    image: vh-orch/busybox:test
    command: sh prep.sh {parameter-value:rows}
    parameters:
      - name: rows
        type: integer
        default: 10
- step:
    name: train
    image: vh-orch/busybox:test
    command: sh train.sh {parameter-value:rows} {parameter-value:score}
    inputs:
      - name: data
        optional: true
    parameters:
      - name: rows
        type: integer
        default: 1
      - name: score
        type: float
        default: 0
- step:
    name: collect
    image: vh-orch/busybox:test
    command: ls "$VH_INPUTS_DIR/models"
    inputs:
      - name: models
        optional: true
- step:
    name: nap
    image: vh-orch/busybox:test
    command: sh nap.sh {parameter-value:nap} {parameter-value:code}
    parameters:
      - name: nap
        type: float
        default: 0
      - name: code
        type: integer
        default: 0
- step:
    name: flaky
    image: vh-orch/busybox:test
    command: sh flaky.sh
- task:
    step: train
    name: sweep
    type: grid_search
    parameters:
      - name: rows
        style: multiple
        rules: {items: [1, 2, 3]}
- pipeline:
    name: three
    parameters:
      - name: rows
        targets: [prep.parameter.rows]
        default: 5
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: train
        type: execution
        step: train
      - name: collect
        type: execution
        step: collect
    edges:
      - [prep.output.data/*, train.input.data]
      - [prep.metadata.score, train.parameter.score]
      - [prep.parameter.rows, train.parameter.rows]
      - [train.output.model*, collect.input.models]
- pipeline:
    name: fan
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: sweep
        type: task
        task: sweep
      - name: collect
        type: execution
        step: collect
    edges:
      - [prep.output.data/*, sweep.input.data]
      - [sweep.output.model*, collect.input.models]
"""

SCRIPTS = {
    "prep.sh": """mkdir -p "$VH_OUTPUTS_DIR/data"
echo "rows $1" > "$VH_OUTPUTS_DIR/data/train.csv"
echo "rows $1" > "$VH_OUTPUTS_DIR/data/test.csv"
echo noise > "$VH_OUTPUTS_DIR/prep.log"
echo '{"score": 0.75}'
""",
    "train.sh": """ls "$VH_INPUTS_DIR/data" 2>/dev/null
echo "{\\"rows_seen\\": $1, \\"score_seen\\": $2}"
echo model > "$VH_OUTPUTS_DIR/model-$1.bin"
""",
    "nap.sh": """sleep "$1"
echo "{\\"nap\\": $1}"
exit "$2"
""",
    "flaky.sh": """echo try >> "$TRIES_FILE"
test "$(wc -l < "$TRIES_FILE")" -ge 2
""",
}
FINAL = ("complete", "error", "stopped")


def stored(vh: VhOrch, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with sqlite3.connect(f"file:{vh.home / 'state.db'}?mode=ro", uri=True) as db:
        return db.execute(query, args).fetchall()


def run_pipeline(vh: VhOrch, name: str, *args: str) -> int:
    folder = vh.project_dir  # type: ignore[attr-defined]
    return int(vh.json("pipeline", "run", name, "--project", "p", "--adhoc", str(folder), *args)["id"])


def wait_pipeline(vh: VhOrch, pipeline_id: int, timeout: float = WAIT_S) -> dict[str, Any]:
    """`pipeline info` once the pipeline ended (the wait watches its stored status)."""
    deadline = time.monotonic() + timeout
    while stored(vh, "SELECT status FROM pipeline WHERE id = ?", pipeline_id)[0][0] not in FINAL:
        assert time.monotonic() < deadline, f"pipeline {pipeline_id} did not end: " \
                                            f"{vh.json('pipeline', 'info', str(pipeline_id))}"
        time.sleep(0.1)
    return vh.json("pipeline", "info", str(pipeline_id))  # type: ignore[no-any-return]


def nodes(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n["name"]: n for n in info["nodes"]}


def log_text(vh: VhOrch, execution_id: int) -> str:
    rows = stored(vh, "SELECT texts FROM log_block WHERE execution_id = ? ORDER BY first_seq", execution_id)
    return "\n".join(r[0] for r in rows)


def work_per_try(vh: VhOrch, pipeline_id: int) -> list[tuple[Any, ...]]:
    """(node, try, executions, tasks) for every node try that has work: at most one of each."""
    return stored(vh, """
        SELECT n.name, w.attempt, SUM(w.kind = 'e'), SUM(w.kind = 't') FROM pipeline_node n JOIN (
            SELECT pipeline_node_id AS node, pipeline_attempt AS attempt, 'e' AS kind FROM execution
            WHERE pipeline_node_id IS NOT NULL
            UNION ALL SELECT pipeline_node_id, pipeline_attempt, 't' FROM task WHERE pipeline_node_id IS NOT NULL
        ) w ON w.node = n.id WHERE n.pipeline_id = ? GROUP BY n.name, w.attempt""", pipeline_id)


@pytest.fixture(scope="module")
def vh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VhOrch]:
    """One installation and daemon: the process runtime, six slots on `local`, project `p` and an
    ad-hoc folder with STEPS (`vh.project_dir`)."""
    root = tmp_path_factory.mktemp("pipelines")
    with installation(root / "home") as cli:
        cli("env", "update", "local", "--runtime", "process", "--slots", "6")
        cli("project", "add", "p")
        cli.project_dir = make_project(root, "proj", STEPS, SCRIPTS)  # type: ignore[attr-defined]
        cli.start_daemon()
        yield cli


def test_three_nodes_pass_outputs_metadata_and_parameters(vh: VhOrch) -> None:
    default = run_pipeline(vh, "three")
    given = run_pipeline(vh, "three", "-p", "rows=7")
    for pipeline_id, rows in ((default, 5), (given, 7)):
        info = wait_pipeline(vh, pipeline_id)
        assert info["status"] == "complete", info
        by = nodes(info)
        assert [by[n]["status"] for n in ("prep", "train", "collect")] == ["complete"] * 3
        train = vh.json("exec", "info", str(by["train"]["execution"]))
        assert train["parameters"] == {"rows": rows, "score": 0.75}
        assert train["metadata_latest"]["rows_seen"] == rows
        # the glob `data/*` picked the two csv files and not the log
        assert len(train["inputs"]["data"]) == 2
        assert all(u.startswith("datum://") for u in train["inputs"]["data"])
        assert "test.csv" in log_text(vh, train["id"]) and "train.csv" in log_text(vh, train["id"])
        collect = by["collect"]["execution"]
        assert f"model-{rows}.bin" in log_text(vh, collect)
        assert sorted(work_per_try(vh, pipeline_id)) == [("collect", 0, 1, 0), ("prep", 0, 1, 0), ("train", 0, 1, 0)]
