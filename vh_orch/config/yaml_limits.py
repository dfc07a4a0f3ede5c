"""Bounds on a valohai.yaml, checked before anything builds or walks the document.

YAML aliases (`&name` ... `*name`) make a small text stand for a huge tree: 200 bytes of
nested aliases are hundreds of thousands of values to every reader that walks the result
(the schema check, the step coercion). PyYAML composes a document into nodes first, where an
alias is one shared node; counting the tree those nodes stand for (each shared node's count
worked out once) costs only as much as the text, and a document past the bound is refused
before it is constructed.
"""

from __future__ import annotations

import yaml

from vh_orch.errors import UserInputError

# 512 KiB of YAML: 30 times the largest real-world file in tests/data/valohai_yaml_corpus; PyYAML
# composes it in about a second.
MAX_YAML_CHARS = 512 * 1024
MAX_YAML_BYTES = 4 * MAX_YAML_CHARS  # what that many characters can take in UTF-8: the most read of a file
# Values in the document with every alias expanded (each scalar, list and mapping counts one).
MAX_YAML_NODES = 100_000


def check_length(text: str, source: str) -> None:
    if len(text) > MAX_YAML_CHARS:
        raise UserInputError(f"{source} is too large: {len(text):,} characters, the limit is {MAX_YAML_CHARS:,} "
                             "(512 KiB); split what is not configuration out of it")


def check_expanded_size(root: yaml.Node, source: str) -> int:
    """The number of values the document stands for with its aliases expanded; a UserInputError
    past MAX_YAML_NODES. A recursive alias counts once where it refers back (the document is
    refused later, by name)."""
    counts: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being counted: an alias back to one is a loop
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_.discard(key)
            total = 1 + sum(counts.get(id(child), 1) for child in _children(node))
            if total > MAX_YAML_NODES:
                raise UserInputError(
                    f"{source} stands for more than {MAX_YAML_NODES:,} values once its YAML aliases (*name) are "
                    "expanded; refused before reading it further: repeat less through aliases")
            counts[key] = total
        elif key not in counts and key not in open_:
            open_.add(key)
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return counts[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []
