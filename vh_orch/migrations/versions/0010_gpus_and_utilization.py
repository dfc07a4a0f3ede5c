"""GPUs and hardware use: each machine's GPUs, each execution's GPUs (asked and given) and peak
memory, and the utilisation samples of running executions

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch (as in 0009): `machine` and `execution` are referred to by other tables.
    op.add_column('machine', sa.Column('gpus', sa.Integer(), server_default='0', nullable=False))
    op.add_column('machine', sa.Column('gpu_model', sa.String(), nullable=True))
    op.add_column('execution', sa.Column('gpus', sa.Integer(), server_default='0', nullable=False))
    op.add_column('execution', sa.Column('gpu_indices', sa.JSON(), nullable=True))
    op.add_column('execution', sa.Column('peak_memory_bytes', sa.BigInteger(), nullable=True))
    op.create_table(
        'utilization_sample',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('execution_id', sa.Integer(), sa.ForeignKey('execution.id'), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('time', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('cpu_percent', sa.Float(), nullable=True),
        sa.Column('memory_bytes', sa.BigInteger(), nullable=True),
        sa.Column('gpus', sa.JSON(), nullable=True),
    )
    op.create_index('ix_utilization_sample_execution', 'utilization_sample', ['execution_id', 'time'])


def downgrade() -> None:
    op.drop_index('ix_utilization_sample_execution', table_name='utilization_sample')
    op.drop_table('utilization_sample')
    with op.batch_alter_table('execution') as batch:
        batch.drop_column('peak_memory_bytes')
        batch.drop_column('gpu_indices')
        batch.drop_column('gpus')
    with op.batch_alter_table('machine') as batch:
        batch.drop_column('gpu_model')
        batch.drop_column('gpus')
