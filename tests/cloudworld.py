"""A cloud environment under reconcile passes in this process: real SQLite state, the real
driver against a local fake of the cloud's API, a clock the test moves, and executions
"run" by a stand-in host that the test completes by hand. Shared by the AWS and GCP tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conftest import migrated_sqlite
from test_reconcile import STEP_YAML, StandInHost, VirtualClock
from vh_orch.config.environments import parse_entry
from vh_orch.orchestrator.models import Execution, Machine
from vh_orch.orchestrator.reconcile import Reconciler
from vh_orch.orchestrator.store import Store
from vh_orch.timeutil import utcnow


class Crash(BaseException):
    """The daemon dying at a chosen line (not an Exception: nothing catches it)."""


class CloudWorld:
    def __init__(self, tmp_path: Path, entry: dict[str, Any]) -> None:
        self.url = migrated_sqlite(tmp_path / "state.db")
        self.clock = VirtualClock()
        self.clock.now = utcnow()  # fakes stamp launches with the real time; orphan ages compare to it
        self.store = Store(self.url, clock=self.clock)
        spec = parse_entry(entry, "test")
        self.store.save_environment(spec.name, spec.cloud, spec.columns, spec.settings)
        self.env = self.store.get_environment(spec.name)
        project = self.store.create_project("p", None, None)
        self.project_id = project.id
        self.commit_id = self.store.get_or_create_commit(project.id, "adhoc", "abc", STEP_YAML).id  # type: ignore[arg-type]
        self.host = StandInHost(self.store)
        self.reconciler = self.new_reconciler()

    def new_reconciler(self) -> Reconciler:
        """A reconciler with nothing in memory, as after a daemon restart."""
        return Reconciler(self.store, self.host, clock=self.clock, orphan_grace_s=60)

    @property
    def driver(self):  # type: ignore[no-untyped-def]
        return self.reconciler.drivers.driver(self.env)

    def submit(self, n: int = 1) -> list[int]:
        return [self.store.create_execution(Execution(
            project_id=self.project_id, counter=0, commit_id=self.commit_id, step="s", command="echo hi",
            environment_id=self.env.id, user="tester")).id for _ in range(n)]  # type: ignore[arg-type,misc]

    def run(self, passes: int = 1, step_s: float = 1.0) -> None:
        for _ in range(passes):
            self.reconciler.run_pass()
            self.clock.advance(step_s)

    def machines(self, *states: str) -> list[Machine]:
        rows = [m for m, _ in self.store.list_machines(include_finished=True) if m.environment_id == self.env.id]
        return [m for m in rows if not states or m.state in states]

    def machine(self, machine_id: int) -> Machine:
        return next(m for m in self.machines() if m.id == machine_id)

    def crash_after_the_cloud_call(self) -> None:
        """One pass that dies right after the cloud accepted a launch, before the row heard of it."""
        adopt = self.store.adopt_instance

        def crash(*args: Any, **kw: Any) -> bool:
            raise Crash()

        self.store.adopt_instance = crash  # type: ignore[method-assign]
        try:
            self.run(1)
        except Crash:
            pass
        else:
            raise AssertionError("the pass did not reach the database update")
        finally:
            self.store.adopt_instance = adopt  # type: ignore[method-assign]


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """vh-orch's SSH key pair for an environment's machines (KEY and KEY.pub)."""
    import sshhosts

    path = tmp_path / "vh_key"
    sshhosts.keygen(path, "vh-orch")
    return path
