"""costs and budgets: what each ended execution cost, and spending limits per user or project

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString
TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    # Plain ADD COLUMN (as in 0005): other tables refer to `execution`, so it is not rebuilt.
    op.add_column('execution', sa.Column('cost_usd', sa.Float(), nullable=True))
    op.create_table(
        'budget',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user', TEXT(), nullable=True),
        sa.Column('project_id', sa.Integer(), nullable=True),
        sa.Column('usd', sa.Float(), nullable=False),
        sa.Column('period', TEXT(), nullable=False),
        sa.Column('hard', sa.Boolean(), nullable=False),
        sa.Column('created_at', TIME(), nullable=False),
        sa.Column('updated_at', TIME(), nullable=False),
        sa.Column('warned_period', TIME(), nullable=True),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user', 'project_id'),
    )
    op.create_index('ix_budget_user', 'budget', ['user'])
    op.create_index('ix_budget_project_id', 'budget', ['project_id'])


def downgrade() -> None:
    op.drop_index('ix_budget_project_id', table_name='budget')
    op.drop_index('ix_budget_user', table_name='budget')
    op.drop_table('budget')
    with op.batch_alter_table('execution', schema=None) as batch_op:
        batch_op.drop_column('cost_usd')
