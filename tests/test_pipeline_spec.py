"""Pipeline definitions (orchestrator/pipelines/spec.py, definition.py, create.py): what is accepted,
what is refused and how, and what a created pipeline's rows hold. Pure checks, plus one store."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import VhOrch, make_project
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.pipelines.create import PipelineRequest, create_pipeline
from vh_orch.orchestrator.pipelines.definition import pipeline_payload, spec_from_yaml
from vh_orch.orchestrator.pipelines.summary import pipeline_dict
from vh_orch.orchestrator.pipelines.spec import PipelineSpec, parse_condition, parse_payload
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.submit import SubmitRequest
from vh_orch.settings import Settings

YAML = """
- step:
    name: prep
    image: vh-orch/busybox:test
    command: echo prep {parameters}
    parameters:
      - name: n
        type: integer
        default: 3
    inputs:
      - name: raw
        default: https://example.com/a.csv
- step:
    name: train
    image: vh-orch/busybox:test
    command: echo train {parameters}
    parameters:
      - name: lr
        type: float
        default: 0.1
      - name: n
        type: integer
        default: 1
    inputs:
      - name: data
        optional: true
- task:
    step: train
    name: sweep
    type: grid_search
    parameters:
      - name: lr
        style: multiple
        rules:
          items: [0.1, 0.2]
- pipeline:
    name: flow
    parameters:
      - name: count
        default: 5
        targets:
          - prep.parameter.n
          - sweep.parameter.n
    nodes:
      - name: prep
        type: execution
        step: prep
        on-error: stop-next
        actions:
          - when: node-complete
            if: metadata.acc < 0.5
            then: require-approval
      - name: sweep
        type: task
        task: sweep
      - name: evaluate
        type: execution
        step: train
        edge-merge-mode: append
    edges:
      - [prep.output.*.csv, sweep.input.data]
      - [prep.metadata.acc, evaluate.parameter.lr]
      - [sweep.outputs.model*, evaluate.inputs.data]
"""


def test_a_yaml_pipeline_becomes_a_spec_with_its_parameters_in_the_nodes() -> None:
    name, spec = spec_from_yaml(YAML, "fl", "abc", {"count": "7"})
    assert name == "flow"
    assert [(n.name, n.type, n.on_error, n.edge_merge_mode) for n in spec.nodes] == [
        ("prep", "execution", "stop-next", "replace"), ("sweep", "task", "stop-all", "replace"),
        ("evaluate", "execution", "stop-all", "append")]
    assert spec.node("prep").template["parameters"] == {"n": "7"}
    assert spec.node("sweep").template["parameters"]["lr"] == {"style": "multiple", "rules": {"items": [0.1, 0.2]}}
    assert spec.node("sweep").template["task"] == {"type": "grid_search"}
    assert [(e.source_type, e.target_type) for e in spec.edges] == [
        ("output", "input"), ("metadata", "parameter"), ("output", "input")]  # plurals are singular
    action = spec.node("prep").actions[0]
    assert action.then == ("require-approval",) and action.conditions[0].holds(0.4)
    assert spec.upstream("evaluate") == ["prep", "sweep"] and spec.downstream("prep") == ["sweep", "evaluate"]
    assert PipelineSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_the_default_of_a_pipeline_parameter_applies_when_none_is_given() -> None:
    _, spec = spec_from_yaml(YAML, "flow", "abc")
    assert spec.parameters == {"count": 5} and spec.node("prep").template["parameters"] == {"n": 5}


def payload() -> dict[str, Any]:
    return pipeline_payload(YAML, "flow", "abc")


@pytest.mark.parametrize("change, said", [
    (lambda p: p["nodes"].append(dict(p["nodes"][0])), "two nodes are called 'prep'"),
    (lambda p: p["nodes"].append({"name": "d", "type": "deployment", "deployment": "x"}),
     "node 'd' is a deployment node"),
    (lambda p: p["nodes"][0].update(type="robot"), "type 'robot' is not one of execution, task, mimic"),
    (lambda p: p["nodes"][0].update({"on-error": "explode"}), "on-error 'explode' is not one of"),
    (lambda p: p["nodes"][0]["template"].update(step="nope"), "node 'prep': unknown step 'nope'"),
    (lambda p: p["edges"].append({"source_node": "evaluate", "source_type": "output", "source_key": "*",
                                  "target_node": "prep", "target_type": "input", "target_key": "raw"}),
     "the edges make a cycle"),
    (lambda p: p["edges"].append({"source_node": "ghost", "source_type": "output", "source_key": "*",
                                  "target_node": "prep", "target_type": "input", "target_key": "raw"}),
     "there is no node 'ghost'"),
    (lambda p: p["edges"].append({"source_node": "prep", "source_type": "output", "source_key": "*",
                                  "target_node": "evaluate", "target_type": "parameter", "target_key": "lr"}),
     "an output feeds input, not parameter"),
    (lambda p: p["parameters"]["count"]["config"].update(targets=["nobody.parameter.n"]), "names no node"),
    (lambda p: p["nodes"][0].update(actions=[{"when": ["node-complete"], "then": ["explode"]}]),
     "'explode' is not one of"),
    (lambda p: p["nodes"][0]["template"].update(parameters={"n": {"style": "multiple", "rules": {"items": [1]}}}),
     "only fits a task node"),
    (lambda p: p.update(nodes=[]), "a pipeline needs a list of nodes"),
])
def test_a_bad_payload_is_refused_naming_what_is_wrong(change: Any, said: str) -> None:
    p = payload()
    change(p)
    with pytest.raises(UserInputError, match=said.replace("(", r"\(").replace(")", r"\)")):
        parse_payload(p, known_steps={"prep", "train"}, commit="abc")


def test_underscored_keys_string_inputs_and_mimic_nodes_are_accepted() -> None:
    p = payload()
    node = p["nodes"][2]
    node["edge_merge_mode"] = node.pop("edge-merge-mode")
    node["template"]["inputs"]["data"] = "s3://bucket/one.csv"
    p["nodes"][0] = {"type": "mimic", "name": "prep", "source": 17}
    spec = parse_payload(p, known_steps={"prep", "train"}, commit="abc")
    assert spec.node("evaluate").edge_merge_mode == "append"
    assert spec.node("evaluate").template["inputs"]["data"] == ["s3://bucket/one.csv"]
    assert spec.node("prep").type == "mimic" and spec.node("prep").source == 17


@pytest.mark.parametrize("text, holds, fails", [
    ("metadata.accuracy < .8", 0.5, 0.9), ("parameter.epochs >= 10", 10, 9), ("metadata.tag == 'best'", "best", "x"),
    ("metadata.done != true", False, True),
])
def test_conditions_compare_a_value(text: str, holds: Any, fails: Any) -> None:
    condition = parse_condition(text)
    assert condition.holds(holds) and not condition.holds(fails) and not condition.holds(None)


def test_a_bad_condition_is_refused() -> None:
    with pytest.raises(UserInputError, match="is not `metadata.KEY OP VALUE`"):
        parse_condition("import os; os.system('x')")


def test_creating_a_pipeline_writes_its_nodes_or_nothing(vh: VhOrch, tmp_path: Path) -> None:
    vh("project", "add", "p")
    folder = make_project(tmp_path, "flow", YAML)
    settings = Settings.from_env(vh.env)
    store = Store(settings.db_url)
    run = SubmitRequest(project="p", step="", adhoc=folder)
    with pytest.raises(UserInputError, match="node 'prep'.*parameter 'n'"):
        create_pipeline(store, settings, PipelineRequest(run=run, name="flow", parameters={"count": "many"}))
    assert store.list_pipelines()[1] == 0
    pipeline = create_pipeline(store, settings, PipelineRequest(run=run, name="flow", parameters={"count": "4"}))
    assert (pipeline.counter, pipeline.name, pipeline.title, pipeline.status) == (1, "flow", "flow", "created")
    nodes = store.pipeline_nodes(pipeline.id)  # type: ignore[arg-type]
    assert [(n.name, n.type, n.status) for n in nodes] == [
        ("prep", "execution", "created"), ("sweep", "task", "created"), ("evaluate", "execution", "created")]
    assert nodes[0].spec["template"]["parameters"] == {"n": "4"}
    shown = pipeline_dict(store, pipeline)
    assert (shown["project"], shown["status"], shown["parameters"]) == ("p", "created", {"count": "4"})
    assert [(n["name"], n["status"], n["executions"]) for n in shown["nodes"]] == [
        ("prep", "created", []), ("sweep", "created", []), ("evaluate", "created", [])]


# --- valohai-yaml's own examples ------------------------------------------------------------------

EXAMPLES = Path(__file__).parent / "data" / "valohai_yaml_examples"


def example_pipelines() -> list[tuple[str, str]]:
    from vh_orch.config.steps import parse_config

    return [(path.name, name) for path in sorted(EXAMPLES.glob("*.yaml"))
            for name in parse_config(path.read_text()).pipelines]


def test_every_example_file_is_here() -> None:
    assert len(example_pipelines()) >= 20


@pytest.fixture(scope="module")
def example_store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from conftest import installation

    home = tmp_path_factory.mktemp("examples") / "home"
    with installation(home) as vh:
        vh("project", "add", "examples")
        settings = Settings.from_env(vh.env)
        yield Store(settings.db_url), settings, tmp_path_factory.mktemp("examples")


@pytest.mark.parametrize("file, name", example_pipelines())
def test_valohai_yaml_example_pipelines_are_accepted_or_refused_for_their_deployment_nodes(
    example_store: Any, file: str, name: str
) -> None:
    store, settings, folder = example_store
    text = (EXAMPLES / file).read_text()
    pipeline_yaml = next(item["pipeline"] for item in yaml.safe_load(text)
                         if "pipeline" in item and item["pipeline"]["name"] == name)
    deployments = [n["name"] for n in pipeline_yaml["nodes"] if n.get("type") == "deployment"]
    project = make_project(folder, f"{file.removesuffix('.yaml')}-{len(list(folder.iterdir()))}", text)
    run = SubmitRequest(project="examples", step="", adhoc=project)
    if deployments:
        with pytest.raises(UserInputError, match=f"node {deployments[0]!r} is a deployment node"):
            create_pipeline(store, settings, PipelineRequest(run=run, name=name))
        return
    pipeline = create_pipeline(store, settings, PipelineRequest(run=run, name=name))
    spec = PipelineSpec.from_json(pipeline.spec)
    assert [n.name for n in store.pipeline_nodes(pipeline.id)] == [n.name for n in spec.nodes]
    assert all(n.type in ("execution", "task") for n in spec.nodes)
