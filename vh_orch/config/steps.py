"""valohai.yaml through the valohai-yaml library: steps, parameter values, inputs, commands.

Nothing here parses YAML by hand; it turns what a user typed on the command line into
validated values for a `valohai_yaml` Step, or a `UserInputError` that names the field.

valohai.yaml is read the way valohai-yaml reads it (PyYAML's safe loader, YAML 1.1), with
one difference: every scalar that YAML reads as something other than text (a date, a
number, `yes`/`no`/`on`/`off`, null) remembers the text it was written as (`YamlScalar`).
That is what lets a `string` parameter whose default reads `2020-09-02` get the text
"2020-09-02" rather than a date object, and lets every refusal quote what the user wrote.
The rules, in short (tests/test_steps.py and tests/test_yaml_types.py hold the details):

- parameters: a `string` parameter takes the text as written; an `integer` takes whole
  numbers (and text that is one), a `float` takes numbers (finite ones), a `flag` takes
  booleans, 0/1 and the words true/false/yes/no/on/off; anything else is refused by name.
  The same goes for every item of `choices` and of a `multiple` parameter's default list.
  A null default (`default:` or `default: null`) means "no default".
- environment variables are text: a default written as a number, a date or yes/no is the
  text as written; a null default means "no default".
- input defaults must be URLs (text): a number or a date is refused (valohai-yaml's
  schema); a null default means "no default".
- `time-limit` (and `no-output-timeout`): whole seconds or a duration text such as
  "90m" or "1h 30m"; text that is only a number is seconds; anything else is refused.
- `image`, names and commands must be text: valohai-yaml's schema refuses the rest, and
  the message says which YAML type the value was read as and to quote it.
"""

from __future__ import annotations

import functools
import threading

import datetime as dt
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import valohai_yaml
import yaml
from valohai_yaml.commands import CommandInterpolationWarning, join_command
from valohai_yaml.excs import ValidationErrors
from valohai_yaml.objs import Config, Step
from valohai_yaml.objs.parameter import Parameter
from valohai_yaml.utils.duration import parse_duration_string

from vh_orch.bootstrap.isolation import Limits
from vh_orch.config.resources import Minimums, step_gpus, step_limits, step_minimums
from vh_orch.config.yaml_limits import check_expanded_size, check_length
from vh_orch.errors import UserInputError, about

# Valohai runs a step's commands one after another and stops at the first failure.
COMMAND_JOINER = " && "
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})
PARAMETER_TYPES = ("string", "integer", "float", "flag")
MAX_REPORTED_ERRORS = 3
MAX_MESSAGE_CHARS = 240

NULL_TAG = "tag:yaml.org,2002:null"
TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_KINDS = {
    NULL_TAG: "null",
    "tag:yaml.org,2002:bool": "boolean",
    "tag:yaml.org,2002:int": "number",
    "tag:yaml.org,2002:float": "number",
    "tag:yaml.org,2002:binary": "binary value",
}
_EXPECTED = {
    "string": "text",
    "boolean": "a boolean",
    "integer": "an integer",
    "number": "a number",
    "object": "a mapping",
    "array": "a list",
}


# --- Reading valohai.yaml -------------------------------------------------------------------------


@dataclass(frozen=True)
class YamlScalar:
    """A scalar YAML read as something other than text, with the text it was written as."""

    value: Any
    text: str
    tag: str

    @property
    def is_null(self) -> bool:
        return self.tag == NULL_TAG

    @property
    def kind(self) -> str:
        """How YAML read it, for messages: "date", "timestamp", "boolean", "number", "null"..."""
        if self.tag == TIMESTAMP_TAG:
            return "timestamp" if isinstance(self.value, dt.datetime) else "date"
        return _KINDS.get(self.tag, "value")


def flag_word(text: str) -> bool | None:
    """True or False for a flag's word (any case, surrounding blanks ignored); None if it is not one."""
    word = text.strip().lower()
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


def as_scalar(value: Any) -> YamlScalar:
    """A plain Python value as the `YamlScalar` YAML would have made of it (for callers without the text)."""
    if value is None:
        return YamlScalar(None, "null", NULL_TAG)
    if isinstance(value, bool):
        return YamlScalar(value, str(value).lower(), "tag:yaml.org,2002:bool")
    if isinstance(value, int):
        return YamlScalar(value, str(value), "tag:yaml.org,2002:int")
    if isinstance(value, float):
        return YamlScalar(value, str(value), "tag:yaml.org,2002:float")
    if isinstance(value, (dt.date, dt.datetime)):
        return YamlScalar(value, value.isoformat(), TIMESTAMP_TAG)
    return YamlScalar(value, str(value), "tag:vh-orch:unknown")


class _TextKeepingLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a scalar that is not text comes back as a `YamlScalar`."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        data = super().construct_object(node, deep=deep)
        if isinstance(node, yaml.ScalarNode) and not isinstance(data, str):
            return YamlScalar(data, node.value, node.tag)
        return data

    def construct_yaml_timestamp(self, node: yaml.Node) -> Any:  # type: ignore[override]
        # `2020-13-45` matches YAML's timestamp pattern but is no date: PyYAML would raise a
        # bare ValueError. It can only have been meant as text.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            return self.construct_scalar(node)  # type: ignore[arg-type]


_TextKeepingLoader.add_constructor(TIMESTAMP_TAG, _TextKeepingLoader.construct_yaml_timestamp)


def load_yaml(text: str, source: str = "valohai.yaml") -> Any:
    """The document with `YamlScalar`s in it; a syntax error becomes a one-line UserInputError, and so
    does a document past the bounds of config/yaml_limits.py (checked before it is constructed)."""
    check_length(text, source)
    loader = _TextKeepingLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = ", ".join(str(p) for p in (exc.context, exc.problem) if p) or "syntax error"
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise UserInputError(f"{source} is not valid YAML: {_one_line(detail)}{where}") from None
    except (yaml.YAMLError, ValueError, TypeError, RecursionError) as exc:
        raise UserInputError(f"{source} is not valid YAML: {_one_line(str(exc)) or type(exc).__name__}") from None
    finally:
        loader.dispose()


def plain(data: Any, _memo: dict[int, Any] | None = None) -> Any:
    """The document as `yaml.safe_load` returns it: every `YamlScalar` replaced by its value."""
    memo = {} if _memo is None else _memo
    if isinstance(data, YamlScalar):
        return data.value
    if id(data) in memo:  # aliases stay shared, and a recursive document stays finite
        return memo[id(data)]
    if isinstance(data, dict):
        out_dict: dict[Any, Any] = {}
        memo[id(data)] = out_dict
        for key, value in data.items():
            out_dict[plain(key, memo)] = plain(value, memo)
        return out_dict
    if isinstance(data, list):
        out_list: list[Any] = []
        memo[id(data)] = out_list
        out_list.extend(plain(item, memo) for item in data)
        return out_list
    if isinstance(data, tuple):
        return tuple(plain(item, memo) for item in data)
    if isinstance(data, (set, frozenset)):
        return {plain(item, memo) for item in data}
    return data


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --- Values from valohai.yaml as the types the step declares -------------------------------------


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def coerce_parameter_value(name: str, type_: str, raw: Any, what: str = "default") -> Any:
    """One value valohai.yaml gives a parameter (a default, an item of one, a choice), as its type.

    `raw` is what `load_yaml` produced: text, a `YamlScalar`, a list or a mapping (plain
    Python values are accepted too). Refusals name the parameter and say what to write.
    """
    prefix = f"parameter {name!r}: {what}"
    if isinstance(raw, (dict, set, frozenset)):
        raise UserInputError(f"{prefix} is a YAML mapping, but a parameter value is one value")
    if isinstance(raw, (list, tuple)):
        raise UserInputError(f"{prefix} is a list inside a list, but a parameter value is one value")
    if isinstance(raw, str):
        return _coerce_text(prefix, type_, raw)
    scalar = raw if isinstance(raw, YamlScalar) else as_scalar(raw)
    if scalar.is_null:
        raise UserInputError(f"{prefix} is empty (null): write a value or remove it")
    value = scalar.value
    if type_ == "string":
        return scalar.text
    if type_ == "integer" and type(value) is int:
        return value
    if type_ == "float" and type(value) in (int, float):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise UserInputError(f"{prefix} {scalar.text} is not a finite number: write a number")
        return number
    if type_ == "flag":
        if type(value) is bool:
            return value
        if type(value) is int and value in (0, 1):
            return bool(value)
    if type_ == "integer":
        fix = "write a whole number"
        if type(value) is float and math.isfinite(value) and value.is_integer():
            fix += f", e.g. {int(value)}"
    elif type_ == "float":
        fix = "write a number"
    elif type_ == "flag":
        fix = "write true or false"
    else:  # an unknown type is valohai-yaml's schema's to refuse; keep the value
        return value
    shown = f"YAML {scalar.kind}"
    if type(value) is float:
        shown = "decimal number"
    elif type_ == "flag" and type(value) is int:
        shown = "number other than 0 or 1"
    raise UserInputError(f"{prefix} {scalar.text} is a {shown} but the parameter is {_article(type_)}: {fix}")


def _coerce_text(prefix: str, type_: str, text: str) -> Any:
    if type_ == "flag":
        if (flag := flag_word(text)) is not None:
            return flag
        raise UserInputError(f"{prefix} {text!r} is not a flag value: write true or false")
    if type_ == "integer":
        try:
            return int(text, 10)
        except ValueError:
            raise UserInputError(f"{prefix} {text!r} is not an integer: write a whole number") from None
    if type_ == "float":
        try:
            number = float(text)
        except ValueError:
            raise UserInputError(f"{prefix} {text!r} is not a floating-point number: write a number") from None
        if not math.isfinite(number):
            raise UserInputError(f"{prefix} {text!r} is not a finite number: write a number")
        return number
    return text


def coerce_parameter_default(name: str, type_: str, multiple: bool, raw: Any) -> Any:
    """A parameter's valohai.yaml `default` as its type: one value, a list (multiple), or None (no default)."""
    if raw is None or (isinstance(raw, YamlScalar) and raw.is_null):
        return None
    if isinstance(raw, (list, tuple)):
        if not multiple:
            raise UserInputError(
                f"parameter {name!r}: default is a list but the parameter is not `multiple`: give one value"
            )
        return [coerce_parameter_value(name, type_, item, "default item") for item in raw]
    value = coerce_parameter_value(name, type_, raw, "default")
    return [value] if multiple else value


def coerce_parameter_choices(name: str, type_: str, raw: Any) -> list[Any] | None:
    """A parameter's `choices` as its type (None: leave them to valohai-yaml, e.g. for flags)."""
    if type_ == "flag" or not isinstance(raw, (list, tuple)):
        return None
    return [coerce_parameter_value(name, type_, item, "choice") for item in raw]


def coerce_environment_default(raw: Any) -> Any:
    """An environment variable's default is text: a number, date or yes/no as written; null is none.

    A list or a mapping is returned unchanged, for valohai-yaml's schema to refuse.
    """
    if isinstance(raw, YamlScalar):
        return None if raw.is_null else raw.text
    return raw


_DURATION_FIX = "write whole seconds (e.g. 3600) or a duration text such as '90m' or '1h 30m'"
_NUMBER_RE = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def coerce_duration(key: str, raw: Any) -> Any:
    """`time-limit` / `no-output-timeout` in a form valohai-yaml parses: seconds (int) or a duration text.

    None means "not set" (null, empty text); 0 is valohai-yaml's "no limit". Text that is only
    a number is seconds. Anything else that is no positive duration is refused; a list or a
    mapping is returned unchanged for valohai-yaml's schema to refuse.
    """
    if isinstance(raw, YamlScalar):
        if raw.is_null:
            return None
        if type(raw.value) is int and raw.value >= 0:
            return raw.value
        problem = "is negative" if type(raw.value) is int else f"is a YAML {raw.kind}, not a duration"
        if type(raw.value) is float:
            problem = "is not a whole number of seconds"
        raise UserInputError(f"{key} {raw.text} {problem}: {_DURATION_FIX}")
    if not isinstance(raw, str):
        return raw  # type: ignore[no-any-return]
    text = raw.strip().lower()
    if not text:
        return None
    if text.isdigit():
        return int(text)
    if _NUMBER_RE.fullmatch(text):
        text += "s"
    problem = "is not a duration"
    if "-" in text:
        problem = "is negative"
    else:
        try:
            parse_duration_string(text)
            return text
        except (ValueError, IndexError):
            pass
    raise UserInputError(f"{key} {raw!r} {problem}: {_DURATION_FIX}")


# --- Preparing the document for valohai-yaml -----------------------------------------------------


@dataclass
class LoadedConfig:
    """A parsed valohai.yaml, and per step the problems that refuse running it (but not the others)."""

    config: Config
    problems: dict[str, list[UserInputError]] = field(default_factory=dict)


def _is_multiple(parameter: dict[str, Any]) -> bool:
    multiple = parameter.get("multiple")
    return isinstance(multiple, str) and multiple.lower() not in ("", "none")


def _pairs(wrapped: Any, prepared: Any) -> list[tuple[dict[Any, Any], dict[Any, Any]]]:
    """Matching mappings of two lists of the same shape (the raw document and its plain copy)."""
    if not isinstance(wrapped, list) or not isinstance(prepared, list):
        return []
    return [(w, p) for w, p in zip(wrapped, prepared) if isinstance(w, dict) and isinstance(p, dict)]


def _prepare_step(raw: dict[Any, Any], step: dict[Any, Any]) -> list[UserInputError]:
    """Coerce one step's values in `step` (a plain copy of `raw`); return what refuses running it."""
    problems: list[UserInputError] = []
    for raw_var, var in _pairs(raw.get("environment-variables"), step.get("environment-variables")):
        if isinstance(raw_var.get("default"), YamlScalar):
            default = coerce_environment_default(raw_var["default"])
            if default is None:
                var.pop("default", None)
            else:
                var["default"] = default
    for raw_input, input_ in _pairs(raw.get("inputs"), step.get("inputs")):
        default = raw_input.get("default")
        if isinstance(default, YamlScalar) and default.is_null:
            input_.pop("default", None)
    for key in ("time-limit", "no-output-timeout"):
        if key in raw:
            try:
                duration = coerce_duration(key, raw[key])
            except UserInputError as exc:
                problems.append(exc)
                step.pop(key, None)
                continue
            if duration is None:
                step.pop(key, None)
            else:
                step[key] = duration
    for raw_param, param in _pairs(raw.get("parameters"), step.get("parameters")):
        name, type_ = param.get("name"), param.get("type", "string")
        if not isinstance(name, str) or type_ not in PARAMETER_TYPES:
            continue  # the schema says what is wrong
        if type_ == "flag" and _is_multiple(param):
            problems.append(UserInputError(f"parameter {name!r}: a flag cannot be `multiple`: remove "
                                           f"`multiple: {param['multiple']}`", field="parameters"))
            param.pop("multiple", None)  # valohai-yaml would refuse the whole file without naming it
        try:
            if "default" in raw_param:
                default = coerce_parameter_default(name, type_, _is_multiple(param), raw_param["default"])
                if default is None:
                    param.pop("default", None)
                else:
                    param["default"] = default
            choices = coerce_parameter_choices(name, type_, raw_param.get("choices"))
            if choices is not None:
                param["choices"] = choices
        except UserInputError as exc:
            exc.field = exc.field or "parameters"
            problems.append(exc)
            param.pop("default", None)
    return problems


def _prepare(document: Any) -> tuple[Any, dict[int, list[str]]]:
    """The plain document with the steps' values coerced, and problems keyed by id() of each step mapping."""
    prepared = plain(document)
    problems: dict[int, list[UserInputError]] = {}
    for raw_item, item in _pairs(document, prepared):
        raw_step, step = raw_item.get("step"), item.get("step")
        if isinstance(raw_step, dict) and isinstance(step, dict) and id(step) not in problems:
            problems[id(step)] = _prepare_step(raw_step, step)
    return prepared, problems


def _at(document: Any, path: list[Any]) -> Any:
    node = document
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
    return node


_ITEM_LABELS = {"parameters": "parameter", "inputs": "input", "environment-variables": "environment variable"}


def _names(path: list[Any], document: Any) -> str:
    """` (step 'train', parameter 'lr')` for a schema error's path, when the items have names."""
    parts = []
    if len(path) >= 2 and isinstance(path[0], int) and isinstance(path[1], str):
        item = _at(document, path[:2])
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            parts.append(f"{path[1]} {item['name']!r}")
        if len(path) >= 4 and path[2] in _ITEM_LABELS and isinstance(path[3], int):
            sub = _at(document, path[:4])
            if isinstance(sub, dict) and isinstance(sub.get("name"), str):
                parts.append(f"{_ITEM_LABELS[path[2]]} {sub['name']!r}")
    return f" ({', '.join(parts)})" if parts else ""


def _expected_types(error: Any) -> list[str]:
    if error.validator == "type":
        value = error.validator_value
        return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]
    if error.validator in ("oneOf", "anyOf"):
        return [s["type"] for s in error.validator_value if isinstance(s, dict) and isinstance(s.get("type"), str)]
    return []


def _is_input_default(path: list[Any]) -> bool:
    tail = [p for p in path[2:] if not isinstance(p, int)]
    return tail == ["inputs", "default"]


def _wanted(expected: list[str]) -> str:
    return " or ".join(_EXPECTED.get(t, t) for t in expected)


def _describe_validation_error(error: Any, document: Any) -> str:
    """One schema error as `path: what is wrong (step 'x', parameter 'y')`, quoting what the user wrote."""
    path = list(getattr(error, "absolute_path", None) or getattr(error, "path", None) or [])
    message = _one_line(getattr(error, "message", str(error)))
    node = _at(document, path) if path else document
    expected = _expected_types(error)
    if isinstance(node, list) and error.validator in ("oneOf", "anyOf"):
        # A list of texts (a command, an input's URLs) with something else in it: point at the item.
        for index, item in enumerate(node):
            if not isinstance(item, str):
                path, node = [*path, index], item
                break
    own_type = "object" if isinstance(node, dict) else "array" if isinstance(node, list) else None
    if own_type and expected and own_type not in expected:
        message = f"is a YAML {'mapping' if own_type == 'object' else 'list'}, not {_wanted(expected)}"
        if not path:
            message = f"the file {message}: valohai.yaml is a list of `- step:` (and other) items"
    elif isinstance(node, YamlScalar) and ("string" in expected and _is_input_default(path)):
        message = f"{node.text} is a YAML {node.kind}, not a URL: write the input's URL (https://, s3://, datum://...)"
    elif isinstance(node, YamlScalar) and "string" in expected:
        message = "is empty: write a value" if node.is_null else (
            f"{node.text} is a YAML {node.kind}, not text: quote it in valohai.yaml"
        )
    elif isinstance(node, YamlScalar) and expected:
        message = f"is empty, but {_wanted(expected)} is expected" if node.is_null else (
            f"{node.text} is a YAML {node.kind}, not {_wanted(expected)}"
        )
        if node.is_null and len(path) == 2 and isinstance(path[0], int):
            message += f" (are its keys indented under `- {path[1]}:`?)"
    elif isinstance(node, YamlScalar) and error.validator == "enum":
        choices = ", ".join(str(v) for v in error.validator_value)
        message = f"{node.text} is a YAML {node.kind}, not one of: {choices}"
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    where = ".".join(str(p) for p in path)
    named = _names(path, document)
    return f"{where}: {message}{named}" if where else f"{message}{named}"


_LOADING = threading.Lock()


def load_config(text: str, source: str = "valohai.yaml") -> LoadedConfig:
    """Read, coerce and validate a valohai.yaml; a problem with the file is one readable UserInputError.
    Kept for the last few texts: a pipeline checks and starts each node from its commit's one file, and
    every execution's runner reads its step from it (a parse takes a tenth of a second or more), so
    callers must not change what they get. One thread parses at a time: the runners of a task's first
    batch, started together, wait for the first one's parse instead of each making its own."""
    with _LOADING:
        return _load_config(text, source)


@functools.lru_cache(maxsize=16)
def _load_config(text: str, source: str) -> LoadedConfig:
    document = load_yaml(text, source)
    prepared, step_problems = _prepare(document)
    if prepared is None:  # an empty file
        return LoadedConfig(Config())
    if not isinstance(prepared, (list, dict)):
        kind = document.kind if isinstance(document, YamlScalar) else "text"
        raise UserInputError(f"{source} is invalid: it is a single {kind}, not a list of steps")
    try:
        errors = valohai_yaml.validate(prepared, raise_exc=False)
    except RecursionError:
        raise UserInputError(f"{source} is invalid: it refers to itself (a recursive YAML alias)") from None
    if errors:
        details = [_describe_validation_error(e, document) for e in errors]
        more = len(details) - MAX_REPORTED_ERRORS
        text_ = "; ".join(details[:MAX_REPORTED_ERRORS]) + (f"; and {more} more" if more > 0 else "")
        raise UserInputError(f"{source} is invalid: {text_}")
    try:
        config = Config.parse(prepared)
    except Exception as exc:  # valohai-yaml raises plain errors (ValueError, TypeError) for some shapes
        raise UserInputError(f"{source} is invalid: {_one_line(str(exc)) or type(exc).__name__}") from None
    problems = {
        name: step_problems.get(id(step._original_data), [])  # noqa: SLF001 (valohai-yaml keeps the mapping)
        for name, step in config.steps.items()
    }
    return LoadedConfig(config, {name: found for name, found in problems.items() if found})


def parse_config(text: str, source: str = "valohai.yaml") -> Config:
    """Parse and validate a valohai.yaml; every problem becomes one readable UserInputError."""
    return load_config(text, source).config


def get_step(config: Config, name: str) -> Step:
    step = config.steps.get(name)
    if step is None:
        known = ", ".join(sorted(config.steps)) or "none"
        raise UserInputError(f"unknown step {name!r}; valohai.yaml defines: {known}")
    return step


# --- Values given for a run: text from the command line, typed values from the API -----------------

# Per name, the values given in order (several: a `multiple` parameter, an input's URLs).
Given = Mapping[str, Sequence[Any]]


def given_text(value: Any) -> str:
    """A given value as the text a command line gives: valohai-yaml checks text, so a value typed in
    JSON and the same value typed on a command line get the same answer (true/false for booleans,
    every digit of a float)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def parse_assignments(pairs: list[str], what: str) -> dict[str, list[str]]:
    """The command line's `NAME=VALUE` strings (repeatable) into {name: [values]}, in order."""
    out: dict[str, list[str]] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserInputError(f"{what} {pair!r} is not of the form NAME=VALUE")
        out.setdefault(name, []).append(value)
    return out


def _cast_flag(param: Parameter, raw: str) -> bool:
    if (flag := flag_word(raw)) is not None:
        return flag
    raise UserInputError(f"parameter {param.name!r}: {raw!r} is not a flag value (true or false)")


def resolve_parameters(step: Step, given: Given) -> dict[str, Any]:
    """Validated, typed values for every parameter that has one (given or default)."""
    unknown = sorted(set(given) - set(step.parameters))
    if unknown:
        known = ", ".join(step.parameters) or "none"
        raise UserInputError(f"unknown parameter {unknown[0]!r} for step {step.name!r}; it has: {known}")
    values: dict[str, Any] = {}
    for name, param in step.parameters.items():
        if name in given:
            raw_values = [given_text(v) for v in given[name]]
            if not param.multiple and len(raw_values) > 1:
                raise UserInputError(f"parameter {name!r} takes one value, got {len(raw_values)}")
            if param.type == "flag":
                values[name] = _cast_flag(param, raw_values[0])
                continue
            value: Any = raw_values if param.multiple else raw_values[0]
            values[name] = _validate(param, value)
        elif param.default is not None and param.default != []:
            if param.type == "flag":
                values[name] = bool(param.default)
            else:
                values[name] = _validate(param, param.default, "default ")
        elif param.type == "flag":
            continue
        elif not param.optional:
            raise UserInputError(f"parameter {name!r} is required by step {step.name!r}: pass -p {name}=VALUE")
    return values


def _validate(param: Parameter, value: Any, what: str = "") -> Any:
    try:
        validated = param.validate(value)
    except ValidationErrors as exc:
        details = "; ".join(str(e) for e in exc.errors)
        raise UserInputError(f"parameter {param.name!r}: {what}{details}") from None
    except Exception as exc:  # valohai-yaml raises plain errors for nested lists etc.
        raise UserInputError(f"parameter {param.name!r}: {what}{exc}") from None
    if param.type == "float":
        for number in validated if isinstance(validated, list) else [validated]:
            if isinstance(number, float) and not math.isfinite(number):
                raise UserInputError(f"parameter {param.name!r}: {what}{number} is not a finite number")
    return validated


def check_input_names(step: Step, given: Mapping[str, Sequence[str]]) -> None:
    unknown = sorted(set(given) - set(step.inputs))
    if unknown:
        known = ", ".join(step.inputs) or "none"
        raise UserInputError(f"unknown input {unknown[0]!r} for step {step.name!r}; it has: {known}")


def resolve_input_urls(step: Step, given: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The URLs for every input: those given on the command line, else the defaults."""
    check_input_names(step, given)
    urls: dict[str, list[str]] = {}
    for name, inp in step.inputs.items():
        if "/" in name or name in (".", "..") or "\0" in name:
            raise UserInputError(f"input name {name!r} in valohai.yaml would leave the inputs folder")
        chosen = None if name not in given else list(given[name])
        if chosen is None and inp.default:
            chosen = [inp.default] if isinstance(inp.default, str) else [str(d) for d in inp.default]
        chosen = [u for u in (chosen or []) if u.strip()]
        if not chosen:
            if inp.optional:
                continue
            raise UserInputError(f"input {name!r} is required by step {step.name!r}: pass -i {name}=URL")
        urls[name] = chosen
    return urls


def resolve_environment_variables(step: Step, given: Given, provided: frozenset[str] = frozenset()) -> dict[str, str]:
    """The step's variables with the values given; provided: names the execution gets from elsewhere
    (the project's secrets), which a required variable may come from."""
    values: dict[str, str] = {}
    for name, ev in step.environment_variables.items():
        if not name or "=" in name or "\0" in name:
            raise UserInputError(f"environment variable name {name!r} in valohai.yaml is not valid (no '=')")
        if ev.default is not None:
            values[name] = ev.default if isinstance(ev.default, str) else str(ev.default)
    for name, vals in given.items():
        if not ENV_NAME_RE.match(name):
            raise UserInputError(f"environment variable name {name!r} is not valid (letters, digits, _)")
        values[name] = given_text(vals[-1])
    for name, ev in step.environment_variables.items():
        if not ev.optional and name not in values and name not in provided:
            raise UserInputError(
                f"environment variable {name!r} is required by step {step.name!r}: pass -e {name}=VALUE"
            )
    for name, value in values.items():
        if "\0" in value:
            raise UserInputError(f"environment variable {name!r}: its value contains a NUL character")
    return values


def _pass_as_template(param: Parameter, value: Any) -> str | None:
    if param.type == "flag" and (param.pass_true_as or param.pass_false_as):
        return param.pass_true_as if value else param.pass_false_as
    return param.pass_as or param.default_pass_as


def build_command(step: Step, parameters: dict[str, Any]) -> str:
    """The step's command with parameters interpolated and quoted exactly as Valohai does."""
    for name, value in parameters.items():
        param = step.parameters[name]
        try:
            param.format_cli(value)
        except Exception as exc:  # a `pass-as` naming {vlue}, {value.real}, or with an unpaired brace
            template = _pass_as_template(param, value)
            raise UserInputError(
                f"parameter {name!r}: pass-as {template!r} cannot be filled in ({type(exc).__name__}: "
                f"{_one_line(str(exc))}): use {{name}}, {{value}} or {{v}}, and double a brace meant literally",
                field="parameters") from None
    with warnings.catch_warnings():
        warnings.simplefilter("error", CommandInterpolationWarning)
        try:
            command = join_command(step.build_command(parameters), COMMAND_JOINER)
        except Exception as exc:
            raise UserInputError(f"step {step.name!r}: the command cannot be built: {_one_line(str(exc))}",
                                 field="step") from None
    if "\0" in command:
        raise UserInputError(f"step {step.name!r}: the command contains a NUL character", field="step")
    return command


class StepWithout:
    """A step seen without some of its parameters (those a task varies)."""

    def __init__(self, step: Step, left_out: set[str]) -> None:
        self.name = step.name
        self.parameters = {n: p for n, p in step.parameters.items() if n not in left_out}


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
    limits: Limits = field(default_factory=Limits)  # what its container is held to (resources:)
    minimums: Minimums = field(default_factory=Minimums)  # what its machine must have (resources:)
    gpus: int | None = None  # the GPUs its resources.devices asks for; None: it names none


def resolve_step(
    config_text: str,
    step_name: str,
    parameters: Given,
    inputs: Mapping[str, Sequence[str]],
    environment_variables: Given,
    vary: frozenset[str] = frozenset(),
    inputs_later: bool = False,
    provided_variables: frozenset[str] = frozenset(),
) -> ResolvedStep:
    """The step with the values given for it checked and typed (the defaults filled in), its inputs' URLs
    and its command. vary: parameters a task sets per child (or a pipeline node gets when it starts); left
    out here, and so is the command (built per child). inputs_later: the inputs are resolved when the
    work starts (a pipeline node's come from its upstream nodes), so none is resolved here."""
    with about("commit"):  # the commit's valohai.yaml
        loaded = load_config(config_text)
    with about("step"):
        step = get_step(loaded.config, step_name)
    problems = loaded.problems.get(step.name)
    if problems:
        raise UserInputError("; ".join(map(str, problems)), field=problems[0].field)
    with about("parameters"):
        if vary:
            params = resolve_parameters(StepWithout(step, set(vary)), parameters)  # type: ignore[arg-type]
        else:
            params = resolve_parameters(step, parameters)
    with about("inputs"):
        if inputs_later:  # their URLs wait, but a name the step lacks is wrong now
            check_input_names(step, inputs)
        urls = {} if inputs_later else resolve_input_urls(step, inputs)
    with about("environment_variables"):
        variables = resolve_environment_variables(step, environment_variables, provided_variables)
    command = "" if vary else build_command(step, params)
    with about("step"):
        limits = step_limits(step)
        minimums = step_minimums(step, limits)
        gpus = step_gpus(step)
    return ResolvedStep(
        step=step,
        parameters=params,
        inputs=urls,
        environment_variables=variables,
        command=command,
        time_limit_s=step.time_limit.total_seconds() if step.time_limit else None,
        image=step.image or None,
        environment=step.environment,
        limits=limits,
        minimums=minimums,
        gpus=gpus,
    )
