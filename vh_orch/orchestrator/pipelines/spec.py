"""What a pipeline is: its checked definition (PipelineSpec), as stored in the pipeline's row.

There is one way in: the payload valohai-yaml's PipelineConverter makes, which is what `vh pipeline
run` posts (`POST /api/v0/pipelines/`) and what `vh-orch pipeline run` makes from valohai.yaml
(definition.py). `parse_payload` reads it, bounded, and refuses what cannot run, naming it:
- nodes: `execution`, `task` (a step with a task blueprint's keys in its template) and `mimic` (the
  client's `--reuse`: a node of an earlier pipeline whose work this one takes over); node keys come
  hyphenated (the converter) or underscored (Valohai's web UI); `deployment` nodes are refused, for
  vh-orch has no deployments;
- edges: `{source_node, source_type, source_key, target_node, target_type, target_key}` (or the yaml's
  `{source: "node.type.key", target: ...}`); plural types (`outputs`, `inputs`...) are their singular
  (valohai-cli #354); the graph must have no cycle;
- pipeline parameters: `{name: {config: {targets}, expression}}`; their values are written into the
  target nodes' templates here, so that the stored nodes say what they run.

Semantics (README "Pipelines"): a node starts when every node it depends on is complete; `output` edges
carry the files whose names match a glob, `input` edges the source's inputs, `parameter` and
`metadata` edges a value, `environment-variable` edges a variable, `dependency` edges only order.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from vh_orch.errors import UserInputError

NODE_TYPES = ("execution", "task", "mimic")
ON_ERROR = ("stop-all", "stop-next", "continue", "retry")
EDGE_MERGE_MODES = ("replace", "append")
ACTION_WHEN = ("node-starting", "node-complete", "node-error")
ACTION_THEN = ("stop-pipeline", "error-pipeline", "require-approval", "noop")
SOURCE_TYPES = ("output", "input", "parameter", "metadata", "environment-variable", "dependency")
TARGET_TYPES = ("input", "parameter", "environment-variable", "dependency")
PLURAL_TYPES = {"outputs": "output", "inputs": "input", "parameters": "parameter",
                "environment-variables": "environment-variable", "dependencies": "dependency",
                "environment_variable": "environment-variable", "environment_variables": "environment-variable"}
CONDITION_OPERATORS = ("<=", ">=", "==", "!=", "<", ">")

# Bounds on what one definition may hold (the API's body limit bounds the bytes).
MAX_NODES = 500
MAX_EDGES = 5_000
MAX_ACTIONS = 50
MAX_NAME_CHARS = 200
MAX_CONDITION_CHARS = 500

_CONDITION = re.compile(r"^\s*(metadata|parameter)\.([^\s<>=!]{1,200})\s*(<=|>=|==|!=|<|>)\s*(.{1,200}?)\s*$")
# A bare key (`a`, `metadata.done`, `parameter.flag`): the value is there and true (not 0, "", false).
_TRUTHY = re.compile(r"^\s*(?:(metadata|parameter)\.)?([A-Za-z_][A-Za-z0-9_.\-]{0,199})\s*$")
# Keys of a node's template that vh-orch reads, with the spellings clients send.
_TEMPLATE_ALIASES = {"environment-variables": "environment_variables", "runtime-config": "runtime_config",
                     "maximum-queued-executions": "maximum_queued_executions", "on-child-error": "on_child_error",
                     "stop-expression": "stop_expression"}


@dataclass(frozen=True)
class Condition:
    """`metadata.KEY OP VALUE` or `parameter.NAME OP VALUE` (an action's `if`)."""

    source: str  # metadata | parameter
    key: str
    op: str  # one of CONDITION_OPERATORS, or "is" (a bare key: its value is true)
    value: Any  # a number, a bool, or text

    def holds(self, actual: Any) -> bool:
        """Whether the condition holds for this value (False when the key is missing or the types differ)."""
        if actual is None:
            return False
        if self.op == "is":
            return bool(actual)
        try:
            if self.op == "==":
                return bool(actual == self.value)
            if self.op == "!=":
                return bool(actual != self.value)
            if isinstance(actual, bool) or isinstance(self.value, bool):
                return False
            compare = {"<": actual < self.value, "<=": actual <= self.value,
                       ">": actual > self.value, ">=": actual >= self.value}
            return bool(compare[self.op])
        except TypeError:
            return False


@dataclass(frozen=True)
class Action:
    """When the node reaches any of `when`, and every condition holds, do each of `then`."""

    when: tuple[str, ...]
    conditions: tuple[Condition, ...]
    then: tuple[str, ...]


@dataclass(frozen=True)
class Edge:
    source_node: str
    source_type: str
    source_key: str
    target_node: str
    target_type: str
    target_key: str


@dataclass(frozen=True)
class Node:
    """A node. `template` (execution and task nodes) says what it runs: `step`, `commit` (None: the
    pipeline's), `image`, `command`, `parameters` {name: value, or a task's {style, rules} variant},
    `inputs` {name: [url, ...]}, `environment_variables`, `environment`, `priority`, and for a task
    node `task` (the task body: type, parameters' variants, configuration...). A mimic node has
    `source` (a node id of an earlier pipeline) or `reuse_execution_id`."""

    name: str
    type: str
    template: dict[str, Any] = field(default_factory=dict)
    on_error: str = "stop-all"
    edge_merge_mode: str = "replace"
    actions: tuple[Action, ...] = ()
    source: int | None = None
    reuse_execution_id: int | None = None


@dataclass(frozen=True)
class PipelineSpec:
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    parameters: dict[str, Any] = field(default_factory=dict)  # pipeline parameter -> its value
    reuse_executions: bool = False

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def upstream(self, name: str) -> list[str]:
        """The nodes `name` waits for, in definition order."""
        sources = {e.source_node for e in self.edges if e.target_node == name}
        return [n.name for n in self.nodes if n.name in sources]

    def downstream(self, name: str) -> list[str]:
        """Every node that depends on `name`, directly or not, in definition order."""
        found: set[str] = set()
        todo = [name]
        while todo:
            current = todo.pop()
            for edge in self.edges:
                if edge.source_node == current and edge.target_node not in found:
                    found.add(edge.target_node)
                    todo.append(edge.target_node)
        return [n.name for n in self.nodes if n.name in found]

    def incoming(self, name: str) -> list[Edge]:
        return [e for e in self.edges if e.target_node == name]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PipelineSpec:
        nodes = tuple(
            Node(**{**n, "actions": tuple(
                Action(when=tuple(a["when"]), then=tuple(a["then"]),
                       conditions=tuple(Condition(**c) for c in a["conditions"])) for a in n.get("actions", ()))})
            for n in data["nodes"]
        )
        return cls(nodes=nodes, edges=tuple(Edge(**e) for e in data["edges"]),
                   parameters=dict(data.get("parameters") or {}), reuse_executions=bool(data.get("reuse_executions")))


# --- reading a payload ------------------------------------------------------------------------------


def parse_payload(payload: Any, known_steps: set[str] | None = None, commit: str | None = None) -> PipelineSpec:
    """Check a converted pipeline (nodes, edges, parameters, reuse_executions) into a PipelineSpec, or
    a UserInputError (field "nodes", "edges" or "parameters") that names what is wrong.
    known_steps: the steps of the pipeline's commit, to check the nodes that run from it (a node whose
    template names another `commit` is checked when it starts); commit: that commit's identifier."""
    if not isinstance(payload, dict):
        raise UserInputError("a pipeline definition must be a mapping with nodes and edges")
    raw_nodes = payload.get("nodes")
    if not isinstance(raw_nodes, list) or not raw_nodes:
        raise UserInputError("a pipeline needs a list of nodes", field="nodes")
    if len(raw_nodes) > MAX_NODES:
        raise UserInputError(f"a pipeline may have at most {MAX_NODES} nodes, not {len(raw_nodes)}", field="nodes")
    nodes = [_node(raw, index, known_steps, commit) for index, raw in enumerate(raw_nodes)]
    names = [n.name for n in nodes]
    for name in names:
        if names.count(name) > 1:
            raise UserInputError(f"two nodes are called {name!r}: node names must be unique", field="nodes")
    raw_edges = payload.get("edges") or []
    if not isinstance(raw_edges, list):
        raise UserInputError("edges must be a list", field="edges")
    if len(raw_edges) > MAX_EDGES:
        raise UserInputError(f"a pipeline may have at most {MAX_EDGES} edges, not {len(raw_edges)}", field="edges")
    edges = [_edge(raw, set(names)) for raw in raw_edges]
    _check_acyclic(names, edges)
    reuse = payload.get("reuse_executions", payload.get("reuse-executions", False))
    if not isinstance(reuse, bool):
        raise UserInputError(f"reuse_executions must be true or false, not {reuse!r}", field="reuse_executions")
    by_name = {n.name: n for n in nodes}
    values = _apply_parameters(payload.get("parameters"), by_name)
    return PipelineSpec(nodes=tuple(by_name[name] for name in names), edges=tuple(edges), parameters=values,
                        reuse_executions=reuse)


def _name(value: Any, what: str, field_: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_NAME_CHARS:
        raise UserInputError(f"{what} must be a name of 1 to {MAX_NAME_CHARS} characters, not {_short(value)}",
                             field=field_)
    return value


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _key(raw: dict[str, Any], name: str) -> Any:
    """A node key as either client spells it (`on-error` from the converter, `on_error` from the web UI)."""
    return raw.get(name, raw.get(name.replace("-", "_")))


def _node(raw: Any, index: int, known_steps: set[str] | None, commit: str | None) -> Node:
    if not isinstance(raw, dict):
        raise UserInputError(f"node {index + 1} must be a mapping, not {_short(raw)}", field="nodes")
    name = _name(raw.get("name"), f"node {index + 1}'s name", "nodes")
    where = f"node {name!r}"
    type_ = raw.get("type", "execution")
    if type_ == "deployment":
        raise UserInputError(f"{where} is a deployment node: vh-orch runs no deployments; remove the node "
                             "(and its edges) or make it an execution", field="nodes")
    if type_ not in NODE_TYPES:
        raise UserInputError(f"{where}: type {_short(type_)} is not one of {', '.join(NODE_TYPES)}", field="nodes")
    on_error = _key(raw, "on-error") or "stop-all"
    if on_error not in ON_ERROR:
        raise UserInputError(f"{where}: on-error {_short(on_error)} is not one of {', '.join(ON_ERROR)}",
                             field="nodes")
    merge = _key(raw, "edge-merge-mode") or "replace"
    if merge not in EDGE_MERGE_MODES:
        raise UserInputError(f"{where}: edge-merge-mode {_short(merge)} is not one of {', '.join(EDGE_MERGE_MODES)}",
                             field="nodes")
    actions = _actions(raw.get("actions"), where)
    if type_ == "mimic":
        source, reuse = raw.get("source"), _key(raw, "reuse-execution-id")
        for value, what in ((source, "source"), (reuse, "reuse_execution_id")):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise UserInputError(f"{where}: {what} must be an id, not {_short(value)}", field="nodes")
        if source is None and reuse is None:
            raise UserInputError(f"{where}: a mimic node needs the `source` node (or `reuse_execution_id`) whose "
                                 "work it takes over", field="nodes")
        return Node(name=name, type=type_, on_error=on_error, edge_merge_mode=merge, actions=actions,
                    source=source, reuse_execution_id=reuse)
    reuse_id = _key(raw, "reuse-execution-id")
    if reuse_id is not None:  # Valohai's manual reuse: the node stands for that execution
        if isinstance(reuse_id, bool) or not isinstance(reuse_id, int):
            raise UserInputError(f"{where}: reuse_execution_id must be an id, not {_short(reuse_id)}", field="nodes")
        return Node(name=name, type="mimic", on_error=on_error, edge_merge_mode=merge, actions=actions,
                    reuse_execution_id=reuse_id)
    template = _template(raw.get("template"), type_, where, known_steps, commit)
    return Node(name=name, type=type_, template=template, on_error=on_error, edge_merge_mode=merge, actions=actions)


def _template(raw: Any, type_: str, where: str, known_steps: set[str] | None, commit: str | None) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise UserInputError(f"{where} needs a template (its step, parameters and inputs)", field="nodes")
    raw = {_TEMPLATE_ALIASES.get(k, k): v for k, v in raw.items()}
    step = _name(raw.get("step"), f"{where}'s step", "nodes")
    node_commit = raw.get("commit")
    if node_commit is not None and not isinstance(node_commit, str):
        raise UserInputError(f"{where}: commit must be text, not {_short(node_commit)}", field="nodes")
    own = node_commit in (None, "", commit)
    if own and known_steps is not None and step not in known_steps:
        known = ", ".join(sorted(known_steps)) or "none"
        raise UserInputError(f"{where}: unknown step {step!r}; valohai.yaml defines: {known}", field="nodes")
    template: dict[str, Any] = {"step": step, "commit": None if own else node_commit}
    for key in ("image", "environment"):
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            raise UserInputError(f"{where}: {key} must be text, not {_short(value)}", field="nodes")
        template[key] = value or None
    command = raw.get("command")
    if command is not None and not isinstance(command, (str, list)):
        raise UserInputError(f"{where}: command must be text or a list of lines", field="nodes")
    template["command"] = command
    priority = raw.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise UserInputError(f"{where}: priority must be a whole number, not {_short(priority)}", field="nodes")
    template["priority"] = priority
    template["parameters"] = _parameters(raw.get("parameters"), type_, where)
    template["inputs"] = _inputs(raw.get("inputs"), where)
    template["environment_variables"] = _variables(raw.get("environment_variables"), where)
    runtime = raw.get("runtime_config")
    template["runtime_config"] = dict(runtime) if isinstance(runtime, dict) else {}
    if type_ == "task":
        task_keys = ("type", "configuration", "on_child_error", "maximum_queued_executions", "stop_expression",
                     "task_stop_expression", "execution_count", "execution_batch_size")
        template["task"] = {k: raw[k] for k in task_keys if raw.get(k) is not None}
    _check_json(template, where)
    return template


def _parameters(raw: Any, type_: str, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: parameters must be a mapping of names to values", field="nodes")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue  # the step's default (the converter sends null for a parameter without one)
        out[name] = _value(value, type_, f"{where}: parameter {name!r}")
    return out


def _value(value: Any, type_: str, what: str) -> Any:
    """A parameter value: a scalar, a list (a `multiple` parameter), or a task's {style, rules} variant;
    a `single` variant is its value."""
    if isinstance(value, dict):
        style, rules = value.get("style"), value.get("rules")
        if not isinstance(style, str) or not isinstance(rules, dict):
            raise UserInputError(f"{what}: a mapping must be a variant {{style, rules}}, not {_short(value)}",
                                 field="nodes")
        if style == "single" and "value" in rules:
            return rules["value"]
        if type_ != "task":
            raise UserInputError(f"{what}: a {style!r} variant only fits a task node; give one value", field="nodes")
    return value


def _inputs(raw: Any, where: str) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: inputs must be a mapping of names to URLs", field="nodes")
    out: dict[str, list[str]] = {}
    for name, urls in raw.items():
        listed = [urls] if isinstance(urls, str) else urls
        if listed is None:
            listed = []
        if not isinstance(listed, list) or not all(isinstance(u, str) for u in listed):
            raise UserInputError(f"{where}: input {name!r} must be a URL or a list of URLs, not {_short(urls)}",
                                 field="nodes")
        out[str(name)] = list(listed)
    return out


def _variables(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, list):  # [{name, default}] as a step lists them
        raw = {item.get("name"): item.get("default") for item in raw if isinstance(item, dict)}
    if not isinstance(raw, dict):
        raise UserInputError(f"{where}: environment variables must be a mapping of names to values", field="nodes")
    return {str(k): v for k, v in raw.items() if v is not None}


def _check_json(value: Any, where: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"{where}: its template cannot be stored as JSON ({exc})", field="nodes") from None


def _actions(raw: Any, where: str) -> tuple[Action, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or len(raw) > MAX_ACTIONS:
        raise UserInputError(f"{where}: actions must be a list of at most {MAX_ACTIONS} {{when, if, then}}",
                             field="nodes")
    actions = []
    for item in raw:
        if not isinstance(item, dict):
            raise UserInputError(f"{where}: an action must be a mapping {{when, if, then}}", field="nodes")
        when = _words(item.get("when"), ACTION_WHEN, f"{where}: action `when`")
        then = _words(item.get("then"), ACTION_THEN, f"{where}: action `then`")
        conditions = _words(item.get("if"), None, f"{where}: action `if`")
        actions.append(Action(when=when, then=then, conditions=tuple(parse_condition(c, where) for c in conditions)))
    return tuple(actions)


def _words(raw: Any, allowed: tuple[str, ...] | None, what: str) -> tuple[str, ...]:
    items = [] if raw is None else [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise UserInputError(f"{what} must be text or a list of text, not {_short(raw)}", field="nodes")
    if allowed is not None:
        if not items:
            raise UserInputError(f"{what} is missing: one of {', '.join(allowed)}", field="nodes")
        for item in items:
            if item not in allowed:
                raise UserInputError(f"{what}: {item!r} is not one of {', '.join(allowed)}", field="nodes")
    return tuple(items)


def parse_condition(text: str, where: str = "the pipeline") -> Condition:
    """`metadata.accuracy < .8` or `parameter.epochs >= 10` (the value a number, true/false, or text), or a
    bare `metadata.KEY`, `parameter.NAME` or `KEY` (a metadata key): its value is there and true."""
    short = len(text) <= MAX_CONDITION_CHARS
    bare = _TRUTHY.match(text) if short else None
    if bare is not None:
        return Condition(source=bare.group(1) or "metadata", key=bare.group(2), op="is", value=True)
    match = _CONDITION.match(text) if short else None
    if match is None:
        raise UserInputError(f"{where}: condition {_short(text)} is not `metadata.KEY OP VALUE` or "
                             f"`parameter.NAME OP VALUE` (OP one of {' '.join(CONDITION_OPERATORS)}), or a bare "
                             "KEY that must be true", field="nodes")
    source, key, op, value_text = match.groups()
    return Condition(source=source, key=key, op=op, value=_literal(value_text))


def _literal(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def split_socket(text: Any, what: str) -> tuple[str, str, str]:
    """`node.type.key`, split on the first two dots only (keys keep their dots and globs)."""
    parts = text.split(".", 2) if isinstance(text, str) else []
    if len(parts) != 3 or not all(parts):
        raise UserInputError(f"{what} {_short(text)} must be NODE.TYPE.KEY (e.g. train.output.model.pkl)",
                             field="edges")
    return parts[0], parts[1], parts[2]


def _edge(raw: Any, names: set[str]) -> Edge:
    if isinstance(raw, list) and len(raw) == 2:
        raw = {"source": raw[0], "target": raw[1]}
    if not isinstance(raw, dict):
        raise UserInputError(f"an edge must be a mapping or [SOURCE, TARGET], not {_short(raw)}", field="edges")
    if "source" in raw or "target" in raw:
        source = split_socket(raw.get("source"), "an edge's source")
        target = split_socket(raw.get("target"), "an edge's target")
    else:
        source = tuple(raw.get(f"source_{part}") for part in ("node", "type", "key"))  # type: ignore[assignment]
        target = tuple(raw.get(f"target_{part}") for part in ("node", "type", "key"))  # type: ignore[assignment]
    for part in (*source, *target):
        if not isinstance(part, str) or not part or len(part) > MAX_NAME_CHARS:
            raise UserInputError(f"edge {_short(raw)}: every part (node, type, key) must be a name", field="edges")
    s_node, s_type, s_key = source
    t_node, t_type, t_key = target
    s_type, t_type = PLURAL_TYPES.get(s_type, s_type), PLURAL_TYPES.get(t_type, t_type)
    label = f"edge {s_node}.{s_type}.{s_key} -> {t_node}.{t_type}.{t_key}"
    for node in (s_node, t_node):
        if node not in names:
            raise UserInputError(f"{label}: there is no node {node!r}", field="edges")
    if s_node == t_node:
        raise UserInputError(f"{label}: a node cannot feed itself", field="edges")
    if s_type in ("file", "deployment") or t_type in ("file", "deployment"):
        raise UserInputError(f"{label}: {s_type if s_type in ('file', 'deployment') else t_type} edges lead to or "
                             "from deployment nodes, which vh-orch does not run", field="edges")
    if s_type not in SOURCE_TYPES:
        raise UserInputError(f"{label}: a source type must be one of {', '.join(SOURCE_TYPES)}", field="edges")
    if t_type not in TARGET_TYPES:
        raise UserInputError(f"{label}: a target type must be one of {', '.join(TARGET_TYPES)}", field="edges")
    fits = {"output": ("input",), "input": ("input",), "parameter": ("parameter",), "metadata": ("parameter",),
            "environment-variable": ("environment-variable",), "dependency": ("dependency",)}
    if t_type not in fits[s_type]:
        raise UserInputError(f"{label}: an {s_type} feeds {' or '.join(fits[s_type])}, not {t_type}", field="edges")
    return Edge(s_node, s_type, s_key, t_node, t_type, t_key)


def _check_acyclic(names: list[str], edges: list[Edge]) -> None:
    waiting = {name: {e.source_node for e in edges if e.target_node == name} for name in names}
    done: set[str] = set()
    while len(done) < len(names):
        ready = [n for n in names if n not in done and waiting[n] <= done]
        if not ready:
            stuck = sorted(n for n in names if n not in done)
            raise UserInputError(f"the edges make a cycle among nodes {', '.join(stuck)}: a pipeline must be a DAG",
                                 field="edges")
        done.update(ready)


def _apply_parameters(raw: Any, nodes: dict[str, Node]) -> dict[str, Any]:
    """Write each pipeline parameter's value into its targets' templates; returns name -> value."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserInputError("pipeline parameters must be a mapping of names to {config, expression}",
                             field="parameters")
    values: dict[str, Any] = {}
    for name, item in raw.items():
        where = f"pipeline parameter {name!r}"
        if not isinstance(item, dict):
            raise UserInputError(f"{where} must be a mapping {{config, expression}}", field="parameters")
        config = item.get("config") or {}
        if not isinstance(config, dict):
            raise UserInputError(f"{where}: config must be a mapping", field="parameters")
        targets = config.get("targets", config.get("target")) or []
        targets = [targets] if isinstance(targets, str) else targets
        if not isinstance(targets, list):
            raise UserInputError(f"{where}: targets must be a list of NODE.parameter.NAME", field="parameters")
        value = item.get("expression", config.get("default"))
        if value is None:
            raise UserInputError(f"{where} has no value: give one (`--{name}=VALUE`) or a default",
                                 field="parameters")
        for target in targets:
            node_name, kind, key = split_socket(target, f"{where}: target")
            if PLURAL_TYPES.get(kind, kind) != "parameter":
                raise UserInputError(f"{where}: target {target!r} is not a parameter (NODE.parameter.NAME)",
                                     field="parameters")
            node = nodes.get(node_name)
            if node is None:
                raise UserInputError(f"{where}: target {target!r} names no node of this pipeline", field="parameters")
            if node.type == "mimic":
                continue  # `vh pipeline run --reuse` swaps nodes for mimics and keeps the targets: nothing to set
            given = _value(value, node.type, f"{where}: target {target!r}")
            if node.type == "task" and isinstance(given, list):
                given = {"style": "multiple", "rules": {"items": given}}
            node.template["parameters"][key] = given
        values[name] = _value(value, "task", where)
    return values
