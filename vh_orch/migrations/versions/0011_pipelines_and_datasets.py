"""pipelines and datasets: pipelines and their nodes (a node's execution or task points back at it,
unique per try), datasets, their versions and files, datum aliases, and output tags and metadata

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString
TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.add_column('project', sa.Column('pipeline_counter', sa.Integer(), server_default='0', nullable=False))
    op.create_table(
        'pipeline',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('counter', sa.Integer(), nullable=False),
        sa.Column('commit_id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=True),
        sa.Column('title', TEXT(), nullable=True),
        sa.Column('status', TEXT(), nullable=False),
        sa.Column('status_reason', TEXT(), nullable=True),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('user', TEXT(), nullable=True),
        sa.Column('restricted', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_at', TIME(), nullable=False),
        sa.Column('started_at', TIME(), nullable=True),
        sa.Column('ended_at', TIME(), nullable=True),
        sa.ForeignKeyConstraint(['commit_id'], ['commit.id']),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'counter'),
    )
    op.create_index('ix_pipeline_project_id', 'pipeline', ['project_id'])
    op.create_index('ix_pipeline_status', 'pipeline', ['status'])
    op.create_table(
        'pipeline_node',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('pipeline_id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=False),
        sa.Column('type', TEXT(), nullable=False),
        sa.Column('status', TEXT(), nullable=False),
        sa.Column('status_reason', TEXT(), nullable=True),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('execution_id', sa.Integer(), nullable=True),
        sa.Column('task_id', sa.Integer(), nullable=True),
        sa.Column('reused_execution_id', sa.Integer(), nullable=True),
        sa.Column('approved_by', TEXT(), nullable=True),
        sa.Column('started_at', TIME(), nullable=True),
        sa.Column('ended_at', TIME(), nullable=True),
        sa.ForeignKeyConstraint(['pipeline_id'], ['pipeline.id']),
        sa.ForeignKeyConstraint(['execution_id'], ['execution.id']),
        sa.ForeignKeyConstraint(['task_id'], ['task.id']),
        sa.ForeignKeyConstraint(['reused_execution_id'], ['execution.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('pipeline_id', 'name'),
    )
    op.create_index('ix_pipeline_node_pipeline_id', 'pipeline_node', ['pipeline_id'])
    # Plain ADD COLUMN (as in 0005): `execution` and `task` are referred to by other tables. No foreign
    # key: the node refers to its execution or task, and a cycle of keys leaves no order to drop tables in.
    for table in ('execution', 'task'):
        op.add_column(table, sa.Column('pipeline_node_id', sa.Integer(), nullable=True))
        op.add_column(table, sa.Column('pipeline_attempt', sa.Integer(), nullable=True))
        op.create_index(f'uq_{table}_pipeline_node', table, ['pipeline_node_id', 'pipeline_attempt'], unique=True)

    op.create_table(
        'dataset',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=False),
        sa.Column('created_at', TIME(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'name'),
    )
    op.create_index('ix_dataset_project_id', 'dataset', ['project_id'])
    op.create_table(
        'dataset_version',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dataset_id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=False),
        sa.Column('execution_id', sa.Integer(), nullable=True),
        sa.Column('created_at', TIME(), nullable=False),
        sa.ForeignKeyConstraint(['dataset_id'], ['dataset.id']),
        sa.ForeignKeyConstraint(['execution_id'], ['execution.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dataset_id', 'name'),
    )
    op.create_index('ix_dataset_version_dataset_id', 'dataset_version', ['dataset_id'])
    op.create_table(
        'dataset_file',
        sa.Column('version_id', sa.Integer(), nullable=False),
        sa.Column('output_id', TEXT(), nullable=False),
        sa.ForeignKeyConstraint(['version_id'], ['dataset_version.id']),
        sa.ForeignKeyConstraint(['output_id'], ['output.id']),
        sa.PrimaryKeyConstraint('version_id', 'output_id'),
    )
    op.create_table(
        'datum_alias',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=False),
        sa.Column('output_id', TEXT(), nullable=False),
        sa.Column('updated_at', TIME(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.ForeignKeyConstraint(['output_id'], ['output.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'name'),
    )
    op.create_index('ix_datum_alias_project_id', 'datum_alias', ['project_id'])
    op.add_column('output', sa.Column('tags', sa.JSON(), nullable=True))
    op.add_column('output', sa.Column('properties', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('output') as batch:
        batch.drop_column('properties')
        batch.drop_column('tags')
    op.drop_index('ix_datum_alias_project_id', table_name='datum_alias')
    op.drop_table('datum_alias')
    op.drop_table('dataset_file')
    op.drop_index('ix_dataset_version_dataset_id', table_name='dataset_version')
    op.drop_table('dataset_version')
    op.drop_index('ix_dataset_project_id', table_name='dataset')
    op.drop_table('dataset')
    for table in ('task', 'execution'):
        op.drop_index(f'uq_{table}_pipeline_node', table_name=table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column('pipeline_attempt')
            batch.drop_column('pipeline_node_id')
    op.drop_index('ix_pipeline_node_pipeline_id', table_name='pipeline_node')
    op.drop_table('pipeline_node')
    op.drop_index('ix_pipeline_status', table_name='pipeline')
    op.drop_index('ix_pipeline_project_id', table_name='pipeline')
    op.drop_table('pipeline')
    with op.batch_alter_table('project') as batch:
        batch.drop_column('pipeline_counter')
