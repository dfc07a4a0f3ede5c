"""Machines, launches and their failures, quotas, and the reads that build a policy snapshot."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, or_, update
from sqlmodel import Session, col, select

from vh_orch.errors import UserInputError
from vh_orch.orchestrator.gpus import pick_gpus
from vh_orch.orchestrator.models import (Budget, Environment, Execution, Installation, LaunchFailure, Machine, Output, Pipeline,
                                         Quota, Task)
from vh_orch.orchestrator.store.database import (ALL, ROWS, Fence, environment,
                                                 machine_environment, table_of)
from vh_orch.orchestrator.store.datasets import DatasetsStore
from vh_orch.orchestrator.store.leases import LeasesStore, exec_key
from vh_orch.orchestrator.store.lifecycle import LifecycleStore
from vh_orch.values import CloudInstance, ExecutionStatus, MachineState, PipelineStatus, TaskStatus

log = logging.getLogger(__name__)

S = ExecutionStatus
M = MachineState
RUNNING_EXECUTION = (S.STARTED, S.STOPPING)
LIVE_MACHINE = (M.REQUESTED, M.PROVISIONING, M.BOOTSTRAPPING, M.READY, M.BUSY, M.TERMINATING)
# Machines a pass must watch: on their way up or down, or running work (a ready machine only waits).
MOVING_MACHINE = (M.REQUESTED, M.PROVISIONING, M.BOOTSTRAPPING, M.BUSY, M.TERMINATING)


class FleetStore(LifecycleStore, LeasesStore, DatasetsStore):
    # -- installation -------------------------------------------------------------

    def cluster_id(self) -> str:
        with self.write() as s:
            inst = s.exec(select(Installation)).first()
            if inst is None:
                inst = Installation(cluster_id=f"vh-{uuid.uuid4().hex[:16]}")
                s.add(inst)
            return inst.cluster_id

    # -- snapshot reads ------------------------------------------------------------------

    def active_environments(self) -> list[Environment]:
        with self.read() as s:
            return list(s.exec(select(Environment).where(col(Environment.removed_at).is_(None)).order_by(Environment.id)))

    def fleet(self) -> list[Any]:
        """Every machine that is not finished (terminated, failed, lost), as read-only rows.

        Plain rows rather than ORM objects: a pass reads every machine, and with a
        thousand of them object construction would dominate its time.
        """
        table = table_of(Machine)
        with self.read() as s:
            return list(s.connection().execute(
                table.select().where(table.c.state.in_(LIVE_MACHINE)).order_by(table.c.id)))

    def has_work(self) -> bool:
        """Whether anything waits on the reconcile passes: an execution, task or pipeline that has
        not ended, a machine on its way up or down or running work, or an environment with
        fewer machines than it keeps (min_scale). One query: a daemon without work asks it instead
        of running a whole pass."""
        live = (select(func.count()).where(col(Machine.environment_id) == Environment.id,
                                           col(Machine.state).in_(LIVE_MACHINE)).scalar_subquery())
        with self.read() as s:
            return bool(s.exec(select(or_(
                exists().where(col(Execution.status).in_([x for x in ExecutionStatus if not x.is_final])),
                exists().where(col(Task.status).in_([x for x in TaskStatus if not x.is_final])),
                exists().where(col(Pipeline.status).in_([x for x in PipelineStatus if not x.is_final])),
                exists().where(col(Machine.state).in_(MOVING_MACHINE)),
                exists().where(col(Environment.removed_at).is_(None), col(Environment.min_scale) > live),
            ))).one())

    def running_per_machine(self) -> dict[int, int]:
        with self.read() as s:
            rows = s.exec(
                select(Execution.machine_id, func.count())
                .where(col(Execution.status).in_(RUNNING_EXECUTION), col(Execution.machine_id).is_not(None))
                .group_by(Execution.machine_id)
            )
            return {machine_id: count for machine_id, count in rows}  # type: ignore[misc]

    def gpus_held_per_machine(self) -> dict[int, int]:
        """Per machine, the GPUs its running executions hold (machines where none does are left out)."""
        with self.read() as s:
            rows = s.exec(
                select(Execution.machine_id, func.sum(Execution.gpus))
                .where(col(Execution.status).in_(RUNNING_EXECUTION), col(Execution.machine_id).is_not(None),
                       Execution.gpus > 0)
                .group_by(Execution.machine_id)
            )
            return {machine_id: int(held) for machine_id, held in rows}  # type: ignore[misc]

    def queue_view(self, environment_id: int, head: int) -> tuple[int, tuple[int, ...], dict[int, int]]:
        """How many executions wait, the ids of the first `head`, FIFO within priority, and the GPUs
        each of those asks for (those that ask for none are left out)."""
        with self.read() as s:
            count = s.exec(
                select(func.count()).select_from(Execution).where(
                    Execution.environment_id == environment_id, Execution.status == S.QUEUED
                )
            ).one()
            rows: list[tuple[int, int]] = []
            if head > 0 and count:
                rows = list(
                    s.exec(
                        select(Execution.id, Execution.gpus)
                        .where(Execution.environment_id == environment_id, Execution.status == S.QUEUED)
                        .order_by(col(Execution.priority).desc(), col(Execution.id))
                        .limit(head)
                    )
                )  # type: ignore[arg-type]
            return count, tuple(i for i, _ in rows), {i: g for i, g in rows if g}

    def recent_failures(self, environment_id: int, limit: int = 20) -> list[LaunchFailure]:
        with self.read() as s:
            rows = list(
                s.exec(
                    select(LaunchFailure)
                    .where(LaunchFailure.environment_id == environment_id)
                    .order_by(col(LaunchFailure.id).desc())
                    .limit(limit)
                )
            )
        return rows[::-1]

    def recent_arrivals(self, environment_id: int, limit: int) -> tuple[float, ...]:
        """The submission times (epoch seconds, oldest first) of an environment's latest executions."""
        table = table_of(Execution)
        with self.read() as s:
            rows = s.connection().execute(
                select(table.c.created_at).where(table.c.environment_id == environment_id)
                .order_by(table.c.id.desc()).limit(limit)).all()
        return tuple(_epoch(r[0]) for r in reversed(rows))

    # -- machine lifecycle -------------------------------------------------------------

    def create_machine(self, env: Environment, zone: str | None, instance_type: str | None,
                       gpus: int = 0) -> Machine:
        """The row is written (and committed) before the cloud is asked to launch it. gpus: what its
        instance type is expected to have (the bootstrap's nvidia-smi has the last word)."""
        with self.write(environment(env.id)) as s:  # type: ignore[arg-type]
            machine = Machine(
                environment_id=env.id,  # type: ignore[arg-type]
                state=M.REQUESTED,
                launch_token=uuid.uuid4().hex,
                zone=zone,
                instance_type=instance_type,
                gpus=gpus,
                bootstrap_step="launching",
                created_at=self.clock(),
                state_changed_at=self.clock(),
            )
            s.add(machine)
            s.flush()
            return machine

    def _machine_to(self, s: Session, machine: Machine, state: str, reason: str | None, step: str | None = None) -> None:
        now = self.clock()
        if machine.state != state:
            machine.state = state
            machine.state_changed_at = now
        machine.updated_at = now
        machine.reason = reason
        if step is not None:
            machine.bootstrap_step = step
        machine.idle_since = now if state == M.READY else None
        if state == M.TERMINATED:
            machine.terminated_at = now
        s.add(machine)

    def adopt_instance(self, machine_id: int, instance: CloudInstance, reason: str) -> bool:
        """Record the instance a waiting row got; False if the row moved on meanwhile."""
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state != M.REQUESTED:
                return False
            machine.instance_id = instance.instance_id
            machine.address = instance.address
            machine.zone = instance.zone or machine.zone
            machine.instance_type = instance.instance_type or machine.instance_type
            self._machine_to(s, machine, M.PROVISIONING, reason, step="booting")
            return True

    def advance_machine(self, machine_id: int, state: str, step: str | None, reason: str | None) -> None:
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state in (M.PROVISIONING, M.BOOTSTRAPPING, M.READY, M.BUSY):
                self._machine_to(s, machine, state, reason, step=step)

    def mark_idle(self, machine_id: int) -> None:
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            running = self._running_on(s, machine_id)
            if machine.state == M.BUSY and running == 0:
                self._machine_to(s, machine, M.READY, None)

    def record_gpus(self, machine_id: int, gpus: int, model: str | None) -> None:
        """The GPUs found on a machine (nvidia-smi), and the first one's name."""
        with self.write(ROWS) as s:
            machine = s.get_one(Machine, machine_id)
            machine.gpus = gpus
            machine.gpu_model = model[:200] if model else None
            s.add(machine)

    def gpus_found(self, environment_id: int, by_zone: bool) -> dict[str | None, int]:
        """Per instance type (by_zone: per zone, an SSH pool's host), the most GPUs a machine of the
        environment was found (or expected) to have: set-up machines (ready, busy), whose GPUs were
        looked for, and any machine, in any state, that has GPUs."""
        table = table_of(Machine)
        kind = table.c.zone if by_zone else table.c.instance_type
        with self.read() as s:
            rows = s.connection().execute(
                select(kind, func.max(table.c.gpus))
                .where(table.c.environment_id == environment_id,
                       (table.c.state.in_((M.READY, M.BUSY))) | (table.c.gpus > 0))
                .group_by(kind)).all()
        return {name: int(most or 0) for name, most in rows}

    def record_input_cache(self, machine_id: int, hits: int, misses: int, cache_bytes: int) -> None:
        """Count input files placed on a machine (from its cache or fetched into it) and its cache's size."""
        with self.write(ROWS) as s:
            s.execute(update(Machine).where(Machine.id == machine_id).values(  # type: ignore[arg-type]
                input_cache_hits=Machine.input_cache_hits + hits,
                input_cache_misses=Machine.input_cache_misses + misses,
                input_cache_bytes=cache_bytes))

    def set_bootstrap_step(self, machine_id: int, step: str) -> None:
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            machine.bootstrap_step = step
            machine.updated_at = self.clock()
            s.add(machine)

    def bootstrap_failed(self, machine_id: int, reason: str, never_use: bool) -> None:
        """never_use (a host key that did not match): `failed`, its instance left to orphan handling.
        Otherwise `terminating`, so that the next pass terminates the instance."""
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state != M.BOOTSTRAPPING:
                return
            if never_use:
                self._machine_to(s, machine, M.FAILED, reason, step="failed")
            else:
                self._machine_to(s, machine, M.TERMINATING, reason, step="terminating")
                machine.retry_at = self.clock()
                s.add(machine)

    def fail_machine(self, machine_id: int, reason: str, booting_too: bool = False) -> None:
        """A launch that did not happen: `failed`. booting_too: also a row already `provisioning`
        (a cloud that reports a failed launch later, inside its operation: nothing was created)."""
        states = (M.REQUESTED, M.PROVISIONING) if booting_too else (M.REQUESTED,)
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state in states:
                self._machine_to(s, machine, M.FAILED, reason, step="failed")

    def begin_terminate(self, machine_id: int, reason: str) -> Machine | None:
        """Move a machine to `terminating` (idempotent); None if it has no instance to end."""
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state in (M.TERMINATED, M.FAILED, M.LOST):
                return None
            if machine.state != M.TERMINATING:
                self._machine_to(s, machine, M.TERMINATING, reason, step="terminating")
            return machine

    def retire_if_idle(self, machine_id: int, idle_before: datetime, reason: str) -> Machine | None:
        """Terminate only a machine that is still idle, checked in the same transaction."""
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state != M.READY or machine.idle_since is None or machine.idle_since > idle_before:
                return None
            if self._running_on(s, machine_id):
                return None
            self._machine_to(s, machine, M.TERMINATING, reason, step="terminating")
            return machine

    def termination_failed(self, machine_id: int, error: str, retry_at: datetime) -> None:
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            machine.terminate_attempts += 1
            machine.retry_at = retry_at
            machine.last_error = error
            machine.reason = f"termination failed {machine.terminate_attempts} time(s), retrying: {error}"
            machine.updated_at = self.clock()
            s.add(machine)

    def termination_requested(self, machine_id: int, retry_at: datetime) -> None:
        """The cloud accepted the request; check again (and re-ask) if it is still listed at retry_at."""
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            machine.retry_at = retry_at
            s.add(machine)

    def confirm_terminated(self, machine_id: int) -> None:
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state == M.TERMINATING:
                self._machine_to(s, machine, M.TERMINATED, machine.reason, step="terminated")

    def mark_lost(self, machine_id: int, reason: str, max_attempts: int) -> list[int]:
        """The machine's instance vanished: requeue its executions (or fail them after max_attempts)."""
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get_one(Machine, machine_id)
            if machine.state in (M.TERMINATED, M.FAILED, M.LOST):
                return []
            self._machine_to(s, machine, M.LOST, reason, step="lost")
            affected = list(
                s.exec(select(Execution).where(Execution.machine_id == machine_id,
                                               col(Execution.status).in_(RUNNING_EXECUTION)))
            )
            for execution in affected:
                if execution.attempt < max_attempts:
                    self._transition(s, execution, S.QUEUED,
                                     reason=f"machine {machine_id} lost ({reason}); requeued after attempt "
                                            f"{execution.attempt} of {max_attempts}", also={"machine_id": None})
                else:
                    self._transition(s, execution, S.ERROR,
                                     reason=f"machine {machine_id} lost ({reason}) on the last of "
                                            f"{max_attempts} attempts")
            return [e.id for e in affected]  # type: ignore[misc]

    def requeue_lost(self, execution_id: int, attempt: int, reason: str, max_attempts: int) -> None:
        """A started attempt whose runner is gone with its replica, on a machine that is not: queued
        again (or `error` after max_attempts; a stopping one ends `stopped`)."""
        with self.write() as s:
            execution = s.get_one(Execution, execution_id)
            if execution.attempt != attempt or execution.status not in RUNNING_EXECUTION:
                return
            if execution.status == S.STOPPING:
                self._transition(s, execution, S.STOPPED, reason=execution.status_reason or reason)
            elif execution.attempt < max_attempts:
                self._transition(s, execution, S.QUEUED,
                                 reason=f"{reason}; requeued after attempt {execution.attempt} of {max_attempts}",
                                 also={"machine_id": None})
            else:
                self._transition(s, execution, S.ERROR, reason=f"{reason} on the last of {max_attempts} attempts")

    def _running_on(self, s: Session, machine_id: int) -> int:
        return s.exec(
            select(func.count()).select_from(Execution).where(
                Execution.machine_id == machine_id, col(Execution.status).in_(RUNNING_EXECUTION)
            )
        ).one()

    def _gpus_held_on(self, s: Session, machine_id: int) -> set[int]:
        held: set[int] = set()
        for indices in s.exec(select(Execution.gpu_indices).where(
                Execution.machine_id == machine_id, col(Execution.status).in_(RUNNING_EXECUTION))):
            held.update(indices or ())
        return held

    def claim_for_machine(self, execution_id: int, machine_id: int, slots: int, runtime: str) -> Execution | None:
        """claim_on_machine of one execution: it, started, or None."""
        claimed = self.claim_on_machine([execution_id], machine_id, slots, runtime)
        return claimed[0] if claimed else None

    def claim_on_machine(self, execution_ids: Sequence[int], machine_id: int, slots: int,
                         runtime: str) -> list[Execution]:
        """claim_leased, without the fences of the leases it took."""
        return [execution for execution, _fence in self.claim_leased(execution_ids, machine_id, slots, runtime)]

    def claim_leased(self, execution_ids: Sequence[int], machine_id: int, slots: int, runtime: str,
                     fresh_s: float = 0.0) -> list[tuple[Execution, Fence | None]]:
        """Start queued executions on a machine, in the order given, each while the machine has a free
        slot and the GPUs it asks for free, giving it the indices of those GPUs; one that moved on (no
        longer queued) or does not fit is passed over. The ones started, in one write under the
        environment's lock: two claims on one machine never give out the same slot or GPU index, a
        machine is never retired while a claim puts work on it, and a pass dispatching a machine's
        whole share pays one transaction, not one each. Each comes with the fence of the lease its
        runner works under (a fenced store's claim: this replica's, fresh for `fresh_s` from before
        the write; else None)."""
        began = time.monotonic()
        with self.write(machine_environment(machine_id)) as s:
            machine = s.get(Machine, machine_id)
            if machine is None or machine.state not in (M.READY, M.BUSY):
                return []
            running = self._running_on(s, machine_id)
            query = select(Execution).where(col(Execution.id).in_(list(execution_ids)))
            if s.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
                query = query.with_for_update(skip_locked=True)
            rows = {e.id: e for e in s.exec(query)}
            held: set[int] | None = None  # the machine's GPUs in use, read when one is asked for
            claimed: list[Execution] = []
            taken: set[int] = set()  # an id given twice is claimed once
            for execution_id in execution_ids:
                execution = rows.get(execution_id)
                if running >= slots:
                    break
                if execution is None or execution.status != S.QUEUED or execution_id in taken:
                    continue
                given: list[int] | None = []
                if execution.gpus:
                    if held is None:
                        held = self._gpus_held_on(s, machine_id)
                    given = pick_gpus(machine.gpus, held, execution.gpus)
                    if given is None:
                        continue
                    held.update(given)
                execution.gpu_indices = given
                execution.machine_id = machine_id
                execution.runtime = runtime
                execution.attempt += 1
                running += 1
                claimed.append(execution)
                taken.add(execution_id)
            tokens: dict[str, int] = {}
            if self.fence is not None:  # a replica's reconcile: it runs what it claims, under leases of its own
                tokens = self.hold_leases(s, [exec_key(e.id) for e in claimed], self.fence.owner)  # type: ignore[arg-type]
            # A retry says so in its status event: `exec logs` marks where each attempt begins.
            self._transitions(s, claimed, S.STARTED,
                              [f"attempt {e.attempt}" if e.attempt > 1 else None for e in claimed])
            if claimed and machine.state != M.BUSY:
                self._machine_to(s, machine, M.BUSY, None)
            if self.fence is None:
                return [(e, None) for e in claimed]
            owner = self.fence.owner
            return [(e, Fence(exec_key(e.id), owner, tokens[exec_key(e.id)], began + fresh_s))  # type: ignore[arg-type]
                    for e in claimed]

    def finish_execution(
        self, execution_id: int, attempt: int, status: str, reason: str | None, exit_code: int | None,
        outputs: Sequence[Output] = (), row: Execution | None = None,
    ) -> bool:
        """A runner's final word and the attempt's outputs, in one transaction: both land or
        neither does. It counts only for the attempt it ran (not after a requeue). Without outputs
        it changes only its own rows (the execution, its lease, its events, deliveries it queues),
        and takes no lock: its status moves only if it is still that attempt's, started or
        stopping, when the write lands (a requeue or stop that came first wins, see _transitions).
        Outputs may move a project's aliases and make its dataset versions, which executions of
        any environment share: then the database-wide lock. row: the execution as its runner got it
        (claimed for this attempt), to write from without reading it again where nothing is read
        from it that may have changed since (no outputs)."""
        try:
            with self.write(ALL if outputs else ROWS) as s:
                if row is not None and not outputs and row.id == execution_id:
                    execution = s.merge(row, load=False)  # what may have changed is checked as it is written
                else:
                    execution = s.get_one(Execution, execution_id)
                if execution.attempt != attempt or execution.status not in RUNNING_EXECUTION:
                    return False
                s.add_all(outputs)
                # Aliases and dataset versions land with the result: a pipeline's next node reading
                # `dataset://NAME/latest` once this one is complete finds the version.
                lines = self._apply_output_metadata(s, execution, outputs, complete=status == S.COMPLETE)
                self._log_lines(s, execution, lines)
                table = table_of(Execution)
                if not self._transition(s, execution, status, reason=reason,
                                        also=None if exit_code is None else {"exit_code": exit_code},
                                        only=(table.c.attempt == attempt, table.c.status.in_(RUNNING_EXECUTION))):
                    raise _MovedOn  # requeued or ended since it was read: nothing of this lands
                return True
        except _MovedOn:
            return False

    # -- launch failures -------------------------------------------------------------------

    def record_launch_failure(
        self, environment_id: int, kind: str, zone: str | None, instance_type: str | None, message: str
    ) -> None:
        with self.write(environment(environment_id)) as s:
            s.add(LaunchFailure(environment_id=environment_id, time=self.clock(), kind=kind, zone=zone,
                                instance_type=instance_type, message=message[:2000]))

    # -- quotas and admission ----------------------------------------------------------------

    def set_quota(self, user: str, limit: int | None) -> None:
        with self.write() as s:
            row = s.get(Quota, user)
            if limit is None:
                if row is not None:
                    s.delete(row)
                return
            if row is None:
                row = Quota(user=user, max_concurrent=limit)
            row.max_concurrent = limit
            s.add(row)

    def quotas(self) -> dict[str, int]:
        with self.read() as s:
            return {q.user: q.max_concurrent for q in s.exec(select(Quota))}

    def admit_created(self) -> int:
        """Queue what waits under quotas and budgets; stop the running work of hard budgets spent."""
        with self.read() as s:  # every pass of the cluster's replica asks: no database-wide lock for nothing
            if not s.exec(select(or_(exists().where(Execution.status == S.CREATED), exists(select(Budget.id))))).one():
                return 0
        with self.write() as s:
            states = self._budget_states(s, self.clock())
            held = self._budget_holds(s, self.clock(), states)
            admitted = self.admit(s, held=held)
            self._stop_over_hard_budgets(s, held)
            for state in self._warn_budgets(s, states):
                log.warning("budget: %s", state.message())
            return admitted

    # -- environments --------------------------------------------------------------------

    def save_environment(self, name: str, cloud: str, columns: dict[str, Any], settings: dict[str, Any],
                         touch: bool = False) -> str:
        """Create or update an environment from a validated spec: created, updated or unchanged.

        touch: record an update even when nothing changed (it lifts a stop after a fatal launch error)."""
        with self.write() as s:
            return self._save_environment(s, name, cloud, columns, settings, touch)

    def _save_environment(self, s: Session, name: str, cloud: str, columns: dict[str, Any],
                          settings: dict[str, Any], touch: bool = False) -> str:
        env = s.exec(select(Environment).where(Environment.name == name,
                                               col(Environment.removed_at).is_(None))).first()
        if env is None:
            now = self.clock()
            s.add(Environment(name=name, cloud=cloud, settings=settings, created_at=now, updated_at=now, **columns))
            return "created"
        if env.cloud != cloud:
            raise UserInputError(f"environment {name!r} is a {env.cloud} environment; its cloud cannot change "
                                 f"(remove it first with `vh-orch env rm {name}`)")
        current = {k: getattr(env, k) for k in columns}
        if current == columns and env.settings == settings and not touch:
            return "unchanged"
        for key, value in columns.items():
            setattr(env, key, value)
        env.settings = settings
        env.updated_at = self.clock()
        s.add(env)
        return "updated"

    def apply_environments(self, specs: Sequence[tuple[str, str, dict[str, Any], dict[str, Any]]],
                           prune: bool, keep: frozenset[str]) -> dict[str, list[str]]:
        """Apply a whole file in one transaction: every environment or none."""
        report: dict[str, list[str]] = {"created": [], "updated": [], "unchanged": [], "removed": []}
        with self.write() as s:
            for name, cloud, columns, settings in specs:
                report[self._save_environment(s, name, cloud, columns, settings)].append(name)
            if prune:
                wanted = {spec[0] for spec in specs} | keep
                for env in s.exec(select(Environment).where(col(Environment.removed_at).is_(None))):
                    if env.name in wanted:
                        continue
                    busy = self._environment_in_use(s, env.id)  # type: ignore[arg-type]
                    if busy:
                        raise UserInputError(f"cannot prune environment {env.name!r}: {busy}; "
                                             f"drain it first with `vh-orch env rm {env.name} --drain`")
                    report["removed"].append(env.name)
                    self._remove(s, env)
        return report

    def _environment_in_use(self, s: Session, env_id: int) -> str | None:
        machines = s.exec(select(func.count()).select_from(Machine).where(
            Machine.environment_id == env_id, col(Machine.state).in_(LIVE_MACHINE))).one()
        unfinished = s.exec(select(func.count()).select_from(Execution).where(
            Execution.environment_id == env_id,
            col(Execution.status).in_([S.CREATED, S.QUEUED, S.STARTED, S.STOPPING]))).one()
        if machines or unfinished:
            return f"{machines} machine(s) and {unfinished} unfinished execution(s) use it"
        return None

    def _remove(self, s: Session, env: Environment) -> None:
        env.removed_at = self.clock()
        env.name = f"{env.name}@removed-{env.id}"
        s.add(env)

    def remove_environment(self, name: str, drain: bool) -> str:
        """Remove now when unused; with drain, stop taking work and remove once empty."""
        with self.write() as s:
            env = s.exec(select(Environment).where(Environment.name == name,
                                                   col(Environment.removed_at).is_(None))).first()
            if env is None:
                raise UserInputError(f"no environment named {name!r}; see `vh-orch env list`")
            busy = self._environment_in_use(s, env.id)  # type: ignore[arg-type]
            if busy is None:
                self._remove(s, env)
                return "removed"
            if not drain:
                raise UserInputError(f"environment {name!r} is in use: {busy}; "
                                     f"use --drain to finish its work and retire its machines first")
            env.settings = {**env.settings, "draining": True}
            env.updated_at = self.clock()
            s.add(env)
            return "draining"

    def finish_drained(self) -> list[str]:
        """Remove draining environments that have nothing left."""
        from vh_orch.cloud_drivers.settings import settings_of  # the settings' models load where they are read

        removed: list[str] = []
        with self.read() as s:  # every pass asks; rarely is one draining: no write lock until one is
            draining = [env.id for env in s.exec(select(Environment).where(col(Environment.removed_at).is_(None)))
                        if settings_of(env).draining]
        if not draining:
            return removed
        with self.write() as s:
            for env in s.exec(select(Environment).where(col(Environment.id).in_(draining),
                                                        col(Environment.removed_at).is_(None))):
                if settings_of(env).draining and self._environment_in_use(s, env.id) is None:  # type: ignore[arg-type]
                    removed.append(env.name)
                    self._remove(s, env)
        return removed

    # -- housekeeping --------------------------------------------------------------------

    def prune_machines(self, older_than: timedelta, dry_run: bool) -> int:
        cutoff = self.clock() - older_than
        with self.write() as s:
            finished = list(s.exec(select(Machine).where(
                col(Machine.state).in_([M.TERMINATED, M.FAILED, M.LOST]), Machine.updated_at < cutoff)))
            referenced = set(s.exec(select(Execution.machine_id).where(
                col(Execution.machine_id).in_([m.id for m in finished]))))
            doomed = [m for m in finished if m.id not in referenced]
            if not dry_run:
                for m in doomed:
                    s.delete(m)
            return len(doomed)


def _epoch(value: datetime | str) -> float:
    """A stored time as epoch seconds (a plain-row read may give SQLite's text form)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


class _MovedOn(Exception):
    """An execution's row moved on while its end was being written (the write is rolled back)."""
