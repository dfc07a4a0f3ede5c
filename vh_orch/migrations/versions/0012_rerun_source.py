"""re-run source: an execution made by "run again" points at the execution it was made from

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (as in 0005): rows of other tables refer to `execution`, so it is not rebuilt.
    # Alembic adds no foreign key on SQLite; SQLite's own ALTER can, for a column whose default is NULL.
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE execution ADD COLUMN rerun_of_id INTEGER REFERENCES execution (id)")
    else:
        op.add_column('execution', sa.Column('rerun_of_id', sa.Integer(), nullable=True))
        op.create_foreign_key('fk_execution_rerun_of', 'execution', 'execution', ['rerun_of_id'], ['id'])
    op.create_index('ix_execution_rerun_of_id', 'execution', ['rerun_of_id'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_execution_rerun_of_id', table_name='execution')
    with op.batch_alter_table('execution', schema=None) as batch_op:
        if op.get_bind().dialect.name != "sqlite":
            batch_op.drop_constraint('fk_execution_rerun_of', type_='foreignkey')
        batch_op.drop_column('rerun_of_id')
