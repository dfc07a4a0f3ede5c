"""Datasets as both faces show them: lists, one dataset with its versions, one version with its files.

A dataset belongs to its project: whoever may see the project sees its datasets (the faces check who
asks; the CLI is the installation's operator). Shapes are plain dicts, one per thing, so `--json` and
the API agree; the API swaps project ids for its public form.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.datasets.uris import LATEST, SCHEME
from vh_orch.orchestrator.models import Dataset, DatasetVersion, Output
from vh_orch.orchestrator.store import Store
from vh_orch.orchestrator.store.datasets import VersionSummary
from vh_orch.timeutil import iso


def version_summary(summary: VersionSummary) -> dict[str, Any]:
    v = summary.version
    execution = None if v.execution_id is None else {"id": v.execution_id, "counter": summary.execution_counter}
    return {"id": v.id, "name": v.name, "created_at": iso(v.created_at), "execution": execution,
            "file_count": summary.files}


def dataset_dict(dataset: Dataset, project_name: str, versions: Sequence[VersionSummary],
                 with_versions: bool = True) -> dict[str, Any]:
    """A dataset: its project, its newest version and (with_versions) every version, newest first."""
    latest = versions[0].version if versions else None
    out: dict[str, Any] = {
        "id": dataset.id, "name": dataset.name, "project": {"id": dataset.project_id, "name": project_name},
        "created_at": iso(dataset.created_at), "version_count": len(versions),
        "latest_version": None if latest is None else {"id": latest.id, "name": latest.name},
    }
    if with_versions:
        out["versions"] = [version_summary(v) for v in versions]
    return out


def file_dict(output: Output) -> dict[str, Any]:
    return {"datum": {"id": output.id, "name": output.name, "size": output.size, "sha256": output.sha256,
                      "tags": output.tags or []}}


def list_datasets(store: Store, project_ids: Sequence[int] | None, limit: int | None = None,
                  offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """(how many, one page) of the datasets of these projects (None: every one), by name, each with its
    newest version."""
    total, rows = store.list_datasets(project_ids, limit, offset)
    names = store.project_names()
    return total, [dataset_dict(d, names.get(d.project_id, "?"), store.dataset_versions(d.id),  # type: ignore[arg-type]
                                with_versions=False) for d in rows]


def project_datasets(store: Store, project_id: int) -> list[dict[str, Any]]:
    """A project's datasets for its page: each with every version (newest first) and the execution that
    made it (`execution: {id, counter}`)."""
    _, rows = store.list_datasets([project_id])
    name = store.get_project_by_id(project_id).name
    return [dataset_dict(d, name, store.dataset_versions(d.id)) for d in rows]  # type: ignore[arg-type]


def dataset_detail(store: Store, dataset: Dataset) -> dict[str, Any]:
    name = store.get_project_by_id(dataset.project_id).name
    return dataset_dict(dataset, name, store.dataset_versions(dataset.id))  # type: ignore[arg-type]


def version_detail(store: Store, version: DatasetVersion) -> dict[str, Any]:
    """A version: its dataset, the execution that made it, and every file (datum id, name, size, sha256)."""
    dataset = store.get_dataset(version.dataset_id)
    execution = None
    if version.execution_id is not None:
        execution = {"id": version.execution_id, "counter": store.get_execution(version.execution_id).counter}
    files = store.dataset_version_files(version.id)  # type: ignore[arg-type]
    return {"id": version.id, "name": version.name, "uri": f"{SCHEME}{dataset.name}/{version.name}",
            "dataset": {"id": dataset.id, "name": dataset.name, "project": {"id": dataset.project_id}},
            "created_at": iso(version.created_at), "execution": execution, "file_count": len(files),
            "files": [file_dict(o) for o in files]}


def find(store: Store, ref: str, project: str | None = None) -> tuple[Dataset, DatasetVersion | None]:
    """`NAME` or `NAME/VERSION` (VERSION may be `latest`), in a project given by name or, when only one
    project has a dataset of that name, in that one."""
    name, _, version_name = ref.removeprefix(SCHEME).partition("/")
    project_id = store.get_project(project).id if project else None
    found = store.datasets_named(name, project_id)
    if not found:
        where = f" in project {project!r}" if project else ""
        raise NotFound(f"no dataset {name!r}{where}; see `vh-orch dataset list`")
    if len(found) > 1:
        raise UserInputError(f"several projects have a dataset {name!r}: name one with --project")
    dataset = found[0]
    if not version_name:
        return dataset, None
    version = store.dataset_version(dataset.id, version_name)  # type: ignore[arg-type]
    if version is None:
        what = "has no versions yet" if version_name == LATEST else f"has no version {version_name!r}"
        raise NotFound(f"dataset {name!r} {what}; see `vh-orch dataset show {name}`")
    return dataset, version


def list_aliases(store: Store, project_ids: Sequence[int] | None, limit: int | None = None,
                 offset: int = 0) -> tuple[int, list[dict[str, Any]]]:
    """(how many, one page) of the datum aliases of these projects: each with the datum it names now."""
    total, rows = store.list_aliases(project_ids, limit, offset)
    return total, [{"id": a.id, "name": a.name, "project": {"id": a.project_id}, "updated_at": iso(a.updated_at),
                    "datum": file_dict(o)["datum"]} for a, o in rows]
