"""Moving pipelines on: one pass of the daemon (and one call after a pipeline is created) decides
each active pipeline's next steps from its rows alone.

A pipeline's state is its row, its nodes' rows and their executions and tasks, nothing else, so a
daemon killed at any moment resumes every pipeline where the database says it is:
- a node's work carries the node's id and try (`pipeline_node_id`, `pipeline_attempt`, unique
  together): an execution is inserted and its node marked `started` in one transaction
  (store.start_node_execution); a task is created first and its node adopts it on the next look
  (a node still `created` whose work exists is `started` with it, never given a second one);
- every decision (skip, stop, finish, actions) is a function of the rows, taken again on each pass,
  so one that a crash cut short is simply taken again.

Semantics (README "Pipelines"): a node starts once every node it depends on is complete (or ended
in error with `on-error: continue`); `stop-all` (the default) stops the pipeline, which ends `error`;
`stop-next` skips what depends on the node while the rest runs on, and the pipeline ends `error`;
`continue` lets what depends on it run, and the pipeline can still end `complete`; `retry` runs the
node once more (try 1) and then acts as `stop-all`. A node that can never run ends `skipped`.
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError

from vh_orch import failpoints
from vh_orch.errors import LeaseLost, NotFound, UserInputError
from vh_orch.orchestrator.pipelines.create import PipelineRequest, create_pipeline, node_request
from vh_orch.orchestrator.pipelines.spec import Action, Edge, Node, PipelineSpec
from vh_orch.orchestrator.submit import (
    SubmitRequest, build_execution, check_storable, keep_commit, load_snapshot, prepare,
)
from vh_orch.storage.snapshots import Snapshot
from vh_orch.values import ExecutionStatus, NodeStatus, PipelineStatus, TaskStatus

if TYPE_CHECKING:
    from vh_orch.orchestrator.models import Execution, Pipeline, PipelineNode, Project, Task
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings

log = logging.getLogger(__name__)
N = NodeStatus
P = PipelineStatus
S = ExecutionStatus
T = TaskStatus
FAILED = (N.ERROR, N.STOPPED)  # a node that ended without completing
WAITING = (N.CREATED, N.WAITING_APPROVAL)
MAX_ROUNDS = 20  # moves per call: a node that ends at once (reuse, mimic) lets the next start in the same call
DATUM = "datum://"


class PipelineEngine:
    """Moves every active pipeline on: one call per daemon pass, and one after a pipeline is created."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._lock = threading.Lock()

    def run_pass(self, store: Store | None = None) -> None:
        """Move every active pipeline on; `store`: the one to write through from now on (a
        replica's, fenced by its `cluster` lease)."""
        if store is not None:
            self.store = store
        for pipeline in self.store.active_pipelines():
            try:
                self.advance(pipeline.id)  # type: ignore[arg-type]
            except LeaseLost:
                raise
            except Exception:
                log.exception("pipeline %s could not be moved on", pipeline.id)

    def advance(self, pipeline_id: int) -> None:
        """Move one pipeline on as far as its rows allow now."""
        with self._lock:
            for _ in range(MAX_ROUNDS):
                if not _Move(self, pipeline_id).run():
                    return


class _Move:
    """One look at one pipeline: follow each node's work, then decide; whether anything changed."""

    def __init__(self, engine: PipelineEngine, pipeline_id: int) -> None:
        self.engine = engine
        self.store = engine.store
        self.pipeline = self.store.get_pipeline(pipeline_id)
        self.spec = PipelineSpec.from_json(self.pipeline.spec)
        self.nodes = {n.name: n for n in self.store.pipeline_nodes(pipeline_id)}
        self.upstream = _upstream(self.spec)
        self._spec_nodes = {n.name: n for n in self.spec.nodes}
        self.work = self.store.pipeline_work(pipeline_id)
        self._snapshot: tuple[Project, Snapshot] | None = None
        self.stopped = False
        self._environment_names: set[str] | None = None

    def run(self) -> bool:
        if P(self.pipeline.status).is_final:
            return False
        changed = any([self._follow(node) for node in list(self.nodes.values())])
        if changed:
            return True  # look again with the nodes as they are now
        if self.pipeline.status == P.STOPPING:
            return self._wind_down()
        verdict = self._verdict()
        if verdict is not None:
            final, reason = verdict
            self.store.stop_pipeline(self.pipeline.id, reason, final)  # type: ignore[arg-type]
            return True
        if self._skip_unreachable():
            return True
        started = False
        for name in [n.name for n in self.spec.nodes]:
            node = self.nodes[name]
            if node.status == N.CREATED and self._ready(name):
                started |= self._start(node)
                if self.stopped:  # a node-starting action stopped the pipeline: start nothing more
                    return True
        return started or self._finish()

    # -- each node from its work -----------------------------------------------------------------

    def _follow(self, node: PipelineNode) -> bool:
        """Bring a node's row up to its work: adopt work made for this try, end it when its work ended."""
        if node.status in WAITING:
            work = self.work.get((node.id, node.attempt))  # type: ignore[arg-type]
            if work is None:
                return False
            changes = {"status": N.STARTED, "status_reason": None, "execution_id": work[0], "task_id": work[1]}
            return self.store.node_started(node.id, changes, only_if=WAITING)  # type: ignore[arg-type]
        if node.status != N.STARTED:
            return False
        status, reason = self._work_status(node)
        if status is None:
            return False
        if status == N.ERROR and self._spec_node(node).on_error == "retry" and node.attempt == 0 \
                and self.pipeline.status != P.STOPPING:
            return self.store.update_node(node.id, {  # type: ignore[arg-type]
                "status": N.CREATED, "attempt": 1, "execution_id": None, "task_id": None,
                "status_reason": f"retrying (on-error is retry): {reason}"}, only_if=[N.STARTED])
        ended = self.store.update_node(node.id, {"status": status, "status_reason": reason},  # type: ignore[arg-type]
                                       only_if=[N.STARTED])
        if ended:
            failpoints.hit("pipeline-node-ended")
        return ended

    def _work_status(self, node: PipelineNode) -> tuple[str | None, str | None]:
        """The node's end as its work says (None while it runs), and why."""
        if node.execution_id is not None:
            execution = self.store.get_execution(node.execution_id)
            if not S(execution.status).is_final:
                return None, None
            why = f"execution #{execution.counter} {execution.status}"
            if execution.status_reason:
                why += f": {execution.status_reason}"
            return {S.COMPLETE: N.COMPLETE, S.ERROR: N.ERROR}.get(execution.status, N.STOPPED), why  # type: ignore[call-overload]
        if node.task_id is not None:
            task = self.store.get_task(node.task_id)
            if not T(task.status).is_final:
                return None, None
            why = f"task !{task.counter} {task.status}" + (f": {task.status_reason}" if task.status_reason else "")
            return {T.COMPLETE: N.COMPLETE, T.ERROR: N.ERROR}.get(task.status, N.STOPPED), why  # type: ignore[call-overload]
        return N.ERROR, "its work is gone"

    # -- stopping --------------------------------------------------------------------------------

    def _wind_down(self) -> bool:
        """A stopping pipeline: what never started is skipped, running work is stopped gracefully;
        once every node has ended the pipeline takes the end it was stopped with."""
        changed = False
        reason = self.pipeline.status_reason or "the pipeline stopped"
        for node in self.nodes.values():
            if node.status in WAITING:
                changed |= self.store.update_node(node.id, {  # type: ignore[arg-type]
                    "status": N.SKIPPED, "status_reason": f"not started: {reason}"}, only_if=WAITING)
            elif node.status == N.STARTED:
                self._stop_work(node, reason)
        if changed:
            return True
        if all(N(n.status).is_final for n in self.nodes.values()):
            self.store.set_pipeline_status(self.pipeline.id, self.pipeline.spec.get("_final", P.STOPPED))  # type: ignore[arg-type]
            return True
        return False

    def _stop_work(self, node: PipelineNode, reason: str) -> None:
        if node.execution_id is not None:
            execution = self.store.get_execution(node.execution_id)
            if execution.status in (S.CREATED, S.QUEUED, S.STARTED):
                self.store.request_stop(execution.id, reason)  # type: ignore[arg-type]
        elif node.task_id is not None:
            task = self.store.get_task(node.task_id)
            if task.status in (T.CREATED, T.STARTED):
                self.store.stop_task(task.id, reason)  # type: ignore[arg-type]

    # -- deciding ----------------------------------------------------------------------------------

    def _verdict(self) -> tuple[str, str] | None:
        """Whether the pipeline must stop now, with which end and why: a failed node whose on-error
        stops everything, or an action of an ended node."""
        for spec_node in self.spec.nodes:
            node = self.nodes[spec_node.name]
            if node.status in FAILED and spec_node.on_error in ("stop-all", "retry"):
                return P.ERROR, (f"node {node.name!r} failed ({node.status_reason or node.status}); "
                                 f"on-error is {spec_node.on_error}")
            when = {N.COMPLETE: "node-complete", N.ERROR: "node-error"}.get(node.status)  # type: ignore[call-overload]
            if when is None:
                continue
            for then in self._actions(spec_node, when, lambda c: self._ended_value(node, c)):
                if then == "stop-pipeline":
                    return P.STOPPED, f"node {node.name!r}: {when} action stop-pipeline"
                if then == "error-pipeline":
                    return P.ERROR, f"node {node.name!r}: {when} action error-pipeline"
        return None

    def _actions(self, node: Node, when: str, value_of: Any) -> list[str]:
        """The `then`s of the node's actions for `when` whose every condition holds."""
        out: list[str] = []
        for action in node.actions:
            if when in action.when and _holds(action, value_of):
                out.extend(action.then)
        return out

    def _ended_value(self, node: PipelineNode, condition: Any) -> Any:
        """A condition's value for a node that ran: its execution's latest metadata or parameter."""
        execution = self._execution_of(node)
        if execution is None:
            return None
        source = execution.metadata_latest if condition.source == "metadata" else execution.parameters
        return (source or {}).get(condition.key)

    def _skip_unreachable(self) -> bool:
        """Nodes waiting on a node that failed (not `continue`) or was skipped can never run: skipped,
        and what waits on them in turn, in this one look."""
        changed, again = False, True
        while again:
            again = False
            for spec_node in self.spec.nodes:
                node = self.nodes[spec_node.name]
                if node.status not in WAITING:
                    continue
                for up in self.upstream[node.name]:
                    upstream = self.nodes[up]
                    blocked = upstream.status == N.SKIPPED or (
                        upstream.status in FAILED and self._spec_node(upstream).on_error != "continue")
                    if blocked:
                        if self.store.update_node(node.id, {  # type: ignore[arg-type]
                                "status": N.SKIPPED, "status_reason": f"upstream node {up!r} {upstream.status}"},
                                only_if=WAITING):
                            node.status = N.SKIPPED  # what waits on this one sees it in this look
                            changed = again = True
                        break
        return changed

    def _ready(self, name: str) -> bool:
        for up in self.upstream[name]:
            upstream = self.nodes[up]
            if upstream.status == N.COMPLETE:
                continue
            if upstream.status in FAILED and self._spec_node(upstream).on_error == "continue":
                continue
            return False
        return True

    def _finish(self) -> bool:
        if not all(N(n.status).is_final for n in self.nodes.values()):
            return False
        failed = [n for n in self.nodes.values()
                  if n.status in FAILED and self._spec_node(n).on_error != "continue"]
        if failed:
            first = failed[0]
            self.store.set_pipeline_status(self.pipeline.id, P.ERROR,  # type: ignore[arg-type]
                                           f"node {first.name!r} failed ({first.status_reason or first.status}); "
                                           f"on-error is {self._spec_node(first).on_error}")
        else:
            counts: dict[str, int] = {}
            for n in self.nodes.values():
                counts[n.status] = counts.get(n.status, 0) + 1
            self.store.set_pipeline_status(self.pipeline.id, P.COMPLETE,  # type: ignore[arg-type]
                                           ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
        return True

    # -- starting a node ---------------------------------------------------------------------------

    def _start(self, node: PipelineNode) -> bool:
        """Start a ready node (or hold it for approval, or end it at once by reuse); whether it changed."""
        spec_node = self._spec_node(node)
        try:
            if spec_node.type == "mimic":
                return self._mimic(node, spec_node)
            fed = self._fed(spec_node)
            hold = self._hold(node, spec_node, fed)
            if hold is not None:
                return hold
            if spec_node.type == "task":
                return self._start_task(node, spec_node, fed)
            return self._start_execution(node, spec_node, fed)
        except (UserInputError, NotFound) as exc:
            reason = f"cannot start: {exc}"
            log.info("pipeline %s node %s %s", self.pipeline.id, node.name, reason)
            return self.store.update_node(node.id, {"status": N.ERROR, "status_reason": reason},  # type: ignore[arg-type]
                                          only_if=[N.CREATED])

    def _hold(self, node: PipelineNode, spec_node: Node, fed: _Fed) -> bool | None:
        """node-starting actions (against the parameters it would start with) and require-approval
        of a node-complete action upstream: True/False when the node does not start now, None to go on."""
        values = {**spec_node.template.get("parameters", {}), **fed.parameters}

        def value_of(condition: Any) -> Any:
            return values.get(condition.key) if condition.source == "parameter" else None

        thens = self._actions(spec_node, "node-starting", value_of)
        if "stop-pipeline" in thens or "error-pipeline" in thens:
            self.stopped = True
        if "stop-pipeline" in thens:
            self.store.stop_pipeline(self.pipeline.id, f"node {node.name!r}: node-starting action stop-pipeline",  # type: ignore[arg-type]
                                     P.STOPPED)
            return True
        if "error-pipeline" in thens:
            self.store.stop_pipeline(self.pipeline.id, f"node {node.name!r}: node-starting action error-pipeline",  # type: ignore[arg-type]
                                     P.ERROR)
            return True
        asks = "require-approval" in thens
        for up in self.upstream[node.name]:
            upstream = self.nodes[up]
            if upstream.status == N.COMPLETE and "require-approval" in self._actions(
                    self._spec_node(upstream), "node-complete", lambda c, u=upstream: self._ended_value(u, c)):
                asks = True
        if asks and node.approved_by is None:
            return self.store.update_node(node.id, {  # type: ignore[arg-type]
                "status": N.WAITING_APPROVAL,
                "status_reason": f"waiting for approval: `vh-orch pipeline approve {self.pipeline.id} {node.name}`"},
                only_if=[N.CREATED])
        return None

    def _run_base(self) -> SubmitRequest:
        """Who runs the nodes, with the rights the pipeline was created with: one from the API (`_remote`)
        gets URLs only, and datum:// inputs of projects its user may see (a node's inputs are
        checked when it starts)."""
        project = self.store.get_project_by_id(self.pipeline.project_id)
        remote = self.pipeline.restricted or bool(self.pipeline.spec.get("_remote"))
        return SubmitRequest(project=project.name, step="", user=self.pipeline.user,
                             restricted=self.pipeline.restricted, remote=remote,
                             datum_visible=self._datum_visible() if remote else None)

    def _datum_visible(self) -> Any:
        user = self.store.find_user(self.pipeline.user or "")
        # its user is gone: its own project's outputs only
        visible = [self.pipeline.project_id] if user is None else self.store.visible_project_ids(user)

        def datum_visible(datum_id: str) -> bool:
            if visible is None:
                return True
            return self.store.get_execution(self.store.get_output(datum_id).execution_id).project_id in visible

        return datum_visible

    def _environments(self) -> set[str]:
        """vh-orch's environment names (a node's Valohai environment slug that names none is not used)."""
        if self._environment_names is None:
            self._environment_names = {e.name for e in self.store.list_environments()}
        return self._environment_names

    def _title(self, node: PipelineNode) -> str:
        base = self.pipeline.title or self.pipeline.name or f"pipeline {self.pipeline.counter}"
        return f"{base}: {node.name}"

    def _snapshot_for(self, spec_node: Node, run: SubmitRequest) -> tuple[Project, Snapshot]:
        """The node's project and snapshot: the pipeline's commit row, or the node's own `commit`
        resolved in the project's repository."""
        commit = spec_node.template.get("commit")
        if commit:
            try:
                return load_snapshot(self.engine.store, self.engine.settings, replace(run, commit=commit))
            except UserInputError as exc:
                raise UserInputError(f"its commit {commit!r} cannot be found in the project's repository: {exc}",
                                     field="commit") from None
        if self._snapshot is None:
            row = self.store.get_commit(self.pipeline.commit_id)
            project = self.store.get_project_by_id(self.pipeline.project_id)
            self._snapshot = project, Snapshot(kind=row.kind, identifier=row.identifier, ref=row.ref,
                                               config_yaml=row.config_yaml, archive_path=row.archive_path)
        return self._snapshot

    def _start_execution(self, node: PipelineNode, spec_node: Node, fed: _Fed) -> bool:
        run = replace(self._run_base(), title=self._title(node))
        snapshot = self._snapshot_for(spec_node, run)
        req = node_request(run, spec_node, parameters=fed.parameters, inputs=self._inputs(spec_node, fed),
                           environment_variables=fed.environment_variables, environments=self._environments())
        prepared = prepare(self.store, self.engine.settings, req, snapshot=snapshot)
        check_storable(req, prepared)
        commit = keep_commit(self.store, prepared)
        if self.spec.reuse_executions:
            earlier = self._reusable(prepared, commit.id)  # type: ignore[arg-type]
            if earlier is not None:
                return self.store.node_started(node.id, {  # type: ignore[arg-type]
                    "status": N.COMPLETE, "reused_execution_id": earlier.id,
                    "status_reason": f"reused execution #{earlier.counter} (reuse-executions)"}, only_if=[N.CREATED])
        execution = build_execution(req, prepared, commit.id)  # type: ignore[arg-type]
        try:
            made = self.store.start_node_execution(node.id, node.attempt, execution)  # type: ignore[arg-type]
        except IntegrityError:  # another process made it a moment ago: the next look adopts it
            return True
        if made is not None:
            failpoints.hit("pipeline-work-made")
        return True  # made, or found made: the next look follows it

    def _start_task(self, node: PipelineNode, spec_node: Node, fed: _Fed) -> bool:
        from vh_orch.orchestrator.tasks.create import TaskRequest, create_task

        template = spec_node.template
        variants = {k: v for k, v in template.get("parameters", {}).items() if isinstance(v, dict)}
        fixed: dict[str, Any] = {}
        for key, value in fed.parameters.items():
            variants.pop(key, None)
            if isinstance(value, list):  # a metadata list into a task: one child per item
                variants[key] = {"style": "multiple", "rules": {"items": value}}
            else:
                fixed[key] = value
        body = {**template.get("task", {}), "parameters": variants}
        run = replace(self._run_base(), title=self._title(node))
        snapshot = self._snapshot_for(spec_node, run)
        req = node_request(run, spec_node, fed=frozenset(fed.parameters), parameters=fixed,
                           inputs=self._inputs(spec_node, fed), environment_variables=fed.environment_variables,
                           environments=self._environments())
        try:
            task = create_task(self.store, self.engine.settings, TaskRequest(
                run=req, body=body, pipeline_node_id=node.id, pipeline_attempt=node.attempt, snapshot=snapshot))
        except IntegrityError:  # another process made it a moment ago: the next look adopts it
            return True
        failpoints.hit("pipeline-work-made")  # a crash here leaves the task for the next look to adopt
        self.store.node_started(node.id, {"status": N.STARTED, "task_id": task.id,  # type: ignore[arg-type]
                                          "status_reason": None}, only_if=[N.CREATED])
        return True

    def _mimic(self, node: PipelineNode, spec_node: Node) -> bool:
        """A node that stands for earlier work (`vh pipeline run --reuse`, `reuse_execution_id`)."""
        changes: dict[str, Any]
        if spec_node.source is not None:
            try:
                source = self.store.get_pipeline_node(spec_node.source)
                owner = self.store.get_pipeline(source.pipeline_id)
            except NotFound:
                owner = None
            if owner is None or owner.project_id != self.pipeline.project_id:
                raise UserInputError(f"mimic source node {spec_node.source} is not a node of a pipeline of this "
                                     "project", field="nodes")
            if source.task_id is not None and source.status == N.COMPLETE:
                changes = {"task_id": source.task_id,
                           "status_reason": f"reused node {source.name!r} of pipeline !{owner.counter}"}
            else:
                execution = self._execution_of(source)
                if execution is None or execution.status != S.COMPLETE:
                    raise UserInputError(f"mimic source node {source.name!r} of pipeline !{owner.counter} has no "
                                         "complete execution to reuse", field="nodes")
                changes = {"reused_execution_id": execution.id,
                           "status_reason": f"reused node {source.name!r} of pipeline !{owner.counter} "
                                            f"(execution #{execution.counter})"}
        else:
            assert spec_node.reuse_execution_id is not None
            try:
                execution = self.store.get_execution(spec_node.reuse_execution_id)
            except NotFound:
                execution = None
            if execution is None or execution.project_id != self.pipeline.project_id:
                raise UserInputError(f"reuse_execution_id {spec_node.reuse_execution_id} is not an execution of "
                                     "this project", field="nodes")
            if execution.status != S.COMPLETE:
                raise UserInputError(f"execution #{execution.counter} is {execution.status}, not complete: "
                                     "only a complete execution can be reused", field="nodes")
            changes = {"reused_execution_id": execution.id, "status_reason": f"reused execution #{execution.counter}"}
        return self.store.node_started(node.id, {**changes, "status": N.COMPLETE},  # type: ignore[arg-type]
                                       only_if=[N.CREATED])

    def _reusable(self, prepared: Any, commit_id: int) -> Execution | None:
        """An earlier complete execution of the same step, commit, image, parameters and inputs
        (datum:// inputs compared by their files' checksums)."""
        resolved = prepared.resolved
        want = self._input_key(prepared.inputs)
        for candidate in self.store.reuse_candidates(prepared.project_id, resolved.step.name, commit_id,
                                                     prepared.image):
            if candidate.parameters == resolved.parameters and self._input_key(candidate.inputs) == want:
                return candidate
        return None

    def _input_key(self, inputs: dict[str, Any]) -> dict[str, list[str]]:
        ids = [u[len(DATUM):] for urls in inputs.values() for u in urls if isinstance(u, str) and u.startswith(DATUM)]
        sums = self.store.outputs_checksums(ids)
        return {name: [f"sha256:{sums[u[len(DATUM):]]}" if u.startswith(DATUM) and u[len(DATUM):] in sums else u
                       for u in urls] for name, urls in inputs.items()}

    # -- what the edges bring ----------------------------------------------------------------------

    def _fed(self, node: Node) -> _Fed:
        fed = _Fed()
        for edge in self.spec.incoming(node.name):
            source = self.nodes[edge.source_node]
            if edge.source_type == "dependency":
                continue
            if edge.source_type == "output":
                urls = [f"{DATUM}{o.id}" for e in self._executions_of(source)
                        for o in self.store.outputs_of(e.id)  # type: ignore[arg-type]
                        if fnmatch.fnmatchcase(o.name, edge.source_key)]
                fed.add_input(edge.target_key, urls)
            elif edge.source_type == "input":
                urls = [u for e in self._executions_of(source) for name, listed in (e.inputs or {}).items()
                        if fnmatch.fnmatchcase(name, edge.source_key) for u in listed]
                fed.add_input(edge.target_key, urls)
            else:
                value = self._value(source, edge)
                if edge.target_type == "environment-variable":
                    fed.environment_variables[edge.target_key] = value
                else:
                    fed.parameters[edge.target_key] = value
        return fed

    def _value(self, source: PipelineNode, edge: Edge) -> Any:
        """A parameter, metadata or environment-variable edge's value: the source execution's (a task
        node's: the list of its complete children's values)."""
        executions = self._executions_of(source)
        if source.task_id is not None:
            executions = [e for e in executions if e.status == S.COMPLETE]
        values = []
        for execution in executions:
            table = {"parameter": execution.parameters, "metadata": execution.metadata_latest,
                     "environment-variable": execution.environment_variables}[edge.source_type] or {}
            if edge.source_key in table:
                values.append(table[edge.source_key])
        if not values:
            raise UserInputError(f"edge {edge.source_node}.{edge.source_type}.{edge.source_key}: node "
                                 f"{edge.source_node!r} has no {edge.source_type} {edge.source_key!r}", field="edges")
        return values if source.task_id is not None else values[0]

    def _inputs(self, node: Node, fed: _Fed) -> dict[str, list[str]]:
        """The inputs edges fill: with edge-merge-mode append, after the template's own URLs."""
        if node.edge_merge_mode != "append":
            return fed.inputs
        template = node.template.get("inputs", {})
        return {name: _unique([*template.get(name, []), *urls]) for name, urls in fed.inputs.items()}

    def _execution_of(self, node: PipelineNode) -> Execution | None:
        execution_id = node.execution_id or node.reused_execution_id
        return None if execution_id is None else self.store.get_execution(execution_id)

    def _executions_of(self, node: PipelineNode) -> list[Execution]:
        if node.task_id is not None:
            return self.store.task_children(node.task_id)
        execution = self._execution_of(node)
        return [] if execution is None else [execution]

    def _spec_node(self, node: PipelineNode) -> Node:
        return self._spec_nodes[node.name]


class _Fed:
    """What a node's incoming edges bring: inputs (merged per input), parameters, environment variables."""

    def __init__(self) -> None:
        self.inputs: dict[str, list[str]] = {}
        self.parameters: dict[str, Any] = {}
        self.environment_variables: dict[str, Any] = {}

    def add_input(self, name: str, urls: list[str]) -> None:
        self.inputs[name] = _unique([*self.inputs.get(name, []), *urls])


def _upstream(spec: PipelineSpec) -> dict[str, list[str]]:
    """Each node's upstream nodes, in definition order (spec.upstream for every node, in one go over
    the edges: a pass looks at them for every waiting node)."""
    sources: dict[str, set[str]] = {n.name: set() for n in spec.nodes}
    for edge in spec.edges:
        sources[edge.target_node].add(edge.source_node)
    order = {n.name: i for i, n in enumerate(spec.nodes)}
    return {name: sorted(found, key=order.__getitem__) for name, found in sources.items()}


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _holds(action: Action, value_of: Any) -> bool:
    return all(c.holds(value_of(c)) for c in action.conditions)


# -- what the faces call -------------------------------------------------------------------------------


def start_pipeline(store: Store, settings: Settings, req: PipelineRequest) -> Pipeline:
    """Create a pipeline (create.create_pipeline: nothing written on a UserInputError) and start its
    first nodes now, as a new task starts its first children; what cannot start now is left to the
    daemon's next pass, for the pipeline is written."""
    pipeline = create_pipeline(store, settings, req)
    try:
        PipelineEngine(store, settings).advance(pipeline.id)  # type: ignore[arg-type]
    except LeaseLost:
        raise
    except Exception:
        log.exception("pipeline %s: its first nodes are left to the daemon", pipeline.id)
    return store.get_pipeline(pipeline.id)  # type: ignore[arg-type]



def stop_pipeline(store: Store, settings: Settings, pipeline_id: int, reason: str = "stopped by request") -> Pipeline:
    """Stop a pipeline: its running executions and tasks stop gracefully, what never started is
    skipped, and it ends `stopped` once its work has ended."""
    store.stop_pipeline(pipeline_id, reason, P.STOPPED)
    PipelineEngine(store, settings).advance(pipeline_id)
    return store.get_pipeline(pipeline_id)


def approve(store: Store, settings: Settings, pipeline_id: int, node_name: str, user: str) -> PipelineNode:
    """Let a node waiting for approval start (valid only while it is `waiting-approval`)."""
    pipeline = store.get_pipeline(pipeline_id)
    if P(pipeline.status).is_final or pipeline.status == P.STOPPING:
        raise UserInputError(f"pipeline {pipeline_id} is {pipeline.status}: nothing to approve", field="pipeline")
    node = store.approve_node(pipeline_id, node_name, user)
    PipelineEngine(store, settings).advance(pipeline_id)
    return node
