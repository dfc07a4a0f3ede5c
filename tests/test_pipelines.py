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
    command: sh flaky.sh {parameter-value:tries}
    parameters:
      - name: tries
        type: string
        default: /nonexistent-folder/tries.txt
- step:
    name: echoenv
    image: vh-orch/busybox:test
    command: echo "greeting $GREETING"; ls "$VH_INPUTS_DIR/data"
    inputs:
      - name: data
    environment-variables:
      - name: GREETING
        default: hi
- step:
    name: lister
    image: vh-orch/busybox:test
    command: echo '{"sizes":[4,5]}'
- step:
    name: need
    image: vh-orch/busybox:test
    command: ls "$VH_INPUTS_DIR/data"
    inputs:
      - name: data
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
- pipeline:
    name: branches
    parameters:
      - name: code
        targets: [bad.parameter.code]
        default: 3
      - name: nap
        targets: [good.parameter.nap]
        default: 1
    nodes:
      - name: bad
        type: execution
        step: nap
        on-error: stop-next
      - name: after-bad
        type: execution
        step: nap
      - name: good
        type: execution
        step: nap
      - name: after-good
        type: execution
        step: nap
    edges:
      - [bad.metadata.nap, after-bad.parameter.nap]
      - [good.metadata.nap, after-good.parameter.nap]
- pipeline:
    name: slow
    parameters:
      - name: nap
        targets: [first.parameter.nap]
        default: 60
    nodes:
      - name: first
        type: execution
        step: nap
      - name: second
        type: execution
        step: nap
    edges:
      - [first.dependency.*, second.dependency.*]
- pipeline:
    name: gated
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: train
        type: execution
        step: train
        actions:
          - when: node-starting
            then: require-approval
    edges:
      - [prep.output.data/*, train.input.data]
- pipeline:
    name: flaky
    parameters:
      - name: tries
        targets: [flaky.parameter.tries]
        default: /nonexistent-folder/tries.txt
    nodes:
      - name: flaky
        type: execution
        step: flaky
        on-error: retry
      - name: after
        type: execution
        step: nap
    edges:
      - [flaky.dependency.*, after.dependency.*]
- pipeline:
    name: again
    reuse-executions: true
    parameters:
      - name: rows
        targets: [prep.parameter.rows]
        default: 42
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: train
        type: execution
        step: train
    edges:
      - [prep.output.data/*, train.input.data]
      - [prep.parameter.rows, train.parameter.rows]
- task:
    step: nap
    name: long-naps
    type: grid_search
    parameters:
      - name: nap
        style: multiple
        rules: {items: [60, 60]}
- pipeline:
    name: naps
    nodes:
      - name: naps
        type: task
        task: long-naps
    edges: []
- pipeline:
    name: spread
    nodes:
      - name: lister
        type: execution
        step: lister
      - name: sweep
        type: task
        task: sweep
      - name: collect
        type: execution
        step: collect
    edges:
      - [lister.metadata.sizes, sweep.parameter.rows]
      - [sweep.output.model*, collect.input.models]
- pipeline:
    name: relay
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: first
        type: execution
        step: echoenv
        override:
          environment-variables:
            - name: GREETING
              default: bonjour
      - name: second
        type: execution
        step: echoenv
    edges:
      - [prep.output.data/train.csv, first.input.data]
      - [first.input.data, second.input.data]
      - [first.environment-variable.GREETING, second.environment-variable.GREETING]
- pipeline:
    name: guarded
    parameters:
      - name: rows
        targets: [prep.parameter.rows]
        default: 500
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: train
        type: execution
        step: train
        actions:
          - when: node-starting
            if: parameter.rows > 100
            then: error-pipeline
    edges:
      - [prep.parameter.rows, train.parameter.rows]
- pipeline:
    name: lenient
    parameters:
      - name: code
        targets: [bad.parameter.code]
        default: 3
    nodes:
      - name: bad
        type: execution
        step: nap
        on-error: continue
      - name: after
        type: execution
        step: nap
    edges:
      - [bad.dependency.*, after.dependency.*]
- pipeline:
    name: judged
    nodes:
      - name: prep
        type: execution
        step: prep
        actions:
          - when: node-complete
            if: metadata.score < 0.9
            then: stop-pipeline
      - name: train
        type: execution
        step: train
    edges:
      - [prep.output.data/*, train.input.data]
- pipeline:
    name: checked
    nodes:
      - name: prep
        type: execution
        step: prep
        actions:
          - when: node-complete
            if: metadata.score >= 0.5
            then: require-approval
      - name: train
        type: execution
        step: train
    edges:
      - [prep.output.data/*, train.input.data]
- pipeline:
    name: empty
    nodes:
      - name: prep
        type: execution
        step: prep
      - name: need
        type: execution
        step: need
    edges:
      - [prep.output.nothing-*, need.input.data]
- pipeline:
    name: chain
    parameters:
      - name: rows
        targets: [prep.parameter.rows]
        default: 9
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
    "flaky.sh": """echo try >> "$1"
test "$(wc -l < "$1")" -ge 2
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
    shown = vh("pipeline", "info", str(given)).stdout
    assert "complete" in shown and all(name in shown for name in ("prep", "train", "collect")), shown
    assert str(given) in vh("pipeline", "list", "--project", "p").stdout


def test_a_task_node_passes_every_childs_outputs_on(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "fan"))
    assert info["status"] == "complete", info
    by = nodes(info)
    sweep = by["sweep"]
    assert sweep["task"] is not None and len(sweep["executions"]) == 3
    task = stored(vh, "SELECT status, pipeline_node_id, pipeline_attempt FROM task WHERE id = ?", sweep["task"])
    assert task == [("complete", sweep["id"], 0)]
    for child in sweep["executions"]:  # every child got prep's files
        assert len(vh.json("exec", "info", str(child))["inputs"]["data"]) == 2
    collect = vh.json("exec", "info", str(by["collect"]["execution"]))
    assert len(collect["inputs"]["models"]) == 3
    text = log_text(vh, collect["id"])
    assert all(f"model-{rows}.bin" in text for rows in (1, 2, 3)), text


def test_a_metadata_list_into_a_task_node_makes_one_child_per_item(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "spread"))
    assert info["status"] == "complete", info
    by = nodes(info)
    rows = sorted(vh.json("exec", "info", str(e))["parameters"]["rows"] for e in by["sweep"]["executions"])
    assert rows == [4, 5]  # the list replaced the blueprint's items (1, 2, 3)
    text = log_text(vh, by["collect"]["execution"])
    assert "model-4.bin" in text and "model-5.bin" in text and "model-1.bin" not in text


def test_input_and_environment_variable_edges_copy_the_sources(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "relay"))
    assert info["status"] == "complete", info
    by = nodes(info)
    first = vh.json("exec", "info", str(by["first"]["execution"]))
    second = vh.json("exec", "info", str(by["second"]["execution"]))
    assert len(first["inputs"]["data"]) == 1 and second["inputs"]["data"] == first["inputs"]["data"]
    assert second["environment_variables"]["GREETING"] == "bonjour"
    assert "greeting bonjour" in log_text(vh, second["id"]) and "train.csv" in log_text(vh, second["id"])


def test_a_node_starting_action_errors_the_pipeline_before_the_node_runs(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "guarded"))
    by = nodes(info)
    assert info["status"] == "error" and "error-pipeline" in info["status_reason"], info
    assert by["train"]["status"] == "skipped" and by["train"]["executions"] == []
    fine = wait_pipeline(vh, run_pipeline(vh, "guarded", "-p", "rows=50"))
    assert fine["status"] == "complete", fine


def test_stop_next_skips_only_what_depends_on_the_failed_node(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "branches"))
    by = nodes(info)
    assert info["status"] == "error" and "bad" in info["status_reason"], info
    assert by["bad"]["status"] == "error"
    assert by["after-bad"]["status"] == "skipped" and by["after-bad"]["executions"] == []
    assert (by["good"]["status"], by["after-good"]["status"]) == ("complete", "complete")
    after_good = vh.json("exec", "info", str(by["after-good"]["execution"]))
    assert after_good["parameters"]["nap"] == 1  # the metadata edge carried good's value
    assert vh("pipeline", "wait", str(info["id"]), "--timeout", "5", check=False).returncode == 1


def test_stop_stops_running_work_and_skips_the_rest(vh: VhOrch) -> None:
    pipeline_id = run_pipeline(vh, "slow")
    first = wait_node(vh, pipeline_id, "first", "started")
    eventually_status(vh, first["execution"], "started")
    vh("pipeline", "stop", str(pipeline_id))
    info = wait_pipeline(vh, pipeline_id)
    by = nodes(info)
    assert info["status"] == "stopped", info
    assert by["first"]["status"] == "stopped" and by["second"]["status"] == "skipped"
    assert vh.json("exec", "info", str(first["execution"]))["status"] == "stopped"
    assert vh("pipeline", "wait", str(pipeline_id), "--timeout", "5", check=False).returncode == 1


def test_stopping_a_pipeline_stops_its_running_task(vh: VhOrch) -> None:
    pipeline_id = run_pipeline(vh, "naps")
    node = wait_node(vh, pipeline_id, "naps", "started")
    vh("pipeline", "stop", str(pipeline_id))
    info = wait_pipeline(vh, pipeline_id)
    assert info["status"] == "stopped" and nodes(info)["naps"]["status"] == "stopped", info
    assert stored(vh, "SELECT status FROM task WHERE id = ?", node["task"]) == [("stopped",)]
    kids = stored(vh, "SELECT status FROM execution WHERE task_id = ?", node["task"])
    assert kids and all(k == ("stopped",) for k in kids), kids


def test_a_node_waits_for_approval_through_the_cli(vh: VhOrch) -> None:
    pipeline_id = run_pipeline(vh, "gated")
    held = wait_node(vh, pipeline_id, "train", "waiting-approval")
    assert held["executions"] == [] and "approve" in held["status_reason"]
    refused = vh("pipeline", "approve", str(pipeline_id), "prep", check=False)
    assert refused.returncode != 0 and "not waiting for approval" in refused.stderr
    unknown = vh("pipeline", "approve", str(pipeline_id), "nope", check=False)
    assert unknown.returncode != 0 and "no node 'nope'" in unknown.stderr
    assert nodes(vh.json("pipeline", "info", str(pipeline_id)))["train"]["status"] == "waiting-approval"
    vh("pipeline", "approve", str(pipeline_id), "train")
    assert vh("pipeline", "wait", str(pipeline_id), "--timeout", str(WAIT_S), timeout=WAIT_S + 30).returncode == 0
    train = nodes(vh.json("pipeline", "info", str(pipeline_id)))["train"]
    assert train["status"] == "complete" and train["approved_by"] and len(train["executions"]) == 1


def test_retry_runs_a_failed_node_once_more(vh: VhOrch, tmp_path: Path) -> None:
    tries = tmp_path / "tries.txt"
    info = wait_pipeline(vh, run_pipeline(vh, "flaky", "-p", f"tries={tries}"))
    assert info["status"] == "complete", info
    flaky = nodes(info)["flaky"]
    assert flaky["attempt"] == 1 and len(flaky["executions"]) == 2
    statuses = [vh.json("exec", "info", str(e))["status"] for e in flaky["executions"]]
    assert statuses == ["error", "complete"]
    assert sorted(r[1] for r in work_per_try(vh, info["id"]) if r[0] == "flaky") == [0, 1]


def test_a_retry_that_fails_again_errors_the_pipeline(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "flaky"))  # /nonexistent-folder: every try fails
    by = nodes(info)
    assert info["status"] == "error", info
    assert by["flaky"]["status"] == "error" and len(by["flaky"]["executions"]) == 2
    assert by["after"]["status"] == "skipped"


def test_reuse_executions_takes_an_earlier_complete_execution(vh: VhOrch) -> None:
    first = wait_pipeline(vh, run_pipeline(vh, "again"))
    assert first["status"] == "complete", first
    before = stored(vh, "SELECT COUNT(*) FROM execution")[0][0]
    second = wait_pipeline(vh, run_pipeline(vh, "again"))
    assert second["status"] == "complete", second
    assert stored(vh, "SELECT COUNT(*) FROM execution")[0][0] == before  # nothing ran again
    one, two = nodes(first), nodes(second)
    for name in ("prep", "train"):
        assert two[name]["execution"] is None
        assert two[name]["reused_execution"] == one[name]["execution"], two[name]
        assert "reused" in two[name]["status_reason"]
    different = wait_pipeline(vh, run_pipeline(vh, "again", "-p", "rows=43"))
    assert nodes(different)["prep"]["reused_execution"] is None  # another parameter: run anew
    assert nodes(different)["prep"]["execution"] is not None


def test_on_error_continue_lets_what_depends_on_the_node_run(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "lenient"))
    by = nodes(info)
    assert (by["bad"]["status"], by["after"]["status"]) == ("error", "complete"), info
    assert info["status"] == "complete", info


def test_a_node_complete_action_stops_the_pipeline(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "judged"))
    by = nodes(info)
    assert info["status"] == "stopped" and "stop-pipeline" in info["status_reason"], info
    assert (by["prep"]["status"], by["train"]["status"]) == ("complete", "skipped")


def test_a_node_complete_approval_holds_what_follows(vh: VhOrch) -> None:
    pipeline_id = run_pipeline(vh, "checked")
    held = wait_node(vh, pipeline_id, "train", "waiting-approval")
    assert held["executions"] == []
    assert nodes(vh.json("pipeline", "info", str(pipeline_id)))["prep"]["status"] == "complete"
    vh("pipeline", "approve", str(pipeline_id), "train")
    info = wait_pipeline(vh, pipeline_id)
    assert info["status"] == "complete" and nodes(info)["train"]["approved_by"], info


def test_an_edge_that_brings_nothing_to_a_required_input_errors_its_node(vh: VhOrch) -> None:
    info = wait_pipeline(vh, run_pipeline(vh, "empty"))
    need = nodes(info)["need"]
    assert need["status"] == "error" and need["executions"] == [], need
    assert "input 'data' is required" in need["status_reason"]
    assert info["status"] == "error" and "need" in info["status_reason"]


def start_payload(vh: VhOrch, payload: dict[str, Any], **run: Any) -> int:
    """A pipeline from a converted payload (what `vh pipeline run` posts), made in this process;
    `run`: the SubmitRequest's other fields (project, user, remote...)."""
    from vh_orch.orchestrator.pipelines.create import PipelineRequest
    from vh_orch.orchestrator.pipelines.engine import start_pipeline
    from vh_orch.orchestrator.store import Store
    from vh_orch.orchestrator.submit import SubmitRequest
    from vh_orch.settings import Settings

    settings = Settings.from_env(vh.env)
    request = SubmitRequest(**{"project": "p", "step": "", "adhoc": vh.project_dir, **run})  # type: ignore[attr-defined]
    return start_pipeline(Store(settings.db_url), settings, PipelineRequest(run=request, payload=payload)).id  # type: ignore[return-value]


def test_mimic_nodes_stand_for_an_earlier_pipelines_node(vh: VhOrch) -> None:
    from vh_orch.orchestrator.pipelines.definition import pipeline_payload

    first = wait_pipeline(vh, run_pipeline(vh, "three"))
    assert first["status"] == "complete", first
    earlier = nodes(first)
    payload = pipeline_payload(STEPS, "three", first["commit"])
    swap = {"prep": {"type": "mimic", "name": "prep", "source": earlier["prep"]["id"]}}  # as `vh ... --reuse` does
    payload["nodes"] = [swap.get(n["name"], n) for n in payload["nodes"]]
    info = wait_pipeline(vh, start_payload(vh, payload))
    assert info["status"] == "complete", info
    by = nodes(info)
    assert by["prep"]["reused_execution"] == earlier["prep"]["execution"] and by["prep"]["execution"] is None
    train = vh.json("exec", "info", str(by["train"]["execution"]))
    assert train["inputs"] == vh.json("exec", "info", str(earlier["train"]["execution"]))["inputs"]
    assert train["parameters"]["score"] == 0.75  # the reused execution's metadata

    payload["nodes"] = [{"type": "mimic", "name": "prep", "reuse_execution_id": 999999} if n["name"] == "prep" else n
                        for n in payload["nodes"]]
    info = wait_pipeline(vh, start_payload(vh, payload))
    prep = nodes(info)["prep"]
    assert prep["status"] == "error" and "is not an execution of this project" in prep["status_reason"], prep
    assert info["status"] == "error" and nodes(info)["train"]["status"] == "skipped"


def test_a_pipeline_from_the_api_reads_no_output_its_user_may_not_see(vh: VhOrch) -> None:
    """Its nodes' inputs are checked when each starts, with its user's rights: a datum:// of another
    user's project errors the node and runs nothing."""
    from vh_orch.orchestrator.pipelines.definition import pipeline_payload

    vh("user", "add", "bob")
    vh("project", "add", "q", "--owner", "bob")
    made = vh.run_json("prep", "--project", "p", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]
    theirs = vh.wait(made["id"])["outputs"][0]["datum"]  # datum://ID
    payload = pipeline_payload(STEPS, "empty", "x")
    payload["nodes"] = [{"name": "need", "type": "execution",
                         "template": {"step": "need", "inputs": {"data": [theirs]}}}]
    payload["edges"] = []
    info = wait_pipeline(vh, start_payload(vh, payload, project="q", user="bob", remote=True))
    need = nodes(info)["need"]
    assert (info["status"], need["status"], need["executions"]) == ("error", "error", []), info
    assert f"no datum '{theirs}'" in need["status_reason"], need


def test_a_node_from_a_commit_that_cannot_be_found_errors_with_the_reason(vh: VhOrch) -> None:
    from vh_orch.orchestrator.pipelines.definition import pipeline_payload

    payload = pipeline_payload(STEPS, "empty", "x")
    payload["nodes"] = [{"name": "elsewhere", "type": "execution", "template": {"step": "prep", "commit": "0badc0de"}}]
    payload["edges"] = []
    info = wait_pipeline(vh, start_payload(vh, payload))
    node = nodes(info)["elsewhere"]
    assert (info["status"], node["status"], node["executions"]) == ("error", "error", []), info
    assert "its commit '0badc0de' cannot be found" in node["status_reason"], node


def test_bad_pipeline_input_is_refused_and_writes_nothing(vh: VhOrch) -> None:
    before = stored(vh, "SELECT COUNT(*) FROM pipeline")[0][0]
    for args, words in ((("nope",), "unknown pipeline 'nope'"),
                        (("three", "-p", "nope=1"), "no parameter 'nope'"),
                        (("three", "-p", "rows=many"), "rows")):
        result = vh("pipeline", "run", *args, "--project", "p", "--adhoc", str(vh.project_dir),  # type: ignore[attr-defined]
                    check=False)
        assert result.returncode != 0 and words in result.stderr, result
    assert stored(vh, "SELECT COUNT(*) FROM pipeline")[0][0] == before
    assert vh("pipeline", "approve", "999999", "x", check=False).returncode != 0
    listed = vh.json("pipeline", "list", "--project", "p")
    assert [p["id"] for p in listed] == sorted((p["id"] for p in listed), reverse=True)


def test_the_example_projects_pipeline_runs_from_its_git_repository(vh: VhOrch, demo_repo: Path) -> None:
    vh("project", "add", "demo", "--repo", str(demo_repo))
    created = vh.json("pipeline", "run", "train-and-evaluate", "--project", "demo", "-p", "epochs=2")
    waited = vh("pipeline", "wait", str(created["id"]), "--timeout", str(WAIT_S), timeout=WAIT_S + 30, check=False)
    info = vh.json("pipeline", "info", str(created["id"]))
    assert (waited.returncode, info["status"]) == (0, "complete"), info
    assert len(info["commit"]) == 40
    evaluate = vh.json("exec", "info", str(nodes(info)["evaluate"]["execution"]))
    assert evaluate["metadata_latest"]["trained_epochs"] == 2


# --- last: it restarts the module's daemon -----------------------------------------------------------


def test_a_daemon_killed_mid_pipeline_resumes_with_no_node_run_twice(vh: VhOrch) -> None:
    """The daemon dies (SIGKILL, at the failpoint) right after it made the task node's task, before
    the node row says so; the next daemon adopts that task and makes no second one."""
    vh.stop_daemon()
    vh.env["VH_ORCH_FAILPOINT"] = "pipeline-work-made"
    try:
        vh.start_daemon()
        pipeline_id = run_pipeline(vh, "chain")  # this process starts prep; the daemon makes the task
        assert vh.daemon is not None
        assert vh.daemon.wait(WAIT_S) == -signal.SIGKILL
        vh.daemon = None
    finally:
        del vh.env["VH_ORCH_FAILPOINT"]
    made = stored(vh, "SELECT n.status, COUNT(t.id) FROM pipeline_node n LEFT JOIN task t ON t.pipeline_node_id = n.id "
                      "WHERE n.pipeline_id = ? AND n.name = 'sweep' GROUP BY n.id", pipeline_id)
    assert made == [("created", 1)]  # killed between the task and its node's row
    vh.start_daemon()
    info = wait_pipeline(vh, pipeline_id)
    assert info["status"] == "complete", info
    rows = work_per_try(vh, pipeline_id)
    assert sorted(rows) == [("collect", 0, 1, 0), ("prep", 0, 1, 0), ("sweep", 0, 0, 1)], rows
    assert len(nodes(info)["sweep"]["executions"]) == 3


def wait_node(vh: VhOrch, pipeline_id: int, name: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_S
    while True:
        node = nodes(vh.json("pipeline", "info", str(pipeline_id)))[name]
        if node["status"] == status:
            return node
        assert time.monotonic() < deadline, f"node {name} never became {status}: {node}"
        time.sleep(0.2)


def eventually_status(vh: VhOrch, execution_id: int, status: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while stored(vh, "SELECT status FROM execution WHERE id = ?", execution_id)[0][0] != status:
        assert time.monotonic() < deadline, f"execution {execution_id} never became {status}"
        time.sleep(0.1)
