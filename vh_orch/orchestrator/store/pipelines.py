"""Pipelines and their nodes: creating them (one transaction), reading them, and moving one node
or the pipeline on under its row's lock. A node's work (an execution or a task) carries the node's
id and attempt, unique together, so the engine finds it again after any crash."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from vh_orch.errors import NotFound
from vh_orch.orchestrator.models import Execution, Pipeline, PipelineNode, Project, Task
from vh_orch.orchestrator.store.lifecycle import LifecycleStore
from vh_orch.values import NodeStatus, PipelineStatus

P = PipelineStatus
N = NodeStatus
ACTIVE_PIPELINE = (P.CREATED, P.STARTED, P.STOPPING)


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
            if P(status).is_final:
                pipeline.ended_at = now
            s.add(pipeline)
            return pipeline
