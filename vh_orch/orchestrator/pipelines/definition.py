"""A valohai.yaml pipeline as the payload `vh pipeline run` would post for it: linted with
valohai-yaml's own linter (plural edge types are their singular and `then: require-approval` is
allowed, as Valohai's platform accepts both), converted with valohai-yaml's PipelineConverter, then
read by spec.parse_payload like any client's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from valohai_yaml.lint import LintResult
from valohai_yaml.pipelines.conversion import PipelineConverter

from vh_orch.config.steps import parse_config
from vh_orch.errors import UserInputError
from vh_orch.orchestrator.pipelines.spec import PLURAL_TYPES, PipelineSpec, parse_payload

if TYPE_CHECKING:
    from valohai_yaml.objs import Config, Pipeline

MAX_LINT_ERRORS = 3


def pipeline_payload(config_yaml: str, name: str, commit: str,
                     parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """The converted pipeline `name` of this valohai.yaml at `commit`, with pipeline parameter values
    (text from a command line, or typed values) in place of the defaults."""
    config = parse_config(config_yaml)
    pipeline = find_pipeline(config, name)
    _normalise(pipeline)
    lint_pipeline(config, pipeline)
    unknown = sorted(set(parameters or {}) - {p.name for p in pipeline.parameters})
    if unknown:
        known = ", ".join(p.name for p in pipeline.parameters) or "none"
        raise UserInputError(f"pipeline {pipeline.name!r} has no parameter {unknown[0]!r}; it has: {known}",
                             field="parameters")
    try:
        converted = PipelineConverter(config=config, commit_identifier=commit,
                                      parameter_arguments=dict(parameters or {})).convert_pipeline(pipeline)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(f"pipeline {pipeline.name!r} cannot be converted: {exc}") from None
    payload: dict[str, Any] = dict(converted)
    if pipeline.reuse_executions:
        payload["reuse_executions"] = True
    return payload


def spec_from_yaml(config_yaml: str, name: str, commit: str,
                   parameters: dict[str, Any] | None = None) -> tuple[str, PipelineSpec]:
    """The pipeline's full name and its checked spec."""
    config = parse_config(config_yaml)
    full = find_pipeline(config, name).name
    payload = pipeline_payload(config_yaml, full, commit, parameters)
    return full, parse_payload(payload, known_steps=set(config.steps), commit=commit)


def find_pipeline(config: Config, name: str) -> Pipeline:
    """A pipeline by its name, or by the one name it begins (as `vh pipeline run` matches)."""
    if name in config.pipelines:
        return config.pipelines[name]
    matches = [p for key, p in config.pipelines.items() if key.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(sorted(config.pipelines)) or "none"
    if matches:
        raise UserInputError(f"pipeline {name!r} is ambiguous: it begins {', '.join(p.name for p in matches)}",
                             field="pipeline")
    raise UserInputError(f"unknown pipeline {name!r}; valohai.yaml defines: {known}", field="pipeline")


def _normalise(pipeline: Pipeline) -> None:
    for edge in pipeline.edges:
        edge.source_type = PLURAL_TYPES.get(edge.source_type, edge.source_type)
        edge.target_type = PLURAL_TYPES.get(edge.target_type, edge.target_type)


def lint_pipeline(config: Config, pipeline: Pipeline) -> None:
    """valohai-yaml's lint errors for this pipeline (not its warnings: an unknown `then` such as
    require-approval is one), as one UserInputError."""
    result = LintResult()
    pipeline.lint(result, {"config": config})
    errors = [m["message"] for m in result.errors]
    if errors:
        more = len(errors) - MAX_LINT_ERRORS
        text = "; ".join(errors[:MAX_LINT_ERRORS]) + (f"; and {more} more" if more > 0 else "")
        raise UserInputError(f"pipeline {pipeline.name!r} is invalid: {text}", field="pipeline")
