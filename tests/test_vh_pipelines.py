"""Pipelines through the real Valohai client, `vh` (valohai-cli 0.37.0), against one `vh-orch serve`.

`vh pipeline run` converts valohai.yaml's pipeline on the client (valohai-yaml's PipelineConverter)
and posts the result to POST /api/v0/pipelines/; `vh pipeline list` and `vh pipeline stop` read
and post the shapes Valohai's API has. What ran is checked against vh-orch's own records (the API's
pipeline with its nodes' executions, `vh-orch exec info`). alice works in project `demo`; bob, who
owns `bobs`, must see none of it. One daemon for the module; each test starts pipelines of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import WAIT_S, VhOrch, eventually, installation
from test_api_security import Client, project_id
from test_vh_client import GIT, Vh

VH = str(Path(sys.executable).parent / "vh")
YAML = """
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
    command: sh train.sh {parameter-value:rows} {parameter-value:score} {parameter-value:note}
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
      - name: note
        type: string
        default: plain
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
    nodes:
      - name: bad
        type: execution
        step: nap
        on-error: stop-next
        override:
          parameters:
            - name: code
              default: 3
      - name: after-bad
        type: execution
        step: nap
      - name: good
        type: execution
        step: nap
        override:
          parameters:
            - name: nap
              default: 0.5
      - name: after-good
        type: execution
        step: nap
    edges:
      - [bad.parameter.nap, after-bad.parameter.nap]
      - [good.parameter.nap, after-good.parameter.nap]
- pipeline:
    name: slow
    nodes:
      - name: sleepy
        type: execution
        step: nap
        override:
          parameters:
            - name: nap
              default: 300
    edges: []
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
echo "$3" > "$VH_OUTPUTS_DIR/model-$1.bin"
""",
    "nap.sh": """sleep "$1"
exit "$2"
""",
}
FINAL = ("complete", "error", "stopped")
QUEUED = re.compile(r"Pipeline =(\d+) queued\. See (\S+)")


class World:
    def __init__(self, vh: VhOrch, alice: Vh, api: str, alice_api: Client, bob_api: Client, pid: str,
                 bobs: str, root: Path) -> None:
        self.vh, self.alice, self.api, self.root = vh, alice, api, root
        self.alice_api, self.bob_api, self.pid, self.bobs = alice_api, bob_api, pid, bobs

    def run(self, *args: str) -> dict[str, Any]:
        """`vh pipeline run ARGS --adhoc`: the pipeline it says it queued, as the API shows it."""
        out = self.alice("pipeline", "run", *args, "--adhoc")
        found = QUEUED.search(out.stdout + out.stderr)
        assert found, out.stdout + out.stderr
        counter, display = int(found[1]), found[2]
        pipeline = self.get(f"{self.pid}:{counter}")
        assert display == pipeline["urls"]["display"]
        return pipeline

    def get(self, ref: str | int) -> dict[str, Any]:
        answer = self.alice_api.get(f"/api/v0/pipelines/{ref}/")
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def wait(self, pipeline: dict[str, Any], statuses: tuple[str, ...] = FINAL) -> dict[str, Any]:
        seen = [pipeline]

        def ended() -> dict[str, Any] | None:
            seen.append(self.get(pipeline["id"]))
            return seen[-1] if seen[-1]["status"] in statuses else None

        try:
            return eventually(f"pipeline ={pipeline['counter']} to be {'/'.join(statuses)}", ended, timeout=WAIT_S * 2)
        except AssertionError as exc:
            nodes = [(n["name"], n["status"], n["status_reason"]) for n in seen[-1]["nodes"]]
            raise AssertionError(f"{exc}: {seen[-1]['status']} {seen[-1]['status_reason']} {nodes}") from None

    def pipelines(self) -> int:
        with sqlite3.connect(f"file:{self.vh.home / 'state.db'}?mode=ro", uri=True) as db:
            return int(db.execute("SELECT count(*) FROM pipeline").fetchone()[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_images: None) -> Iterator[World]:
    root = tmp_path_factory.mktemp("vh-pipelines")
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        vh("user", "add", "alice")
        vh("user", "add", "bob")
        vh("project", "add", "demo", "--owner", "alice")
        vh("project", "add", "bobs", "--owner", "bob")
        vh.start_daemon()
        api = vh.api_url()
        folder = root / "demo"
        folder.mkdir()
        (folder / "valohai.yaml").write_text(YAML)
        for name, text in SCRIPTS.items():
            (folder / name).write_text(text)
        alice = Vh(root / "vh-config", folder, vh.home)
        alice("login", "--host", api, "--token", vh.json("user", "token", "alice")["token"])
        alice("project", "link", "demo", "--yes")
        alice_api = Client(api, vh.json("user", "token", "alice")["token"])
        bob_api = Client(api, vh.json("user", "token", "bob")["token"])
        yield World(vh, alice, api, alice_api, bob_api, project_id(alice_api, "demo"), project_id(bob_api, "bobs"),
                    root)


def test_run_reads_back_by_id_counter_and_latest_lists_and_stops(world: World) -> None:
    """The shapes the client reads (counter, urls.display, nodes[].id, url), the three ways to name a
    pipeline, `vh pipeline list`, and `vh pipeline stop latest` through the double-slash path."""
    p = world.run("slow")
    assert p["title"] == "slow" and p["project"]["name"] == "demo" and p["creator"]["username"] == "alice"
    assert p["url"] == f"{world.api}/api/v0/pipelines/{p['id']}/"
    assert p["urls"]["display"] == f"{world.api}/pipelines/{p['id']}/"
    assert p["commit"]["adhoc"] is True and p["commit"]["identifier"].startswith("~")
    [node] = p["nodes"]
    assert (node["name"], node["type"], node["pipeline"]) == ("sleepy", "execution", p["id"])
    assert isinstance(node["id"], int) and isinstance(node["log"], list) and isinstance(p["log"], list)
    assert world.get(p["id"])["counter"] == p["counter"]
    assert world.get(f"{world.pid}:latest")["id"] == p["id"]
    assert world.get(f"{world.pid}:={p['counter']}")["id"] == p["id"]

    listed = world.alice("pipeline", "list").stdout
    assert f"{p['counter']}" in listed and "slow" in listed and p["urls"]["display"] in listed
    page = world.alice_api.get(f"/api/v0/pipelines/?project={world.pid}&ordering=-counter&limit=9001&deleted=false")
    assert page.status_code == 200 and p["id"] in [r["id"] for r in page.json()["results"]]
    assert world.alice_api.get("/api/v0/pipelines/?deleted=true").json()["count"] == 0
    owned = world.alice("pipeline", "list", "--owned").stdout
    assert "slow" in owned
    assert world.alice_api.get(f"/api/v0/pipelines/?project={world.pid}&creator=bob").json()["count"] == 0
    assert world.alice_api.get(f"/api/v0/pipelines/?project={world.pid}&creator=alice").json()["count"] >= 1

    stopped = world.alice("pipeline", "stop", "latest")
    assert "Done" in stopped.stdout + stopped.stderr
    final = world.wait(p)
    assert final["status"] == "stopped" and "alice" in final["status_reason"]

    # by counter: `vh pipeline stop N` finds it through ?counter=N, then posts to its url + "/stop/"
    again = world.run("slow")
    world.alice("pipeline", "stop", str(again["counter"]))
    assert world.wait(again)["status"] == "stopped"
    # the single-slash path too; stopping what has ended changes nothing
    answer = world.alice_api.post(f"/api/v0/pipelines/{again['id']}/stop/")
    assert answer.status_code == 200 and answer.json()["status"] == "stopped"


def test_another_user_gets_404_for_every_pipeline_route(world: World) -> None:
    p = world.run("slow")
    bob = world.bob_api
    for ref in (p["id"], f"{world.pid}:{p['counter']}", f"{world.pid}:latest"):
        assert bob.get(f"/api/v0/pipelines/{ref}/").status_code == 404, ref
        assert bob.post(f"/api/v0/pipelines/{ref}/stop/").status_code == 404, ref
        assert bob.post(f"/api/v0/pipelines/{ref}//stop/").status_code == 404, ref
    assert bob.get(f"/api/v0/pipelines/?project={world.pid}").status_code == 404
    assert p["id"] not in [r["id"] for r in bob.get("/api/v0/pipelines/?status=incomplete").json()["results"]]
    assert bob.get("/api/v0/pipelines/?limit=9001").json()["count"] == 0
    # bob's own project: his pipeline cannot reach alice's nodes (a --reuse of her node) or her commit
    nodes = [{"type": "mimic", "name": "sleepy", "source": p["nodes"][0]["id"]}]
    stolen = bob.post("/api/v0/pipelines/", json={"project": world.bobs, "title": "x", "nodes": nodes, "edges": []})
    assert stolen.status_code == 400 and "nodes" in stolen.json(), stolen.text
    template = {"step": "nap", "commit": p["commit"]["identifier"], "image": "vh-orch/busybox:test"}
    stolen = bob.post("/api/v0/pipelines/", json={"project": world.bobs, "title": "x", "edges": [],
                                                  "nodes": [{"name": "n", "type": "execution", "template": template}]})
    assert stolen.status_code == 400 and "commit" in stolen.json(), stolen.text
    assert bob.post("/api/v0/pipelines/", json={"project": world.pid, "nodes": []}).status_code == 404
    # the double slash is a route of its own, not a 404 for everyone
    assert world.alice_api.post(f"/api/v0/pipelines/{p['id']}//stop/").status_code == 200
    assert world.wait(p)["status"] == "stopped"
    assert bob.get("/api/v0/pipelines/?limit=9001").json()["count"] == 0


def converted(world: World, name: str, *args: str) -> dict[str, Any]:
    """What `vh pipeline run NAME ARGS` would post (`vh pipeline convert-to-api`), for this project."""
    ident = world.get(f"{world.pid}:latest")["commit"]["identifier"]
    out = world.alice("pipeline", "convert-to-api", name, "-c", ident, *args).stdout
    return {"project": world.pid, "title": name, "tags": [], **json.loads(out)}


def test_hostile_and_malformed_payloads_are_refused_naming_the_field_and_write_nothing(world: World) -> None:
    slow = world.run("slow")  # the package is uploaded; its commit is what the payloads below name
    world.alice("pipeline", "stop", str(slow["counter"]))
    good = converted(world, "three")
    assert world.alice_api.post("/api/v0/pipelines/", json={**good, "title": "probe"}).status_code == 201
    before = world.pipelines()

    def node(which: str, /, **changes: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(good))
        for n in body["nodes"]:
            if n["name"] == which:
                n.update(changes)
        return body

    def template(which: str, /, **changes: Any) -> dict[str, Any]:
        body = json.loads(json.dumps(good))
        for n in body["nodes"]:
            if n["name"] == which:
                n["template"].update(changes)
        return body

    cases: list[tuple[Any, str]] = [
        ({k: v for k, v in good.items() if k != "nodes"}, "nodes"),
        ({**good, "nodes": []}, "nodes"),
        ({**good, "nodes": "prep"}, "nodes"),
        ({**good, "nodes": [{"name": f"n{i}", "type": "execution", "template": {"step": "nap"}} for i in range(501)]},
         "nodes"),
        (node("prep", type="deployment"), "nodes"),
        (node("prep", type="shell"), "nodes"),
        (node("train", **{"on-error": "explode"}), "nodes"),
        (node("train", name="prep"), "nodes"),
        (template("train", step="no-such-step"), "nodes"),
        (template("prep", parameters={"nope": 1}), "nodes"),
        (template("train", parameters={"note": 1e400}), "nodes"),
        (template("train", parameters={"note": {"style": "random", "rules": {}}}), "nodes"),
        (template("prep", inputs={"../../etc": ["http://127.0.0.1:9/x"]}), "nodes"),
        (template("prep", image=["not", "text"]), "nodes"),
        (template("prep", commit="~" + "0" * 64), "commit"),
        ({**good, "edges": [*good["edges"], {"source_node": "collect", "source_type": "output", "source_key": "*",
                                            "target_node": "prep", "target_type": "input", "target_key": "x"}]},
         "edges"),
        ({**good, "edges": [{"source": "prep.output.*", "target": "ghost.input.data"}]}, "edges"),
        ({**good, "edges": [{"source": "prep.output.*", "target": "train.parameter.rows"}]}, "edges"),
        ({**good, "edges": "prep->train"}, "edges"),
        ({**good, "parameters": {"rows": {"config": {"targets": ["ghost.parameter.rows"]}, "expression": 1}}},
         "parameters"),
        ({**good, "parameters": {"rows": {"config": {"targets": ["prep.parameter.rows"]}}}}, "parameters"),
        ({**good, "parameters": ["rows"]}, "parameters"),
        ({**good, "reuse_executions": "yes"}, "reuse_executions"),
        ({**good, "title": "t" * 2000}, "title"),
        ({**good, "tags": ["t"] * 1000}, "tags"),
        ({**good, "nodes": [{"type": "mimic", "name": "prep", "source": 10**30}]}, "nodes"),
        ({**good, "nodes": [{"type": "mimic", "name": "prep", "source": "1"}]}, "nodes"),
        ({**good, "nodes": [{"name": "prep", "type": "execution", "reuse_execution_id": 999999}]}, "nodes"),
    ]
    for index, (body, field) in enumerate(cases):
        # json.dumps writes Infinity and NaN as JavaScript does; Python's json.loads reads them back
        answer = world.alice_api.post("/api/v0/pipelines/", data=json.dumps(body),
                                      headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, (index, field, answer.status_code, answer.text[:300])
        assert field in answer.json(), (index, field, answer.text[:300])
    project = json.dumps(world.pid).encode()
    deep = b'{"project": ' + project + b', "nodes": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    huge = b'{"project": ' + project + b', "nodes": [{"type": "mimic", "name": "x", "source": 1' + b"0" * 5000 + b"}]}"
    for raw in (b"{", b"[]", b'"nodes"', b'{"project": ' + project + b', "nodes": NaN}', deep, huge):
        answer = world.alice_api.post("/api/v0/pipelines/", data=raw, headers={"Content-Type": "application/json"})
        assert answer.status_code in (400, 422), (raw, answer.status_code, answer.text[:300])
    assert world.pipelines() == before
    # not found, not an error: a malformed reference names no pipeline
    for ref in ("0", "abc", "99999999999999999999", f"{world.pid}:x", f"{world.pid}:999", "1:1:1"):
        assert world.alice_api.get(f"/api/v0/pipelines/{ref}/").status_code == 404, ref
    for query, field in (("status=running", "status"), ("counter=x", "counter"), ("ordering=title", "ordering"),
                         ("limit=-1", "limit"), ("project=nope", "project")):
        answer = world.alice_api.get(f"/api/v0/pipelines/?{query}")
        assert answer.status_code == 400 and field in answer.json(), (query, answer.text)


# -- with the engine: nodes run -------------------------------------------------------------------------


def node_of(pipeline: dict[str, Any], name: str) -> dict[str, Any]:
    [node] = [n for n in pipeline["nodes"] if n["name"] == name]
    return node


def execution(world: World, node: dict[str, Any]) -> dict[str, Any]:
    assert node["execution"] is not None, node
    return world.vh.json("exec", "info", str(node["execution"]["id"]))  # type: ignore[no-any-return]


def test_three_nodes_with_output_metadata_and_parameter_edges_and_a_pipeline_parameter(world: World) -> None:
    default = world.wait(world.run("three"))
    given = world.wait(world.run("three", "--rows=7", "--train.note=hello"))
    for p, rows, note in ((default, 5, "plain"), (given, 7, "hello")):
        assert p["status"] == "complete", p
        assert [n["status"] for n in p["nodes"]] == ["complete"] * 3
        prep, train, collect = (execution(world, node_of(p, n)) for n in ("prep", "train", "collect"))
        assert prep["parameters"]["rows"] == rows
        # parameter edge (prep's rows), metadata edge (prep's score), the node option
        assert train["parameters"] == {"rows": rows, "score": 0.75, "note": note}
        assert sorted(train["inputs"]) == ["data"] and len(train["inputs"]["data"]) == 2  # data/* only
        assert len(collect["inputs"]["models"]) == 1
        names = {o["name"] for o in prep["outputs"]}
        assert {"data/train.csv", "data/test.csv", "prep.log"} <= names
        # the execution shows which pipeline ran it
        shown = world.alice_api.get(f"/api/v0/executions/{node_of(p, 'train')['execution']['id']}/").json()
        assert (shown["pipeline"], shown["pipeline_counter"]) == (p["id"], p["counter"])
        assert shown["pipeline_node"] == node_of(p, "train")["id"]
    edges = {(e["source_node"], e["target_node"]) for e in default["edges"]}
    ids = {n["name"]: n["id"] for n in default["nodes"]}
    assert (ids["prep"], ids["train"]) in edges and (ids["train"], ids["collect"]) in edges
    info = world.alice("exec", "info", str(node_of(given, "train")["execution"]["counter"])).stdout
    assert "hello" in info


def test_a_task_nodes_children_all_feed_the_next_node(world: World) -> None:
    p = world.wait(world.run("fan"))
    assert p["status"] == "complete", p
    sweep = node_of(p, "sweep")
    assert sweep["type"] == "task" and sweep["task"]["status"] == "complete" and len(sweep["executions"]) == 3
    collect = execution(world, node_of(p, "collect"))
    assert len(collect["inputs"]["models"]) == 3
    logs = world.alice("exec", "logs", str(node_of(p, "collect")["execution"]["counter"])).stdout
    for rows in (1, 2, 3):
        assert f"model-{rows}.bin" in logs


def test_stop_next_failure_beside_a_branch_that_completes(world: World) -> None:
    p = world.wait(world.run("branches"))
    statuses = {n["name"]: n["status"] for n in p["nodes"]}
    assert statuses == {"bad": "error", "after-bad": "skipped", "good": "complete", "after-good": "complete"}, p
    assert p["status"] == "error"
    assert node_of(p, "after-bad")["execution"] is None


def test_reuse_takes_over_an_earlier_pipelines_node(world: World) -> None:
    first = world.wait(world.run("three"))
    assert first["status"] == "complete"
    out = world.alice("pipeline", "run", "three", "--adhoc", "--reuse", f"{first['counter']}:prep")
    assert "Reusing nodes" in out.stdout + out.stderr
    second = world.wait(world.get(f"{world.pid}:latest"))
    assert second["counter"] == first["counter"] + 1 and second["status"] == "complete", second
    prep = node_of(second, "prep")
    assert prep["type"] == "mimic" and prep["status"] == "complete"
    assert prep["execution"]["id"] == node_of(first, "prep")["execution"]["id"]
    # train ran again on what the reused prep made
    train = execution(world, node_of(second, "train"))
    assert train["parameters"]["score"] == 0.75 and len(train["inputs"]["data"]) == 2
    # every node reused: the payload names no commit; the pipeline takes its source pipeline's
    world.alice("pipeline", "run", "three", "--adhoc", "--reuse", f"{second['counter']}:*")
    third = world.wait(world.get(f"{world.pid}:latest"))
    assert third["status"] == "complete" and {n["type"] for n in third["nodes"]} == {"mimic"}, third
    assert third["commit"] == second["commit"]
    names = ("prep", "train", "collect")
    assert [node_of(third, n)["execution"]["id"] for n in names] == [
        node_of(second, n)["execution"]["id"] for n in names]


def test_a_git_commit_runs_as_the_client_resolves_it(world: World) -> None:
    """Without --adhoc, `vh` sends the Git HEAD it found in the project's commits into every node."""
    repo = world.root / "git-demo"
    shutil.copytree(world.alice.cwd, repo)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "pipelines"], check=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    world.vh("project", "add", "gitdemo", "--repo", str(repo), "--owner", "alice")
    client = Vh(world.root / "vh-config-git", repo, world.vh.home)
    client("login", "--host", world.api, "--token", world.vh.json("user", "token", "alice")["token"])
    client("project", "link", "gitdemo", "--yes")
    client("project", "fetch")
    out = client("pipeline", "run", "three", "--rows=2")
    found = QUEUED.search(out.stdout + out.stderr)
    assert found, out.stdout + out.stderr
    p = world.wait(world.get(f"{project_id(world.alice_api, 'gitdemo')}:{found[1]}"))
    assert p["commit"] == {"identifier": head, "adhoc": False}
    assert p["status"] == "complete" and execution(world, node_of(p, "train"))["parameters"]["rows"] == 2


def test_the_payload_forms_other_clients_send(world: World) -> None:
    """Underscored node keys (Valohai's web UI), an input as one URL, a `single` variant as a value,
    a node that stands for an earlier execution (`reuse_execution_id`), and vh-orch's own `commit`."""
    earlier = world.wait(world.run("three"))
    old_prep = execution(world, node_of(earlier, "prep"))
    log = next(o for o in old_prep["outputs"] if o["name"] == "prep.log")
    body = {
        "project": world.pid, "title": "by hand", "commit": earlier["commit"]["identifier"],
        "nodes": [
            {"name": "prep", "type": "execution", "on_error": "stop-all",
             "template": {"step": "prep", "parameters": {"rows": {"style": "single", "rules": {"value": 3}}}}},
            {"name": "old", "type": "execution", "reuse_execution_id": old_prep["id"]},
            {"name": "train", "type": "execution", "edge_merge_mode": "append",
             "template": {"step": "train", "inputs": {"data": log["datum"]}, "environment_variables": {"X": "1"}}},
        ],
        "edges": [
            {"source_node": "prep", "source_type": "outputs", "source_key": "data/train*",
             "target_node": "train", "target_type": "inputs", "target_key": "data"},
            {"source": "old.output.data/test.csv", "target": "train.input.data"},
        ],
    }
    answer = world.alice_api.post("/api/v0/pipelines/", json=body)
    assert answer.status_code == 201, answer.text
    p = world.wait(answer.json())
    nodes = [(n["name"], n["status"], n["status_reason"]) for n in p["nodes"]]
    assert p["status"] == "complete" and p["title"] == "by hand", nodes
    assert node_of(p, "old")["type"] == "mimic" and node_of(p, "old")["execution"]["id"] == old_prep["id"]
    assert execution(world, node_of(p, "prep"))["parameters"]["rows"] == 3
    train = execution(world, node_of(p, "train"))
    # append: the template's URL stays beside the edges' files (one from prep, one from the reused node)
    assert log["datum"] in train["inputs"]["data"] and len(train["inputs"]["data"]) == 3
    assert train["environment_variables"]["X"] == "1"
