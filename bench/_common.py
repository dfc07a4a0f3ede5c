"""Shared set-up for the benchmarks: a throw-away vh-orch home with one ad-hoc project."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from vh_orch.orchestrator.db import upgrade
from vh_orch.orchestrator.store import Store
from vh_orch.settings import Settings


def fresh_home(prefix: str) -> tuple[Settings, Store]:
    home = Path(tempfile.mkdtemp(prefix=f"vh-orch-bench-{prefix}-"))
    settings = Settings(home=home, db_url=f"sqlite:///{home / 'state.db'}")
    settings.ensure_dirs()
    upgrade(settings.db_url)
    store = Store(settings.db_url)
    store.ensure_environment("local", "local", min_scale=1, max_scale=1, slots=1,
                             settings={"runtime": "auto", "pull_policy": "never"})
    store.create_project("bench", None, None)
    return settings, store


def project_folder(settings: Settings, valohai_yaml: str) -> Path:
    folder = settings.home / "project"
    folder.mkdir(exist_ok=True)
    (folder / "valohai.yaml").write_text(valohai_yaml)
    return folder


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    widths = [max(len(str(x)) for x in [h, *(r[i] for r in rows)]) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
