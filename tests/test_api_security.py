"""Who may do what through the HTTP API, and what hostile input does (nothing). Real daemon, real HTTP."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from bombs import package
from conftest import EXAMPLE, VhOrch, installation
from test_users import PASSWORD, database_bytes, with_stdin

TIMEOUT = 60


def example_files() -> dict[str, bytes]:
    return {p.relative_to(EXAMPLE).as_posix(): p.read_bytes() for p in EXAMPLE.rglob("*") if p.is_file()}


class Client:
    def __init__(self, api: str, token: str) -> None:
        self.api = api
        self.headers = {"Authorization": f"Token {token}"}

    def get(self, path: str, **kw: Any) -> requests.Response:
        return requests.get(self.url(path), headers={**self.headers, **kw.pop("headers", {})}, timeout=TIMEOUT, **kw)

    def post(self, path: str, **kw: Any) -> requests.Response:
        return requests.post(self.url(path), headers={**self.headers, **kw.pop("headers", {})}, timeout=TIMEOUT, **kw)

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.api}{path}"

    def upload(self, project_id: str, data: bytes, yaml_path: str = "valohai.yaml") -> requests.Response:
        return self.post(f"/api/v0/projects/{project_id}/import-package/",
                         files={"data": ("data.tgz", data, "application/gzip")},
                         data={"yaml_path": yaml_path, "description": "test"})


def execution_ids(vh: VhOrch) -> list[int]:
    """Which executions exist (their statuses move on: other tests' executions may still run)."""
    return sorted(e["id"] for e in vh.json("exec", "list"))


def project_id(client: Client, name: str) -> str:
    found = [p["id"] for p in client.get("/api/v0/projects/").json()["results"] if p["name"] == name]
    assert len(found) == 1, name
    return found[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, dict[str, Client]]]:
    """One daemon for the tests that only need users and projects; each test works in projects of
    its own (alice: mine, uploads, bad, searches; bob: bobs; carol: carols)."""
    with installation(tmp_path_factory.mktemp("security") / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        for user, projects in (("alice", ("mine", "uploads", "bad", "searches")), ("bob", ("bobs",)), ("carol", ("carols",))):
            vh("user", "add", user)
            for project in projects:
                vh("project", "add", project, "--owner", user)
        vh.start_daemon()
        api = vh.api_url()
        yield vh, {user: Client(api, vh.json("user", "token", user)["token"]) for user in ("alice", "bob", "carol")}


@pytest.fixture
def two_users(world: tuple[VhOrch, dict[str, Client]]) -> tuple[VhOrch, Client, Client]:
    vh, clients = world
    return vh, clients["alice"], clients["bob"]


def run_train(vh: VhOrch, client: Client, project: str, **extra: Any) -> dict[str, Any]:
    pid = project_id(client, project)
    uploaded = client.upload(pid, package(example_files()))
    assert uploaded.status_code == 201, uploaded.text
    answer = client.post("/api/v0/executions/", json={
        "project": pid, "commit": uploaded.json()["identifier"], "step": "train",
        "parameters": {"epochs": 2, "learning_rate": 0.1, "model": "linear"}, "inputs": {"dataset": []},
        **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def test_another_users_project_answers_404_to_everything(two_users: tuple[VhOrch, Client, Client]) -> None:
    vh, alice, bob = two_users
    created = run_train(vh, alice, "mine")
    final = vh.wait(created["id"])
    assert final["status"] == "complete" and final["user"] == "alice"
    datum = final["outputs"][0]["id"]
    pid = project_id(alice, "mine")
    eid = created["id"]

    assert alice.get(f"/api/v0/executions/{pid}:1/").json()["id"] == eid
    assert alice.get(f"/api/v0/data/{datum}/download/").content == Path(
        final["outputs"][0]["uri"].removeprefix("file://")).read_bytes()

    for path in (f"/api/v0/projects/{pid}/", f"/api/v0/executions/?project={pid}", f"/api/v0/executions/{eid}/",
                 f"/api/v0/executions/{pid}:1/", f"/api/v0/executions/{pid}:latest/",
                 f"/api/v0/executions/{eid}/events/", f"/api/v0/executions/{eid}/metadata/",
                 f"/api/v0/executions/{eid}/events/?search=a", f"/api/v0/executions/{eid}/log.txt",
                 f"/api/v0/executions/{eid}/stream/", f"/api/v0/data/?output_execution={eid}",
                 f"/api/v0/data/{datum}/download/", f"/api/v0/commits/?project={pid}",
                 f"/api/v0/commits/{created['commit']['identifier']}/?project={pid}",
                 f"/api/v0/projects/{pid}/commits/"):
        answer = bob.get(path)
        assert answer.status_code == 404, (path, answer.text)
        assert answer.json() == {"detail": "Not found."}
    assert all(r["project"]["name"] != "mine" for r in bob.get("/api/v0/executions/").json()["results"])
    assert [p["name"] for p in bob.get("/api/v0/projects/").json()["results"]] == ["bobs"]

    before = execution_ids(vh)
    for path, body in ((f"/api/v0/executions/{eid}/stop/", None), (f"/api/v0/projects/{pid}/fetch/", None),
                       (f"/api/v0/executions/{eid}/run-again/", {"parameters": {"epochs": 1}}),
                       ("/api/v0/executions/", {"project": pid, "commit": created["commit"]["identifier"],
                                                "step": "train"})):
        answer = bob.post(path, json=body)
        assert answer.status_code == 404, (path, answer.text)
    assert bob.upload(pid, package(example_files())).status_code == 404
    assert execution_ids(vh) == before

    # Bob cannot read Alice's output through an input of his own execution either.
    bobs = project_id(bob, "bobs")
    uploaded = bob.upload(bobs, package(example_files())).json()
    refused = bob.post("/api/v0/executions/", json={"project": bobs, "commit": uploaded["identifier"],
                                                    "step": "evaluate", "inputs": {"model": [f"datum://{datum}"]}})
    assert refused.status_code == 400
    assert "no datum" in refused.json()["inputs"][0]["message"]
    # ...nor a file of the server's.
    for url in ("/etc/passwd", "file:///etc/passwd"):
        refused = bob.post("/api/v0/executions/", json={"project": bobs, "commit": uploaded["identifier"],
                                                        "step": "evaluate", "inputs": {"model": [url]}})
        assert refused.status_code == 400 and "file on the server" in refused.json()["inputs"][0]["message"]
    assert execution_ids(vh) == before

    # Shared with bob, the project is his to use.
    vh("project", "share", "mine", "bob")
    assert bob.get(f"/api/v0/executions/{pid}:1/").json()["id"] == eid
    again = bob.post(f"/api/v0/executions/{eid}/run-again/", json={"parameters": {"epochs": 1}})
    assert again.status_code == 201, again.text
    assert again.json()["parameters"] == {"epochs": 1, "learning_rate": 0.1, "model": "linear"}
    assert again.json()["creator"] == {"username": "bob"}


def _link(tar: tarfile.TarFile, kind: bytes, name: str, target: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    tar.addfile(info)


HOSTILE: dict[str, Callable[[tarfile.TarFile], None]] = {
    "dot-dot": lambda tar: tar.addfile(*_file("../escaped.txt")),
    "nested dot-dot": lambda tar: tar.addfile(*_file("code/../../escaped.txt")),
    "absolute": lambda tar: tar.addfile(*_file("/tmp/vh-orch-escaped.txt")),
    "symlink": lambda tar: _link(tar, tarfile.SYMTYPE, "passwd", "/etc/passwd"),
    "hard link": lambda tar: _link(tar, tarfile.LNKTYPE, "shadow", "/etc/shadow"),
    "device": lambda tar: _link(tar, tarfile.CHRTYPE, "null"),
    "fifo": lambda tar: _link(tar, tarfile.FIFOTYPE, "pipe"),
}


def _file(name: str) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = 3
    return info, io.BytesIO(b"bad")


def test_hostile_archives_are_refused_and_write_nothing(two_users: tuple[VhOrch, Client, Client]) -> None:
    vh, alice, _ = two_users
    pid = project_id(alice, "uploads")
    adhoc = vh.home / "adhoc"
    kept = sorted(p for p in adhoc.rglob("*") if p.is_file())
    for kind, hostile in HOSTILE.items():
        answer = alice.upload(pid, package(example_files(), hostile))
        assert answer.status_code == 400, (kind, answer.text)
        message = answer.json()["data"][0]["message"]
        assert "nothing was stored" in message, kind
        assert alice.get(f"/api/v0/commits/?project={pid}").json()["results"] == [], kind
        assert sorted(p for p in adhoc.rglob("*") if p.is_file()) == kept, kind
        assert not (vh.home.parent / "escaped.txt").exists() and not Path("/tmp/vh-orch-escaped.txt").exists()


def test_uploads_are_checked_and_capped(vh: VhOrch) -> None:
    vh("user", "add", "alice")
    vh("project", "add", "mine", "--owner", "alice")
    vh.env["VH_ORCH_MAX_UPLOAD_MB"] = "1"
    vh.start_daemon()
    alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
    pid = project_id(alice, "mine")

    big = package({"valohai.yaml": b"- step: {name: a, image: x, command: 'true'}\n",
                   "blob.bin": os.urandom(2 * 1024 * 1024)})  # random: gzip cannot shrink it
    assert len(big) > 1024 * 1024
    too_big = alice.upload(pid, big)
    assert too_big.status_code == 413 and "limit" in too_big.json()["data"][0]["message"]

    cases = {
        "not an archive": (b"just some bytes", "data"),
        "no valohai.yaml": (package({"train.py": b"print(1)\n"}), "yaml_path"),
        "bad valohai.yaml": (package({"valohai.yaml": b"- step: {name: a, command: 3, image: [1]}\n"}), "yaml_path"),
    }
    for what, (data, field) in cases.items():
        answer = alice.upload(pid, data)
        assert answer.status_code == 400, (what, answer.text)
        assert list(answer.json()) == [field], (what, answer.json())
    assert alice.upload(pid, package(example_files()), yaml_path="../valohai.yaml").json()["yaml_path"]
    assert alice.get(f"/api/v0/commits/?project={pid}").json()["results"] == []
    assert [p for p in (vh.home / "adhoc").rglob("*") if p.is_file()] == []

    good = alice.upload(pid, package(example_files()))
    assert good.status_code == 201
    ident = good.json()["identifier"]
    assert ident == "~" + hashlib.sha256(package(example_files())).hexdigest()
    assert alice.get(f"/api/v0/commits/{ident}/?project={pid}").json()["adhoc"] is True


def test_bad_submissions_name_the_field_and_write_nothing(two_users: tuple[VhOrch, Client, Client]) -> None:
    vh, alice, _ = two_users
    pid = project_id(alice, "bad")
    before = execution_ids(vh)
    commit = alice.upload(pid, package(example_files())).json()["identifier"]
    base = {"project": pid, "commit": commit, "step": "train"}
    cases = [
        ({**base, "parameters": {"epochs": "many"}}, "parameters", "epochs"),
        ({**base, "parameters": {"epochs": 5000}}, "parameters", "epochs"),
        ({**base, "parameters": {"model": "forest"}}, "parameters", "model"),
        ({**base, "parameters": {"nope": 1}}, "parameters", "nope"),
        ({**base, "parameters": {"epochs": {"$gt": 1}}}, "parameters", ""),
        ({**base, "step": "nope"}, "step", "nope"),
        ({**base, "commit": "~" + "0" * 64}, "commit", "ad-hoc package"),
        ({**base, "commit": "deadbeef"}, "commit", "no repository"),
        ({**base, "environment": "gpu-nowhere"}, "environment", "gpu-nowhere"),
        ({**base, "inputs": {"dataset": ["ftp://example.invalid/x"]}}, "inputs", "unsupported"),
        ({**base, "image": "bad image name;rm -rf /"}, "image", "not a valid image"),
        ({**base, "priority": "high"}, "priority", ""),
        ({"project": pid, "step": "train"}, "commit", ""),
    ]
    for body, field, words in cases:
        answer = alice.post("/api/v0/executions/", json=body)
        assert answer.status_code == 400, (body, answer.text)
        errors = answer.json()
        assert field in errors, (body, errors)
        assert words in errors[field][0]["message"], (body, errors)
        assert errors[field][0]["code"]
    assert execution_ids(vh) == before
    not_json = alice.post("/api/v0/executions/", data=b"{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert execution_ids(vh) == before
    assert database_bytes(vh.home)  # the database is still readable


def test_forwarded_headers_count_only_from_trusted_proxies(vh: VhOrch) -> None:
    vh("user", "add", "alice")
    vh("project", "add", "mine", "--owner", "alice")
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}

    vh.start_daemon()
    alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
    answer = alice.get("/api/v0/projects/", headers=forwarded).json()
    assert answer["results"][0]["url"].startswith(vh.api_url())  # the headers were not believed
    vh.stop_daemon()

    vh.env["VH_ORCH_TRUSTED_PROXIES"] = "127.0.0.1"
    vh.start_daemon()
    alice.api = vh.api_url()
    host = alice.api.removeprefix("http://")
    answer = alice.get("/api/v0/projects/", headers=forwarded).json()
    assert answer["results"][0]["url"].startswith(f"https://{host}/")
    # Signed in through the TLS proxy, the session cookie is Secure; over plain http it cannot be.
    with_stdin(vh, PASSWORD + "\n", "user", "passwd", "alice", "--password-stdin")
    form = {"username": "alice", "password": PASSWORD}
    tls = requests.post(f"{alice.api}/login", data=form, allow_redirects=False, timeout=TIMEOUT,
                        headers={"X-Forwarded-Proto": "https", "Origin": f"https://{host}"})
    assert tls.status_code == 303 and "secure" in tls.headers["set-cookie"].lower()
    plain = requests.post(f"{alice.api}/login", data=form, allow_redirects=False, timeout=TIMEOUT,
                          headers={"Origin": alice.api})
    assert plain.status_code == 303 and "secure" not in plain.headers["set-cookie"].lower()
    assert "httponly" in plain.headers["set-cookie"].lower() and "samesite=lax" in plain.headers["set-cookie"].lower()
    vh.stop_daemon()

    vh.env["VH_ORCH_TRUSTED_PROXIES"] = "not-an-address"
    bad = vh("serve", check=False)
    assert bad.returncode != 0 and "--trusted-proxy 'not-an-address'" in bad.stderr


def test_api_submissions_count_against_the_callers_quota(world: tuple[VhOrch, dict[str, Client]]) -> None:
    vh, clients = world
    carol, bob = clients["carol"], clients["bob"]
    vh("quota", "set", "carol", "1")
    idle = package({"valohai.yaml": b"- step: {name: idle, image: vh-orch/busybox:test, command: sleep 300}\n"})
    made = []
    for client, project in ((carol, "carols"), (carol, "carols"), (bob, "bobs")):
        pid = project_id(client, project)
        commit = client.upload(pid, idle).json()["identifier"]
        answer = client.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": "idle"})
        assert answer.status_code == 201, answer.text
        made.append(answer.json())
    statuses = [vh.json("exec", "info", str(e["id"]))["status"] for e in made]
    assert statuses[0] in ("queued", "started") and statuses[1] == "created"  # carol's second waits
    assert statuses[2] in ("queued", "started")  # bob has no quota
    assert [e["creator"]["username"] for e in made] == ["carol", "carol", "bob"]
    for e in made:
        vh("exec", "stop", str(e["id"]))


def test_tasks_are_their_projects_own_and_bad_task_bodies_change_nothing(
        two_users: tuple[VhOrch, Client, Client]) -> None:
    vh, alice, bob = two_users
    pid = project_id(alice, "searches")
    uploaded = alice.upload(pid, package(example_files()))
    assert uploaded.status_code == 201, uploaded.text
    body = {"project": pid, "commit": uploaded.json()["identifier"], "step": "train", "type": "grid_search",
            "parameters": {"epochs": {"style": "multiple", "rules": {"items": [1, 2]}}}}
    created = alice.post("/api/v0/tasks/", json=body)
    assert created.status_code == 201, created.text
    task = created.json()
    assert task["urls"]["display"].endswith(f"/tasks/{task['id']}/") and task["planned"] == 2
    assert alice.get(f"/api/v0/tasks/{pid}:{task['counter']}/").json()["id"] == task["id"]
    assert {e["parameters"]["epochs"] for e in alice.get(f"/api/v0/executions/?task={task['id']}").json()[
        "results"]} == {1, 2}

    for path in (f"/api/v0/tasks/{task['id']}/", f"/api/v0/tasks/{pid}:{task['counter']}/",
                 f"/api/v0/tasks/{pid}:latest/", f"/api/v0/tasks/?project={pid}",
                 f"/api/v0/executions/?task={task['id']}"):
        answer = bob.get(path)
        assert answer.status_code == 404, (path, answer.text)
    assert all(t["project"]["name"] != "searches" for t in bob.get("/api/v0/tasks/").json()["results"])
    tasks_before = [t["id"] for t in alice.get("/api/v0/tasks/").json()["results"]]
    executions_before = execution_ids(vh)
    assert bob.post(f"/api/v0/tasks/{task['id']}/stop/").status_code == 404
    assert bob.post("/api/v0/tasks/", json=body).status_code == 404

    # Bad definitions: a 400 naming the field, and nothing is created.
    bad = [
        ({"type": "simulated_annealing"}, "type"),
        ({"parameters": {"nope": {"style": "single", "rules": {"value": 1}}}}, "parameters"),
        ({"parameters": {"epochs": {"style": "linear", "rules": {"start": 1, "end": 5, "step": 0}}}}, "parameters"),
        ({"parameters": {"epochs": {"style": "multiple", "rules": {"items": [1, 5000]}}}}, "parameters"),
        ({"parameters": {"learning_rate": {"style": "random", "rules": {"min": 0, "max": 1,
                                                                         "distribution": "loguniform"}}},
          "type": "random_search", "configuration": {"execution_count": 2}}, "parameters"),
        ({"type": "random_search"}, "configuration"),
        ({"type": "bayesian_tpe", "configuration": {"execution_count": 4}}, "configuration"),
        ({"task_stop_expression": "loss <"}, "task_stop_expression"),
        ({"on_child_error": "ignore"}, "on_child_error"),
        ({"parameters": {"epochs": {"style": "multiple", "rules": {"items": list(range(1, 1001))}},
                         "learning_rate": {"style": "multiple", "rules": {"items": [0.1 * i for i in range(1, 11)]}},
                         "model": {"style": "multiple", "rules": {"items": ["linear", "constant"]}}}}, "parameters"),
    ]
    for change, field in bad:
        answer = alice.post("/api/v0/tasks/", json={**body, **change})
        assert answer.status_code == 400, (change, answer.text)
        assert field in answer.json(), (change, answer.json())
    assert [t["id"] for t in alice.get("/api/v0/tasks/").json()["results"]] == tasks_before
    assert execution_ids(vh) == executions_before
    alice.post(f"/api/v0/tasks/{task['id']}/stop/")
