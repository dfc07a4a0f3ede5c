"""The database: Alembic migrations match the models, `init` is repeatable and keeps data."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from conftest import VhOrch, make_project
from vh_orch.orchestrator.db import get_engine, upgrade
from vh_orch.orchestrator.store import Store


def test_migrations_create_exactly_the_schema_of_the_models(db_url: str) -> None:
    url = db_url
    upgrade(url)
    with get_engine(url).connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), SQLModel.metadata)
    assert diff == []


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    upgrade(url)
    with get_engine(url).connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000


def test_init_twice_is_harmless_and_keeps_data(vh: VhOrch, tmp_path: Path) -> None:
    folder = make_project(tmp_path, "p", "- step:\n    name: s\n    image: busybox\n    command: echo hi\n")
    vh("project", "add", "p")
    created = vh.run_json("s", "--project", "p", "--adhoc", str(folder))
    vh("init")
    assert vh.json("exec", "info", str(created["id"]))["status"] == "queued"
    assert [p["name"] for p in vh.json("project", "list")] == ["p"]
    assert [e["name"] for e in vh.json("env", "list")] == ["local"]


def test_commands_before_init_say_how_to_start(tmp_path: Path) -> None:
    cli = VhOrch(tmp_path / "fresh")
    result = cli("project", "list", check=False)
    assert result.returncode == 1
    assert "run `vh-orch init` first" in result.stderr
    assert not (tmp_path / "fresh" / "state.db").exists()


def test_counters_are_per_project_and_ids_global(vh: VhOrch, tmp_path: Path) -> None:
    folder = make_project(tmp_path, "p", "- step:\n    name: s\n    image: busybox\n    command: echo hi\n")
    vh("project", "add", "a")
    vh("project", "add", "b")
    runs = [vh.run_json("s", "--project", name, "--adhoc", str(folder)) for name in ("a", "b", "a")]
    assert [(r["project"], r["counter"]) for r in runs] == [("a", 1), ("b", 1), ("a", 2)]
    assert len({r["id"] for r in runs}) == 3
    store = Store(f"sqlite:///{vh.home / 'state.db'}")
    events = store.events_after(runs[0]["id"], 0)
    assert [(e.kind, e.text) for e in events] == [("status", "created"), ("status", "queued")]


def test_projects_made_before_users_existed_belong_to_the_admin_after_the_upgrade(tmp_path: Path) -> None:
    from alembic import command

    from vh_orch.orchestrator.db import alembic_config

    url = f"sqlite:///{tmp_path / 'state.db'}"
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.exec_driver_sql("INSERT INTO project (name, execution_counter, created_at) "
                             "VALUES ('old', 3, '2026-11-01 10:00:00.000000')")
    upgrade(url)
    store = Store(url)
    admin = store.get_user("admin")
    assert admin.is_admin and admin.password_hash is None
    old = store.get_project("old")
    assert (old.owner_id, old.execution_counter) == (admin.id, 3)
    assert store.create_project("new", None, None).owner_id == admin.id


def test_an_installation_with_executions_upgrades_to_tasks_in_place(db_url: str) -> None:
    """0005 adds columns to `project` and `execution`, which other tables' rows refer to: it must not
    rebuild them (SQLite refuses to drop a table that rows refer to), and every row stays (0015 indexes
    the metadata numbers of those already there)."""
    from alembic import command
    from sqlmodel import select

    from vh_orch.orchestrator.db import alembic_config, head_revision, schema_revision
    from vh_orch.orchestrator.models import MetadataNumber

    url = db_url
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        sql = conn.exec_driver_sql
        sql("INSERT INTO project (name, owner_id, execution_counter, created_at) "
            "VALUES ('old', 1, 1, '2026-11-01 10:00:00.000000')")
        sql("INSERT INTO \"commit\" (project_id, kind, identifier, config_yaml, created_at) "
            "VALUES (1, 'adhoc', 'abc', '- step: {name: s, image: x, command: c}', '2026-11-01 10:00:00.000000')")
        sql("INSERT INTO environment (name, cloud, min_scale, max_scale, idle_timeout_s, spot, price_per_hour, "
            "slots, max_attempts, settings, created_at, updated_at) VALUES ('local', 'local', 0, 1, 600, FALSE, 0, 1, 3, "
            "'{}', '2026-11-01 10:00:00.000000', '2026-11-01 10:00:00.000000')")
        sql("INSERT INTO execution (project_id, counter, commit_id, step, command, parameters, inputs, "
            "environment_variables, environment_id, status, priority, attempt, created_at, metadata_latest, last_seq) "
            "VALUES (1, 1, 1, 's', 'c', '{}', '{}', '{}', 1, 'complete', 0, 1, '2026-11-01 10:00:00.000000', "
            "'{\"acc\": 0.5}', 2)")
        sql("INSERT INTO execution_event (execution_id, seq, time, kind, stream, text) "
            "VALUES (1, 2, '2026-11-01 10:00:01.000000', 'log', 'stdout', 'hello')")
    assert schema_revision(url) == "0004"
    upgrade(url)
    assert schema_revision(url) == head_revision()
    store = Store(url)
    old = store.get_execution(1)
    assert (old.task_id, old.task_index, old.metadata_latest) == (None, None, {"acc": 0.5})
    with store.read() as s:  # 0015 filled the sort index from the rows already there
        assert [(n.execution_id, n.key, n.value) for n in s.exec(select(MetadataNumber))] == [(1, "acc", 0.5)]
    assert [e.text for e in store.events_after(1, 0)] == ["hello"]
    assert store.get_project("old").task_counter == 0
    if url.startswith("sqlite"):
        with get_engine(url).connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []


def seeded(db_url: str):  # type: ignore[no-untyped-def]
    """A migrated store with a project, an ad-hoc commit and the `local` environment."""
    upgrade(db_url)
    store = Store(db_url)
    project = store.create_project("p", None, None)
    commit = store.get_or_create_commit(project.id, "adhoc", "abc", "- step: {name: s, image: x, command: c}")  # type: ignore[arg-type]
    env, _ = store.ensure_environment("local", "local")
    return store, project, commit, env


def test_sorting_by_a_metadata_key_is_the_same_on_both_databases(db_url: str) -> None:
    """Numbers by value, then every execution without a number for the key (text, nothing, a list), by id."""
    from datetime import UTC, datetime

    from vh_orch.orchestrator.models import Execution
    from vh_orch.orchestrator.store import LogLine
    from vh_orch.orchestrator.store.queries import ExecutionFilter

    store, project, commit, env = seeded(db_url)
    values = [0.5, 2, None, 10, "high", -3, [1, 2], 2]
    ids = []
    for value in values:
        e = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                             command="c", environment_id=env.id))  # type: ignore[arg-type]
        ids.append(e.id)
        if value is not None:
            point = {"acc": value}
            store.append_log(e.id, [LogLine(datetime.now(UTC), "stdout", str(point), point)])  # type: ignore[arg-type]
    by = dict(zip(ids, values, strict=True))
    _, rows = store.query_executions(ExecutionFilter(), sort="-acc", limit=100)
    assert [by[r.id] for r in rows][:5] == [10, 2, 2, 0.5, -3]
    assert [r.id for r in rows][1:3] == sorted([i for i in ids if by[i] == 2], reverse=True)
    _, rows = store.query_executions(ExecutionFilter(), sort="acc", limit=100)
    assert [by[r.id] for r in rows][:5] == [-3, 0.5, 2, 2, 10]
    assert len(rows) == len(values)


def test_a_page_sorted_by_a_metadata_key_is_a_slice_of_the_whole_order(db_url: str) -> None:
    """Every page (each limit and offset, both directions, with and without filters) is the slice of one
    order worked out here: numbers by value then id, then the rest (text, a list, true, nothing) by id;
    values that change type later move. The index path (metadata_number, kept by triggers) and the
    JSON path (a narrow filter) give the same pages."""
    from datetime import UTC, datetime

    from sqlmodel import select

    from vh_orch.orchestrator.models import Execution, MetadataNumber
    from vh_orch.orchestrator.store import LogLine
    from vh_orch.orchestrator.store.queries import ExecutionFilter

    store, project, commit, env = seeded(db_url)
    other = store.create_project("other", None, None)
    values: dict[int, object] = {}
    for i, value in enumerate([3, 1.5, "x", None, 3, -2, [1], True, 0, 7.25, "y", 1.5, None, 2**40, -0.5]):
        target = other if i % 5 == 4 else project
        e = store.create_execution(Execution(project_id=target.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                             command="c", environment_id=env.id,  # type: ignore[arg-type]
                                             status="complete" if i % 3 else "error"))
        if value is not None:
            store.append_log(e.id, [LogLine(datetime.now(UTC), "stdout", "m", {"m": value, "z": 1})])  # type: ignore[arg-type]
        values[e.id] = value  # type: ignore[index]
    # Later points change a value's type both ways, and leave other keys alone.
    changed = sorted(values)[:3]
    for execution_id, value in zip(changed, ["now text", 11, [2]], strict=True):
        store.append_log(execution_id, [LogLine(datetime.now(UTC), "stdout", "m", {"m": value})])
        values[execution_id] = value
    with store.read() as s:
        stored = {(n.execution_id, n.key): n.value for n in s.exec(select(MetadataNumber))}
    is_number = lambda v: isinstance(v, int | float) and not isinstance(v, bool)  # noqa: E731
    assert stored == {**{(i, "m"): float(v) for i, v in values.items() if is_number(v)},  # type: ignore[arg-type]
                      **{(i, "z"): 1.0 for i, v in values.items() if v is not None}}

    def expected(ids: list[int], descending: bool) -> list[int]:
        numbers = sorted((i for i in ids if is_number(values[i])), key=lambda i: (values[i], i),  # type: ignore[return-value]
                         reverse=descending)
        return numbers + sorted((i for i in ids if not is_number(values[i])), reverse=descending)

    rows = {e.id: e for e in store.query_executions(ExecutionFilter(), sort="id", limit=100)[1]}
    filters = [ExecutionFilter(), ExecutionFilter(project_ids=[project.id]),  # type: ignore[list-item]
               ExecutionFilter(project_ids=[project.id, other.id], statuses=["complete"]),  # type: ignore[list-item]
               ExecutionFilter(project_ids=[project.id], counters=[rows[i].counter for i in rows  # type: ignore[list-item]
                                                                  if rows[i].project_id == project.id])]
    for where in filters:
        chosen = [i for i, e in rows.items() if (where.project_ids is None or e.project_id in where.project_ids)
                  and (not where.statuses or e.status in where.statuses)]
        for descending in (True, False):
            whole = expected(chosen, descending)
            sort = ("-" if descending else "") + "m"
            assert [e.id for e in store.query_executions(where, sort=sort, limit=None)[1]] == whole  # type: ignore[arg-type]
            for limit in (1, 4, 100):
                for offset in range(len(whole) + 2):
                    total, page = store.query_executions(where, sort=sort, limit=limit, offset=offset)
                    assert (total, [e.id for e in page]) == (len(whole), whole[offset:offset + limit]), (
                        where, sort, limit, offset)


def test_times_and_json_read_back_the_same_on_both_databases(db_url: str) -> None:
    """A time written in another zone reads back as the same instant in UTC; JSON keeps its types,
    nesting and non-ASCII text; the raw-SQL log path stores the same times as the ORM path."""
    from datetime import UTC, datetime, timedelta, timezone

    from vh_orch.orchestrator.models import Execution
    from vh_orch.orchestrator.store import LogLine

    store, project, commit, env = seeded(db_url)
    helsinki = datetime(2026, 12, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    parameters = {"lr": 0.001, "layers": [64, 32], "name": "run ☕", "flag": True, "none": None, "big": 2**53}
    e = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                         command="c", environment_id=env.id, parameters=parameters))  # type: ignore[arg-type]
    with store.write() as s:
        row = s.get_one(Execution, e.id)
        row.ended_at = helsinki
        s.add(row)
    stored = store.get_execution(e.id)  # type: ignore[arg-type]
    assert stored.ended_at == helsinki and stored.ended_at.utcoffset() == timedelta(0)
    assert stored.ended_at.astimezone(UTC).hour == 12
    assert stored.parameters == parameters and type(stored.parameters["big"]) is int
    store.append_log(e.id, [LogLine(helsinki, "stdout", "a line ☕"),  # type: ignore[arg-type]
                            LogLine(helsinki, "stdout", '{"loss": 0.5}', {"loss": 0.5})])
    events = [ev for ev in store.events_after(e.id, 0) if ev.kind == "log"]  # type: ignore[arg-type]
    assert [(ev.text, ev.time) for ev in events] == [("a line ☕", helsinki), ('{"loss": 0.5}', helsinki)]
    assert store.get_execution(e.id).metadata_latest == {"loss": 0.5}  # type: ignore[arg-type]


def test_a_new_machine_pulls_the_images_its_queue_needs_first_then_the_latest_used(db_url: str) -> None:
    from sqlalchemy import update

    from vh_orch.orchestrator.models import Execution

    store, project, commit, env = seeded(db_url)
    other, _ = store.ensure_environment("other", "fake")
    for image, status, where in [("old:1", "complete", env), ("late:1", "complete", env), ("queued:1", "queued", env),
                                 (None, "complete", env), ("elsewhere:1", "queued", other), ("late:1", "error", env),
                                 ("queued:2", "queued", env)]:
        e = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                             command="c", environment_id=where.id, image=image))  # type: ignore[arg-type]
        with store.write() as s:
            s.execute(update(Execution).where(Execution.id == e.id).values(status=status))  # type: ignore[arg-type]
    assert store.recent_images(env.id, limit=3) == ["queued:1", "queued:2", "late:1"]  # type: ignore[arg-type]
    assert store.recent_images(env.id, limit=10) == ["queued:1", "queued:2", "late:1", "old:1"]  # type: ignore[arg-type]
    assert store.recent_images(other.id) == ["elsewhere:1"]  # type: ignore[arg-type]


def test_has_work_sees_unended_work_moving_machines_and_missing_kept_machines_on_both_databases(db_url: str) -> None:
    """What lets a daemon without work skip its whole passes (Daemon._reconcile_job): each kind of
    work a pass must see makes `has_work` true, and only that."""
    from sqlalchemy import update

    from vh_orch.orchestrator.models import Environment, Execution, Machine

    store, project, commit, env = seeded(db_url)
    assert not store.has_work()  # `local` keeps no machine (min_scale 0 here)

    def set_(model, row_id: int, **values) -> None:  # type: ignore[no-untyped-def]
        with store.write() as s:
            s.execute(update(model).where(model.id == row_id).values(**values))

    set_(Environment, env.id, min_scale=1)
    assert store.has_work()  # it keeps a machine it does not have
    machine = store.create_machine(env, None, None)
    assert store.has_work()  # requested: on its way up
    set_(Machine, machine.id, state="ready")
    assert not store.has_work()  # ready and waiting: nothing to do
    set_(Machine, machine.id, state="busy")
    assert store.has_work()
    set_(Machine, machine.id, state="ready")
    execution = store.create_execution(Execution(project_id=project.id, counter=0, commit_id=commit.id, step="s",  # type: ignore[arg-type]
                                                 command="c", environment_id=env.id))  # type: ignore[arg-type]
    assert store.has_work()
    for status, expected in [("queued", True), ("started", True), ("stopping", True), ("complete", False),
                             ("error", False), ("stopped", False)]:
        set_(Execution, execution.id, status=status)
        assert store.has_work() is expected, status
    set_(Machine, machine.id, state="terminated")
    assert store.has_work()  # gone: `local` keeps one
    set_(Environment, env.id, removed_at=commit.created_at)
    assert not store.has_work()  # a removed environment keeps nothing
