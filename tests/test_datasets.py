"""Datasets: executions make versions through output metadata (valohai-utils' jsonl and sidecars), later
executions take them as `dataset://NAME/VERSION` and `/latest` inputs, aliases as `datum://ALIAS`; hostile
metadata is skipped with a log line; another user sees none of it. One daemon (process runtime) for the
module; each test has projects of its own."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bombs import package
from conftest import VhOrch, installation, make_project
from vh_orch.orchestrator.datasets.ingest import read_remote
from vh_orch.orchestrator.datasets.metadata import (
    MAX_SIDECAR_BYTES,
    metadata_files,
    parse_metadata,
    reserved,
)

STEPS = """
- step:
    name: make
    image: vh-orch/busybox:test
    command: python make.py {parameters}
    parameters:
      - name: version
        type: string
        default: v1
      - name: alias
        type: string
        default: best
- step:
    name: sidecar
    image: vh-orch/busybox:test
    command: sh sidecar.sh
- step:
    name: hostile
    image: vh-orch/busybox:test
    command: python hostile.py
- step:
    name: consume
    image: vh-orch/busybox:test
    command: cd "$VH_INPUTS_DIR" && find . -type f | sort && cat images/*
    inputs:
      - name: images
"""

# valohai-utils writes valohai.metadata.jsonl, as a user's script would.
MAKE = """
import argparse, os
from pathlib import Path
from valohai import output_properties

args = argparse.ArgumentParser()
args.add_argument("--version")
args.add_argument("--alias")
a = args.parse_args()
out = Path(os.environ["VH_OUTPUTS_DIR"])
(out / "sub").mkdir()
(out / "a.txt").write_text(f"a of {a.version}")
(out / "sub" / "b.txt").write_text(f"b of {a.version}")
(out / "loose.txt").write_text("in no dataset")
with output_properties() as p:
    for name in ("a.txt", "sub/b.txt"):
        p.add(file=name, properties={"valohai.tags": ["made", a.version], "source": {"step": "make"}})
        p.add_to_dataset(file=name, dataset_version=p.dataset_version_uri("images", a.version))
    p.add(file="a.txt", properties={"valohai.alias": a.alias})
"""

# The sidecar form, by hand: a new version from v1 without a.txt, plus c.txt.
SIDECAR = """
mkdir -p "$VH_OUTPUTS_DIR/more"
echo c > "$VH_OUTPUTS_DIR/more/c.txt"
cat > "$VH_OUTPUTS_DIR/more/c.txt.metadata.json" <<'EOF'
{"valohai.tags": ["side"], "valohai.dataset-versions": [
  {"uri": "dataset://images/v2", "from": "dataset://images/v1", "exclude": ["a.txt"]}]}
EOF
echo orphan > "$VH_OUTPUTS_DIR/orphan.metadata.json"
"""

HOSTILE = """
import json, os
from pathlib import Path

out = Path(os.environ["VH_OUTPUTS_DIR"])
for name in ("good.txt", "deep.txt", "huge.txt", "list.txt", "escape.txt"):
    (out / name).write_text(name)
(out / "deep.txt.metadata.json").write_text("[" * 5000 + "]" * 5000)
(out / "huge.txt.metadata.json").write_text(json.dumps({"x": "y" * (300 * 1024)}))
(out / "list.txt.metadata.json").write_text("[1, 2]")
lines = [
    "this is not json",
    json.dumps({"file": "../../../etc/passwd", "metadata": {"valohai.tags": ["escaped"]}}),
    json.dumps({"file": "nowhere.txt", "metadata": {"k": 1}}),
    json.dumps({"file": "escape.txt", "metadata": {"valohai.dataset-versions": ["dataset://../x/v1", "dataset://ok/latest"],
                                                   "valohai.alias": "bad alias!"}}),
    json.dumps({"file": "good.txt", "metadata": {"nested": {"a": [1, {"b": 2}]},
                                                 "valohai.dataset-versions": ["dataset://ok/v1"]}}),
    '{"file": "good.txt", "metadata": {"n": NaN}}',
]
(out / "valohai.metadata.jsonl").write_text("\\n".join(lines) + "\\n")
"""

FILES = {"make.py": MAKE, "sidecar.sh": SIDECAR, "hostile.py": HOSTILE}
TIMEOUT = 60


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VhOrch]:
    root = tmp_path_factory.mktemp("datasets")
    with installation(root / "home") as vh:
        vh("env", "update", "local", "--runtime", "process")
        # What an API user may submit to (refused before anything runs in these tests).
        vh("env", "add", "boxed", "--cloud", "local", "--runtime", "docker", "--pull-policy", "never", "--everyone")
        for user in ("alice", "bob"):
            vh("user", "add", user)
        vh.project_dir = make_project(root, "dsproj", STEPS, FILES)  # type: ignore[attr-defined]
        vh.start_daemon()
        yield vh


def run(vh: VhOrch, project: str, step: str, *args: str) -> dict[str, Any]:
    created = vh.run_json(step, "--project", project, "--adhoc", str(vh.project_dir), *args)  # type: ignore[attr-defined]
    return vh.wait(created["id"])  # type: ignore[no-any-return]


def log_text(vh: VhOrch, execution_id: int) -> str:
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    return "\n".join(json.loads(line).get("text", "") for line in out.splitlines())


def version(vh: VhOrch, project: str, ref: str) -> dict[str, Any]:
    return vh.json("dataset", "show", ref, "--project", project)  # type: ignore[no-any-return]


def file_names(detail: dict[str, Any]) -> list[str]:
    return [f["datum"]["name"] for f in detail["files"]]


def test_versions_from_both_metadata_forms_are_inputs_by_name_and_latest(world: VhOrch) -> None:
    vh = world
    vh("project", "add", "forms", "--owner", "alice")
    made = run(vh, "forms", "make", "-p", "version=v1")
    assert made["status"] == "complete", made
    # The jsonl describes the outputs and is not one of them; tags and metadata are on the outputs.
    outputs = {o["name"]: o for o in made["outputs"]}
    assert sorted(outputs) == ["a.txt", "loose.txt", "sub/b.txt"]
    assert outputs["a.txt"]["tags"] == ["made", "v1"] and outputs["loose.txt"]["tags"] == []
    assert outputs["sub/b.txt"]["metadata"]["source"] == {"step": "make"}
    assert "vh-orch: Created dataset version 'dataset://images/v1' with 2 files" in log_text(vh, made["id"])
    v1 = version(vh, "forms", "images/v1")
    assert file_names(v1) == ["a.txt", "sub/b.txt"]
    assert v1["execution"] == {"id": made["id"], "counter": made["counter"]}
    assert {f["datum"]["id"] for f in v1["files"]} == {outputs["a.txt"]["id"], outputs["sub/b.txt"]["id"]}
    assert v1["files"][0]["datum"]["tags"] == ["made", "v1"]
    assert v1["files"][0]["datum"]["sha256"] == outputs["a.txt"]["sha256"]

    side = run(vh, "forms", "sidecar")
    assert side["status"] == "complete", side
    # A sidecar is not stored; a `.metadata.json` with no file beside it is an ordinary output.
    assert sorted(o["name"] for o in side["outputs"]) == ["more/c.txt", "orphan.metadata.json"]
    v2 = version(vh, "forms", "images/v2")
    assert file_names(v2) == ["more/c.txt", "sub/b.txt"]  # from v1, less a.txt, plus c.txt
    assert version(vh, "forms", "images/latest")["id"] == v2["id"]

    shown = vh.json("dataset", "show", "images", "--project", "forms")
    assert [(v["name"], v["file_count"], v["execution"]["id"]) for v in shown["versions"]] == [
        ("v2", 2, side["id"]), ("v1", 2, made["id"])]
    assert shown["latest_version"] == {"id": v2["id"], "name": "v2"}
    listed = vh.json("dataset", "list", "--project", "forms")
    assert [(d["name"], d["version_count"]) for d in listed] == [("images", 2)]
    # The same for people: tables of datasets, versions and files.
    assert "images" in vh("dataset", "list").stdout
    assert f"{side['id']} (#{side['counter']})" in vh("dataset", "show", "images", "--project", "forms").stdout
    assert v1["files"][0]["datum"]["id"] in vh("dataset", "show", "images/v1", "--project", "forms").stdout

    by_name = run(vh, "forms", "consume", "-i", "images=dataset://images/v1")
    assert by_name["status"] == "complete", by_name
    text = log_text(vh, by_name["id"])
    assert "./images/a.txt\n./images/b.txt" in text and "a of v1" in text
    assert by_name["inputs"]["images"] == [f"datum://{f['datum']['id']}" for f in v1["files"]]
    latest = run(vh, "forms", "consume", "-i", "images=dataset://images/latest")
    assert latest["status"] == "complete", latest
    assert "./images/b.txt\n./images/c.txt" in log_text(vh, latest["id"])

    # A version name is made once: the second execution completes and says so; v1 is unchanged.
    again = run(vh, "forms", "make", "-p", "version=v1")
    assert again["status"] == "complete"
    assert "dataset version 'dataset://images/v1' exists already" in log_text(vh, again["id"])
    assert version(vh, "forms", "images/v1")["files"] == v1["files"]


def test_a_container_execution_makes_versions_the_same_way(world: VhOrch, docker_images: None) -> None:
    vh = world
    vh("project", "add", "boxes", "--owner", "alice")
    assert run(vh, "boxes", "make", "-p", "version=v1")["status"] == "complete"
    side = run(vh, "boxes", "sidecar", "--env", "boxed")
    assert side["status"] == "complete" and side["runtime"] == "docker", side
    assert sorted(o["name"] for o in side["outputs"]) == ["more/c.txt", "orphan.metadata.json"]
    assert file_names(version(vh, "boxes", "images/v2")) == ["more/c.txt", "sub/b.txt"]
    assert next(o for o in side["outputs"] if o["name"] == "more/c.txt")["tags"] == ["side"]


def test_an_alias_names_the_newest_output_that_claimed_it(world: VhOrch) -> None:
    vh = world
    vh("project", "add", "aliases", "--owner", "alice")
    first = run(vh, "aliases", "make", "-p", "version=v1", "-p", "alias=model")
    assert "datum alias 'model' now means a.txt" in log_text(vh, first["id"])
    used = run(vh, "aliases", "consume", "-i", "images=datum://model")
    assert used["status"] == "complete" and "a of v1" in log_text(vh, used["id"])
    second = run(vh, "aliases", "make", "-p", "version=v2", "-p", "alias=model")
    moved = run(vh, "aliases", "consume", "-i", "images=datum://model")
    a2 = next(o["id"] for o in second["outputs"] if o["name"] == "a.txt")
    assert moved["inputs"]["images"] == [f"datum://{a2}"] and "a of v2" in log_text(vh, moved["id"])
    # Aliases are the project's own: another project has no `model`.
    vh("project", "add", "elsewhere", "--owner", "alice")
    refused = vh("exec", "run", "consume", "--project", "elsewhere", "--adhoc", str(vh.project_dir),  # type: ignore[attr-defined]
                 "-i", "images=datum://model", check=False)
    assert refused.returncode != 0 and "input 'images'" in refused.stderr


def test_an_unknown_dataset_or_version_is_refused_naming_the_input(world: VhOrch) -> None:
    vh = world
    vh("project", "add", "unknowns", "--owner", "alice")
    assert run(vh, "unknowns", "make", "-p", "version=v1")["status"] == "complete"
    before = vh.json("exec", "list")
    for url, says in (("dataset://nope/v1", "no dataset 'nope'"), ("dataset://images/v9", "has no version 'v9'"),
                      ("dataset://images", "not a dataset version URI")):
        answer = vh("exec", "run", "consume", "--project", "unknowns", "--adhoc", str(vh.project_dir),  # type: ignore[attr-defined]
                    "-i", f"images={url}", check=False)
        assert answer.returncode != 0, url
        assert "input 'images'" in answer.stderr and says in answer.stderr, answer.stderr
    assert vh.json("exec", "list") == before


def test_hostile_metadata_is_skipped_with_a_log_line_and_the_execution_completes(world: VhOrch) -> None:
    vh = world
    vh("project", "add", "hostile", "--owner", "alice")
    done = run(vh, "hostile", "hostile")
    assert done["status"] == "complete", done
    text = log_text(vh, done["id"])
    for says in ("valohai.metadata.jsonl line 1: is not JSON; skipped",
                 "line 2: \"file\" '../../../etc/passwd' leaves the outputs folder; skipped",
                 "line 3: 'nowhere.txt' is not a stored output; skipped",
                 "'dataset://../x/v1' is not a dataset version URI",
                 "'latest' names the newest version and cannot be created",
                 "valohai.alias is not a name",
                 "line 6: is not JSON; skipped",
                 "deep.txt.metadata.json: nests deeper than 32 levels; skipped",
                 f"huge.txt.metadata.json: larger than {MAX_SIDECAR_BYTES:,} bytes; skipped",
                 "list.txt.metadata.json: is not a JSON object; skipped",
                 "vh-orch: Created dataset version 'dataset://ok/v1' with 1 files"):
        assert says in text, says
    outputs = {o["name"] for o in done["outputs"]}
    assert outputs == {"good.txt", "deep.txt", "huge.txt", "list.txt", "escape.txt"}
    assert file_names(version(vh, "hostile", "ok/v1")) == ["good.txt"]


def test_another_user_gets_404_for_datasets_and_cannot_use_them(world: VhOrch) -> None:
    vh = world
    vh("project", "add", "alices", "--owner", "alice")
    vh("project", "add", "bobs", "--owner", "bob")
    made = run(vh, "alices", "make", "-p", "version=v1", "-p", "alias=model")
    assert made["status"] == "complete"
    api = vh.api_url()

    def client(user: str) -> requests.Session:
        session = requests.Session()
        session.headers["Authorization"] = f"Token {vh.json('user', 'token', user)['token']}"
        return session

    alice, bob = client("alice"), client("bob")
    projects = {p["name"]: p["id"] for p in alice.get(f"{api}/api/v0/projects/", timeout=TIMEOUT).json()["results"]}
    pid = projects["alices"]
    listed = alice.get(f"{api}/api/v0/datasets/?project={pid}", timeout=TIMEOUT).json()
    assert listed["count"] == 1 and listed["results"][0]["project"]["id"] == pid
    dataset_id = listed["results"][0]["id"]
    detail = alice.get(f"{api}/api/v0/datasets/{dataset_id}/", timeout=TIMEOUT).json()
    assert detail["name"] == "images" and detail["latest_version"]["name"] == "v1"
    version_id = detail["latest_version"]["id"]
    files = alice.get(f"{api}/api/v0/dataset-versions/{version_id}/", timeout=TIMEOUT).json()["files"]
    assert sorted(f["datum"]["name"] for f in files) == ["a.txt", "sub/b.txt"]
    assert set(files[0]["datum"]) >= {"id", "name", "size", "sha256"}
    aliases = alice.get(f"{api}/api/v0/datum-aliases/?project={pid}", timeout=TIMEOUT).json()["results"]
    assert [(a["name"], a["datum"]["name"]) for a in aliases] == [("model", "a.txt")]

    for path in (f"/api/v0/datasets/?project={pid}", f"/api/v0/datasets/{dataset_id}/",
                 f"/api/v0/dataset-versions/{version_id}/", f"/api/v0/datum-aliases/?project={pid}",
                 "/api/v0/datasets/999999/", "/api/v0/dataset-versions/999999/", "/api/v0/datasets/x/"):
        answer = bob.get(f"{api}{path}", timeout=TIMEOUT)
        assert answer.status_code == 404, (path, answer.text)
    assert all(d["project"]["id"] != pid for d in bob.get(f"{api}/api/v0/datasets/", timeout=TIMEOUT).json()["results"])
    assert bob.get(f"{api}/api/v0/datum-aliases/", timeout=TIMEOUT).json()["results"] == []

    # Bob cannot name alice's dataset or alias from his own project, nor submit to hers.
    bobs = projects_of(bob, api)["bobs"]
    files_of = {p.relative_to(vh.project_dir).as_posix(): p.read_bytes()  # type: ignore[attr-defined]
                for p in vh.project_dir.rglob("*") if p.is_file()}  # type: ignore[attr-defined]
    commit = bob.post(f"{api}/api/v0/projects/{bobs}/import-package/", timeout=TIMEOUT,
                      files={"data": ("data.tgz", package(files_of), "application/gzip")},
                      data={"yaml_path": "valohai.yaml", "description": "test"}).json()["identifier"]
    before = vh.json("exec", "list")
    for url in ("dataset://images/v1", "dataset://images/latest", "datum://model"):
        answer = bob.post(f"{api}/api/v0/executions/", timeout=TIMEOUT, json={
            "project": bobs, "commit": commit, "step": "consume", "environment": "boxed",
            "inputs": {"images": [url]}})
        assert answer.status_code == 400 and "inputs" in answer.json(), (url, answer.text)
    answer = bob.post(f"{api}/api/v0/executions/", timeout=TIMEOUT, json={
        "project": pid, "commit": commit, "step": "consume", "environment": "boxed",
        "inputs": {"images": ["dataset://images/v1"]}})
    assert answer.status_code == 404
    assert vh.json("exec", "list") == before


def projects_of(session: requests.Session, api: str) -> dict[str, str]:
    return {p["name"]: p["id"] for p in session.get(f"{api}/api/v0/projects/", timeout=TIMEOUT).json()["results"]}


# -- the store, on both databases ------------------------------------------------------------------


def _finished(store: Any, seed: Any, status: str, names: dict[str, Any]) -> Any:
    """An execution beside `seed` that ends `status` with outputs named `names` (name -> its output metadata)."""
    from vh_orch.orchestrator.models import Execution, Output

    e = store.create_execution(Execution(project_id=seed.project_id, counter=0, commit_id=seed.commit_id, step="s",
                                         command="x", environment_id=seed.environment_id))
    with store.write() as s:
        row = s.get(Execution, e.id)
        row.status = "started"
        s.add(row)
    outputs = [Output(id=f"{e.id}-{name}", execution_id=e.id, name=name, size=1, sha256="0" * 64,
                      uri=f"file:///x/{e.id}/{name}", properties=meta) for name, meta in names.items()]
    assert store.finish_execution(e.id, e.attempt, status, None, 0, outputs)
    return e


def test_versions_and_aliases_land_with_a_complete_result_on_both_databases(db_url: str) -> None:
    from test_logs import one_execution

    store, seed = one_execution(db_url)
    pid = seed.project_id
    v1 = {"valohai.dataset-versions": ["dataset://d/v1"]}
    first = _finished(store, seed, "complete", {"a.txt": v1, "sub/b.txt": {**v1, "valohai.alias": "m"}, "c": None})
    (dataset,) = store.datasets_named("d", pid)
    assert [o.name for o in store.dataset_version_files(store.dataset_version(dataset.id, "v1").id)] == [
        "a.txt", "sub/b.txt"]
    assert store.log_has_line(first.id, "stderr", "vh-orch: Created dataset version 'dataset://d/v1' with 2 files")
    assert store.alias_output(pid, "m").id == f"{first.id}-sub/b.txt"

    v2 = {"valohai.dataset-versions": [{"uri": "dataset://d/v2", "from": "dataset://d/latest", "exclude": ["a.txt"]}]}
    second = _finished(store, seed, "complete", {"b.txt": v2, "sub/b.txt": v2})
    files = store.dataset_version_files(store.dataset_version(dataset.id, "latest").id)
    assert [(o.name, o.execution_id) for o in files] == [("b.txt", second.id), ("sub/b.txt", second.id)]

    # One execution can make a version and another from it.
    chained = {"valohai.dataset-versions": [{"uri": "dataset://e/v2", "from": "dataset://e/v1"}]}
    _finished(store, seed, "complete", {"a": chained, "z": {"valohai.dataset-versions": ["dataset://e/v1"]}})
    (chain,) = store.datasets_named("e", pid)
    assert [o.name for o in store.dataset_version_files(store.dataset_version(chain.id, "v2").id)] == ["a", "z"]

    # A failed execution makes no version and moves no alias, and says so.
    failed = _finished(store, seed, "error", {"z": {"valohai.dataset-versions": ["dataset://d/v3"],
                                                   "valohai.alias": "m"}})
    assert store.dataset_version(dataset.id, "v3") is None and store.alias_output(pid, "m").id.startswith(
        f"{first.id}-")
    assert store.log_has_line(failed.id, "stderr", "the execution did not complete: 'dataset://d/v3', alias 'm' "
                                                   "not made")
    assert [v.version.name for v in store.dataset_versions(dataset.id)] == ["v2", "v1"]


# -- the parser alone ---------------------------------------------------------------------------


def test_metadata_files_on_a_machine_are_read_through_one_script(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    out.mkdir()
    jsonl = b'{"file": "a b.txt", "metadata": {"k": 1}}\n'
    (out / "valohai.metadata.jsonl").write_bytes(jsonl)
    (out / "a b.txt.metadata.json").write_bytes('{"j": "\u00e9"}'.encode())
    (out / "it's.metadata.json").symlink_to("/etc/passwd")  # the upload skips links: so does this

    def run_script(script: str) -> str:  # what a machine's `sh -s` does with it
        return subprocess.run(["sh", "-s"], input=script, capture_output=True, text=True, check=True,
                              timeout=TIMEOUT).stdout

    sources = read_remote(run_script, str(out), [
        ("valohai.metadata.jsonl", len(jsonl)), ("a b.txt.metadata.json", 9), ("it's.metadata.json", 10),
        ("gone.metadata.json", 5), ("big.metadata.json", 10**9)])
    assert sources == {"valohai.metadata.jsonl": jsonl, "a b.txt.metadata.json": '{"j": "\u00e9"}'.encode(),
                       "it's.metadata.json": None, "gone.metadata.json": None, "big.metadata.json": 10**9}


def test_only_metadata_files_that_describe_something_are_kept_out_of_the_outputs() -> None:
    files = ["valohai.metadata.jsonl", "outputs.metadata.jsonl", "a.txt", "a.txt.metadata.json",
             "lonely.metadata.json", "sub/valohai.metadata.jsonl"]
    assert metadata_files(files) == {"valohai.metadata.jsonl", "outputs.metadata.jsonl", "a.txt.metadata.json"}


def test_sidecar_keys_win_over_jsonl_keys_and_both_forms_merge() -> None:
    jsonl = b'{"file": "./a.txt", "metadata": {"k": 1, "j": 1}}\n{"file": "a.txt", "metadata": {"k": 2}}\n'
    merged, problems = parse_metadata({"outputs.metadata.jsonl": jsonl, "a.txt.metadata.json": b'{"j": 3}'},
                                      ["a.txt"])
    assert merged == {"a.txt": {"k": 2, "j": 3}} and problems == []


def test_a_too_large_file_is_skipped_without_being_read() -> None:
    merged, problems = parse_metadata({"a.txt.metadata.json": 10**9}, ["a.txt"])
    assert merged == {} and "larger than" in problems[0]


def test_reserved_keys_are_checked_one_by_one() -> None:
    found, problems = reserved("a.txt", {
        "valohai.tags": ["x", "x", "y"], "valohai.alias": "m-1",
        "valohai.dataset-versions": ["dataset://d/v1", {"uri": "dataset://d/v2", "from": "dataset://e/v1"},
                                     {"uri": "dataset://d/v3", "from": "dataset://d/v1", "exclude": ["a"]}, 7]})
    assert found.tags == ["x", "y"] and found.alias == "m-1"
    assert [(r.ref.uri, r.base and r.base.uri, r.exclude) for r in found.versions] == [
        ("dataset://d/v1", None, ()), ("dataset://d/v3", "dataset://d/v1", ("a",))]
    assert len(problems) == 2 and "another dataset" in problems[0] and "neither" in problems[1]
