"""The CLI: what `machine list` and `status` show, and the quick path for the read commands.

`exec list --json`, `exec info ID --json` and `status --json` answer from SQLite through the
stdlib (vh_orch/cli/quick.py); these tests hold their output to the Typer commands' output on
the same database, and check that everything else still goes through Typer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import VhOrch
from vh_orch.cli import quick
from vh_orch.cli.commands import app
from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.models import Execution, Machine, Output
from vh_orch.orchestrator.store import LogLine, Store
from vh_orch.orchestrator.store import quick as quick_store
from vh_orch.orchestrator.store.fleet import LIVE_MACHINE
from vh_orch.services import views
from vh_orch.timeutil import utcnow
from vh_orch.values import BILLED_MACHINE, ExecutionStatus, MachineState

YAML = "- step:\n    name: train\n    image: busybox\n    command: echo hi\n"
FINISHED = {"terminated", "failed", "lost"}
# What no read command may load before it needs it (the quick path needs none of them).
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "apscheduler", "boto3", "botocore", "google", "paramiko",
         "valohai_yaml", "git", "matplotlib", "yaml", "vh_orch.orchestrator.daemon", "vh_orch.orchestrator.runner",
         "vh_orch.orchestrator.reconcile", "vh_orch.orchestrator.models", "vh_orch.cloud_drivers",
         "vh_orch.bootstrap", "vh_orch.storage")
# Of those, what any path may load: the drivers' package and its table of what each cloud can do.
LIGHT = ("vh_orch.cloud_drivers", "vh_orch.cloud_drivers.capabilities")


def store_of(vh: VhOrch) -> Store:
    return Store(f"sqlite:///{vh.home / 'state.db'}")


def add_env(store: Store, name: str, price: float = 1.5) -> int:
    spec = parse_entry({"name": name, "cloud": "fake", "max_scale": 20, "price_per_hour": price}, "test")
    store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
    return store.get_environment(name).id  # type: ignore[return-value]


def machine_in(store: Store, env_name: str, state: str) -> int:
    machine = store.create_machine(store.get_environment(env_name), "zone-a", "t3.large")
    with store.write() as s:
        row = s.get_one(Machine, machine.id)
        row.state = state
        s.add(row)
    return machine.id  # type: ignore[return-value]


def one_machine_per_state(store: Store, env_name: str) -> None:
    for state in MachineState:
        machine_in(store, env_name, state)


# -- machine list and status: live machines only ---------------------------------------------------


def test_machine_list_shows_live_machines_and_all_adds_the_finished_ones(vh: VhOrch) -> None:
    store = store_of(vh)
    add_env(store, "burst")
    one_machine_per_state(store, "burst")
    assert [m["state"] for m in vh.json("machine", "list")] == list(LIVE_MACHINE)
    assert [m["state"] for m in vh.json("machine", "list", "--all")] == [s.value for s in MachineState]
    table = vh("machine", "list").stdout
    assert "busy" in table and not any(state in table for state in FINISHED)


def test_status_counts_and_bills_only_live_machines(vh: VhOrch) -> None:
    store = store_of(vh)
    add_env(store, "burst", price=1.5)
    one_machine_per_state(store, "burst")
    rows = {row["environment"]: row for row in vh.json("status")}
    assert rows["burst"]["machines"] == {state: 1 for state in LIVE_MACHINE}
    # An instance exists from provisioning to terminating: five machines at 1.5 an hour.
    assert rows["burst"]["cost_per_hour"] == 7.5
    assert rows["local"]["machines"] == {} and rows["local"]["cost_per_hour"] == 0
    table = vh("status").stdout
    assert "requested 1" in table and "7.50" in table and not any(state in table for state in FINISHED)


def test_the_state_names_the_cli_spells_out_are_the_models(vh: VhOrch) -> None:
    assert quick_store.LIVE_MACHINE == tuple(LIVE_MACHINE)
    assert set(BILLED_MACHINE) <= set(LIVE_MACHINE)
    assert set(views.HELD + views.QUEUED + views.RUNNING) <= set(ExecutionStatus)


# -- the quick path ---------------------------------------------------------------------------------


def fill(store: Store) -> list[int]:
    """Executions in every status, with metadata, log lines, outputs and retries, over two projects,
    two environments and one removed environment; machines in every state; launch failures."""
    gpu_id = add_env(store, "gpu")
    add_env(store, "old")
    one_machine_per_state(store, "gpu")
    gpu_machine = machine_in(store, "gpu", "ready")
    host = store.ensure_host_machine(store.get_environment("local"), "test-host")
    for message in ("InsufficientInstanceCapacity: none in zone-a", "VcpuLimitExceeded: ask for more"):
        store.record_launch_failure(gpu_id, "capacity", "zone-a", "t3.large", message)
    alpha = store.create_project("alpha", "https://example.invalid/alpha.git", None)
    beta = store.create_project("beta", None, None)
    commits = {
        "alpha": store.get_or_create_commit(alpha.id, "git", "a" * 40, YAML, ref="main"),  # type: ignore[arg-type]
        "beta": store.get_or_create_commit(beta.id, "adhoc", "b" * 64, YAML, ref="./folder",  # type: ignore[arg-type]
                                           archive_path="/tmp/b.tar"),
    }
    envs = {name: store.get_environment(name) for name in ("local", "gpu", "old")}
    store.set_quota("held", 1)
    ids: list[int] = []

    def new(project: str = "alpha", env: str = "local", user: str = "tester", **fields: object) -> int:
        execution = store.create_execution(Execution(
            project_id=commits[project].project_id, commit_id=commits[project].id, step="train", counter=0,
            command="echo hi && python train.py --lr=0.1", environment_id=envs[env].id, user=user,
            parameters={"lr": 0.1, "layers": [64, 32], "name": "run ☕"}, inputs={"data": ["s3://b/k.csv"]},
            environment_variables={"SEED": "1"}, image="busybox", pull_policy="if-missing", **fields))
        ids.append(execution.id)  # type: ignore[arg-type]
        return execution.id  # type: ignore[return-value]

    def start(eid: int, machine: int = host.id) -> int:  # type: ignore[assignment]
        claimed = store.claim_for_machine(eid, machine, 100, "process")
        assert claimed is not None
        lines = [LogLine(utcnow(), "stdout", f"line {i}") for i in range(5)]
        lines += [LogLine(utcnow(), "stdout", json.dumps(p), metadata=p)
                  for p in ({"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "note": "héllo"})]
        store.append_log(eid, lines)
        return claimed.attempt

    def finish(eid: int, status: str, reason: str | None, code: int | None, machine: int = host.id) -> None:
        attempt = start(eid, machine)
        outputs = [Output(id=uuid.uuid4().hex, execution_id=eid, name=name, size=10 + i, sha256=f"{i:064x}",
                          uri=f"file:///data/{eid}/{name}") for i, name in enumerate(("z.bin", "a/model.pt"))]
        assert store.finish_execution(eid, attempt, status, reason, code, outputs)

    finish(new(title="complete, with outputs ☕", priority=3, time_limit_s=600.0), "complete", None, 0)
    finish(new(project="beta", env="gpu"), "error", "the command exited with code 3", 3, machine=gpu_machine)
    finish(new(), "stopped", "stopped by request", None)
    store.request_stop(new(project="beta"), "stopped by request")  # stopped while queued
    eid = new(env="gpu")
    start(eid, gpu_machine)
    store.request_stop(eid, "stopped by request")  # stopping
    start(new(title=None))  # started, metadata so far
    eid = new(env="gpu")
    start(eid, gpu_machine)
    store.set_status(eid, "queued", reason="machine lost")
    finish(eid, "complete", None, 0, machine=gpu_machine)  # on its second attempt
    new(env="gpu")  # queued
    new(user="held")  # queued: the quota's one
    new(user="held", env="gpu")  # created: held back by the quota
    finish(new(env="old"), "complete", None, 0)
    assert store.remove_environment("old", drain=False) == "removed"
    statuses = {store.get_execution(i).status for i in ids}
    assert statuses == set(ExecutionStatus), statuses
    return ids


def read_commands(ids: list[int]) -> list[list[str]]:
    return [["exec", "list", "--json"], ["status", "--json"],
            *(["exec", "info", str(i), "--json"] for i in ids), ["exec", "info", "--json", str(ids[0])]]


@pytest.fixture
def filled(vh: VhOrch, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """vh's database, filled; this process's settings point at it too."""
    monkeypatch.setenv("VH_ORCH_HOME", str(vh.home))
    monkeypatch.delenv("VH_ORCH_DB", raising=False)
    return fill(store_of(vh))


def same_but_running_costs(one: str, other: str) -> bool:
    """The same text, but that a running execution's cost so far (`exec info`'s `cost_usd`, which grows
    between two reads) may differ: there both must be a number."""
    if one == other:
        return True
    a, b = json.loads(one), json.loads(other)
    if not (isinstance(a, dict) and a.get("status") in ("started", "stopping")):
        return False
    assert isinstance(a["cost_usd"], float) and isinstance(b["cost_usd"], float), (a["cost_usd"], b["cost_usd"])
    return {**a, "cost_usd": None} == {**b, "cost_usd": None}


def test_the_quick_path_prints_what_the_typer_commands_print(
    vh: VhOrch, filled: list[int], capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in read_commands(filled):
        assert quick.answer(argv), f"{argv} did not take the quick path"
        fast = capsys.readouterr().out
        normal = CliRunner().invoke(app, argv)
        assert normal.exit_code == 0, normal.output
        assert same_but_running_costs(fast, normal.stdout), argv
        assert same_but_running_costs(vh(*argv).stdout, fast), argv  # the real command, start to end
    listed = json.loads(vh("exec", "list", "--json").stdout)
    assert [e["id"] for e in listed] == sorted(filled, reverse=True)
    info = vh.json("exec", "info", str(filled[0]))
    assert [o["name"] for o in info["outputs"]] == ["a/model.pt", "z.bin"]
    assert info["metadata_latest"] == {"epoch": 2, "loss": 0.25, "note": "héllo"}
    status = {row["environment"]: row for row in vh.json("status")}
    assert set(status) == {"gpu", "local"}  # `old` was removed
    assert status["gpu"]["held_by_quota"] == 1 and status["gpu"]["running"] == 1
    assert max(vh.json("exec", "info", str(i))["attempt"] for i in filled) == 2
    assert status["gpu"]["last_launch_failure"]["message"] == "VcpuLimitExceeded: ask for more"


@pytest.mark.parametrize("argv", [
    ["exec", "list"],
    ["exec", "list", "--json", "--limit", "1"],
    ["exec", "list", "--project", "alpha", "--json"],
    ["exec", "info", "1"],
    ["exec", "info", "1x", "--json"],
    ["exec", "info", "+1", "--json"],
    ["exec", "info", "999", "--json"],  # unknown: Typer's path says so
    ["exec", "--json", "list"],
    ["status"],
    ["status", "--json", "--help"],
    ["--help"],
    [],
])
def test_every_other_command_goes_to_typer(filled: list[int], capsys: pytest.CaptureFixture[str],
                                           argv: list[str]) -> None:
    assert not quick.answer(argv)
    assert capsys.readouterr() == ("", "")


def test_other_databases_go_to_the_store(filled: list[int], vh: VhOrch, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    for url in ("postgresql://vh@127.0.0.1:9/vh", "sqlite://", "sqlite:///:memory:",
                f"sqlite:///{vh.home / 'state.db'}?timeout=5", f"sqlite:///{vh.home / 'missing.db'}"):
        monkeypatch.setenv("VH_ORCH_DB", url)
        assert not quick.answer(["status", "--json"]), url
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("VH_ORCH_DB", f"sqlite:///{vh.home / 'state.db'}")
    assert quick.answer(["status", "--json"])


def test_errors_read_as_before_with_exit_status_1(vh: VhOrch, tmp_path: Path) -> None:
    unknown = vh("exec", "info", "999", "--json", check=False)
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert unknown.stderr == "error: no execution with id 999; see `vh-orch exec list`\n"
    fresh = VhOrch(tmp_path / "fresh")
    for argv in (["exec", "list", "--json"], ["exec", "info", "1", "--json"], ["status", "--json"]):
        result = fresh(*argv, check=False)
        assert result.returncode == 1 and result.stdout == ""
        assert result.stderr == f"error: vh-orch is not initialised in {fresh.home}: run `vh-orch init` first\n"
    assert not (fresh.home / "state.db").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    no_schema = VhOrch(tmp_path / "other")
    no_schema.env["VH_ORCH_DB"] = f"sqlite:///{empty}"
    result = no_schema("status", "--json", check=False)
    assert (result.returncode, result.stderr) == (1, "error: the database has no vh-orch schema: run `vh-orch init` "
                                                     "first\n")


def loaded_modules(vh: VhOrch, code: str, names: tuple[str, ...] = HEAVY) -> list[str]:
    """Which of `names` (and their submodules) a Python process running `code` has loaded at its end."""
    probe = (f"{code}\nimport json, sys\nnames = {names!r}\nsubs = tuple(n + '.' for n in names)\n"
             "print(json.dumps(sorted(m for m in sys.modules if m in names or m.startswith(subs))), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", probe], env=vh.env, capture_output=True, text=True, timeout=60,
                          check=True)
    return [m for m in json.loads(proc.stderr.strip().splitlines()[-1]) if m not in LIGHT]


@pytest.mark.parametrize("argv", [["exec", "list", "--json"], ["exec", "info", "1", "--json"], ["status", "--json"]])
def test_the_quick_path_loads_no_typer_rich_or_database_library(filled: list[int], vh: VhOrch,
                                                                  argv: list[str]) -> None:
    code = f"import sys\nsys.argv = ['vh-orch', *{argv!r}]\nfrom vh_orch.cli import main\nmain()"
    assert loaded_modules(vh, code, HEAVY + ("typer", "click", "rich")) == []


def test_the_typer_app_loads_only_what_a_command_uses(vh: VhOrch) -> None:
    # What `--help` and every command pay before their own imports.
    assert loaded_modules(vh, "import vh_orch.cli.commands") == []
