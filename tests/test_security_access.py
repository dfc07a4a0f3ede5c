"""Submitting work grants nothing else (issue 25), tried as a hostile user who is not an administrator, from
outside: through the HTTP API of a real daemon, with executions in real containers.

- environments say who may submit to them; the process runtime (no isolation) is for administrators and
  the operator's CLI only, and `auto` never falls back to it for an API user's execution;
- inputs are never fetched from the daemon's own networks (loopback, private, link-local, redirects into
  them), unless the operator allows a network;
- s3:// inputs come only from buckets the operator granted the project, or the user's own outputs;
- a user's priority is capped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from conftest import BUSYBOX, VhOrch, installation, make_project
from quietserver import QuietHTTPServer, shut
from test_api_security import Client, package, project_id

STEPS = f"""
- step:
    name: show
    image: {BUSYBOX}
    command: cat /valohai/inputs/data/*
    inputs:
      - name: data
- step:
    name: hello
    image: {BUSYBOX}
    command: echo hello
- step:
    name: keep
    image: {BUSYBOX}
    command: echo kept > /valohai/outputs/kept.txt
""".encode()


class Recorder:
    """An HTTP server on one loopback address that counts what reached it: GET /data.csv answers
    `DATA`, GET /away redirects to `away_to`, anything else 200 'secret'."""

    def __init__(self, address: str) -> None:
        self.hits: list[str] = []
        self.away_to = ""
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, body: bool) -> None:
                recorder.hits.append(f"{self.command} {self.path}")
                if self.path == "/away":
                    self.send_response(302)
                    self.send_header("Location", recorder.away_to)
                    self.end_headers()
                    return
                data = b"DATA 42\n" if self.path == "/data.csv" else b"secret\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

        self.server = QuietHTTPServer((address, 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.2,), daemon=True).start()
        self.url = f"http://{address}:{self.server.server_address[1]}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[VhOrch, dict[str, Client]]]:
    """One daemon that lets inputs come from 127.0.0.6 (`--allow-fetch`), runs the `local` environment's
    executions in containers, and has alice (projects a, a2) and bob (project b)."""
    with installation(tmp_path_factory.mktemp("access") / "home") as vh:
        vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
        for user, projects in (("alice", ("a", "a2")), ("bob", ("b",))):
            vh("user", "add", user)
            for project in projects:
                vh("project", "add", project, "--owner", user)
        vh.start_daemon("--allow-fetch", "127.0.0.6/32")
        api = vh.api_url()
        yield vh, {user: Client(api, vh.json("user", "token", user)["token"]) for user in ("alice", "bob", "admin")}


def uploaded(client: Client, project: str) -> tuple[str, str]:
    pid = project_id(client, project)
    answer = client.upload(pid, package({"valohai.yaml": STEPS}))
    assert answer.status_code == 201, answer.text
    return pid, answer.json()["identifier"]


def submit(client: Client, project: str, step: str, **body: Any) -> Any:
    pid, commit = uploaded(client, project)
    return client.post("/api/v0/executions/", json={"project": pid, "commit": commit, "step": step, **body})


def refused(answer: Any, field: str, *words: str) -> str:
    assert answer.status_code == 400, answer.text
    message = str(answer.json()[field][0]["message"])
    for word in words:
        assert word in message, message
    return message


def finished(vh: VhOrch, answer: Any) -> dict[str, Any]:
    assert answer.status_code == 201, answer.text
    return vh.wait(answer.json()["id"])


def log_text(vh: VhOrch, execution_id: int) -> str:
    return vh("exec", "logs", str(execution_id)).stdout


def test_environments_say_who_may_submit_and_processes_are_for_administrators(
        world: tuple[VhOrch, dict[str, Client]]) -> None:
    vh, clients = world
    alice, bob, admin = clients["alice"], clients["bob"], clients["admin"]
    vh("env", "add", "team", "--cloud", "fake", "--runtime", "docker", "--pull-policy", "never", "--users", "alice")
    vh("env", "add", "proc", "--cloud", "fake", "--runtime", "process")
    assert vh.json("env", "show", "team")["users"] == ["alice"]
    before = len(vh.json("exec", "list"))

    refused(submit(bob, "b", "hello", environment="team"), "environment", "'team' is not open to you")
    refused(submit(alice, "a", "hello", environment="proc"), "environment", "plain processes",
            "only administrators and the operator's CLI")
    refused(submit(alice, "a", "hello", priority=11), "priority", "above 10")
    assert len(vh.json("exec", "list")) == before  # nothing was written

    assert finished(vh, submit(alice, "a", "hello", environment="team", priority=10))["status"] == "complete"
    vh("env", "update", "team", "--admins")
    refused(submit(alice, "a", "hello", environment="team"), "environment", "only administrators")
    # administrators and the operator's CLI are trusted: any environment, any runtime, any priority
    assert finished(vh, submit(admin, "a", "hello", environment="team", priority=1000))["status"] == "complete"
    assert finished(vh, submit(admin, "a", "hello", environment="proc"))["runtime"] == "process"
    folder = make_project(vh.home.parent, "cli-run", STEPS.decode())
    ran = vh.run_json("hello", "--project", "a", "--adhoc", str(folder), "--env", "proc", "--priority", "50")
    assert vh.wait(ran["id"])["status"] == "complete"

    vh("env", "update", "team", "--everyone")
    assert finished(vh, submit(bob, "b", "hello", environment="team"))["status"] == "complete"
    assert "users" not in vh.json("env", "show", "team")
    bad = vh("env", "update", "team", "--users", "alice", "--admins", check=False)
    assert bad.returncode == 1 and "exclude each other" in bad.stderr
    bad = vh("env", "update", "team", "--set", "fake.runtime=process", "--users", " , ", check=False)
    assert bad.returncode == 1 and "users" in bad.stderr
    assert vh.json("env", "show", "team")["fake"]["runtime"] == "docker"  # the refused update changed nothing


def test_inputs_never_reach_the_daemons_own_networks(world: tuple[VhOrch, dict[str, Client]]) -> None:
    vh, clients = world
    alice = clients["alice"]
    inside = Recorder("127.0.0.5")  # stands for the daemon's networks: must never be reached
    allowed = Recorder("127.0.0.6")  # the network the operator allowed
    allowed.away_to = f"{inside.url}/secret"
    port = inside.server.server_address[1]
    try:
        for url in (f"{inside.url}/secret", f"http://localhost:{port}/secret", f"http://[::1]:{port}/secret",
                    "http://10.1.2.3/data", "http://169.254.169.254/latest/meta-data/",
                    f"http://[::ffff:127.0.0.5]:{port}/secret"):
            refused(submit(alice, "a", "show", inputs={"data": url}), "inputs", "the daemon's own networks",
                    "--allow-fetch")
        # a name that resolves into loopback (IPv4's shorthand: the C library answers it, no DNS), and a
        # redirect into it, are refused where the fetch connects
        for url, why in ((f"http://127.5:{port}/secret", "127.0.0.5 is a loopback address"),
                         (f"{allowed.url}/away", "127.0.0.5 is a loopback address")):
            final = finished(vh, submit(alice, "a", "show", inputs={"data": url}))
            assert final["status"] == "error" and why in final["status_reason"], final
        assert inside.hits == []
        assert "GET /away" in allowed.hits

        final = finished(vh, submit(alice, "a", "show", inputs={"data": f"{allowed.url}/data.csv"}))
        assert final["status"] == "complete", final
        assert "DATA 42" in log_text(vh, final["id"])
        # the operator's CLI is not restricted
        folder = make_project(vh.home.parent, "cli-fetch", STEPS.decode())
        ran = vh.run_json("show", "--project", "a", "--adhoc", str(folder), "-i", f"data={inside.url}/secret")
        assert vh.wait(ran["id"])["status"] == "complete"
        assert "GET /secret" in inside.hits
    finally:
        shut(inside.server)
        shut(allowed.server)


def test_buckets_are_read_only_where_the_operator_granted_them(world: tuple[VhOrch, dict[str, Client]],
                                                               moto: Any, tmp_path: Path) -> None:
    vh, clients = world
    alice, bob = clients["alice"], clients["bob"]
    s3 = moto.client("s3")
    for bucket, objects in (("granted-data", ("data/x.csv", "database/y.csv")), ("secret-data", ("s.csv",)),
                            ("vh-store", ())):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        for key in objects:
            s3.put_object(Bucket=bucket, Key=key, Body=f"object {key}\n".encode())
    envs = tmp_path / "envs.yaml"
    envs.write_text(f"""
environments:
  - name: s3env
    cloud: fake
    pull_policy: never
    fake: {{runtime: docker}}
    datastore: {{uri: s3://vh-store/out, endpoint_url: "{moto.url}", region: eu-west-1}}
""")
    vh("env", "apply", str(envs))
    vh("project", "update", "a", "--allow-bucket", "s3://granted-data/data/")
    assert vh.json("project", "list")[0]["allowed_buckets"] == ["s3://granted-data/data"]
    moto.proxy.clear()

    for uri in ("s3://secret-data/s.csv", "s3://granted-data/database/y.csv", "s3://granted-data/datax"):
        refused(submit(alice, "a", "show", environment="s3env", inputs={"data": uri}), "inputs",
                "not in a bucket this project may read", "--allow-bucket")
    assert [s.path for s in moto.proxy.log if "secret-data" in s.path or "database" in s.path] == []

    final = finished(vh, submit(alice, "a", "show", environment="s3env",
                                inputs={"data": "s3://granted-data/data/x.csv"}))
    assert final["status"] == "complete", final
    assert "object data/x.csv" in log_text(vh, final["id"])

    # an output in the datastore: its owner may name it by its s3:// address, nobody else
    kept = finished(vh, submit(alice, "a2", "keep", environment="s3env"))
    uri = kept["outputs"][0]["uri"]
    assert uri.startswith("s3://vh-store/out/"), kept
    refused(submit(bob, "b", "show", environment="s3env", inputs={"data": uri}), "inputs", "not in a bucket")
    assert finished(vh, submit(alice, "a", "show", environment="s3env", inputs={"data": uri}))["status"] == "complete"

    vh("project", "update", "a", "--disallow-bucket", "s3://granted-data/data")
    refused(submit(alice, "a", "show", environment="s3env", inputs={"data": "s3://granted-data/data/x.csv"}),
            "inputs", "not in a bucket")
    bad = vh("project", "update", "a", "--allow-bucket", "http://granted-data", check=False)
    assert bad.returncode == 1 and "give s3://BUCKET[/PREFIX]" in bad.stderr
    bad = vh("project", "update", "a", "--disallow-bucket", "s3://never-granted", check=False)
    assert bad.returncode == 1 and "has no grant" in bad.stderr
    # the operator's CLI reads what the daemon's credentials reach
    folder = make_project(tmp_path, "cli-s3", STEPS.decode())
    ran = vh.run_json("show", "--project", "a", "--adhoc", str(folder), "--env", "s3env",
                      "-i", "data=s3://secret-data/s.csv")
    assert vh.wait(ran["id"])["status"] == "complete"


def test_auto_never_runs_an_api_users_execution_as_a_process(tmp_path: Path) -> None:
    """Docker stops answering between the submission and the dispatch: the execution ends in error with
    the reason, its command never ran; while the engine is away, submissions are refused."""
    marker = tmp_path / "ran-on-the-host"
    steps = f"- step: {{name: mark, image: {BUSYBOX}, command: 'touch {marker}'}}\n".encode()
    with installation(tmp_path / "home") as vh:
        vh("env", "add", "auto", "--cloud", "fake", "--runtime", "auto", "--pull-policy", "never", "--max-scale", "0")
        vh("user", "add", "alice")
        vh("project", "add", "a", "--owner", "alice")
        vh.start_daemon()
        alice = Client(vh.api_url(), vh.json("user", "token", "alice")["token"])
        pid = project_id(alice, "a")
        commit = alice.upload(pid, package({"valohai.yaml": steps})).json()["identifier"]
        body = {"project": pid, "commit": commit, "step": "mark", "environment": "auto"}
        answer = alice.post("/api/v0/executions/", json=body)
        assert answer.status_code == 201, answer.text
        vh.stop_daemon()

        vh("env", "update", "auto", "--max-scale", "1")
        vh.env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"
        vh.start_daemon()
        final = vh.wait(answer.json()["id"])
        assert final["status"] == "error", final
        assert "would have run as a plain process" in final["status_reason"]
        assert not marker.exists()
        alice = Client(vh.api_url(), alice.headers["Authorization"].split()[1])
        refused(alice.post("/api/v0/executions/", json=body), "environment", "has no Docker engine now")
        assert not marker.exists()
