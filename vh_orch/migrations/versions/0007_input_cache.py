"""input cache: each machine's hits, misses and size; output sizes as 64-bit integers

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('machine') as batch:
        batch.add_column(sa.Column('input_cache_hits', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('input_cache_misses', sa.Integer(), server_default='0', nullable=False))
        batch.add_column(sa.Column('input_cache_bytes', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('output') as batch:
        batch.alter_column('size', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('output') as batch:
        batch.alter_column('size', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('machine') as batch:
        batch.drop_column('input_cache_bytes')
        batch.drop_column('input_cache_misses')
        batch.drop_column('input_cache_hits')
