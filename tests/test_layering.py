"""The layers stay layers: the database's shape stays inside vh_orch.orchestrator (the layers below it
take plain values), and the API, the pages, the services and the orchestrator never lean on the CLI (both
faces call vh_orch.services)."""

from __future__ import annotations

import ast
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
