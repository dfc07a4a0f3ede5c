"""Code: ad-hoc packages uploaded by `vh exec run --adhoc`, and the commits of a project's Git mirror."""

from __future__ import annotations

import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from python_multipart.multipart import parse_options_header

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import (
    Count,
    clamp_page,
    field_error,
    not_found,
    page_json,
    project_param,
    project_public_id,
    settings_of,
    store_of,
    visible_project,
)
from vh_orch.api.multipart import Form, FormReader, MultipartError
from vh_orch.api.shapes import commit_identifier, commit_json
from vh_orch.config.packages import read_package
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.models import Commit, Project, User
from vh_orch.orchestrator.repo_access import project_git
from vh_orch.storage.packages import PackageError, keep_package
from vh_orch.storage.snapshots import CONFIG_FILE, fetch_mirror, mirror_commits, read_config

router = APIRouter(prefix="/api/v0")
SHA_CHARS = frozenset("0123456789abcdef")
UPLOAD_PARTS = frozenset({"data", "yaml_path", "description"})
UPLOAD_PATH = re.compile(r"^/api/v0/projects/[^/]+/import-package/?$")


def is_upload_path(path: str) -> bool:
    """The package upload's path: its body is bounded by the route itself (api/bodylimit.py)."""
    return UPLOAD_PATH.match(path) is not None


@router.post("/projects/{project_id}/import-package/", status_code=201)
async def import_package(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    """Keep an uploaded package (multipart: `data` a tar, gzipped or not; `yaml_path`; `description`)
    as an ad-hoc commit. The body is parsed as it arrives, its file written to disk, and stops at
    the size cap; every member is checked before anything is kept."""
    project = await run_in_threadpool(visible_project, request, user, project_id)
    settings = settings_of(request)
    cap = request.app.state.max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise field_error("data", f"the upload is {int(declared)} bytes; the limit is {cap} bytes "
                          "(`vh-orch serve --max-upload-mb`)", code="too_large", status=413)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise field_error("data", "send the package as multipart/form-data with a file field `data`")
    uploads = settings.adhoc_dir / ".uploads"
    uploads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=uploads) as work:
        # Files go to the work folder (on the archive store's disk, so keeping one is a rename).
        reader = FormReader(_boundary(content_type), Path(work), UPLOAD_PARTS)
        refused: HTTPException | None = None
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > cap:
                    raise field_error("data", f"the upload is larger than the limit of {cap} bytes "
                                      "(`vh-orch serve --max-upload-mb`)", code="too_large", status=413)
                if refused is None:  # after a refusal the rest is read (so the client hears it) and dropped
                    refused = _fed(reader, chunk)
            if refused is None:
                refused = _fed(reader, None)
        finally:
            reader.close()
        if refused is not None:
            raise refused
        return await run_in_threadpool(_keep_upload, request, project, reader.form)


def _fed(reader: FormReader, chunk: bytes | None) -> HTTPException | None:
    """Feed a chunk (None: the end) to the reader; the refusal to answer, if the body is refused."""
    try:
        if chunk is None:
            reader.finish()
        else:
            reader.feed(chunk)
    except MultipartError as exc:
        return field_error(exc.field, str(exc))
    except Exception as exc:  # python-multipart's errors for malformed bodies
        return field_error("data", f"the multipart body cannot be read: {exc}")
    return None


def _keep_upload(request: Request, project: Project, form: Form) -> dict[str, Any]:
    data = form.files.get("data")
    if data is None:
        raise field_error("data", "no file field `data` in the upload", code="required")
    try:
        package = read_package(data, form.fields.get("yaml_path", "") or CONFIG_FILE,
                               max_unpacked=request.app.state.max_upload_bytes * 4,
                               max_members=request.app.state.max_package_members)
    except PackageError as exc:
        raise field_error(exc.field, str(exc)) from None
    settings = settings_of(request)
    kept = keep_package(data, package, settings.adhoc_dir)
    description = form.fields.get("description", "").strip()[:200] or "uploaded package"
    commit = store_of(request).get_or_create_commit(
        project_id=project.id,  # type: ignore[arg-type]
        kind="adhoc", identifier=package.identifier, config_yaml=package.config_yaml,
        ref=description, archive_path=str(kept))
    return commit_json(request, commit)


@router.get("/commits/")
def commits(request: Request, user: CurrentUser, project: str, adhoc: str | None = None,
            limit: Count = None, offset: Count = None) -> dict[str, Any]:
    """A project's commits: its mirror's (newest first), and its ad-hoc packages unless `adhoc=false`."""
    p = project_param(request, user, project)
    limit, offset = clamp_page(limit, offset)
    rows = [commit_json(request, c) for c in _git_commits(p, limit + offset)]
    if (adhoc or "").lower() not in ("false", "0", "no"):
        rows += [commit_json(request, c) for c in store_of(request).adhoc_commits(p.id)]  # type: ignore[arg-type]
    rows.sort(key=lambda c: c["commit_time"], reverse=True)
    return page_json(request, len(rows), limit, offset, rows[offset:offset + limit])


@router.get("/projects/{project_id}/commits/")
def project_commits(request: Request, user: CurrentUser, project_id: str) -> list[dict[str, Any]]:
    p = visible_project(request, user, project_id)
    return [commit_json(request, c) for c in _git_commits(p, 1000)]


@router.get("/commits/{identifier}/", name="commit")
def commit(request: Request, user: CurrentUser, identifier: str, project: str | None = None,
           include: str | None = None) -> dict[str, Any]:
    """One commit: `~<sha256>` an ad-hoc package, else a Git sha (or its prefix) in the project's mirror."""
    if project is None:
        raise field_error("project", "give the project's id: ?project=ID", code="required")
    p = project_param(request, user, project)
    found = _find_commit(request, p, identifier)
    if found is None:
        raise not_found()
    return commit_json(request, found, include_config="config" in (include or "").split(","))


@router.get("/commits/{identifier}/definitions/", name="commit_definitions")
def definitions(request: Request, user: CurrentUser, identifier: str, project: str | None = None) -> dict[str, Any]:
    """What this commit's valohai.yaml offers to start: steps (typed parameters, inputs with their
    defaults), tasks (the body `vh task run` would send) and pipelines (their parameters, typed as the
    step parameter each sets). A valohai.yaml that does not read answers 400 with its problem."""
    from vh_orch.services.definitions import commit_definitions

    found = _visible_commit(request, user, identifier, project)
    try:
        return commit_definitions(found.config_yaml)
    except UserInputError as exc:
        raise field_error("commit", str(exc)) from None


class PipelinePayloadAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: str | int
    pipeline: str = Field(min_length=1, max_length=1000)
    parameters: dict[str, str | int | float | bool | list[str | int | float | bool]] = Field(
        default_factory=dict, max_length=200)


@router.post("/commits/{identifier}/pipeline-payload/", name="pipeline_payload")
def pipeline_payload(request: Request, user: CurrentUser, identifier: str, body: PipelinePayloadAsk
                     ) -> dict[str, Any]:
    """A valohai.yaml pipeline of this commit converted, with these pipeline parameter values, into
    the body `vh pipeline run` posts to /api/v0/pipelines/ (the web UI's "New pipeline" posts it).
    Nothing is created or checked against the steps here: the pipeline's own route does that."""
    from vh_orch.orchestrator.pipelines.definition import pipeline_payload as convert

    found = _visible_commit(request, user, identifier, str(body.project))
    try:
        payload = convert(found.config_yaml, body.pipeline, commit_identifier(found), body.parameters)
    except UserInputError as exc:
        raise field_error(exc.field or "pipeline", str(exc)) from None
    return {"project": project_public_id(found.project_id), "title": payload.get("title") or body.pipeline,
            **payload}


def _visible_commit(request: Request, user: User, identifier: str, project: str | None) -> Commit:
    if project is None:
        raise field_error("project", "give the project's id: ?project=ID", code="required")
    found = _find_commit(request, project_param(request, user, project), identifier)
    if found is None:
        raise not_found()
    return found


@router.post("/projects/{project_id}/fetch/")
def fetch(request: Request, user: CurrentUser, project_id: str) -> dict[str, Any]:
    """Fetch the project's repository into its mirror; lists the refs that moved."""
    p = visible_project(request, user, project_id)
    if not p.mirror_path:
        return {"commits": [], "errors": [f"project {p.name} has no repository (ad-hoc runs only)"]}
    try:
        with project_git(store_of(request), settings_of(request), p) as fetching:
            moved = fetch_mirror(Path(p.mirror_path), env=fetching.env)
    except UserInputError as exc:
        return {"commits": [], "errors": [str(exc)]}
    return {"commits": [{"ref": ref, "identifier": sha} for ref, sha in moved], "errors": []}


def _git_commits(p: Project, limit: int) -> list[Commit]:
    if not p.mirror_path:
        return []
    return [Commit(project_id=p.id, kind="git", identifier=sha, config_yaml="",  # type: ignore[arg-type]
                   created_at=datetime.fromisoformat(when))
            for sha, when in mirror_commits(Path(p.mirror_path), limit)]


def _find_commit(request: Request, p: Project, identifier: str) -> Commit | None:
    import git  # only here (see storage/snapshots.py)
    if identifier.startswith("~"):
        return store_of(request).find_commit(p.id, "adhoc", identifier[1:])  # type: ignore[arg-type]
    if not p.mirror_path or not 4 <= len(identifier) <= 40 or not set(identifier) <= SHA_CHARS:
        return None
    repo = git.Repo(p.mirror_path)
    try:
        sha = repo.git.rev_parse("--verify", "--end-of-options", f"{identifier}^{{commit}}")
        when = repo.git.log("-1", "--format=%cI", sha)
    except git.GitCommandError:
        return None
    try:
        config = read_config(repo, sha) or ""
    except UserInputError:  # too large to show
        config = ""
    return Commit(project_id=p.id, kind="git", identifier=sha, config_yaml=config,  # type: ignore[arg-type]
                  created_at=datetime.fromisoformat(when))


def _boundary(content_type: str) -> bytes:
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise field_error("data", "the multipart body has no boundary in its Content-Type")
    return boundary
