"""Creating a pipeline (the CLI and the API share create_pipeline): the definition checked, every
node's request checked against its step and environment as far as it can be before its upstream
nodes ran, then the pipeline and its nodes written in one transaction."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vh_orch.config.steps import parse_config
from vh_orch.errors import UserInputError, about
from vh_orch.orchestrator.models import Pipeline, PipelineNode
from vh_orch.orchestrator.pipelines.definition import spec_from_yaml
from vh_orch.orchestrator.pipelines.spec import Node, PipelineSpec, parse_payload
from vh_orch.orchestrator.submit import SubmitRequest, current_user, ensure_storable, load_snapshot, prepare, store_snapshot

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store
    from vh_orch.settings import Settings


@dataclass(frozen=True)
class PipelineRequest:
    """A pipeline to create: a valohai.yaml pipeline by `name` (with `parameters`: pipeline parameter
    values, text or typed), or a converted `payload` (what `vh pipeline run` posts). `run` says which
    project and commit (its step is unused), who asks and with which rights; `environment` and
    `priority`, when given, apply to every node that does not name its own."""

    run: SubmitRequest
    name: str | None = None
    payload: dict[str, Any] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    title: str | None = None


def create_pipeline(store: Store, settings: Settings, req: PipelineRequest) -> Pipeline:
    """Check everything and write the pipeline and its nodes; nothing is written on a UserInputError.
    The engine (engine.py) starts its first nodes on its next pass, or at once through
    engine.start_pipeline, which creates and then starts."""
    project, snapshot = load_snapshot(store, settings, req.run)
    commit = snapshot.identifier
    config = parse_config(snapshot.config_yaml)
    if req.name is not None:
        name, spec = spec_from_yaml(snapshot.config_yaml, req.name, commit, req.parameters)
    elif req.payload is not None:
        if req.parameters:
            raise UserInputError("pipeline parameters go inside the definition's `parameters`", field="parameters")
        name = None
        spec = parse_payload(req.payload, known_steps=set(config.steps), commit=commit)
    else:
        raise UserInputError("a pipeline needs a valohai.yaml pipeline name or a definition", field="pipeline")
    run = replace(req.run, step="")
    environments = {e.name for e in store.list_environments()}
    _pipeline_wide(spec, run, environments)
    for node in spec.nodes:
        if node.type != "mimic" and node.template.get("commit") is None:
            # The values given are checked now (parameters, environment, rights); what may come later, or
            # only matters when the node runs, is checked when it starts: parameters that edges set or that
            # nothing gives yet, inputs (with what its upstream nodes made), and the node's image.
            later = fed_parameters(spec, node.name) | _task_varied(node) | _missing(config, node)
            checked = replace(node_request(run, node, fed=later, environments=environments), image=None)
            with about("nodes"):
                try:
                    prepare(store, settings, checked, vary=later, snapshot=(project, snapshot), inputs_later=True)
                except UserInputError as exc:
                    raise UserInputError(f"node {node.name!r}: {exc}", field=exc.field or "nodes") from None
    title = req.title or name
    user = run.user or current_user()
    stored = spec.to_json()  # once: a 500-node pipeline's definition is large
    ensure_storable({"pipeline": stored, "title": title, "user": user})
    stored_commit = store_snapshot(store, project.id, snapshot)  # type: ignore[arg-type]
    by_name = {n["name"]: n for n in stored["nodes"]}
    rows = [PipelineNode(pipeline_id=0, name=n.name, type=n.type, spec=by_name[n.name]) for n in spec.nodes]
    return store.create_pipeline(
        Pipeline(project_id=project.id, counter=0, commit_id=stored_commit.id, name=name, title=title,  # type: ignore[arg-type]
                 spec={**stored, **({"_remote": True} if run.remote else {})}, user=user,
                 restricted=run.restricted),
        rows,
    )


def _pipeline_wide(spec: PipelineSpec, run: SubmitRequest, environments: set[str]) -> None:
    """The request's environment and priority go into every node that names none of its own (a
    Valohai environment slug is none of vh-orch's), so that the stored nodes say where they run."""
    for node in spec.nodes:
        if node.type == "mimic":
            continue
        if run.environment and node.template.get("environment") not in environments:
            node.template["environment"] = run.environment
        if run.priority and node.template.get("priority") is None:
            node.template["priority"] = run.priority


def node_request(run: SubmitRequest, node: Node, fed: frozenset[str] = frozenset(),
                 parameters: dict[str, Any] | None = None, inputs: dict[str, list[str]] | None = None,
                 environment_variables: dict[str, Any] | None = None,
                 environments: set[str] | None = None) -> SubmitRequest:
    """The request that runs an execution or task node: its template's values, then what its edges
    brought (`parameters`, `inputs`, `environment_variables`, which replace the template's by name).
    fed: parameters an edge will set (left out while checking before the upstream nodes ran).
    environments: vh-orch's environment names: a node's `environment` counts only when it names one
    (a Valohai environment slug does not), as for a step's."""
    t = node.template
    values = {k: v for k, v in t.get("parameters", {}).items() if k not in fed and not isinstance(v, dict)}
    values.update(parameters or {})
    given = {k: (list(v) if isinstance(v, list) else [v]) for k, v in values.items()}
    urls = {k: list(v) for k, v in t.get("inputs", {}).items()}
    urls.update(inputs or {})
    variables = {**t.get("environment_variables", {}), **(environment_variables or {})}
    return replace(
        run, step=t["step"], parameters=given, inputs=urls,
        environment_variables={k: [v] for k, v in variables.items()},
        image=t.get("image") or run.image,
        environment=t["environment"] if t.get("environment") in (environments or set()) else run.environment,
        priority=t["priority"] if t.get("priority") is not None else run.priority,
    )


def fed_parameters(spec: PipelineSpec, name: str) -> frozenset[str]:
    """The node's parameters that its incoming parameter and metadata edges set."""
    return frozenset(e.target_key for e in spec.incoming(name) if e.target_type == "parameter")


def _missing(config: Any, node: Node) -> frozenset[str]:
    """The step's required parameters (no default) that the node's template gives no value."""
    step = config.steps.get(node.template["step"])
    if step is None:
        return frozenset()
    given = node.template.get("parameters", {})
    return frozenset(name for name, p in step.parameters.items()
                     if p.default is None and not p.optional and name not in given)


def _task_varied(node: Node) -> frozenset[str]:
    """A task node's parameters that vary per child (given as {style, rules})."""
    return frozenset(k for k, v in node.template.get("parameters", {}).items() if isinstance(v, dict))


