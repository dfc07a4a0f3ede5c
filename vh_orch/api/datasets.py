"""Datasets, their versions and datum aliases (read-only: versions are made by executions' output metadata).
A dataset is its project's: another user's answers 404, as their project does."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from vh_orch.api.auth import CurrentUser
from vh_orch.api.deps import (
    Count,
    clamp_page,
    not_found,
    page_json,
    parse_id,
    project_param,
    project_public_id,
    store_of,
)
from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Dataset, User
from vh_orch.services import datasets as service

router = APIRouter(prefix="/api/v0")


def _public(shape: dict[str, Any]) -> dict[str, Any]:
    """A shape with its project ids in the API's public form (services keep the row ids)."""
    for holder in (shape, shape.get("dataset") or {}):
        project = holder.get("project")
        if isinstance(project, dict) and isinstance(project.get("id"), int):
            project["id"] = project_public_id(project["id"])
    return shape


def _project_ids(request: Request, user: User, project: str | None) -> list[int] | None:
    if project is not None:
        return [project_param(request, user, project).id]  # type: ignore[list-item]
    return store_of(request).visible_project_ids(user)


def visible_dataset(request: Request, user: User, dataset_id: str) -> Dataset:
    """A dataset by id if this user may see its project; 404 otherwise, whether or not it exists."""
    store = store_of(request)
    try:
        dataset = store.get_dataset(parse_id(dataset_id))
    except NotFound:
        raise not_found() from None
    if not store.can_see(user, dataset.project_id):
        raise not_found()
    return dataset


@router.get("/datasets/")
def list_datasets(request: Request, user: CurrentUser, project: str | None = None, limit: Count = None,
                  offset: Count = None) -> dict[str, Any]:
    """Datasets of the projects the caller may see (`project=ID`: of that one), by name."""
    limit, offset = clamp_page(limit, offset)
    total, rows = service.list_datasets(store_of(request), _project_ids(request, user, project), limit, offset)
    return page_json(request, total, limit, offset, [_public(d) for d in rows])


@router.get("/datasets/{dataset_id}/", name="dataset")
def dataset(request: Request, user: CurrentUser, dataset_id: str) -> dict[str, Any]:
    """One dataset: its project, its versions (newest first) and `latest_version`."""
    return _public(service.dataset_detail(store_of(request), visible_dataset(request, user, dataset_id)))


@router.get("/dataset-versions/{version_id}/", name="dataset_version")
def dataset_version(request: Request, user: CurrentUser, version_id: str) -> dict[str, Any]:
    """One dataset version: its dataset, the execution that made it, and its files."""
    store = store_of(request)
    try:
        version = store.get_dataset_version(parse_id(version_id))
    except NotFound:
        raise not_found() from None
    visible_dataset(request, user, str(version.dataset_id))
    return _public(service.version_detail(store, version))


@router.get("/datum-aliases/")
def datum_aliases(request: Request, user: CurrentUser, project: str | None = None, limit: Count = None,
                  offset: Count = None) -> dict[str, Any]:
    """Datum aliases of the projects the caller may see (`project=ID`: of that one), by name."""
    limit, offset = clamp_page(limit, offset)
    total, rows = service.list_aliases(store_of(request), _project_ids(request, user, project), limit, offset)
    return page_json(request, total, limit, offset, [_public(a) for a in rows])
