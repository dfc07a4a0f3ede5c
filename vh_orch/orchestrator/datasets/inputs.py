"""`dataset://NAME/VERSION` (or `/latest`) and `datum://ALIAS` inputs, made plain at submission.

A dataset version's input becomes one `datum://ID` URL per file of the version, and an alias becomes the
`datum://ID` it names now: from there on the execution's inputs are ordinary datums (fetched, cached,
shown and checked for visibility as any). Names resolve within the submitting project, which owns its
datasets and aliases: whoever may submit to the project may use them, nobody else can name them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.datasets.uris import LATEST, SCHEME, parse_version_uri

if TYPE_CHECKING:
    from vh_orch.orchestrator.store import Store

MAX_FILES = 100_000  # files one input may expand to


def expand_inputs(store: Store, project_id: int, inputs: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The inputs with every dataset version expanded to its files and every datum alias to its datum;
    other URLs as given. An unknown dataset, version or alias is a UserInputError naming the input
    (field "inputs"). Writes nothing."""
    expanded: dict[str, list[str]] = {}
    for name, urls in inputs.items():
        out: list[str] = []
        for url in urls:
            text = url.strip()
            if text.startswith(SCHEME):
                out += dataset_files(store, project_id, name, text)
            elif text.startswith("datum://"):
                out.append(_datum(store, project_id, text))
            else:
                out.append(url)
            if len(out) > MAX_FILES:
                raise UserInputError(f"input {name!r}: more than {MAX_FILES:,} files", field="inputs")
        expanded[name] = out
    return expanded


def dataset_files(store: Store, project_id: int, input_name: str, uri: str) -> list[str]:
    """The `datum://ID` URLs of every file of the dataset version `uri` names in the project."""
    try:
        ref = parse_version_uri(uri)
    except UserInputError as exc:
        raise UserInputError(f"input {input_name!r}: {exc}", field="inputs") from None
    datasets = store.datasets_named(ref.dataset, project_id)
    if not datasets:
        raise UserInputError(f"input {input_name!r}: no dataset {ref.dataset!r} in this project "
                             "(`vh-orch dataset list` shows them)", field="inputs")
    version = store.dataset_version(datasets[0].id, ref.version)  # type: ignore[arg-type]
    if version is None:
        what = "has no versions yet" if ref.version == LATEST else f"has no version {ref.version!r}"
        raise UserInputError(f"input {input_name!r}: dataset {ref.dataset!r} {what} "
                             f"(`vh-orch dataset show {ref.dataset}` lists them)", field="inputs")
    return [f"datum://{output.id}" for output in store.dataset_version_files(version.id)]  # type: ignore[arg-type]


def _datum(store: Store, project_id: int, url: str) -> str:
    """A datum URL as given, or the datum an alias of the project names now (the datum's own id wins)."""
    key = url.removeprefix("datum://").strip("/")
    try:
        store.get_output(key)
        return url
    except NotFound:
        pass
    output = store.alias_output(project_id, key)
    return url if output is None else f"datum://{output.id}"  # unknown: normalise_input_url refuses it
