"""orchestrator core

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('installation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cluster_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('quota',
    sa.Column('user', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('max_concurrent', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('user')
    )
    op.create_table('launch_failure',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('environment_id', sa.Integer(), nullable=False),
    sa.Column('time', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('zone', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('instance_type', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('message', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['environment_id'], ['environment.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('launch_failure', schema=None) as batch_op:
        batch_op.create_index('ix_launch_failure_env_time', ['environment_id', 'time'], unique=False)

    with op.batch_alter_table('environment', schema=None) as batch_op:
        batch_op.add_column(sa.Column('removed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))

    with op.batch_alter_table('machine', schema=None) as batch_op:
        batch_op.add_column(sa.Column('zone', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('instance_type', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch_op.add_column(sa.Column('state_changed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False, server_default=sa.text('CURRENT_TIMESTAMP')))
        batch_op.add_column(sa.Column('terminate_attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('retry_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('machine', schema=None) as batch_op:
        batch_op.drop_column('last_error')
        batch_op.drop_column('retry_at')
        batch_op.drop_column('terminate_attempts')
        batch_op.drop_column('state_changed_at')
        batch_op.drop_column('instance_type')
        batch_op.drop_column('zone')

    with op.batch_alter_table('environment', schema=None) as batch_op:
        batch_op.drop_column('removed_at')

    with op.batch_alter_table('launch_failure', schema=None) as batch_op:
        batch_op.drop_index('ix_launch_failure_env_time')

    op.drop_table('launch_failure')
    op.drop_table('quota')
    op.drop_table('installation')
