"""What `pipeline info`, the API and the web page show of a pipeline, shaped once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vh_orch.orchestrator.costs import execution_cost
from vh_orch.timeutil import iso

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Pipeline, PipelineNode
    from vh_orch.orchestrator.store import Store


def node_executions(store: Store, node: PipelineNode) -> list[int]:
    """The executions a node ran (every try; a task node's children), or the one it reused."""
    return store.node_execution_ids(node.id, node.task_id)  # type: ignore[arg-type]


def node_dict(store: Store, node: PipelineNode) -> dict[str, Any]:
    return {
        "id": node.id,
        "name": node.name,
        "type": node.type,
        "status": node.status,
        "status_reason": node.status_reason,
        "on_error": node.spec.get("on_error"),
        "attempt": node.attempt,
        "execution": node.execution_id,
        "task": node.task_id,
        "reused_execution": node.reused_execution_id,
        "executions": node_executions(store, node) or ([node.reused_execution_id] if node.reused_execution_id else []),
        "approved_by": node.approved_by,
        "started_at": iso(node.started_at),
        "ended_at": iso(node.ended_at),
    }


def pipeline_dict(store: Store, pipeline: Pipeline, nodes: list[PipelineNode] | None = None) -> dict[str, Any]:
    """`pipeline info --json`: the row, its nodes and its edges (by node name)."""
    nodes = store.pipeline_nodes(pipeline.id) if nodes is None else nodes  # type: ignore[arg-type]
    project = store.get_project_by_id(pipeline.project_id)
    commit = store.get_commit(pipeline.commit_id)
    return {
        "id": pipeline.id,
        "counter": pipeline.counter,
        "project": project.name,
        "name": pipeline.name,
        "title": pipeline.title,
        "status": pipeline.status,
        "status_reason": pipeline.status_reason,
        "commit": commit.identifier,
        "user": pipeline.user,
        "parameters": pipeline.spec.get("parameters", {}),
        "reuse_executions": bool(pipeline.spec.get("reuse_executions")),
        "created_at": iso(pipeline.created_at),
        "started_at": iso(pipeline.started_at),
        "ended_at": iso(pipeline.ended_at),
        "nodes": [node_dict(store, n) for n in nodes],
        "edges": pipeline.spec.get("edges", []),
        "cost_usd": pipeline_cost(store, nodes),
    }


def pipeline_cost(store: Store, nodes: list[PipelineNode]) -> float:
    """What the executions its nodes ran cost (a task node's children too; not a reused execution's)."""
    ids = {i for n in nodes for i in store.node_execution_ids(n.id, n.task_id)}  # type: ignore[arg-type]
    return round(sum(execution_cost(store, store.get_execution(i)) for i in sorted(ids)), 4)
