"""Every bad input to `exec run` gets a message naming the field, and nothing is created."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conftest import VhOrch, make_project

STEPS = """
- step:
    name: train
    image: vh-orch/busybox:test
    command: echo {parameters}
    parameters:
      - name: epochs
        type: integer
        min: 1
        max: 10
      - name: optimizer
        type: string
        default: adam
        choices: [adam, sgd]
      - name: lr
        type: float
        default: 0.1
    inputs:
      - name: data
"""


def counts(vh: VhOrch) -> tuple[int, int, int, int]:
    db = sqlite3.connect(vh.home / "state.db")
    try:
        return tuple(  # type: ignore[return-value]
            db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("execution", "execution_event", '"commit"', "project")
        )
    finally:
        db.close()


@pytest.fixture
def project(vh: VhOrch, tmp_path: Path, demo_repo: Path) -> Path:
    vh("project", "add", "p")
    vh("project", "add", "demo", "--repo", str(demo_repo))
    (tmp_path / "data.csv").write_text("1,2\n")
    return make_project(tmp_path, "proj", STEPS)


CASES = [
    (["train", "-p", "epochs=abc", "-i", "data=DATA"], "parameter 'epochs': abc is not an integer"),
    (["train", "-p", "epochs=0", "-i", "data=DATA"], "parameter 'epochs': 0 is less than the minimum allowed (1)"),
    (["train", "-p", "epochs=11", "-i", "data=DATA"], "parameter 'epochs': 11 is greater than the maximum"),
    (["train", "-p", "epochs=2", "-p", "lr=x", "-i", "data=DATA"], "parameter 'lr': x is not a floating-point number"),
    (["train", "-p", "epochs=2", "-p", "optimizer=sgdx", "-i", "data=DATA"], "parameter 'optimizer': sgdx is not"),
    (["train", "-i", "data=DATA"], "parameter 'epochs' is required"),
    (["train", "-p", "epochs=2", "-p", "bogus=1", "-i", "data=DATA"], "unknown parameter 'bogus'"),
    (["train", "-p", "epochs=2"], "input 'data' is required"),
    (["train", "-p", "epochs=2", "-i", "data=DATA", "-i", "nope=DATA"], "unknown input 'nope'"),
    (["train", "-p", "epochs=2", "-i", "data=/does/not/exist.csv"], "input 'data': '/does/not/exist.csv' is not a URL"),
    (["train", "-p", "epochs=2", "-i", "data=ftp://127.0.0.1/x"], "input 'data': unsupported URL"),
    (["train", "-p", "epochs=2", "-i", "data=datum://0123abcd"], "input 'data': no datum 'datum://0123abcd'"),
    (["train", "-p", "epochs=2", "-i", "data=DATA", "-e", "BAD-NAME=1"], "environment variable name 'BAD-NAME'"),
    (["train", "-p", "epochs=2", "-i", "data=DATA", "--env", "nowhere"], "no environment named 'nowhere'"),
    (["train", "-p", "epochs=2", "-i", "data=DATA", "--pull", "sometimes"], "pull policy 'sometimes' is not one of"),
    (["train", "-p", "epochs=2", "-i", "data=DATA", "--image", "bad image;rm"], "image 'bad image;rm' is not a valid image"),
    (["nostep"], "unknown step 'nostep'; valohai.yaml defines: train"),
    (["train", "-p", "epochs=2", "-p", "lr=nan", "-i", "data=DATA"], "parameter 'lr': nan is not a finite number"),
    (["train", "-p", "epochs=2", "-p", "lr=-inf", "-i", "data=DATA"], "parameter 'lr': -inf is not a finite number"),
    # Bytes that are not UTF-8 reach Python as lone surrogates: the last guard before writing names the field.
    (["train", "-p", "epochs=2", "-i", "data=DATA", "--title", "run \udcff"],
     "title: the text is not valid UTF-8"),
    (["train", "-p", "epochs=2", "-i", "data=DATA", "-e", "NOTE=\udcff"],
     "environment variable 'NOTE': the text is not valid UTF-8"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[c[1][:40] for c in CASES])
def test_bad_submission_is_refused_and_creates_nothing(
    vh: VhOrch, project: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    before = counts(vh)
    args = [a.replace("DATA", str(tmp_path / "data.csv")) for a in args]
    result = vh("exec", "run", *args, "--project", "p", "--adhoc", str(project), check=False)
    assert result.returncode == 1, result.stdout
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert counts(vh) == before
    assert not any((vh.home / "adhoc").iterdir())


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("- step: [\n", "valohai.yaml is not valid YAML"),
        ("- step:\n    name: train\n", "valohai.yaml is invalid: 0.step: 'command' is a required property"),
        (
            "- step:\n    name: train\n    image: x\n    command: x\n    parameters:\n"
            "      - name: p\n        type: nonsense\n",
            "valohai.yaml is invalid: 0.step.parameters.0.type: 'nonsense' is not one of",
        ),
    ],
)
def test_an_invalid_valohai_yaml_is_refused_and_creates_nothing(
    vh: VhOrch, tmp_path: Path, yaml_text: str, message: str
) -> None:
    vh("project", "add", "p")
    folder = make_project(tmp_path, "broken", yaml_text)
    before = counts(vh)
    result = vh("exec", "run", "train", "--project", "p", "--adhoc", str(folder), check=False)
    assert result.returncode == 1 and message in result.stderr
    assert counts(vh) == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--project", "nope"], "no project named 'nope'"),
        (["train", "--project", "demo", "--commit", "no-such-branch"], "commit 'no-such-branch' is not a branch"),
        (["train", "--project", "p"], "project 'p' has no repository: use --adhoc DIR"),
        (["train", "--project", "demo", "--commit", "main", "--adhoc", "."], "--commit and --adhoc exclude each other"),
        (["train", "--project", "p", "--adhoc", "/no/such/folder"], "ad-hoc folder '/no/such/folder' does not exist"),
    ],
)
def test_bad_project_commit_or_folder_is_refused(vh: VhOrch, project: Path, args: list[str], message: str) -> None:
    before = counts(vh)
    result = vh("exec", "run", *args, check=False)
    assert result.returncode == 1 and message in result.stderr
    assert counts(vh) == before


def test_bad_names_and_values_elsewhere_in_the_cli(vh: VhOrch, tmp_path: Path) -> None:
    assert "project name '../x' is not valid" in vh("project", "add", "../x", check=False).stderr
    assert "is neither a URL nor an existing folder" in vh("project", "add", "x", "--repo", "/nope", check=False).stderr
    assert "cannot clone" in vh("project", "add", "y", "--repo", str(tmp_path), check=False).stderr
    assert vh.json("project", "list") == []
    assert "no execution with id 99" in vh("exec", "info", "99", check=False).stderr
    assert "unknown status 'done'" in vh("exec", "list", "--status", "done", check=False).stderr
    assert "local.runtime: 'vm' is not one of auto, docker, process" in vh(
        "env", "update", "local", "--runtime", "vm", check=False).stderr
    assert vh.json("env", "show", "local")["local"]["runtime"] == "auto"


@pytest.mark.parametrize("name, value, message", [
    ("VH_ORCH_LEASE_S", "abc", "VH_ORCH_LEASE_S='abc' is not a number of seconds"),
    ("VH_ORCH_LEASE_S", "1", "a lease lasts 3 to 3600 seconds (default 15)"),
    ("VH_ORCH_STOP_GRACE_S", "-1", "VH_ORCH_STOP_GRACE_S='-1': a stop's grace lasts 0 to 3600 seconds (default 5)"),
    ("VH_ORCH_HEARTBEAT_STALE_S", "soon", "VH_ORCH_HEARTBEAT_STALE_S='soon' is not a number of seconds")])
def test_a_bad_timing_setting_stops_serve_before_it_starts(vh: VhOrch, name: str, value: str, message: str) -> None:
    vh.env[name] = value
    result = vh("serve", "--no-http", check=False, timeout=60)
    assert result.returncode != 0 and message in result.stderr
    vh.env.pop(name)
    assert vh.json("replicas") == [], "a daemon that refused to start registered nothing"


def test_messages_that_quote_brackets_are_printed_as_text_on_one_line(vh: VhOrch, tmp_path: Path) -> None:
    """rich would read `[/x]` as markup: a value a user typed must never crash the error printer."""
    folder = make_project(tmp_path, "proj", STEPS)
    vh("project", "add", "p")
    vh.env["COLUMNS"] = "40"  # narrower than the message: it must still be one line
    result = vh("exec", "run", "train", "--project", "p", "--adhoc", str(folder), "-p", "[/x]=1",
                "-i", f"data={folder / 'valohai.yaml'}", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: unknown parameter '[/x]' for step 'train'; it has: epochs, optimizer, lr"]
