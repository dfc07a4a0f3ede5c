"""restricted work: executions a user who is not an administrator submitted (they run isolated, fetch only
under the fetch policy), and the buckets a project's restricted executions may read

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch (copy, drop, rename): as in 0005, SQLite cannot drop `project` or
    # `execution` while other tables' rows refer to them, and copying them is slow.
    op.add_column('execution', sa.Column('restricted', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('project', sa.Column('allowed_buckets', sa.JSON(), server_default='[]', nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('project') as batch:
        batch.drop_column('allowed_buckets')
    with op.batch_alter_table('execution') as batch:
        batch.drop_column('restricted')
