"""vh_orch/services: the application both faces call; its refusals name the request field they are
about, and what it makes is what the CLI and the API show."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import VhOrch, make_project
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import Execution
from vh_orch.orchestrator.store import LogLine, Store
from vh_orch.orchestrator.submit import SubmitRequest, submit
from vh_orch.services.environments import (
    EnvironmentChange,
    add_environment,
    env_entry,
    update_environment,
)
from vh_orch.services.projects import create_project
from vh_orch.settings import Settings
from vh_orch.timeutil import utcnow

YAML = "- step:\n    name: s\n    image: busybox\n    command: 'true'\n"


def store_and_settings(vh: VhOrch) -> tuple[Store, Settings]:
    settings = Settings.from_env(vh.env)
    return Store(settings.db_url), settings


def test_creating_a_project_refuses_with_the_field_it_is_about(vh: VhOrch, tmp_path: Path) -> None:
    store, settings = store_and_settings(vh)
    vh("project", "add", "taken")
    cases = [("../x", {}, "name", UserInputError, "project name '../x' is not valid"),
             ("taken", {}, "name", UserInputError, "a project named 'taken' already exists"),
             ("fresh", {"owner": "nobody"}, "owner", NotFound, "no user named 'nobody'"),
             ("fresh", {"repo": str(tmp_path / "nope")}, "repo", UserInputError,
              "is neither a URL nor an existing folder"),
             ("fresh", {"repo": str(tmp_path)}, "repo", UserInputError, "cannot clone")]
    for name, options, field, kind, message in cases:
        with pytest.raises(kind) as refused:
            create_project(store, settings, name, **options)
        assert (refused.value.field, message in str(refused.value)) == (field, True), (name, options)
    with pytest.raises(NotFound):  # a refusal changes nothing: no project, no mirror left behind
        store.get_project("fresh")
    assert not (settings.repos_dir / "fresh.git").exists()


def test_a_project_with_a_repository_gets_its_mirror_and_the_cli_shows_what_the_service_made(
        vh: VhOrch, demo_repo: Path) -> None:
    store, settings = store_and_settings(vh)
    vh("user", "add", "alice")
    made = create_project(store, settings, "demo", owner="alice", repo=str(demo_repo))
    assert (made.name, made.owner, made.members, made.repo_url) == ("demo", "alice", (), str(demo_repo.resolve()))
    assert (settings.repos_dir / "demo.git").is_dir()
    assert store.get_project("demo").mirror_path == str(settings.repos_dir / "demo.git")
    shown = [p for p in vh.json("project", "list") if p["name"] == "demo"]
    assert shown == [{"id": made.id, "name": "demo", "repo_url": made.repo_url, "owner": "alice", "members": [],
                      "execution_count": 0, "created_at": shown[0]["created_at"], "allowed_buckets": []}]


def test_an_environment_change_is_typed_values_merged_into_its_definition(vh: VhOrch, tmp_path: Path) -> None:
    store, _ = store_and_settings(vh)
    made = add_environment(store, "spare", "fake", EnvironmentChange(
        max_scale=3, instance_type=("a1", "a2"), runtime="process", users="admins",
        cloud_settings=(("fake", "boot_seconds", 2), ("fake", "boot_seconds", 5))))
    entry = env_entry(made)
    assert (entry["max_scale"], entry["instance_type"], entry["users"]) == (3, ["a1", "a2"], "admins")
    fake = {"runtime": "process", "boot_seconds": 5, "zones": ["fake-a"]}  # in order: the last one holds
    assert entry["fake"] == fake
    with pytest.raises(UserInputError) as refused:
        add_environment(store, "spare", "fake", EnvironmentChange())
    assert refused.value.field == "name" and "already exists: use `vh-orch env update spare`" in str(refused.value)
    vh("project", "add", "p")  # an execution keeps it in use: removing it only drains it
    folder = make_project(tmp_path, "proj", "- step:\n    name: s\n    image: busybox\n    command: echo\n")
    vh("exec", "run", "s", "--project", "p", "--adhoc", str(folder), "--env", "spare")
    assert store.remove_environment("spare", True) == "draining"
    changed = update_environment(store, "spare", EnvironmentChange(min_scale=1, instance_type=("b1",)))
    entry = env_entry(changed)
    assert (entry["min_scale"], entry["max_scale"], entry["instance_type"]) == (1, 3, "b1")
    assert (entry["fake"], entry["users"]) == (fake, "admins")
    assert changed.settings["draining"] is True  # a change does not stop a drain
    with pytest.raises(NotFound):
        update_environment(store, "nowhere", EnvironmentChange(min_scale=1))


def test_exec_list_sorts_as_the_api_does_numbers_first_ties_by_id_the_rest_last(vh: VhOrch) -> None:
    store, _ = store_and_settings(vh)
    project = store.create_project("sorted", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "c" * 64, YAML, ref="./f")  # type: ignore[arg-type]
    local = store.get_environment("local")
    ids = []
    for value in (2, 1, 2, "high", None):
        execution = store.create_execution(Execution(
            project_id=project.id, commit_id=commit.id, step="s", counter=0, command="true",  # type: ignore[arg-type]
            environment_id=local.id, parameters={}, inputs={}, environment_variables={}))
        if value is not None:
            point = {"m": value}
            store.append_log(execution.id, [LogLine(utcnow(), "stdout", json.dumps(point), metadata=point)])
        ids.append(execution.id)
    one, two, three, text, missing = ids

    def listed(*sort: str) -> list[int]:
        return [e["id"] for e in vh.json("exec", "list", *sort)]

    # Text values sort with the executions that have none; a tie goes by id in the sort's direction.
    assert listed("--sort", "-m") == listed("--sort", "-metadata.m") == [three, one, two, missing, text]
    assert listed("--sort", "m") == listed("--sort", "+m") == [two, one, three, text, missing]
    assert listed("--sort", "-priority") == listed() == ids[::-1]
    assert "┃ m " in vh("exec", "list", "--sort", "+m").stdout  # the key's values get a column
    assert "--sort needs a key" in vh("exec", "list", "--sort", "-", check=False).stderr
    refused = vh("exec", "list", "--sort", 'a"b', check=False)
    assert refused.returncode == 1 and "is neither a column (id, counter" in refused.stderr


SUBMITTED = """
- step:
    name: train
    image: busybox
    command: echo {parameters}
    parameters:
      - {name: epochs, type: integer, min: 1, max: 10}
      - {name: f, type: flag}
      - {name: o, type: string, pass-as: "--o={vlue}", optional: true}
    inputs:
      - {name: data, optional: true}
- step: {name: slow, image: x, command: echo, time-limit: nonsense}
- step:
    name: badres
    image: x
    command: echo
    resources: {cpu: {max: -3}}
"""

# What a submission may get wrong, the request field the refusal names (the API answers {field: [...]}),
# and words of its message.
REFUSALS: list[tuple[dict[str, Any], str, str]] = [
    ({"parameters": {"epochs": ["x"]}}, "parameters", "'epochs': x is not an integer"),
    ({"parameters": {}}, "parameters", "'epochs' is required"),
    ({"parameters": {"epochs": [2], "nope": [1]}}, "parameters", "unknown parameter 'nope'"),
    ({"parameters": {"epochs": [2], "f": ["maybe"]}}, "parameters", "not a flag value"),
    ({"parameters": {"epochs": [2], "o": ["x"]}}, "parameters", "pass-as '--o={vlue}' cannot be filled in"),
    ({"inputs": {"nope": ["http://x"]}}, "inputs", "unknown input 'nope'"),
    ({"inputs": {"data": ["/etc/passwd"]}}, "inputs", "a file on the server"),
    ({"environment_variables": {"BAD-NAME": ["1"]}}, "environment_variables", "'BAD-NAME' is not valid"),
    ({"environment_variables": {"A": ["\udcff"]}}, "environment_variables", "not valid UTF-8"),
    ({"environment": "nowhere"}, "environment", "no environment named 'nowhere'"),
    ({"pull_policy": "sometimes"}, "environment", "pull policy 'sometimes'"),
    ({"priority": 99, "restricted": True}, "priority", "priority 99 is above"),
    ({"image": "bad image"}, "image", "not a valid image reference"),
    ({"title": "\udcff"}, "title", "title: the text is not valid UTF-8"),
    ({"step": "nostep"}, "step", "unknown step 'nostep'"),
    ({"step": "badres", "parameters": {}}, "step", "resources.cpu.max"),
    ({"adhoc": None}, "commit", "has no repository"),
    ({"adhoc": None, "stored_adhoc": "0" * 64}, "commit", "is not an ad-hoc package of this project"),
    # Refusals about nothing the request names: the valohai.yaml's time-limit, an unknown project.
    ({"step": "slow", "parameters": {}}, "", "time-limit 'nonsense' is not a duration"),
    ({"project": "nope"}, "", "no project named 'nope'"),
]


def test_every_refusal_of_a_submission_names_the_field_it_is_about(vh: VhOrch, tmp_path: Path) -> None:
    store, settings = store_and_settings(vh)
    vh("project", "add", "p")
    base = SubmitRequest(project="p", step="train", adhoc=make_project(tmp_path, "proj", SUBMITTED),
                         parameters={"epochs": [2]}, remote=True, user="bob")
    for change, field, words in REFUSALS:
        with pytest.raises(UserInputError) as refused:
            submit(store, settings, replace(base, **change))
        assert (refused.value.field or "", words in str(refused.value)) == (field, True), (change, refused.value)
    assert store.list_executions() == []
