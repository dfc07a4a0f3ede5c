"""Pipelines and their nodes: creating them (one transaction), reading them, and moving one node
or the pipeline on under its row's lock. A node's work (an execution or a task) carries the node's
id and attempt, unique together, so the engine finds it again after any crash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import Execution, Output, Pipeline, PipelineNode, Project, Task
from vh_orch.orchestrator.store.lifecycle import LifecycleStore
from vh_orch.values import ExecutionStatus, NodeStatus, PipelineStatus

P = PipelineStatus
N = NodeStatus
ACTIVE_PIPELINE = (P.CREATED, P.STARTED, P.STOPPING)
REUSE_CANDIDATES = 200  # the newest complete executions of a step looked at for reuse


class PipelinesStore(LifecycleStore):
    def create_pipeline(self, pipeline: Pipeline, nodes: Sequence[PipelineNode]) -> Pipeline:
        """Insert a pipeline (status `created`, the next pipeline counter of its project) and its nodes."""
        with self.write() as s:
            pipeline.counter = s.execute(
                update(Project)
                .where(col(Project.id) == pipeline.project_id)
                .values(pipeline_counter=Project.pipeline_counter + 1)
                .returning(Project.pipeline_counter)
            ).scalar_one()
            pipeline.status = P.CREATED
            pipeline.created_at = self.clock()
            s.add(pipeline)
            s.flush()
            for node in nodes:
                node.pipeline_id = pipeline.id  # type: ignore[assignment]
                node.status = N.CREATED
                s.add(node)
            s.flush()
            return pipeline

    def get_pipeline(self, pipeline_id: int) -> Pipeline:
        with self.read() as s:
            pipeline = s.get(Pipeline, pipeline_id)
        if pipeline is None:
            raise NotFound(f"no pipeline with id {pipeline_id}; see `vh-orch pipeline list`")
        return pipeline

    def pipeline_by_counter(self, project_id: int, counter: int | None) -> Pipeline | None:
        """A project's pipeline by its counter; None: its latest."""
        with self.read() as s:
            query = select(Pipeline).where(Pipeline.project_id == project_id)
            if counter is None:
                return s.exec(query.order_by(col(Pipeline.counter).desc()).limit(1)).first()
            return s.exec(query.where(Pipeline.counter == counter)).first()

    def list_pipelines(self, project_ids: Sequence[int] | None = None, statuses: Sequence[str] | None = None,
                       counters: Sequence[int] | None = None, limit: int | None = None,
                       offset: int = 0, users: Sequence[str] | None = None,
                       oldest_first: bool = False) -> tuple[list[Pipeline], int]:
        """Pipelines, newest first (or oldest first), and how many match in all."""
        with self.read() as s:
            where = []
            if project_ids is not None:
                where.append(col(Pipeline.project_id).in_(list(project_ids)))
            if statuses:
                where.append(col(Pipeline.status).in_(list(statuses)))
            if counters:
                where.append(col(Pipeline.counter).in_(list(counters)))
            if users:
                where.append(col(Pipeline.user).in_(list(users)))
            total = s.exec(select(func.count()).select_from(Pipeline).where(*where)).one()
            order = col(Pipeline.id).asc() if oldest_first else col(Pipeline.id).desc()
            query = select(Pipeline).where(*where).order_by(order).offset(offset)
            if limit is not None:
                query = query.limit(limit)
            return list(s.exec(query)), total

    def active_pipelines(self) -> list[Pipeline]:
        with self.read() as s:
            return list(s.exec(select(Pipeline).where(col(Pipeline.status).in_(ACTIVE_PIPELINE))
                               .order_by(col(Pipeline.id))))

    def node_pipelines(self, node_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Node id -> (its pipeline's id, that pipeline's counter), for these nodes."""
        if not node_ids:
            return {}
        with self.read() as s:
            rows = s.exec(select(PipelineNode.id, Pipeline.id, Pipeline.counter)
                          .join(Pipeline, col(Pipeline.id) == col(PipelineNode.pipeline_id))
                          .where(col(PipelineNode.id).in_(list(set(node_ids)))))
            return {node_id: (pipeline_id, counter) for node_id, pipeline_id, counter in rows}  # type: ignore[misc]

    def pipeline_nodes(self, pipeline_id: int) -> list[PipelineNode]:
        """A pipeline's nodes, in definition order."""
        with self.read() as s:
            return list(s.exec(select(PipelineNode).where(PipelineNode.pipeline_id == pipeline_id)
                               .order_by(col(PipelineNode.id))))

    def get_pipeline_node(self, node_id: int) -> PipelineNode:
        with self.read() as s:
            node = s.get(PipelineNode, node_id)
        if node is None:
            raise NotFound(f"no pipeline node with id {node_id}")
        return node

    def node_work(self, node_id: int, attempt: int) -> tuple[Execution | None, Task | None]:
        """The execution or task made for this try of a node, if one was (whatever the node's row says)."""
        with self.read() as s:
            execution = s.exec(select(Execution).where(Execution.pipeline_node_id == node_id,
                                                       Execution.pipeline_attempt == attempt)).first()
            task = s.exec(select(Task).where(Task.pipeline_node_id == node_id,
                                             Task.pipeline_attempt == attempt)).first()
            return execution, task

    def pipeline_work(self, pipeline_id: int) -> dict[tuple[int, int], tuple[int | None, int | None]]:
        """Every node try of the pipeline that has work: (node id, attempt) -> (execution id, task id)."""
        nodes = select(PipelineNode.id).where(PipelineNode.pipeline_id == pipeline_id)
        out: dict[tuple[int, int], tuple[int | None, int | None]] = {}
        with self.read() as s:
            for node_id, attempt, execution_id in s.exec(
                    select(Execution.pipeline_node_id, Execution.pipeline_attempt, Execution.id)
                    .where(col(Execution.pipeline_node_id).in_(nodes))):
                out[(node_id, attempt)] = (execution_id, None)  # type: ignore[index]
            for node_id, attempt, task_id in s.exec(
                    select(Task.pipeline_node_id, Task.pipeline_attempt, Task.id)
                    .where(col(Task.pipeline_node_id).in_(nodes))):
                out[(node_id, attempt)] = (None, task_id)  # type: ignore[index]
        return out

    def node_execution_ids(self, node_id: int, task_id: int | None) -> list[int]:
        """The executions a node made (every try), and its task's children, oldest first."""
        with self.read() as s:
            where = Execution.pipeline_node_id == node_id
            if task_id is not None:
                where = where | (Execution.task_id == task_id)  # type: ignore[assignment,operator]
            return list(s.exec(select(Execution.id).where(where).order_by(col(Execution.id))))  # type: ignore[arg-type]

    def update_node(self, node_id: int, changes: dict[str, Any], only_if: Sequence[str] | None = None) -> bool:
        """Change a node's columns (a status change stamps started_at/ended_at) under its row's lock;
        only_if: only while its status is one of these. Whether it changed."""
        with self.write() as s:
            node = s.exec(select(PipelineNode).where(PipelineNode.id == node_id).with_for_update()).one()
            if only_if is not None and node.status not in only_if:
                return False
            self._node_change(s, node, changes)
            return True

    def _node_change(self, s: Session, node: PipelineNode, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            setattr(node, key, value)
        status = changes.get("status")
        if status == N.STARTED and node.started_at is None:
            node.started_at = self.clock()
        if status is not None and N(status).is_final and node.ended_at is None:
            node.ended_at = self.clock()
        s.add(node)

    def set_pipeline_status(self, pipeline_id: int, status: str, reason: str | None = None) -> Pipeline:
        """Move a pipeline on (started, stopping, or an end); a final pipeline never changes again."""
        with self.write() as s:
            pipeline = s.exec(select(Pipeline).where(Pipeline.id == pipeline_id).with_for_update()).one()
            if P(pipeline.status).is_final:
                return pipeline
            now = self.clock()
            pipeline.status = status
            if reason is not None:
                pipeline.status_reason = reason
            if status == P.STARTED and pipeline.started_at is None:
                pipeline.started_at = now
            s.add(pipeline)
            if P(status).is_final:
                pipeline.ended_at = now
                self._pipeline_ended(s, pipeline)  # its webhooks' deliveries, in this transaction
            return pipeline

    def start_node_execution(self, node_id: int, attempt: int, execution: Execution) -> Execution | None:
        """Insert a node's execution for this try and mark the node started with it, in one
        transaction under the node's row: None (nothing written) when the node is no longer waiting
        to start this try, or its execution exists already."""
        with self.write() as s:
            node = s.exec(select(PipelineNode).where(PipelineNode.id == node_id).with_for_update()).one()
            if node.status != N.CREATED or node.attempt != attempt:
                return None
            made = s.exec(select(Execution.id).where(Execution.pipeline_node_id == node_id,
                                                     Execution.pipeline_attempt == attempt)).first()
            if made is not None:
                return None
            execution.pipeline_node_id, execution.pipeline_attempt = node_id, attempt
            self._insert_execution(s, execution)
            self.admit(s, [execution])
            self._node_change(s, node, {"status": N.STARTED, "execution_id": execution.id, "status_reason": None})
            self._pipeline_started(s, node.pipeline_id)
            return execution

    def _pipeline_started(self, s: Session, pipeline_id: int) -> None:
        pipeline = s.exec(select(Pipeline).where(Pipeline.id == pipeline_id).with_for_update()).one()
        if pipeline.status == P.CREATED:
            pipeline.status = P.STARTED
            pipeline.started_at = self.clock()
            s.add(pipeline)

    def node_started(self, node_id: int, changes: dict[str, Any], only_if: Sequence[str]) -> bool:
        """update_node, and the pipeline is `started` too (a node took its task, or ended at once by reuse)."""
        with self.write() as s:
            node = s.exec(select(PipelineNode).where(PipelineNode.id == node_id).with_for_update()).one()
            if node.status not in only_if:
                return False
            self._node_change(s, node, changes)
            self._pipeline_started(s, node.pipeline_id)
            return True

    def stop_pipeline(self, pipeline_id: int, reason: str, final: str = P.STOPPED) -> Pipeline:
        """Mark a pipeline `stopping` (it ends `final` once its nodes' work has ended); a final or
        stopping pipeline keeps what it has."""
        with self.write() as s:
            pipeline = s.exec(select(Pipeline).where(Pipeline.id == pipeline_id).with_for_update()).one()
            if P(pipeline.status).is_final or pipeline.status == P.STOPPING:
                return pipeline
            pipeline.spec = {**pipeline.spec, "_final": final}
            pipeline.status = P.STOPPING
            pipeline.status_reason = reason
            s.add(pipeline)
            return pipeline

    def approve_node(self, pipeline_id: int, name: str, user: str) -> PipelineNode:
        """Let a node held by `require-approval` start (on the engine's next move)."""
        with self.write() as s:
            node = s.exec(select(PipelineNode).where(PipelineNode.pipeline_id == pipeline_id,
                                                     PipelineNode.name == name).with_for_update()).first()
            if node is None:
                names = s.exec(select(PipelineNode.name).where(PipelineNode.pipeline_id == pipeline_id)).all()
                raise UserInputError(f"pipeline {pipeline_id} has no node {name!r}; its nodes: "
                                     f"{', '.join(names) or 'none'}", field="node")
            if node.status != N.WAITING_APPROVAL:
                raise UserInputError(f"node {name!r} is {node.status}, not waiting for approval: nothing to approve",
                                     field="node")
            self._node_change(s, node, {"status": N.CREATED, "approved_by": user,
                                        "status_reason": f"approved by {user}"})
            return node

    def reuse_candidates(self, project_id: int, step: str, commit_id: int, image: str | None) -> list[Execution]:
        """Complete executions of this project's step at this commit with this image, newest first
        (the engine compares their parameters and inputs)."""
        with self.read() as s:
            query = select(Execution).where(Execution.project_id == project_id, Execution.step == step,
                                            Execution.commit_id == commit_id,
                                            Execution.status == ExecutionStatus.COMPLETE)
            query = query.where(Execution.image == image) if image is not None else query.where(
                col(Execution.image).is_(None))
            return list(s.exec(query.order_by(col(Execution.id).desc()).limit(REUSE_CANDIDATES)))

    def outputs_checksums(self, datum_ids: Sequence[str]) -> dict[str, str]:
        """datum id -> its file's sha256, for those that exist."""
        if not datum_ids:
            return {}
        with self.read() as s:
            rows = s.exec(select(Output.id, Output.sha256).where(col(Output.id).in_(list(datum_ids)))).all()
            return dict(rows)  # type: ignore[arg-type]
