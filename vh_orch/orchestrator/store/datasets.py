"""Datasets, their versions and datum aliases: made from output metadata when an execution completes
(inside the transaction that records its result), read by `dataset://` and `datum://ALIAS` inputs and by
the faces."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, col, select

from vh_orch.errors import NotFound
from vh_orch.orchestrator.datasets.metadata import VersionRequest, reserved
from vh_orch.orchestrator.datasets.uris import LATEST, VersionRef
from vh_orch.orchestrator.models import (
    Dataset,
    DatasetFile,
    DatasetVersion,
    DatumAlias,
    Execution,
    LogBlock,
    Output,
)
from vh_orch.orchestrator.store.database import Database


@dataclass(frozen=True)
class VersionSummary:
    """A dataset version as lists show it."""

    version: DatasetVersion
    files: int
    execution_counter: int | None


class DatasetsStore(Database):

    # -- made at an execution's end -----------------------------------------------------------

    def _apply_output_metadata(self, s: Session, execution: Execution, outputs: Sequence[Output],
                               complete: bool) -> list[str]:
        """Inside the write that records an execution's result: its outputs' aliases and dataset versions
        (only when it completed: a failed or stopped run's partial outputs never become `latest`). Returns
        the log lines that say what was made or refused (the caller stores them before the status)."""
        plans: dict[VersionRef, list[tuple[Output, VersionRequest]]] = {}
        aliases: dict[str, Output] = {}
        for output in sorted(outputs, key=lambda o: o.name):
            found, _ = reserved(output.name, output.properties or {})  # its problems were logged when read
            if found.alias is not None:
                aliases[found.alias] = output  # the last file naming an alias has it
            for request in found.versions:
                plans.setdefault(request.ref, []).append((output, request))
        if not plans and not aliases:
            return []
        if not complete:
            named = ", ".join([*(f"'{ref.uri}'" for ref in plans), *(f"alias '{a}'" for a in aliases)])
            return [f"vh-orch: the execution did not complete: {named} not made"]
        lines = [self._move_alias(s, execution.project_id, name, output) for name, output in aliases.items()]
        pending = dict(plans)
        while pending:  # a version made `from` another one this execution makes comes after it
            ready = [ref for ref, members in pending.items()
                     if not any(r.base in pending and r.base != ref for _, r in members)] or list(pending)
            for ref in ready:
                lines.append(self._make_version(s, execution, ref, pending.pop(ref)))
        return lines

    def _move_alias(self, s: Session, project_id: int, name: str, output: Output) -> str:
        row = s.exec(select(DatumAlias).where(DatumAlias.project_id == project_id, DatumAlias.name == name)).first()
        if row is None:
            row = DatumAlias(project_id=project_id, name=name, output_id=output.id)
        row.output_id = output.id
        row.updated_at = self.clock()
        s.add(row)
        return f"vh-orch: datum alias '{name}' now means {output.name} (datum://{output.id})"

    def _make_version(self, s: Session, execution: Execution, ref: VersionRef,
                      members: list[tuple[Output, VersionRequest]]) -> str:
        """One version: a new name in its dataset (made if need be), holding its base's files (less those
        excluded and those this execution replaces) and every output that named it."""
        dataset = s.exec(select(Dataset).where(Dataset.project_id == execution.project_id,
                                               Dataset.name == ref.dataset)).first()
        if dataset is not None and s.exec(select(DatasetVersion.id).where(
                DatasetVersion.dataset_id == dataset.id, DatasetVersion.name == ref.version)).first() is not None:
            return (f"vh-orch: dataset version '{ref.uri}' exists already and was not changed; name a new "
                    "version to make one")
        base_ref = next((r.base for _, r in members if r.base is not None and not r.start_fresh), None)
        excluded = {name for _, r in members for name in r.exclude}
        new = {o.name: o for o, _ in members}
        files: dict[str, str] = {}  # output name -> id
        if base_ref is not None:
            base = None if dataset is None else self._version_named(s, dataset.id, base_ref.version)  # type: ignore[arg-type]
            if base is None:
                return (f"vh-orch: dataset version '{ref.uri}' was not made: its 'from' version "
                        f"'{base_ref.uri}' does not exist")
            for output in self._files(s, base.id):  # type: ignore[arg-type]
                if output.name not in excluded and output.name.rsplit("/", 1)[-1] not in excluded:
                    files[output.name] = output.id
        files.update({name: o.id for name, o in new.items()})  # this execution's file replaces its namesake
        now = self.clock()
        if dataset is None:
            dataset = Dataset(project_id=execution.project_id, name=ref.dataset, created_at=now)
            s.add(dataset)
            s.flush()
        version = DatasetVersion(dataset_id=dataset.id, name=ref.version, execution_id=execution.id,  # type: ignore[arg-type]
                                 created_at=now)
        s.add(version)
        s.flush()
        s.add_all(DatasetFile(version_id=version.id, output_id=output_id) for output_id in files.values())  # type: ignore[arg-type]
        return f"vh-orch: Created dataset version '{ref.uri}' with {len(files):,} files"

    def _log_lines(self, s: Session, execution: Execution, lines: list[str]) -> None:
        """Log lines written inside a write that holds the execution's row (seq numbers follow on)."""
        if not lines:
            return
        first = execution.last_seq + 1
        execution.last_seq += len(lines)
        s.add(execution)
        s.add(LogBlock(execution_id=execution.id, first_seq=first, last_seq=execution.last_seq,  # type: ignore[arg-type]
                       time=self.clock(), stream="stderr",
                       texts="\n".join(line.replace("\n", " ") for line in lines)))
        s.flush()

    # -- reads ---------------------------------------------------------------------------------

    def _version_named(self, s: Session, dataset_id: int, name: str) -> DatasetVersion | None:
        query = select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
        if name == LATEST:
            query = query.order_by(col(DatasetVersion.created_at).desc(), col(DatasetVersion.id).desc()).limit(1)
        else:
            query = query.where(DatasetVersion.name == name)
        return s.exec(query).first()

    def _files(self, s: Session, version_id: int) -> list[Output]:
        return list(s.exec(select(Output).join(DatasetFile, col(DatasetFile.output_id) == col(Output.id))
                           .where(DatasetFile.version_id == version_id).order_by(Output.name)))

    def list_datasets(self, project_ids: Sequence[int] | None, limit: int | None = None,
                      offset: int = 0) -> tuple[int, list[Dataset]]:
        """(how many, one page) of the datasets of these projects (None: every project), by name."""
        query = select(Dataset)
        counting = select(func.count()).select_from(Dataset)
        if project_ids is not None:
            query = query.where(col(Dataset.project_id).in_(list(project_ids)))
            counting = counting.where(col(Dataset.project_id).in_(list(project_ids)))
        query = query.order_by(Dataset.name, Dataset.project_id, Dataset.id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.read() as s:
            return s.exec(counting).one(), list(s.exec(query))

    def get_dataset(self, dataset_id: int) -> Dataset:
        with self.read() as s:
            dataset = s.get(Dataset, dataset_id)
        if dataset is None:
            raise NotFound(f"no dataset {dataset_id}")
        return dataset

    def datasets_named(self, name: str, project_id: int | None = None) -> list[Dataset]:
        """The datasets with this name (in this project, or in any)."""
        query = select(Dataset).where(Dataset.name == name)
        if project_id is not None:
            query = query.where(Dataset.project_id == project_id)
        with self.read() as s:
            return list(s.exec(query.order_by(Dataset.project_id)))

    def dataset_versions(self, dataset_id: int) -> list[VersionSummary]:
        """A dataset's versions, newest first, each with its file count and its execution's counter."""
        with self.read() as s:
            versions = list(s.exec(select(DatasetVersion).where(DatasetVersion.dataset_id == dataset_id)
                                   .order_by(col(DatasetVersion.created_at).desc(), col(DatasetVersion.id).desc())))
            ids = [v.id for v in versions]
            counts = dict(s.exec(select(DatasetFile.version_id, func.count()).where(
                col(DatasetFile.version_id).in_(ids)).group_by(DatasetFile.version_id)).all()) if ids else {}
            runs = [v.execution_id for v in versions if v.execution_id is not None]
            counters = dict(s.exec(select(Execution.id, Execution.counter).where(
                col(Execution.id).in_(runs))).all()) if runs else {}
        return [VersionSummary(v, counts.get(v.id, 0), counters.get(v.execution_id)) for v in versions]  # type: ignore[arg-type]

    def dataset_version(self, dataset_id: int, name: str) -> DatasetVersion | None:
        """A dataset's version by name; its newest for LATEST."""
        with self.read() as s:
            return self._version_named(s, dataset_id, name)

    def get_dataset_version(self, version_id: int) -> DatasetVersion:
        with self.read() as s:
            version = s.get(DatasetVersion, version_id)
        if version is None:
            raise NotFound(f"no dataset version {version_id}")
        return version

    def dataset_version_files(self, version_id: int) -> list[Output]:
        """The outputs in a version, by name."""
        with self.read() as s:
            return self._files(s, version_id)

    def alias_output(self, project_id: int, name: str) -> Output | None:
        """The output a project's datum alias names now (None: no such alias)."""
        with self.read() as s:
            return s.exec(select(Output).join(DatumAlias, col(DatumAlias.output_id) == col(Output.id))
                          .where(DatumAlias.project_id == project_id, DatumAlias.name == name)).first()

    def list_aliases(self, project_ids: Sequence[int] | None, limit: int | None = None,
                     offset: int = 0) -> tuple[int, list[tuple[DatumAlias, Output]]]:
        """(how many, one page) of the datum aliases of these projects (None: every project), by name."""
        query = select(DatumAlias, Output).join(Output, col(DatumAlias.output_id) == col(Output.id))
        counting = select(func.count()).select_from(DatumAlias)
        if project_ids is not None:
            query = query.where(col(DatumAlias.project_id).in_(list(project_ids)))
            counting = counting.where(col(DatumAlias.project_id).in_(list(project_ids)))
        query = query.order_by(DatumAlias.name, DatumAlias.project_id).offset(offset)
        if limit is not None:
            query = query.limit(limit)
        with self.read() as s:
            return s.exec(counting).one(), [(a, o) for a, o in s.exec(query).all()]

