"""log blocks: consecutive lines of one stream in one row (log lines stored before stay rows)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('log_block',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('execution_id', sa.Integer(), nullable=False),
    sa.Column('first_seq', sa.Integer(), nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.Column('time', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('times', sa.JSON(), nullable=True),
    sa.Column('stream', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('stamped', sa.Boolean(), nullable=False),
    sa.Column('texts', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['execution_id'], ['execution.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('log_block', schema=None) as batch_op:
        batch_op.create_index('ix_log_block_first', ['execution_id', 'first_seq'], unique=True)
        batch_op.create_index('ix_log_block_last', ['execution_id', 'last_seq'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('log_block', schema=None) as batch_op:
        batch_op.drop_index('ix_log_block_last')
        batch_op.drop_index('ix_log_block_first')
    op.drop_table('log_block')
