"""The real Valohai client, `vh` (valohai-cli 0.37.0), against a running `vh-orch serve` on loopback.

Each test drives `vh` as a user would, from a project folder, with its own VALOHAI_CONFIG_DIR and
stdin closed, and checks what it prints against what vh-orch itself recorded (`vh-orch exec info`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from conftest import EXAMPLE, WAIT_S, VhOrch, subprocess_env
from quietserver import serve, shut
from test_users import PASSWORD, database_bytes, with_stdin

VH = str(Path(sys.executable).parent / "vh")
DATASET = "x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(40))
EXTRA_STEPS = """
- step:
    name: idle
    image: vh-orch/example-python:3.11
    command: sleep 300
    parameters:
      - name: note
        type: string
        default: waits
- step:
    name: chatty
    image: vh-orch/example-python:3.11
    command:
      - for i in 1 2 3 4 5 6; do echo "line $i"; sleep 0.3; done
      - echo "to stderr" >&2
      - sleep 1.5
- task:
    name: sweep
    step: train
    type: grid_search
    parameters:
      - name: learning_rate
        style: multiple
        rules: {items: [0.01, 0.02]}
      - name: epochs
        style: linear
        rules: {start: 1, end: 2, step: 1}
- task:
    name: hold
    step: idle
    type: grid_search
    parameters:
      - name: note
        style: multiple
        rules: {items: [a, b]}
"""
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]


class Vh:
    """Runs the real `vh` with its own config folder, in a project folder, with stdin closed."""

    def __init__(self, config_dir: Path, cwd: Path, home: Path) -> None:
        self.cwd = cwd
        config_dir.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in subprocess_env(home).items() if not k.startswith("VALOHAI_")}
        self.env["VALOHAI_CONFIG_DIR"] = str(config_dir)

    def __call__(self, *args: str, check: bool = True, timeout: float = WAIT_S) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([VH, *args], cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"vh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def config(self) -> dict:  # type: ignore[type-arg]
        return json.loads((Path(self.env["VALOHAI_CONFIG_DIR"]) / "config.json").read_text())


class DatasetHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = DATASET.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def dataset_url() -> Iterator[str]:
    server = serve(DatasetHandler, "dataset")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/points.csv"
    finally:
        shut(server)


@pytest.fixture
def world(vh: VhOrch, tmp_path: Path) -> tuple[VhOrch, Vh, str]:
    """alice owns project `demo` (the example project as a Git repository, plus an `idle` step) and
    works in a clone of it; the daemon runs executions in containers (alice is no administrator)."""
    repo = tmp_path / "demo-repo"
    shutil.copytree(EXAMPLE, repo)
    (repo / "valohai.yaml").write_text((repo / "valohai.yaml").read_text() + EXTRA_STEPS)
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-qm", "demo"], check=True)
    vh("env", "update", "local", "--runtime", "docker", "--pull-policy", "never")
    with_stdin(vh, PASSWORD + "\n", "user", "add", "alice", "--password-stdin")
    vh("project", "add", "demo", "--repo", str(repo), "--owner", "alice")
    # The dataset server on loopback stands in for a public one: the operator lets alice's inputs come
    # from it (the daemon fetches nothing from its own networks for a user otherwise).
    vh.env["VH_ORCH_ALLOW_FETCH"] = "127.0.0.1/32"
    vh.start_daemon()
    client = Vh(tmp_path / "vh-config", repo, vh.home)
    return vh, client, vh.api_url()


def execution_of(vh: VhOrch, counter: int) -> dict:  # type: ignore[type-arg]
    rows = [e for e in vh.json("exec", "list", "--project", "demo") if e["counter"] == counter]
    assert len(rows) == 1
    return vh.json("exec", "info", str(rows[0]["id"]))


def test_login_link_adhoc_run_logs_info_list_and_outputs(world: tuple[VhOrch, Vh, str], dataset_url: str,
                                                          tmp_path: Path) -> None:
    vh, client, api = world
    login = client("login", "--host", api, "-u", "alice", "-p", PASSWORD)
    assert "alice" in login.stdout + login.stderr
    config = client.config()
    assert config["host"].rstrip("/") == api and config["user"]["username"] == "alice"
    assert config["token"] and config["token"].encode() not in database_bytes(vh.home)

    client("project", "link", "demo", "--yes")
    assert list(client.config()["links"].values())[0]["name"] == "demo"

    run = client("exec", "run", "train", "--adhoc", "--epochs=3", "--learning-rate=0.02", "--model=constant",
                 f"--dataset={dataset_url}")
    assert "Execution #1 created" in run.stdout + run.stderr

    vh.wait(execution_of(vh, 1)["id"])
    logs = client("exec", "logs", "1")
    assert "loaded 40 points from points.csv" in logs.stdout
    assert logs.stdout.count('"epoch"') == 3

    ours = execution_of(vh, 1)
    assert ours["status"] == "complete"
    assert ours["parameters"] == {"epochs": 3, "learning_rate": 0.02, "model": "constant"}
    assert ours["inputs"] == {"dataset": [dataset_url]}
    assert ours["user"] == "alice" and ours["commit"]["kind"] == "adhoc"

    info = client("exec", "info", "1").stdout
    for expected in ("complete", "train", "demo", "local", dataset_url, "constant"):
        assert expected in info, expected

    # `vh exec logs --stream` follows a running execution until it ends. (The client checks the
    # status after each fetch of events, so lines printed in the moment before an execution ends
    # can be missed; this step waits a little after its last line, as Valohai's users learn to.)
    client("exec", "run", "chatty", "--adhoc")
    streamed = client("exec", "logs", "latest", "--stream", timeout=WAIT_S * 2)
    assert [line.split(" ", 1)[1] for line in streamed.stdout.splitlines() if " line " in line] == [
        f"line {i}" for i in range(1, 7)]
    assert "to stderr" in streamed.stdout and "started" in streamed.stdout
    assert "The execution has finished" in streamed.stderr
    assert execution_of(vh, 2)["status"] == "complete"

    listed = client("exec", "list").stdout
    assert "complete" in listed and "train" in listed

    download = tmp_path / "outputs"
    client("exec", "outputs", "1", "-d", str(download))
    assert json.loads((download / "model.json").read_text())["epochs"] == 3
    import hashlib

    assert hashlib.sha256((download / "model.json").read_bytes()).hexdigest() == ours["outputs"][0]["sha256"]

    # The same folder again: the package is already there, and the second run reuses it.
    again = client("exec", "run", "train", "--adhoc", "--epochs=1")
    assert "already uploaded" in again.stdout + again.stderr
    assert execution_of(vh, 3)["commit"]["identifier"] == ours["commit"]["identifier"]

    # A token login works the same.
    token = vh.json("user", "token", "alice")["token"]
    other = Vh(tmp_path / "vh-config-2", client.cwd, vh.home)
    other("login", "--host", api, "--token", token)
    assert other.config()["user"]["username"] == "alice"
    other("project", "link", "demo", "--yes")
    assert "#1" in other("exec", "info", "1").stdout or "complete" in other("exec", "info", "1").stdout


def test_fetch_then_run_a_commit_stop_and_environments(world: tuple[VhOrch, Vh, str]) -> None:
    vh, client, api = world
    client("login", "--host", api, "-u", "alice", "-p", PASSWORD)
    client("project", "link", "demo", "--yes")

    # A new commit in the repository: `vh project fetch` brings it into the mirror, `vh exec run` runs it.
    (client.cwd / "NOTES.md").write_text("a change\n")
    subprocess.run([*GIT, "-C", str(client.cwd), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(client.cwd), "commit", "-qm", "notes"], check=True)
    head = subprocess.run(["git", "-C", str(client.cwd), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    fetched = client("project", "fetch")
    assert head in fetched.stdout + fetched.stderr
    client("exec", "run", "train", "--epochs=2")
    ours = execution_of(vh, 1)
    assert ours["commit"] == {"kind": "git", "identifier": head, "ref": head}
    vh.wait(ours["id"])
    assert execution_of(vh, 1)["status"] == "complete"

    client("exec", "run", "idle")
    idle = execution_of(vh, 2)
    vh("exec", "wait", str(idle["id"]), "--timeout", "0", check=False)
    stopped = client("exec", "stop", "2")
    assert "Done" in stopped.stdout + stopped.stderr
    final = vh.wait(idle["id"])
    assert final["status"] == "stopped" and "alice" in final["status_reason"]

    envs = client("environments").stdout
    assert "local" in envs


def test_task_run_list_and_stop(world: tuple[VhOrch, Vh, str]) -> None:
    """`vh task run` sends its own body to POST /api/v0/tasks/; vh-orch runs the grid it describes."""
    vh, client, api = world
    client("login", "--host", api, "-u", "alice", "-p", PASSWORD)
    client("project", "link", "demo", "--yes")

    run = client("task", "run", "sweep", "--adhoc")
    assert "Task !1 created" in run.stdout + run.stderr
    [task] = vh.json("task", "list", "--project", "demo")
    assert task["type"] == "grid_search" and task["step"] == "train" and task["project"] == "demo"
    vh("task", "wait", str(task["id"]), "--timeout", str(WAIT_S))
    info = vh.json("task", "info", str(task["id"]))
    assert info["status"] == "complete" and info["counts"] == {"complete": 4}
    children = [vh.json("exec", "info", str(i)) for i in info["executions"]]
    assert sorted((c["parameters"]["learning_rate"], c["parameters"]["epochs"]) for c in children) == [
        (0.01, 1), (0.01, 2), (0.02, 1), (0.02, 2)]
    assert {c["parameters"]["model"] for c in children} == {"linear"}  # the step's default
    listed = client("task", "list").stdout
    assert "complete" in listed and "grid_search of train" in listed

    client("task", "run", "hold", "--adhoc")
    [held] = [t for t in vh.json("task", "list", "--project", "demo") if t["step"] == "idle"]
    stopped = client("task", "stop", "2")
    assert "Done" in stopped.stdout + stopped.stderr
    vh("task", "wait", str(held["id"]), "--timeout", str(WAIT_S), check=False)
    final = vh.json("task", "info", str(held["id"]))
    assert final["status"] == "stopped" and "alice" in final["status_reason"]
    assert final["counts"] == {"stopped": 2}
