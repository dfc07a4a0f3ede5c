"""The database's shape stays inside vh_orch.orchestrator: the layers below it take plain values."""

from __future__ import annotations

import ast
from pathlib import Path

import vh_orch

PACKAGE = Path(vh_orch.__file__).parent
LOWER_LAYERS = ("cloud_drivers", "bootstrap", "storage")
MODELS = "vh_orch.orchestrator.models"


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


def _models_importers(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*.py")
                  if any(m == MODELS or m.startswith(MODELS + ".")
                         for m in _imported_modules(ast.parse(path.read_text(), str(path)))))


def test_no_driver_bootstrap_or_storage_module_imports_the_database_models() -> None:
    for layer in LOWER_LAYERS:
        assert (PACKAGE / layer).is_dir(), layer
        assert _models_importers(PACKAGE / layer) == [], f"vh_orch/{layer} imports {MODELS}"


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    forms = ["from vh_orch.orchestrator.models import Machine",
             "import vh_orch.orchestrator.models",
             "from vh_orch.orchestrator import models",
             "def f():\n    from vh_orch.orchestrator.models import Environment"]
    for i, text in enumerate(forms):
        (tmp_path / f"m{i}.py").write_text(text + "\n")
    (tmp_path / "fine.py").write_text("from vh_orch.orchestrator.policy import decide\n")
    assert len(_models_importers(tmp_path)) == len(forms)
