"""The plain values every layer shares: the states of executions, machines, tasks and cloud
instances, and a cloud's report of one instance.

This module imports nothing but the standard library (tests/test_layering.py keeps it so), so
that the pure parts (the policy, the CLI's read path) and the drivers can use these without
loading the database models; vh_orch.orchestrator.models stores them as plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ExecutionStatus(StrEnum):
    CREATED = "created"
    QUEUED = "queued"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    COMPLETE = "complete"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({ExecutionStatus.STOPPED, ExecutionStatus.ERROR, ExecutionStatus.COMPLETE})


class MachineState(StrEnum):
    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    BOOTSTRAPPING = "bootstrapping"
    READY = "ready"
    BUSY = "busy"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"
    LOST = "lost"


# The machine states in which an instance exists and costs money (the operations page, the cost report).
BILLED_MACHINE = (MachineState.PROVISIONING, MachineState.BOOTSTRAPPING, MachineState.READY, MachineState.BUSY,
                  MachineState.TERMINATING)


class TaskStatus(StrEnum):
    CREATED = "created"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    COMPLETE = "complete"

    @property
    def is_final(self) -> bool:
        return self in FINAL_TASK_STATUSES


FINAL_TASK_STATUSES = frozenset({TaskStatus.STOPPED, TaskStatus.ERROR, TaskStatus.COMPLETE})


class PipelineStatus(StrEnum):
    """A pipeline: `started` once its first node starts; `stopping` while its running work stops
    (a request, or a node's on-error); it ends complete, error or stopped."""

    CREATED = "created"
    STARTED = "started"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"
    COMPLETE = "complete"

    @property
    def is_final(self) -> bool:
        return self in FINAL_PIPELINE_STATUSES


FINAL_PIPELINE_STATUSES = frozenset({PipelineStatus.STOPPED, PipelineStatus.ERROR, PipelineStatus.COMPLETE})


class NodeStatus(StrEnum):
    """A pipeline node: `created` until its upstream nodes complete; `waiting-approval` while a
    `require-approval` action holds it; `started` once its execution or task exists; it ends complete,
    error, stopped, or `skipped` (it never ran: an upstream node failed, or the pipeline stopped)."""

    CREATED = "created"
    WAITING_APPROVAL = "waiting-approval"
    STARTED = "started"
    STOPPED = "stopped"
    ERROR = "error"
    COMPLETE = "complete"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self in FINAL_NODE_STATUSES


FINAL_NODE_STATUSES = frozenset({NodeStatus.STOPPED, NodeStatus.ERROR, NodeStatus.COMPLETE, NodeStatus.SKIPPED})

# Instance states as drivers report them.
PENDING = "pending"
RUNNING = "running"
STOPPING = "stopping"
TERMINATED = "terminated"


@dataclass(frozen=True)
class CloudInstance:
    """One instance as a driver lists it (vh_orch.cloud_drivers.base.CloudDriver)."""

    instance_id: str
    machine_id: int | None  # from the machine tag; None when the tag is missing or garbled
    state: str
    zone: str | None = None
    instance_type: str | None = None
    address: str | None = None
    launched_at: datetime | None = None
    state_reason: str | None = None  # e.g. a spot interruption

    @property
    def gone(self) -> bool:
        return self.state == TERMINATED
