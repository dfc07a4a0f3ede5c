"""metadata numbers: each execution's latest numeric metadata values as rows, indexed for sorting

A list sorted by a metadata key read every row's JSON (`metadata_latest`) to find its value, and
sorted them all: ~1 us a row on SQLite. The rows here hold the same numbers, indexed by (key,
project, value), so a page sorted by a key is read off the index in order. Triggers keep them equal
to `metadata_latest` on every write to it, whoever writes (the ingester's merge, a migration, a
tool); a value that is not a JSON number (text, a list, true) has no row, as it sorts with the
executions that lack the key.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-08
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString

COLUMNS = "INSERT INTO metadata_number (execution_id, project_id, key, value) "


def sqlite_numbers(row: str, source: str = "") -> str:
    """The numbers of `row`'s metadata_latest (NEW in a trigger) as metadata_number's columns."""
    return (f"SELECT {row}.id, {row}.project_id, j.key, j.value FROM {source}json_each({row}.metadata_latest) AS j "
            "WHERE j.type IN ('integer', 'real')")


def postgres_numbers(row: str, source: str = "") -> str:
    """The same on PostgreSQL. A double holds every number up to 1.8e308; a larger one (a 400-digit
    integer) is left out rather than failing the write that carries it."""
    number = "(j.value::text)::numeric"
    return (f"SELECT {row}.id, {row}.project_id, j.key, {number}::double precision "
            f"FROM {source}json_each({row}.metadata_latest) AS j "
            f"WHERE json_typeof(j.value) = 'number' AND abs({number}) < 1e308")


SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER metadata_number_insert AFTER INSERT ON execution BEGIN
        {COLUMNS}{sqlite_numbers('NEW')};
    END""",
    f"""CREATE TRIGGER metadata_number_update AFTER UPDATE OF metadata_latest ON execution BEGIN
        DELETE FROM metadata_number WHERE execution_id = NEW.id;
        {COLUMNS}{sqlite_numbers('NEW')};
    END""",
]
POSTGRES_FUNCTION = f"""CREATE FUNCTION metadata_number_sync() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        DELETE FROM metadata_number WHERE execution_id = NEW.id;
    END IF;
    {COLUMNS}{postgres_numbers('NEW')};
    RETURN NULL;
END $$ LANGUAGE plpgsql"""
POSTGRES_TRIGGERS = [
    "CREATE TRIGGER metadata_number_insert AFTER INSERT ON execution FOR EACH ROW EXECUTE FUNCTION metadata_number_sync()",
    "CREATE TRIGGER metadata_number_update AFTER UPDATE OF metadata_latest ON execution FOR EACH ROW "
    "EXECUTE FUNCTION metadata_number_sync()",
]


def upgrade() -> None:
    op.create_table(
        'metadata_number',
        sa.Column('execution_id', sa.Integer(), nullable=False),
        sa.Column('key', TEXT(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('value', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['execution_id'], ['execution.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('execution_id', 'key'),
    )
    op.create_index('ix_metadata_number_sort', 'metadata_number', ['key', 'project_id', 'value', 'execution_id'])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(COLUMNS + sqlite_numbers("e", source="execution AS e, "))
        for trigger in SQLITE_TRIGGERS:
            op.execute(trigger)
    else:
        op.execute(COLUMNS + postgres_numbers("e", source="execution AS e, "))
        op.execute(POSTGRES_FUNCTION)
        for trigger in POSTGRES_TRIGGERS:
            op.execute(trigger)


def downgrade() -> None:
    for name in ('metadata_number_update', 'metadata_number_insert'):
        op.execute(f"DROP TRIGGER IF EXISTS {name}" + (" ON execution" if op.get_bind().dialect.name != "sqlite" else ""))
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS metadata_number_sync()")
    op.drop_index('ix_metadata_number_sort', table_name='metadata_number')
    op.drop_table('metadata_number')
