"""valohai.yaml through the valohai-yaml library: steps, parameter values, inputs, commands.

Nothing here parses YAML by hand; it turns what a user typed on the command line into
validated values for a `valohai_yaml` Step, or a `UserInputError` that names the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import valohai_yaml
from valohai_yaml.commands import join_command
from valohai_yaml.excs import ValidationErrors
from valohai_yaml.objs import Config, Step
from valohai_yaml.objs.parameter import Parameter

from vh_orch.errors import UserInputError

# Valohai runs a step's commands one after another and stops at the first failure.
COMMAND_JOINER = " && "
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})


def parse_config(text: str, source: str = "valohai.yaml") -> Config:
    """Parse and validate a valohai.yaml; every problem becomes one readable UserInputError."""
    try:
        errors = valohai_yaml.validate(text, raise_exc=False)
    except Exception as exc:  # YAML syntax errors surface here
        raise UserInputError(f"{source} is not valid YAML: {exc}") from None
    if errors:
        details = "; ".join(_describe_validation_error(e) for e in errors)
        raise UserInputError(f"{source} is invalid: {details}")
    try:
        return valohai_yaml.parse(text)
    except Exception as exc:
        raise UserInputError(f"{source} is invalid: {exc}") from None


def _describe_validation_error(error: Any) -> str:
    path = ".".join(str(p) for p in getattr(error, "path", []) or [])
    message = getattr(error, "message", str(error))
    return f"{path}: {message}" if path else message


def get_step(config: Config, name: str) -> Step:
    step = config.steps.get(name)
    if step is None:
        known = ", ".join(sorted(config.steps)) or "none"
        raise UserInputError(f"unknown step {name!r}; valohai.yaml defines: {known}")
    return step


def parse_assignments(pairs: list[str], what: str) -> dict[str, list[str]]:
    """`NAME=VALUE` strings (repeatable) into {name: [values]}, in order."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserInputError(f"{what} {pair!r} is not of the form NAME=VALUE")
        out.setdefault(name, []).append(value)
    return out


def _cast_flag(param: Parameter, raw: str) -> bool:
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise UserInputError(f"parameter {param.name!r}: {raw!r} is not a flag value (true or false)")


def resolve_parameters(step: Step, given: dict[str, list[str]]) -> dict[str, Any]:
    """Validated, typed values for every parameter that has one (given or default)."""
    unknown = sorted(set(given) - set(step.parameters))
    if unknown:
        known = ", ".join(step.parameters) or "none"
        raise UserInputError(f"unknown parameter {unknown[0]!r} for step {step.name!r}; it has: {known}")
    values: dict[str, Any] = {}
    for name, param in step.parameters.items():
        if name in given:
            raw_values = given[name]
            if not param.multiple and len(raw_values) > 1:
                raise UserInputError(f"parameter {name!r} takes one value, got {len(raw_values)}")
            if param.type == "flag":
                values[name] = _cast_flag(param, raw_values[0])
                continue
            value: Any = raw_values if param.multiple else raw_values[0]
            values[name] = _validate(param, value)
        elif param.default is not None and param.default != []:
            values[name] = param.default if param.type == "flag" else _validate(param, param.default)
        elif param.type == "flag":
            continue
        elif not param.optional:
            raise UserInputError(f"parameter {name!r} is required by step {step.name!r}: pass -p {name}=VALUE")
    return values


def _validate(param: Parameter, value: Any) -> Any:
    try:
        return param.validate(value)
    except ValidationErrors as exc:
        details = "; ".join(str(e) for e in exc.errors)
        raise UserInputError(f"parameter {param.name!r}: {details}") from None
    except Exception as exc:  # valohai-yaml raises plain errors for nested lists etc.
        raise UserInputError(f"parameter {param.name!r}: {exc}") from None


def resolve_input_urls(step: Step, given: dict[str, list[str]]) -> dict[str, list[str]]:
    """The URLs for every input: those given on the command line, else the defaults."""
    unknown = sorted(set(given) - set(step.inputs))
    if unknown:
        known = ", ".join(step.inputs) or "none"
        raise UserInputError(f"unknown input {unknown[0]!r} for step {step.name!r}; it has: {known}")
    urls: dict[str, list[str]] = {}
    for name, inp in step.inputs.items():
        if "/" in name or name in (".", "..") or "\0" in name:
            raise UserInputError(f"input name {name!r} in valohai.yaml would leave the inputs folder")
        chosen = given.get(name)
        if chosen is None and inp.default:
            chosen = [inp.default] if isinstance(inp.default, str) else [str(d) for d in inp.default]
        chosen = [u for u in (chosen or []) if u.strip()]
        if not chosen:
            if inp.optional:
                continue
            raise UserInputError(f"input {name!r} is required by step {step.name!r}: pass -i {name}=URL")
        urls[name] = chosen
    return urls


def resolve_environment_variables(step: Step, given: dict[str, list[str]]) -> dict[str, str]:
    values = {name: str(ev.default) for name, ev in step.environment_variables.items() if ev.default is not None}
    for name, vals in given.items():
        if not ENV_NAME_RE.match(name):
            raise UserInputError(f"environment variable name {name!r} is not valid (letters, digits, _)")
        values[name] = vals[-1]
    return values


def build_command(step: Step, parameters: dict[str, Any]) -> str:
    """The step's command with parameters interpolated and quoted exactly as Valohai does."""
    return join_command(step.build_command(parameters), COMMAND_JOINER)


@dataclass(frozen=True)
class ResolvedStep:
    step: Step
    parameters: dict[str, Any]
    inputs: dict[str, list[str]]
    environment_variables: dict[str, str]
    command: str
    time_limit_s: float | None
    image: str | None
    environment: str | None = field(default=None)


def resolve_step(
    config_text: str,
    step_name: str,
    parameters: list[str],
    inputs: list[str],
    environment_variables: list[str],
) -> ResolvedStep:
    config = parse_config(config_text)
    step = get_step(config, step_name)
    params = resolve_parameters(step, parse_assignments(parameters, "parameter"))
    return ResolvedStep(
        step=step,
        parameters=params,
        inputs=resolve_input_urls(step, parse_assignments(inputs, "input")),
        environment_variables=resolve_environment_variables(
            step, parse_assignments(environment_variables, "environment variable")
        ),
        command=build_command(step, params),
        time_limit_s=step.time_limit.total_seconds() if step.time_limit else None,
        image=step.image or None,
        environment=step.environment,
    )
