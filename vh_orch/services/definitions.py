"""What a commit's valohai.yaml offers to start, as the web UI's "New execution", "New task" and "New
pipeline" forms need it: steps with typed parameters and inputs, tasks as the body `vh task run` would
send, pipelines with their parameters (typed as the step parameter they set). One parameter shape, also
the run-again form's (parameter_dict)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vh_orch.config.steps import load_config
from vh_orch.orchestrator.tasks.definition import body_from_yaml

if TYPE_CHECKING:
    from valohai_yaml.objs import Config, Parameter, Pipeline, Step
    from valohai_yaml.objs.pipelines.pipeline_parameter import PipelineParameter

# A valohai.yaml is bounded where it is read (config/yaml_limits.py); these bound what one answer lists.
MAX_LISTED = 500


def parameter_dict(name: str, p: Parameter) -> dict[str, Any]:
    """A step parameter as a form renders it: type, bounds, choices, default."""
    return {"name": name, "type": p.type, "description": p.description, "default": p.default,
            "min": p.min, "max": p.max, "choices": p.choices, "multiple": bool(p.multiple), "optional": p.optional}


def step_dict(step: Step) -> dict[str, Any]:
    return {
        "name": step.name,
        "environment": step.environment,
        "parameters": [parameter_dict(name, p) for name, p in step.parameters.items()],
        "inputs": [{"name": name, "default": _urls(i.default), "optional": bool(i.optional),
                    "description": i.description} for name, i in step.inputs.items()],
    }


def commit_definitions(config_yaml: str) -> dict[str, Any]:
    """Every step, task and pipeline of this valohai.yaml (UserInputError when it does not read)."""
    loaded = load_config(config_yaml)
    config = loaded.config
    return {
        "steps": [step_dict(s) | {"problems": [str(p) for p in loaded.problems.get(s.name, [])]}
                  for s in list(config.steps.values())[:MAX_LISTED]],
        "tasks": [{"name": t.name, "step": t.step, "body": body_from_yaml(t)}
                  for t in list(config.tasks.values())[:MAX_LISTED]],
        "pipelines": [pipeline_dict(config, p) for p in list(config.pipelines.values())[:MAX_LISTED]],
    }


def pipeline_dict(config: Config, pipeline: Pipeline) -> dict[str, Any]:
    return {"name": pipeline.name, "nodes": [n.name for n in pipeline.nodes],
            "parameters": [_pipeline_parameter(config, pipeline, p) for p in pipeline.parameters]}


def _pipeline_parameter(config: Config, pipeline: Pipeline, p: PipelineParameter) -> dict[str, Any]:
    """A pipeline parameter, typed as the first step parameter it targets (its bounds and choices
    too), so the form checks what the node will check."""
    shape: dict[str, Any] = {"name": p.name, "type": "string", "description": p.description, "default": p.default,
                             "min": None, "max": None, "choices": None, "multiple": isinstance(p.default, list),
                             "optional": False, "targets": list(p.targets)}
    for target in p.targets:
        typed = _target_parameter(config, pipeline, target)
        if typed is not None:
            shape.update({k: typed[k] for k in ("type", "min", "max", "choices")})
            shape["multiple"] = shape["multiple"] or typed["multiple"]
            if not shape["description"]:
                shape["description"] = typed["description"]
            break
    return shape


def _target_parameter(config: Config, pipeline: Pipeline, target: str) -> dict[str, Any] | None:
    node_name, _, rest = target.partition(".")
    _, _, name = rest.partition(".")
    node = pipeline.node_map.get(node_name) if hasattr(pipeline, "node_map") else None
    step_name = getattr(node, "step", None)
    if step_name is None and getattr(node, "task", None) in config.tasks:
        step_name = config.tasks[node.task].step  # type: ignore[union-attr]
    step = config.steps.get(step_name) if step_name else None
    if step is None or name not in step.parameters:
        return None
    return parameter_dict(name, step.parameters[name])


def _urls(default: Any) -> list[str]:
    if default is None:
        return []
    return [str(u) for u in (default if isinstance(default, list) else [default])]
