"""Projects, commits, environments, executions, outputs and the daemon's heartbeat."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from vh_orch.errors import NotFound, UserInputError
from vh_orch.orchestrator.models import (
    Commit,
    DaemonHeartbeat,
    Environment,
    Execution,
    Machine,
    MetadataPoint,
    Output,
    Project,
)
from vh_orch.orchestrator.store.database import ROWS
from vh_orch.orchestrator.store.lifecycle import ALLOWED_TRANSITIONS, LifecycleStore
from vh_orch.orchestrator.store.users import UsersStore
from vh_orch.values import ExecutionStatus, MachineState

S = ExecutionStatus


class CoreStore(LifecycleStore, UsersStore):
    # -- projects and commits -------------------------------------------------

    def create_project(
        self, name: str, repo_url: str | None, mirror_path: str | None, owner_id: int | None = None,
        access: dict[str, str | None] | None = None,
    ) -> Project:
        """A new project, owned by `owner_id` (default: the installation's first administrator); access:
        its repository's deploy key, token and host key columns (store/repos.py), encrypted already."""
        if owner_id is None:
            owner_id = self.admin_user().id
        try:
            with self.write() as s:
                project = Project(name=name, repo_url=repo_url, mirror_path=mirror_path, owner_id=owner_id,
                                  **(access or {}))
                s.add(project)
                s.flush()
                return project
        except IntegrityError:
            raise UserInputError(f"a project named {name!r} already exists") from None

    def get_project(self, name: str) -> Project:
        with self.read() as s:
            project = s.exec(select(Project).where(Project.name == name)).first()
        if project is None:
            raise NotFound(f"no project named {name!r}; see `vh-orch project list`")
        return project

    def get_project_by_id(self, project_id: int) -> Project:
        with self.read() as s:
            return s.get_one(Project, project_id)

    def update_bucket_grants(self, name: str, added: Sequence[str], removed: Sequence[str]) -> Project:
        """Add and take back a project's bucket grants (in one transaction); the project as it is now."""
        with self.write() as s:
            project = s.exec(select(Project).where(Project.name == name)).first()
            if project is None:
                raise NotFound(f"no project named {name!r}; see `vh-orch project list`")
            unknown = sorted(set(removed) - set(project.allowed_buckets or []))
            if unknown:
                raise UserInputError(f"project {name!r} has no grant {unknown[0]!r} to take back; it has: "
                                     f"{', '.join(project.allowed_buckets or []) or 'none'}")
            grants = [g for g in project.allowed_buckets or [] if g not in removed]
            project.allowed_buckets = grants + [g for g in dict.fromkeys(added) if g not in grants]
            s.add(project)
            s.flush()
            s.refresh(project)
            return project

    def list_projects(self) -> list[Project]:
        with self.read() as s:
            return list(s.exec(select(Project).order_by(Project.name)))

    def get_or_create_commit(
        self,
        project_id: int,
        kind: str,
        identifier: str,
        config_yaml: str,
        ref: str | None = None,
        archive_path: str | None = None,
    ) -> Commit:
        with self.write() as s:
            commit = s.exec(
                select(Commit).where(
                    Commit.project_id == project_id,
                    Commit.kind == kind,
                    Commit.identifier == identifier,
                )
            ).first()
            if commit is None:
                commit = Commit(
                    project_id=project_id,
                    kind=kind,
                    identifier=identifier,
                    ref=ref,
                    archive_path=archive_path,
                    config_yaml=config_yaml,
                )
                s.add(commit)
                s.flush()
            return commit

    def adhoc_archives(self) -> set[str]:
        with self.read() as s:
            return set(s.exec(select(Commit.archive_path).where(col(Commit.archive_path).is_not(None))))  # type: ignore[arg-type]

    def get_commit(self, commit_id: int) -> Commit:
        """A commit (never changed once stored: kept after its first read, every runner reads its own)."""
        def read() -> Commit:
            with self.read() as s:
                return s.get_one(Commit, commit_id)
        return self.kept("commit", commit_id, read)

    # -- environments and machines --------------------------------------------

    def ensure_environment(self, name: str, cloud: str, **fields: Any) -> tuple[Environment, bool]:
        """Create the environment if it does not exist; never changes an existing one."""
        with self.write() as s:
            env = s.exec(select(Environment).where(Environment.name == name)).first()
            if env is not None:
                return env, False
            env = Environment(name=name, cloud=cloud, **fields)
            s.add(env)
            s.flush()
            return env, True

    def get_environment(self, name: str) -> Environment:
        with self.read() as s:
            env = s.exec(
                select(Environment).where(Environment.name == name, col(Environment.removed_at).is_(None))
            ).first()
        if env is None:
            raise NotFound(f"no environment named {name!r}; see `vh-orch env list`")
        return env

    def get_environment_by_id(self, env_id: int) -> Environment:
        with self.read() as s:
            return s.get_one(Environment, env_id)

    def list_environments(self) -> list[Environment]:
        with self.read() as s:
            return list(
                s.exec(select(Environment).where(col(Environment.removed_at).is_(None)).order_by(Environment.name))
            )

    def update_environment(self, name: str, changes: dict[str, Any], settings: dict[str, Any]) -> Environment:
        with self.write() as s:
            env = s.exec(select(Environment).where(Environment.name == name)).first()
            if env is None:
                raise NotFound(f"no environment named {name!r}; see `vh-orch env list`")
            for key, value in changes.items():
                setattr(env, key, value)
            if settings:
                env.settings = {**env.settings, **settings}
            env.updated_at = self.clock()
            s.add(env)
            return env

    def ensure_host_machine(self, env: Environment, hostname: str) -> Machine:
        """The machine row that stands for this host in a `local` environment (a read, every pass; a
        write only when there is none)."""
        live = select(Machine).where(
            Machine.environment_id == env.id,
            col(Machine.state).not_in([MachineState.TERMINATED, MachineState.FAILED, MachineState.LOST]),
        )
        with self.read() as s:
            machine = s.exec(live).first()
        if machine is not None:
            return machine
        with self.write() as s:
            machine = s.exec(live).first()  # looked for again under the write lock: made once
            if machine is None:
                machine = Machine(
                    environment_id=env.id,
                    state=MachineState.READY,
                    instance_id=f"local:{hostname}",
                    address="localhost",
                    bootstrap_step="ready",
                    idle_since=self.clock(),
                    created_at=self.clock(),
                    state_changed_at=self.clock(),
                )
                s.add(machine)
                s.flush()
            return machine

    def list_machines(self, include_finished: bool = False) -> list[tuple[Machine, str]]:
        """Machines with their environment's name, by id: the live ones (LIVE_MACHINE), and with
        include_finished the terminated, failed and lost ones too."""
        from vh_orch.orchestrator.store.fleet import LIVE_MACHINE  # fleet's own; it never imports core

        with self.read() as s:
            query = select(Machine, Environment.name).join(Environment)
            if not include_finished:
                query = query.where(col(Machine.state).in_(LIVE_MACHINE))
            return [(m, name) for m, name in s.exec(query.order_by(Machine.id))]

    # -- executions -------------------------------------------------------------

    def create_execution(self, execution: Execution) -> Execution:
        """Insert a new execution (status `queued`) with the next counter of its project."""
        with self.write() as s:
            self._insert_execution(s, execution)
            self.admit(s, [execution])  # queued at once unless over quota
            return execution

    def find_execution(self, execution_id: int) -> Execution | None:
        with self.read() as s:
            return s.get(Execution, execution_id)

    def get_execution(self, execution_id: int) -> Execution:
        with self.read() as s:
            execution = s.get(Execution, execution_id)
        if execution is None:
            raise NotFound(f"no execution with id {execution_id}; see `vh-orch exec list`")
        return execution

    def list_executions(
        self, project_id: int | None = None, status: str | None = None, limit: int | None = None
    ) -> list[Execution]:
        with self.read() as s:
            query = select(Execution)
            if project_id is not None:
                query = query.where(Execution.project_id == project_id)
            if status is not None:
                query = query.where(Execution.status == status)
            query = query.order_by(col(Execution.id).desc())
            if limit:
                query = query.limit(limit)
            return list(s.exec(query))

    def project_names(self) -> dict[int, str]:
        with self.read() as s:
            return {p.id: p.name for p in s.exec(select(Project))}  # type: ignore[misc]

    def environment_names(self) -> dict[int, str]:
        with self.read() as s:
            return {e.id: e.name for e in s.exec(select(Environment))}  # type: ignore[misc]

    def set_status(
        self,
        execution_id: int,
        status: str,
        reason: str | None = None,
        exit_code: int | None = None,
    ) -> Execution:
        """Record a status change (and its event); an impossible transition is a no-op."""
        with self.write() as s:
            execution = s.get_one(Execution, execution_id)
            if status in ALLOWED_TRANSITIONS.get(execution.status, frozenset()):
                if exit_code is not None:
                    execution.exit_code = exit_code
                self._transition(s, execution, status, reason=reason)
            return execution

    def request_stop(self, execution_id: int, reason: str) -> Execution:
        """Queued or created: stopped at once. Started: `stopping`, the runner finishes it."""
        with self.write() as s:
            execution = s.get(Execution, execution_id)
            if execution is None:
                raise NotFound(f"no execution with id {execution_id}; see `vh-orch exec list`")
            if execution.status in (S.CREATED, S.QUEUED):
                self._transition(s, execution, S.STOPPED, reason=reason)
            elif execution.status == S.STARTED:
                self._transition(s, execution, S.STOPPING, reason=reason)
            return execution

    def executions_in(self, statuses: Sequence[str], environment_id: int | None = None) -> list[Execution]:
        with self.read() as s:
            query = select(Execution).where(col(Execution.status).in_(list(statuses)))
            if environment_id is not None:
                query = query.where(Execution.environment_id == environment_id)
            return list(s.exec(query.order_by(Execution.id)))

    def recent_images(self, environment_id: int, limit: int = 3) -> list[str]:
        """The images a new machine of the environment is likely to need: those of its queue (in
        queue order), then those its latest executions used; at most `limit`, each once."""
        images: list[str] = []
        with self.read() as s:
            base = select(Execution.image).where(Execution.environment_id == environment_id,
                                                 col(Execution.image).is_not(None))
            waiting = s.exec(base.where(col(Execution.status).in_([S.CREATED, S.QUEUED])).order_by(Execution.id)
                             .limit(50))
            latest = s.exec(base.order_by(col(Execution.id).desc()).limit(200))
            for image in [*waiting, *latest]:
                if image and image not in images:
                    images.append(image)
                    if len(images) == limit:
                        break
        return images

    # -- logs and metadata ------------------------------------------------------

    def metadata_points(self, execution_id: int) -> list[MetadataPoint]:
        with self.read() as s:
            return list(
                s.exec(
                    select(MetadataPoint)
                    .where(MetadataPoint.execution_id == execution_id)
                    .order_by(col(MetadataPoint.seq))
                )
            )

    # -- outputs ----------------------------------------------------------------

    def outputs_of(self, execution_id: int) -> list[Output]:
        with self.read() as s:
            return list(s.exec(select(Output).where(Output.execution_id == execution_id).order_by(Output.name)))

    def get_output(self, datum_id: str) -> Output:
        with self.read() as s:
            output = s.get(Output, datum_id)
        if output is None:
            raise NotFound(f"no datum {datum_id!r}: datum:// ids come from `vh-orch exec outputs ID`")
        return output

    def outputs_at(self, uri: str) -> list[Output]:
        """The outputs stored at this URI (an s3:// or gs:// input may name one instead of its datum)."""
        with self.read() as s:
            return list(s.exec(select(Output).where(Output.uri == uri).limit(100)))

    # -- the daemon's heartbeat ------------------------------------------------

    def register_daemon(self, stale_after: timedelta) -> DaemonHeartbeat:
        """Record this process as a daemon (a replica). On SQLite there is one: refuse if another one
        has a fresh heartbeat. On PostgreSQL any number share the work through leases."""
        with self.write() as s:
            now = self.clock()
            alive = s.exec(
                select(DaemonHeartbeat).where(
                    col(DaemonHeartbeat.stopped_at).is_(None),
                    DaemonHeartbeat.heartbeat_at > now - stale_after,
                )
            ).first()
            if alive is not None and alive.hostname == socket.gethostname() and not _pid_alive(alive.pid):
                # Its process is gone (killed, crashed): no need to wait for the heartbeat to age.
                alive.stopped_at = now
                s.add(alive)
                alive = None
            sqlite = s.bind.dialect.name == "sqlite"  # type: ignore[union-attr]
            if alive is not None and sqlite:
                raise UserInputError(
                    f"another vh-orch daemon is running for this database (pid {alive.pid} on "
                    f"{alive.hostname}, last heartbeat {alive.heartbeat_at:%H:%M:%S} UTC); "
                    "stop it first: one daemon per SQLite database (several replicas share a PostgreSQL "
                    "database: VH_ORCH_DB=postgresql+psycopg://...)"
                )
            if sqlite:  # the one daemon: every other heartbeat is stale, its leases are free now
                s.execute(update(DaemonHeartbeat).where(col(DaemonHeartbeat.stopped_at).is_(None))
                          .values(stopped_at=now))
            beat = DaemonHeartbeat(pid=os.getpid(), hostname=socket.gethostname(), started_at=now, heartbeat_at=now)
            s.add(beat)
            s.flush()
            return beat

    def beat(self, heartbeat_id: int) -> None:
        with self.write(ROWS) as s:
            s.execute(
                update(DaemonHeartbeat).where(col(DaemonHeartbeat.id) == heartbeat_id).values(heartbeat_at=self.clock())
            )

    def daemon_stopped(self, heartbeat_id: int) -> None:
        with self.write() as s:
            s.execute(
                update(DaemonHeartbeat).where(col(DaemonHeartbeat.id) == heartbeat_id).values(stopped_at=self.clock())
            )

    def fresh_daemon(self, stale_after: timedelta) -> DaemonHeartbeat | None:
        with self.read() as s:
            return s.exec(
                select(DaemonHeartbeat).where(
                    col(DaemonHeartbeat.stopped_at).is_(None),
                    DaemonHeartbeat.heartbeat_at > self.clock() - stale_after,
                )
            ).first()



def _pid_alive(pid: int) -> bool:
    """Whether a process of this host runs; a zombie (killed, not yet reaped by its parent) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True
