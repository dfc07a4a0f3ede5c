"""Turning `exec run` into a queued execution: everything is checked before anything is written."""

from __future__ import annotations

import getpass
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vh_orch.bootstrap.runtimes import PULL_POLICIES
from vh_orch.cloud_drivers.capabilities import capabilities
from vh_orch.cloud_drivers.settings import settings_of
from vh_orch.config.environments import BUILTIN_ENVIRONMENT
from vh_orch.config.resources import GPU_DEVICE, check_fits, gpu_count, this_host
from vh_orch.config.steps import Given, ResolvedStep, resolve_step
from vh_orch.errors import NotFound, UserInputError, about
from vh_orch.orchestrator.datasets.inputs import expand_inputs
from vh_orch.orchestrator.models import Commit, Environment, Execution, Project
from vh_orch.orchestrator.repo_access import project_git
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings
from vh_orch.storage.inputs import normalise_input_url
from vh_orch.storage.snapshots import Snapshot, resolve_git, save_adhoc, snapshot_folder

DEFAULT_ENVIRONMENT = BUILTIN_ENVIRONMENT
IMAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$")


@dataclass(frozen=True)
class SubmitRequest:
    project: str
    step: str
    commit: str | None = None
    adhoc: Path | None = None
    environment: str | None = None
    # Per name, its values in order: text from the command line, typed values from the API.
    parameters: Given = field(default_factory=dict)
    inputs: Mapping[str, Sequence[str]] = field(default_factory=dict)
    environment_variables: Given = field(default_factory=dict)
    image: str | None = None
    pull_policy: str | None = None
    title: str | None = None
    priority: int = 0
    user: str | None = None
    # An ad-hoc snapshot stored before (its sha256), e.g. uploaded through the HTTP API.
    stored_adhoc: str | None = None
    # From the HTTP API: inputs must be URLs (the server's own files are not the caller's to read),
    # and a datum:// input must be an output the caller may see.
    remote: bool = False
    datum_visible: Callable[[str], bool] | None = None
    # From a user who is not an administrator (orchestrator/access.py): only environments open to them,
    # only isolated runtimes, only granted buckets, priority capped; the execution runs restricted.
    restricted: bool = False
    # GPUs asked for (`--gpus N`, the API's `gpus`); None: the step's resources.devices, else the
    # environment's gpus_per_execution.
    gpus: int | None = None
    # "Run again": the execution (its id) this one is made from.
    rerun_of_id: int | None = None


def current_user() -> str:
    return os.environ.get("VH_ORCH_USER") or getpass.getuser()


@dataclass(frozen=True)
class Prepared:
    """A checked request: everything an execution (or a task's children) is made of."""

    project_id: int
    snapshot: Snapshot
    resolved: ResolvedStep
    environment_id: int
    image: str | None
    pull_policy: str
    inputs: dict[str, list[str]]
    user: str
    restricted: bool = False
    gpus: int = 0


def submit(store: Store, settings: Settings, req: SubmitRequest) -> Execution:
    prepared = prepare(store, settings, req)
    check_storable(req, prepared)
    # Everything is valid: from here on, write.
    commit = keep_commit(store, prepared)
    return store.create_execution(build_execution(req, prepared, commit.id))  # type: ignore[arg-type]


def check_storable(req: SubmitRequest, prepared: Prepared) -> None:
    """The request's execution can be written (ensure_storable over each of its fields)."""
    resolved = prepared.resolved
    ensure_storable(
        {
            "step": resolved.step.name,
            "title": req.title,
            "image": prepared.image,
            "parameters": resolved.parameters,
            "inputs": prepared.inputs,
            "environment variables": resolved.environment_variables,
            "command": resolved.command,
            "time limit": resolved.time_limit_s,
            "user": prepared.user,
        }
    )


def build_execution(req: SubmitRequest, prepared: Prepared, commit_id: int, **extra: Any) -> Execution:
    """The execution a checked request makes (not yet written); extra: further columns (a pipeline
    node's id and attempt)."""
    resolved = prepared.resolved
    return Execution(
        project_id=prepared.project_id,
        counter=0,
        commit_id=commit_id,
        step=resolved.step.name,
        title=req.title,
        image=prepared.image,
        pull_policy=prepared.pull_policy,
        command=resolved.command,
        parameters=resolved.parameters,
        inputs=prepared.inputs,
        environment_variables=resolved.environment_variables,
        time_limit_s=resolved.time_limit_s,
        environment_id=prepared.environment_id,
        priority=req.priority,
        user=prepared.user,
        restricted=prepared.restricted,
        gpus=prepared.gpus,
        rerun_of_id=req.rerun_of_id,
        **extra,
    )


def prepare(store: Store, settings: Settings, req: SubmitRequest, vary: frozenset[str] = frozenset(),
            snapshot: tuple[Project, Snapshot] | None = None, inputs_later: bool = False) -> Prepared:
    """Check a request against its project, commit, step and environment; writes nothing.
    vary: parameters a task gives each child (not required here; no command is built).
    snapshot: the project and snapshot, when the caller loaded them already (load_snapshot).
    inputs_later: the inputs are checked when the work starts (a pipeline node's, made by its upstream nodes)."""
    project, snapshot = load_snapshot(store, settings, req) if snapshot is None else snapshot
    resolved = resolve_step(snapshot.config_yaml, req.step, req.parameters, req.inputs, req.environment_variables,
                            vary=vary, inputs_later=inputs_later,
                            provided_variables=frozenset(s.name for s in store.list_secrets(project.id)))  # type: ignore[arg-type]

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
    with about("environment"):
        environment = store.get_environment(env_name)
    with about("step"):
        # Only this host's size is known (no machine records its CPUs or memory yet).
        host = this_host() if capabilities(environment.cloud).runs_on_this_host else None
        check_fits(resolved.step.name, resolved.minimums, host, environment.name)
    user = req.user or current_user()
    if req.restricted:
        check_restricted(settings, req, environment, user)

    image = req.image or resolved.image
    if image is not None and not IMAGE_RE.match(image):
        raise UserInputError(f"image {image!r} is not a valid image reference", field="image")
    pull_policy = req.pull_policy or settings_of(environment).pull_policy
    if pull_policy not in PULL_POLICIES:
        raise UserInputError(f"pull policy {pull_policy!r} is not one of {', '.join(PULL_POLICIES)}",
                             field="environment")

    def datum_exists(datum_id: str) -> bool:
        try:
            store.get_output(datum_id)
        except NotFound:
            return False
        return req.datum_visible is None or req.datum_visible(datum_id)

    with about("inputs"):
        inputs = {
            name: [normalise_input_url(name, url, datum_exists, local_ok=not req.remote) for url in urls]
            for name, urls in expand_inputs(store, project.id, resolved.inputs).items()  # type: ignore[arg-type]
        }
    if req.restricted:
        check_restricted_inputs(store, settings, project, inputs, req.datum_visible)
    gpus = gpus_asked(store, req, resolved, environment)
    return Prepared(project_id=project.id, snapshot=snapshot, resolved=resolved,  # type: ignore[arg-type]
                    environment_id=environment.id, image=image, pull_policy=pull_policy,  # type: ignore[arg-type]
                    inputs=inputs, user=user, restricted=req.restricted, gpus=gpus)


def gpus_asked(store: Store, req: SubmitRequest, resolved: ResolvedStep, environment: Environment) -> int:
    """The GPUs an execution asks for: `--gpus` / the API's `gpus`, else the step's resources.devices,
    else the environment's gpus_per_execution. Refused, naming where the ask came from, when no
    machine of the environment can have that many (when that is known: see environment_gpu_limit)."""
    from vh_orch.orchestrator.gpus import environment_gpu_limit

    if req.gpus is not None:
        with about("gpus"):
            gpus = gpu_count(req.gpus, "gpus")
        field_, where = "gpus", "gpus"
    elif resolved.gpus is not None:
        gpus, field_, where = resolved.gpus, "step", f"step {resolved.step.name!r}: resources.devices.{GPU_DEVICE}"
    else:
        gpus = settings_of(environment).gpus_per_execution
        field_, where = "environment", f"environment {environment.name!r}: gpus_per_execution"
    if gpus:
        most = environment_gpu_limit(store, environment)
        if most is not None and gpus > most:
            have = f"at most {_gpus(most)}" if most else "no GPU"
            raise UserInputError(f"{where}: {_gpus(gpus)} asked for, but the machines of environment "
                                 f"{environment.name!r} have {have}: ask for fewer, or use another environment "
                                 "(`vh-orch machine list` shows each machine's GPUs)", field=field_)
    return gpus


def _gpus(n: int) -> str:
    return f"{n} GPU" if n == 1 else f"{n} GPUs"


def check_restricted(settings: Settings, req: SubmitRequest, environment: Environment, user: str) -> None:
    """What a user who is not an administrator may not ask for (orchestrator/access.py)."""
    from vh_orch.orchestrator.access import check_environment

    if req.priority > settings.max_user_priority:
        raise UserInputError(f"priority {req.priority} is above {settings.max_user_priority}, the highest a user who "
                             "is not an administrator may give", field="priority")
    try:
        check_environment(environment.name, settings_of(environment), user)
    except UserInputError as exc:
        raise UserInputError(str(exc), field="environment") from None


def check_restricted_inputs(store: Store, settings: Settings, project: Project, inputs: dict[str, list[str]],
                            datum_visible: Callable[[str], bool] | None) -> None:
    """Every s3:// and gs:// input of a restricted submission is granted to its project or is an output
    the user may see; an http(s):// input names no address of the daemon's networks (the fetch checks
    every address it connects to again, redirects included)."""
    from urllib.parse import urlparse

    from vh_orch.orchestrator.access import check_bucket_input
    from vh_orch.storage.fetch_policy import FetchPolicy, parse_networks

    def output_visible(uri: str) -> bool:
        return any(datum_visible is None or datum_visible(o.id) for o in store.outputs_at(uri))

    policy: FetchPolicy | None = None
    for name, urls in inputs.items():
        for url in urls:
            scheme = urlparse(url).scheme
            if scheme in ("s3", "gs"):
                check_bucket_input(name, url, project.allowed_buckets or [], output_visible)
            elif scheme in ("http", "https"):
                policy = policy or FetchPolicy(parse_networks(settings.allow_fetch))
                why = policy.url_refusal(url)
                if why is not None:
                    raise UserInputError(f"input {name!r}: {url} points into the daemon's own networks ({why}); "
                                         "an operator can allow a network with `vh-orch serve --allow-fetch CIDR`",
                                         field="inputs")


def load_snapshot(store: Store, settings: Settings, req: SubmitRequest) -> tuple[Project, Snapshot]:
    """The request's project and the snapshot it runs: a Git commit, an ad-hoc folder, or a stored package."""
    if req.commit and req.adhoc:
        raise UserInputError("--commit and --adhoc exclude each other: pick one")
    project = store.get_project(req.project)
    if req.stored_adhoc is not None:
        snapshot = stored_snapshot(store, project.id, req.stored_adhoc)  # type: ignore[arg-type]
    elif req.adhoc is not None:
        snapshot = snapshot_folder(req.adhoc, settings.adhoc_dir)
    else:
        if not project.mirror_path:
            raise UserInputError(f"project {project.name!r} has no repository: use --adhoc DIR", field="commit")
        with project_git(store, settings, project) as fetching:  # the project's deploy key or token
            try:  # an exact sha the caller fetched a moment ago needs no new fetch
                snapshot = resolve_git(Path(project.mirror_path), req.commit, fetch=not req.remote,
                                       env=fetching.env)
            except UserInputError:
                if not req.remote:
                    raise
                snapshot = resolve_git(Path(project.mirror_path), req.commit, env=fetching.env)
    return project, snapshot


def keep_commit(store: Store, prepared: Prepared) -> Commit:
    """Store the request's snapshot (an ad-hoc archive, once) and its commit row."""
    return store_snapshot(store, prepared.project_id, prepared.snapshot)


def store_snapshot(store: Store, project_id: int, snapshot: Snapshot) -> Commit:
    """Store a snapshot (an ad-hoc archive, once) and its commit row."""
    if snapshot.kind == "adhoc" and snapshot.archive_bytes is not None:
        save_adhoc(snapshot)
    return store.get_or_create_commit(
        project_id=project_id,
        kind=snapshot.kind,
        identifier=snapshot.identifier,
        config_yaml=snapshot.config_yaml,
        ref=snapshot.ref,
        archive_path=snapshot.archive_path,
    )


def stored_snapshot(store: Store, project_id: int, identifier: str) -> Snapshot:
    """An ad-hoc snapshot of this project kept before, by its sha256."""
    commit = store.find_commit(project_id, "adhoc", identifier)
    if commit is None:
        raise UserInputError(f"commit '~{identifier}' is not an ad-hoc package of this project: upload it first "
                             "(`vh exec run --adhoc` does)", field="commit")
    return Snapshot(kind="adhoc", identifier=commit.identifier, ref=commit.ref, config_yaml=commit.config_yaml,
                    archive_path=commit.archive_path)


_ITEM_NAMES = {"parameters": "parameter", "inputs": "input", "environment variables": "environment variable"}
# The request field each of ensure_storable's names is (the others, made here, are no field's).
_FIELD_OF = {"step": "step", "title": "title", "image": "image", "parameters": "parameters", "inputs": "inputs",
             "environment variables": "environment_variables"}


def ensure_storable(fields: dict[str, Any]) -> None:
    """The last guard before an execution is written: every field is plain JSON (finite numbers,
    UTF-8 text, string keys), or a UserInputError names the field, and nothing is written."""
    for name, value in fields.items():
        found = _unstorable(value)
        if found is None:
            continue
        where, why = found
        if where and name in _ITEM_NAMES:
            label = f"{_ITEM_NAMES[name]} {where[0]!r}" + "".join(f"[{p!r}]" for p in where[1:])
        else:
            label = name + "".join(f"[{p!r}]" for p in where)
        raise UserInputError(f"{label}: {why}, so the execution cannot be stored; nothing was submitted",
                             field=_FIELD_OF.get(name))


def _unstorable(value: Any, where: tuple[Any, ...] = ()) -> tuple[tuple[Any, ...], str] | None:
    """Where in `value` something is that JSON (and SQLite's UTF-8 text) cannot hold, and why."""
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else (where, f"{value} is not a finite number")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where, "the text is not valid UTF-8 (it holds an unpaired surrogate or undecodable bytes)"
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _unstorable(item, (*where, index))
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return where, f"the key {key!r} is not text"
            found = _unstorable(key, (*where, key)) or _unstorable(item, (*where, key))
            if found:
                return found
        return None
    return where, f"a {type(value).__name__} value ({value!r}) cannot be stored as JSON"
