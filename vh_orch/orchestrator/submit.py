"""Turning `exec run` into a queued execution: everything is checked before anything is written."""

from __future__ import annotations

import getpass
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from vh_orch.bootstrap.runtimes import PULL_POLICIES
from vh_orch.config.steps import resolve_step
from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import Execution
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings
from vh_orch.storage.inputs import normalise_input_url
from vh_orch.storage.snapshots import resolve_git, save_adhoc, snapshot_folder

DEFAULT_ENVIRONMENT = "local"
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dataclass(frozen=True)
class SubmitRequest:
    project: str
    step: str
    commit: str | None = None
    adhoc: Path | None = None
    environment: str | None = None
    parameters: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    environment_variables: list[str] = field(default_factory=list)
    image: str | None = None
    pull_policy: str | None = None
    title: str | None = None
    priority: int = 0
    user: str | None = None


def current_user() -> str:
    return os.environ.get("VH_ORCH_USER") or getpass.getuser()


def submit(store: Store, settings: Settings, req: SubmitRequest) -> Execution:
    if req.commit and req.adhoc:
        raise UserInputError("--commit and --adhoc exclude each other: pick one")
    project = store.get_project(req.project)
    if req.adhoc is not None:
        snapshot = snapshot_folder(req.adhoc, settings.adhoc_dir)
    else:
        if not project.mirror_path:
            raise UserInputError(f"project {project.name!r} has no repository: use --adhoc DIR")
        snapshot = resolve_git(Path(project.mirror_path), req.commit)

    resolved = resolve_step(snapshot.config_yaml, req.step, req.parameters, req.inputs, req.environment_variables)

    env_name = req.environment
    if env_name is None:
        # A Valohai environment slug in the step only counts when it names one of ours.
        env_name = DEFAULT_ENVIRONMENT
        if resolved.environment:
            try:
                store.get_environment(resolved.environment)
                env_name = resolved.environment
            except NotFound:
                pass
    environment = store.get_environment(env_name)

    image = req.image or resolved.image
    if image is not None and not IMAGE_RE.match(image):
        raise UserInputError(f"image {image!r} is not a valid image reference")
    pull_policy = req.pull_policy or environment.settings.get("pull_policy") or "if-missing"
    if pull_policy not in PULL_POLICIES:
        raise UserInputError(f"pull policy {pull_policy!r} is not one of {', '.join(PULL_POLICIES)}")

    def datum_exists(datum_id: str) -> bool:
        try:
            store.get_output(datum_id)
            return True
        except NotFound:
            return False

    inputs = {
        name: [normalise_input_url(name, url, datum_exists) for url in urls] for name, urls in resolved.inputs.items()
    }

    # Everything is valid: from here on, write.
    if snapshot.kind == "adhoc":
        save_adhoc(snapshot)
    commit = store.get_or_create_commit(
        project_id=project.id,  # type: ignore[arg-type]
        kind=snapshot.kind,
        identifier=snapshot.identifier,
        config_yaml=snapshot.config_yaml,
        ref=snapshot.ref,
        archive_path=snapshot.archive_path,
    )
    execution = Execution(
        project_id=project.id,  # type: ignore[arg-type]
        counter=0,
        commit_id=commit.id,  # type: ignore[arg-type]
        step=resolved.step.name,
        title=req.title,
        image=image,
        pull_policy=pull_policy,
        command=resolved.command,
        parameters=resolved.parameters,
        inputs=inputs,
        environment_variables=resolved.environment_variables,
        time_limit_s=resolved.time_limit_s,
        environment_id=environment.id,  # type: ignore[arg-type]
        priority=req.priority,
        user=req.user or current_user(),
    )
    return store.create_execution(execution)
