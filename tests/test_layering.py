"""The layers stay layers: the database's shape stays inside vh_orch.orchestrator (the layers below it
take plain values), and the API, the pages, the services and the orchestrator never lean on the CLI (both
faces call vh_orch.services)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import vh_orch

PACKAGE = Path(vh_orch.__file__).parent
LOWER_LAYERS = ("cloud_drivers", "bootstrap", "storage")
MODELS = "vh_orch.orchestrator.models"
BESIDE_THE_CLI = ("api", "web", "services", "orchestrator")
CLI = "vh_orch.cli"


def _imported_modules(tree: ast.AST) -> set[str]:
    """Every module a file imports, also inside functions and TYPE_CHECKING blocks; for
    `from a import b` both `a` and `a.b` (b may be a module)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _importers(root: Path, module: str) -> list[str]:
    """The files under root that import module or anything inside it."""
    return sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                  if any(m == module or m.startswith(module + ".")
                         for m in _imported_modules(ast.parse(path.read_text(), str(path)))))


def test_no_driver_bootstrap_or_storage_module_imports_the_database_models() -> None:
    for layer in LOWER_LAYERS:
        assert (PACKAGE / layer).is_dir(), layer
        assert _importers(PACKAGE / layer, MODELS) == [], f"vh_orch/{layer} imports {MODELS}"


def test_no_api_web_services_or_orchestrator_module_imports_the_cli() -> None:
    for layer in BESIDE_THE_CLI:
        assert (PACKAGE / layer).is_dir(), layer
        assert _importers(PACKAGE / layer, CLI) == [], f"vh_orch/{layer} imports {CLI}"


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    forms = {MODELS: ["from vh_orch.orchestrator.models import Machine",
                      "import vh_orch.orchestrator.models",
                      "from vh_orch.orchestrator import models",
                      "def f():\n    from vh_orch.orchestrator.models import Environment"],
             CLI: ["from vh_orch.cli.views import status_rows",
                   "import vh_orch.cli",
                   "import vh_orch.cli.common",
                   "from vh_orch import cli",
                   "def f():\n    from vh_orch.cli.common import open_store"]}
    fine = {MODELS: "from vh_orch.orchestrator.policy import decide\n",
            CLI: "from vh_orch.services.views import status_rows\nimport vh_orch.client\n"}
    for module, texts in forms.items():
        root = tmp_path / module
        root.mkdir()
        for i, text in enumerate(texts):
            (root / f"m{i}.py").write_text(text + "\n")
        (root / "fine.py").write_text(fine[module])
        assert _importers(root, module) == [f"m{i}.py" for i in range(len(texts))], module


# --- no import cycles ------------------------------------------------------------------------------
# An edge is any import a module runs: at module level or inside a function (a cycle through a
# function-level import still ties the two modules together, and breaks when the call order
# changes), but not one under `if TYPE_CHECKING:`, which never runs. `from a import b` is an edge
# to a.b when b is a module, else to a; importing a.b.c is an edge to a.b.c alone (Python also runs
# the packages above it, but a package that imports its own modules is not a cycle).


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_statements(node: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement under node that runs, in functions too; none under `if TYPE_CHECKING:`."""
    found: list[ast.Import | ast.ImportFrom] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found.append(child)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                found += [other] if isinstance(other, (ast.Import, ast.ImportFrom)) else _import_statements(other)
        else:
            found += _import_statements(child)
    return found


def _import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Each module of the package in folder root, and the modules of the package it imports."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = (package, *path.relative_to(root).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        graph[module] = set()
        for statement in _import_statements(ast.parse(path.read_text(), str(path))):
            if isinstance(statement, ast.ImportFrom) and statement.level:  # relative: made absolute
                base = here.split(".")[: len(here.split(".")) - (statement.level - 1)]
                statement = ast.ImportFrom(module=".".join([*base, *filter(None, [statement.module])]),
                                           names=statement.names, level=0)
            named = _imported_modules(statement)
            if isinstance(statement, ast.ImportFrom):
                # `from a import b`: _imported_modules names a and a.b; a counts only for a name that is no module.
                names = {f"{statement.module}.{alias.name}" for alias in statement.names}
                named = (named & names & files.keys()) | ({statement.module} if names - files.keys() else set())
            for name in named:
                while name and name not in files:  # `import a.b` of a name inside a: the module a
                    name = name.rpartition(".")[0]
                if name and name != module:
                    graph[module].add(name)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles, each as the modules along it (the first again at the end); one per edge that
    closes a loop in a depth-first walk, so an empty list means there is none."""
    cycles: list[list[str]] = []
    done: set[str] = set()
    path: list[str] = []

    def walk(module: str) -> None:
        path.append(module)
        for target in sorted(graph[module]):
            if target in path:
                cycles.append([*path[path.index(target):], target])
            elif target not in done:
                walk(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            walk(module)
    return cycles


def test_no_import_cycle_among_vh_orch_modules() -> None:
    graph = _import_graph(PACKAGE, "vh_orch")
    assert "vh_orch.orchestrator.models" in graph["vh_orch.orchestrator.store.core"]  # the graph sees imports
    cycles = _cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_the_cycle_check_finds_a_cycle_in_every_form_of_import(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    modules = {
        "__init__.py": "",
        "a.py": "from . import b\n",  # relative, naming a module
        "b.py": "def f() -> None:\n    from .sub.c import g\n",  # inside a function
        "sub/__init__.py": "",
        "sub/c.py": "import pkg.d\ndef g() -> None: ...\n",
        "d.py": "from pkg.sub import e\n",  # e is a module: the edge goes to it, not to pkg.sub
        "sub/e.py": "from ..a import NAME\n",  # NAME is no module: the edge goes to pkg.a
        # Under TYPE_CHECKING nothing runs: no cycle between f and h.
        "f.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.h import H\n",
        "h.py": "import pkg.f\n",
    }
    for name, text in modules.items():
        (root / name).write_text(text)
    graph = _import_graph(root, "pkg")
    assert graph["pkg.f"] == set() and graph["pkg.h"] == {"pkg.f"}
    assert _cycles(graph) == [["pkg.a", "pkg.b", "pkg.sub.c", "pkg.d", "pkg.sub.e", "pkg.a"]]
    (root / "sub/e.py").write_text("NAME = 1\n")
    assert _cycles(_import_graph(root, "pkg")) == []


def test_the_shared_values_import_only_the_standard_library() -> None:
    path = PACKAGE / "values.py"
    imported = _imported_modules(ast.parse(path.read_text(), str(path)))
    assert {name.partition(".")[0] for name in imported} <= set(sys.stdlib_module_names) | {"__future__"}, imported
