"""The whole lifecycle through the CLI with `vh-orch serve` running, in the process runtime."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import VhOrch, eventually, files_named, make_project

SHELL_STEPS = """
- step:
    name: contract
    image: vh-orch/busybox:test
    command:
      - pwd
      - echo "job=$VH_JOB_ID execution=$VH_EXECUTION_ID project=$VH_PROJECT_ID"
      - cat "$VH_CONFIG_DIR/parameters.json"
      - cat "$VH_CONFIG_DIR/inputs.json"
      - cat "$VH_CONFIG_DIR/execution.json"
      - cat "$VH_INPUTS_DIR/data/data.txt"
      - echo "greeting=$GREETING"
      - ls "$VH_REPOSITORY_DIR"
      - mkdir -p "$VH_OUTPUTS_DIR/sub"
      - echo model > "$VH_OUTPUTS_DIR/model.txt"
      - echo nested > "$VH_OUTPUTS_DIR/sub/nested.txt"
    parameters:
      - name: count
        type: integer
        default: 2
    inputs:
      - name: data
        filename: data.txt
    environment-variables:
      - name: GREETING
        default: hi
- step:
    name: score
    image: vh-orch/busybox:test
    command:
      - >-
        printf '{"accuracy": %s}\\n' {parameter-value:acc}
    parameters:
      - name: acc
        type: float
- step:
    name: echo
    image: vh-orch/busybox:test
    command: printf '%s\\n' {parameter-value:text}
    parameters:
      - name: text
        type: string
- step:
    name: sleep
    image: vh-orch/busybox:test
    command:
      - echo sleeping
      - sleep 120
- step:
    name: fail
    image: vh-orch/busybox:test
    command:
      - echo about to fail >&2
      - exit 3
- step:
    name: slow
    image: vh-orch/busybox:test
    command: sleep 30
    time-limit: 1
- step:
    name: noisy
    image: vh-orch/busybox:test
    command: sh noisy.sh
- step:
    name: escape
    image: vh-orch/busybox:test
    command: ls -R "$VH_INPUTS_DIR"
    inputs:
      - name: data
        filename: ../../escaped.txt
- step:
    name: fetch
    image: vh-orch/busybox:test
    command: cat "$VH_CONFIG_DIR/inputs.json"
    inputs:
      - name: data
"""

NOISY = r"""
printf 'first line\n'
head -c 200000 /dev/zero | tr '\0' 'x'; printf '\n'
printf 'bad bytes: \377\376 end\n'
printf '[1, 2, 3]\n'
printf '42\n'
printf '{"loss": NaN}\n'
printf '{"broken": \n'
printf '{"step": 1, "loss": 0.5}\n'
printf 'to stderr\n' >&2
printf '{"step": 2, "loss": 0.25}\n'
printf 'no newline at the end'
"""


@pytest.fixture
def proc_vh(vh: VhOrch, tmp_path: Path) -> VhOrch:
    """A daemon using the process runtime, and an ad-hoc project `p` with the shell steps."""
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "p")
    vh.project_dir = make_project(tmp_path, "shellproj", SHELL_STEPS, {"noisy.sh": NOISY})  # type: ignore[attr-defined]
    vh.start_daemon()
    return vh


def adhoc(vh: VhOrch, *args: str) -> dict:  # type: ignore[type-arg]
    return vh.run_json(*args, "--project", "p", "--adhoc", str(vh.project_dir))  # type: ignore[attr-defined]


def log_lines(vh: VhOrch, execution_id: int) -> list[dict]:  # type: ignore[type-arg]
    out = vh("exec", "logs", str(execution_id), "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_example_project_runs_with_valohai_utils_and_records_everything(vh: VhOrch, demo_repo: Path) -> None:
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "demo", "--repo", str(demo_repo))
    vh.start_daemon()
    dataset = demo_repo / "data" / "points.csv"
    follow = vh("exec", "run", "train", "--project", "demo", "-p", "epochs=3", "-i", f"dataset={dataset}", "--follow")
    assert "loaded 100 points from points.csv" in follow.stdout
    assert follow.stdout.count('"epoch"') == 3
    info = vh.json("exec", "info", "1")
    assert info["status"] == "complete" and info["exit_code"] == 0
    assert info["runtime"] == "process"
    assert info["parameters"] == {"epochs": 3, "learning_rate": 0.05, "model": "linear"}
    assert info["metadata_latest"]["epoch"] == 3 and 0 < info["metadata_latest"]["accuracy"] <= 1
    assert info["command"] == "python train.py --epochs=3 --learning_rate=0.05 --model=linear"
    assert len(info["commit"]["identifier"]) == 40
    assert [o["name"] for o in info["outputs"]] == ["model.json"]
    for key in ("created_at", "queued_at", "started_at", "ended_at"):
        assert info[key].endswith("Z")

    points = vh.json("exec", "metadata", "1")
    assert [p["epoch"] for p in points] == [1, 2, 3]
    assert all(p["_time"].endswith("Z") for p in points)

    download = vh.home.parent / "downloaded"
    vh("exec", "outputs", "1", "--download", str(download))
    model = download / "model.json"
    assert hashlib.sha256(model.read_bytes()).hexdigest() == info["outputs"][0]["sha256"]
    assert json.loads(model.read_text())["epochs"] == 3

    # A later execution takes the output as an input through its datum:// address.
    evaluate = vh("exec", "run", "evaluate", "--project", "demo", "-i", f"model={info['outputs'][0]['datum']}",
                  "--follow")
    assert '"trained_epochs": 3' in evaluate.stdout
    assert vh.json("exec", "info", "2")["metadata_latest"]["trained_epochs"] == 3


def test_in_execution_contract_holds_in_the_process_runtime(proc_vh: VhOrch, tmp_path: Path) -> None:
    data = tmp_path / "input.txt"
    data.write_text("input content\n")
    created = adhoc(proc_vh, "contract", "-p", "count=5", "-i", f"data={data}", "-e", "GREETING=hello there")
    info = proc_vh.wait(created["id"])
    assert info["status"] == "complete", info
    text = "\n".join(line["text"] for line in log_lines(proc_vh, created["id"]) if line["kind"] == "log")
    folder = proc_vh.home / "executions" / str(created["id"]) / "1"  # the execution's id, its attempt
    assert f"{folder}/repository" in text
    assert f"job={created['id']} execution={created['id']} project=" in text
    assert '"count": 5' in text
    assert "input content" in text and "greeting=hello there" in text
    assert '"valohai.execution-counter": 1' in text and '"valohai.project-name": "p"' in text
    assert f'"path": "{folder}/inputs/data/data.txt"' in text
    assert hashlib.sha256(data.read_bytes()).hexdigest() in text
    assert "noisy.sh" in text and "valohai.yaml" in text
    outputs = {o["name"]: o for o in info["outputs"]}
    assert set(outputs) == {"model.txt", "sub/nested.txt"}
    assert outputs["model.txt"]["sha256"] == hashlib.sha256(b"model\n").hexdigest()
    assert outputs["model.txt"]["size"] == 6
    # Removed just after the result is recorded (a daemon killed between the two leaves it to the sweep).
    eventually("the execution's scratch folder to be removed", lambda: not folder.parent.exists())


def test_list_sorts_by_the_latest_metadata_value(proc_vh: VhOrch) -> None:
    ids = [adhoc(proc_vh, "score", "-p", f"acc={acc}")["id"] for acc in (0.5, 0.9, 0.7)]
    for execution_id in ids:
        assert proc_vh.wait(execution_id)["status"] == "complete"
    descending = [e["id"] for e in proc_vh.json("exec", "list", "--sort", "-accuracy")]
    assert descending == [ids[1], ids[2], ids[0]]
    ascending = [e["id"] for e in proc_vh.json("exec", "list", "--sort", "accuracy")]
    assert ascending == [ids[0], ids[2], ids[1]]
    table = proc_vh("exec", "list", "--sort", "-accuracy").stdout
    assert "accuracy" in table and "0.9" in table


@pytest.mark.parametrize("hostile", ["; touch PWNED", "$(touch PWNED)", "`touch PWNED`", "a\ntouch PWNED", "'\"\\"])
def test_hostile_parameter_values_arrive_as_literal_text(proc_vh: VhOrch, hostile: str) -> None:
    created = adhoc(proc_vh, "echo", "-p", f"text={hostile}")
    info = proc_vh.wait(created["id"])
    assert info["status"] == "complete"
    printed = [line["text"] for line in log_lines(proc_vh, created["id"]) if line["kind"] == "log"]
    assert "\n".join(printed) == hostile
    assert not files_named(proc_vh.home, "PWNED")


def test_logs_keep_long_lines_bad_bytes_and_only_json_objects_are_metadata(proc_vh: VhOrch) -> None:
    created = adhoc(proc_vh, "noisy")
    info = proc_vh.wait(created["id"])
    assert info["status"] == "complete"
    lines = [line for line in log_lines(proc_vh, created["id"]) if line["kind"] == "log"]
    texts = [line["text"] for line in lines]
    # Within a stream the order is kept; between stdout and stderr (two pipes, read side by side) it is not.
    assert [line["text"] for line in lines if line["stream"] == "stdout"][0] == "first line"
    long_pieces = [t for t in texts if set(t) == {"x"}]
    assert "".join(long_pieces) == "x" * 200000 and max(map(len, long_pieces)) <= 64 * 1024
    assert "bad bytes: \ufffd\ufffd end" in texts
    assert "[1, 2, 3]" in texts and "42" in texts and '{"loss": NaN}' in texts
    assert "no newline at the end" in texts
    assert any(line["stream"] == "stderr" and line["text"] == "to stderr" for line in lines)
    points = proc_vh.json("exec", "metadata", str(created["id"]))
    assert [{k: v for k, v in p.items() if k != "_time"} for p in points] == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.25},
    ]
    assert info["metadata_latest"] == {"step": 2, "loss": 0.25}


def test_a_failing_command_is_an_error_with_its_exit_code(proc_vh: VhOrch) -> None:
    info = proc_vh.wait(adhoc(proc_vh, "fail")["id"])
    assert info["status"] == "error" and info["exit_code"] == 3
    assert info["status_reason"] == "the command exited with code 3"
    wait = proc_vh("exec", "wait", str(info["id"]), check=False)
    assert wait.returncode == 1


def test_time_limit_stops_the_command_with_a_reason(proc_vh: VhOrch) -> None:
    info = proc_vh.wait(adhoc(proc_vh, "slow")["id"])
    assert info["status"] == "error"
    assert "time limit of 1 s exceeded" in info["status_reason"]


def test_stop_ends_a_started_execution_and_keeps_its_logs(proc_vh: VhOrch) -> None:
    created = adhoc(proc_vh, "sleep")
    deadline = time.monotonic() + 30
    while not any(line["text"] == "sleeping" for line in log_lines(proc_vh, created["id"])):
        assert time.monotonic() < deadline, "the execution never started"
        time.sleep(0.1)
    stopped = proc_vh.json("exec", "stop", str(created["id"]))
    assert stopped["status"] == "stopping"
    info = proc_vh.wait(created["id"], timeout=30)
    assert info["status"] == "stopped"
    assert info["status_reason"] == "stopped by request"
    statuses = [line["text"] for line in log_lines(proc_vh, created["id"]) if line["kind"] == "status"]
    assert statuses == ["created", "queued", "started", "stopping: stopped by request", "stopped: stopped by request"]


def test_stop_of_a_queued_execution_is_immediate(vh: VhOrch, tmp_path: Path) -> None:
    vh("project", "add", "p")
    folder = make_project(tmp_path, "q", SHELL_STEPS)
    created = vh.run_json("sleep", "--project", "p", "--adhoc", str(folder))
    assert created["status"] == "queued"
    stopped = vh.json("exec", "stop", str(created["id"]))
    assert stopped["status"] == "stopped" and stopped["ended_at"]


def test_an_input_file_name_that_escapes_its_folder_is_refused(
    proc_vh: VhOrch, tmp_path: Path, http_server: str
) -> None:
    data = tmp_path / "ok.txt"
    data.write_text("x")
    info = proc_vh.wait(adhoc(proc_vh, "escape", "-i", f"data={data}")["id"])
    assert info["status"] == "error"
    assert "would escape the input folder" in info["status_reason"]
    assert not files_named(proc_vh.home, "escaped.txt")

    # An encoded slash in the URL's last segment must not become a path.
    info = proc_vh.wait(adhoc(proc_vh, "fetch", "-i", f"data={http_server}/..%2F..%2Fsneaky.txt")["id"])
    assert info["status"] == "error" and "would escape the input folder" in info["status_reason"]


@pytest.fixture
def http_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    root = tmp_path / "www"
    root.mkdir()
    (root / "weights.bin").write_bytes(b"\x00\x01" * 5000)

    class Handler(SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):  # type: ignore[no-untyped-def]
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):  # type: ignore[no-untyped-def]
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_inputs_are_fetched_with_size_and_sha256(proc_vh: VhOrch, http_server: str) -> None:
    info = proc_vh.wait(adhoc(proc_vh, "fetch", "-i", f"data={http_server}/weights.bin")["id"])
    assert info["status"] == "complete", info
    text = "".join(line["text"] for line in log_lines(proc_vh, info["id"]) if line["kind"] == "log")
    config = json.loads(text)
    (entry,) = config["data"]["files"]
    assert entry["name"] == "weights.bin" and entry["size"] == 10000
    assert entry["checksums"]["sha256"] == hashlib.sha256(b"\x00\x01" * 5000).hexdigest()
    assert entry["uri"] == f"{http_server}/weights.bin"

    missing = proc_vh.wait(adhoc(proc_vh, "fetch", "-i", f"data={http_server}/nope.bin")["id"])
    assert missing["status"] == "error" and "HTTP 404" in missing["status_reason"]


def test_follow_and_wait_say_plainly_when_no_daemon_runs(vh: VhOrch, tmp_path: Path) -> None:
    vh("project", "add", "p")
    folder = make_project(tmp_path, "q", SHELL_STEPS)
    result = vh("exec", "run", "sleep", "--project", "p", "--adhoc", str(folder), "--follow", check=False, timeout=30)
    assert result.returncode == 1
    assert "no vh-orch daemon is running" in result.stderr and "vh-orch serve" in result.stderr
    assert "no vh-orch daemon is running" in vh("exec", "wait", "1", check=False).stderr


def test_a_second_daemon_for_the_same_database_refuses(proc_vh: VhOrch) -> None:
    second = subprocess.run([proc_vh.exe, "serve"], env=proc_vh.env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 1
    assert "another vh-orch daemon is running" in second.stderr


def test_serve_once_runs_what_is_queued_and_exits(vh: VhOrch, tmp_path: Path) -> None:
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "p")
    folder = make_project(tmp_path, "q", SHELL_STEPS)
    created = vh.run_json("score", "-p", "acc=0.25", "--project", "p", "--adhoc", str(folder))
    vh("serve", "--once")
    info = vh.json("exec", "info", str(created["id"]))
    assert info["status"] == "complete" and info["metadata_latest"] == {"accuracy": 0.25}


def test_a_daemon_killed_mid_run_leaves_nothing_running_and_the_next_one_says_why(
    vh: VhOrch, tmp_path: Path
) -> None:
    subprocess.run(["pkill", "-f", "sleep 127"], capture_output=True)  # a failed earlier run's leftovers
    vh("env", "update", "local", "--runtime", "process")
    vh("project", "add", "p")
    folder = make_project(tmp_path, "q", "- step:\n    name: s\n    image: busybox\n    command: echo up; sleep 127\n")
    vh.start_daemon()
    created = vh.run_json("s", "--project", "p", "--adhoc", str(folder))
    deadline = time.monotonic() + 30
    while not any(line["text"] == "up" for line in log_lines(vh, created["id"])):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    vh.stop_daemon(signal.SIGKILL)
    assert subprocess.run(["pgrep", "-f", "sleep 127"], capture_output=True).returncode == 0
    vh.start_daemon()
    info = vh.wait(created["id"], timeout=30)
    assert info["status"] == "error"
    assert info["status_reason"] == "the vh-orch daemon stopped while this execution ran; it was not resumed"
    assert subprocess.run(["pgrep", "-f", "sleep 127"], capture_output=True).returncode == 1
