"""tasks: collections of executions of one step (hyperparameter searches)

A task row holds its validated definition (`spec`) and what its children share (`template`);
its children are executions with `task_id` and a unique `task_index`; projects count tasks
like executions (`task_counter`).

Columns are added with ALTER TABLE ADD COLUMN (no table is rebuilt), so an installation with
executions upgrades in place.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('counter', sa.Integer(), nullable=False),
    sa.Column('commit_id', sa.Integer(), nullable=False),
    sa.Column('step', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('template', sa.JSON(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('user', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('ended_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('pruned', sa.Integer(), nullable=False, server_default='0'),
    sa.Column('saved_seconds', sa.Float(), nullable=False, server_default='0'),
    sa.ForeignKeyConstraint(['commit_id'], ['commit.id'], ),
    sa.ForeignKeyConstraint(['environment_id'], ['environment.id'], ),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('project_id', 'counter')
    )
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_project_id'), ['project_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_task_status'), ['status'], unique=False)

    # Plain ADD COLUMN, not a batch (copy, drop, rename): on SQLite, dropping `project` or `execution`
    # fails while other tables' rows refer to them (foreign keys are enforced), and copying them is slow.
    op.add_column('project', sa.Column('task_counter', sa.Integer(), nullable=False, server_default='0'))
    if op.get_bind().dialect.name == "sqlite":  # alembic adds no constraint on SQLite; SQLite's own ALTER can
        op.execute("ALTER TABLE execution ADD COLUMN task_id INTEGER REFERENCES task (id)")
    else:
        op.add_column('execution', sa.Column('task_id', sa.Integer(), nullable=True))
        op.create_foreign_key('fk_execution_task', 'execution', 'task', ['task_id'], ['id'])
    op.add_column('execution', sa.Column('task_index', sa.Integer(), nullable=True))
    op.create_index('ix_execution_task_id', 'execution', ['task_id'], unique=False)
    op.create_index('uq_execution_task_index', 'execution', ['task_id', 'task_index'], unique=True)


def downgrade() -> None:
    op.drop_index('uq_execution_task_index', table_name='execution')
    op.drop_index('ix_execution_task_id', table_name='execution')
    with op.batch_alter_table('execution', schema=None) as batch_op:
        batch_op.drop_constraint('fk_execution_task', type_='foreignkey')
        batch_op.drop_column('task_index')
        batch_op.drop_column('task_id')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_column('task_counter')
    with op.batch_alter_table('task', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_status'))
        batch_op.drop_index(batch_op.f('ix_task_project_id'))
    op.drop_table('task')
