"""private repositories, registries, secrets and webhooks: a project's deploy key, token and pinned host key
(encrypted where secret), registry credentials, project secrets, webhooks and their deliveries

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString
TIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    # Plain ADD COLUMN (as in 0005): other tables refer to `project`, so it is not rebuilt.
    for column in ('deploy_key_public', 'deploy_key_private', 'repo_token', 'git_host_key'):
        op.add_column('project', sa.Column(column, sa.Text(), nullable=True))
    op.create_table(
        'project_secret',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('name', TEXT(), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('created_by', TEXT(), nullable=True),
        sa.Column('created_at', TIME(), nullable=False),
        sa.Column('updated_at', TIME(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'name'),
    )
    op.create_index('ix_project_secret_project_id', 'project_secret', ['project_id'])
    op.create_table(
        'registry_credential',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('host', TEXT(), nullable=False),
        sa.Column('environment_id', sa.Integer(), nullable=True),
        sa.Column('username', TEXT(), nullable=False),
        sa.Column('password', sa.Text(), nullable=False),
        sa.Column('created_at', TIME(), nullable=False),
        sa.ForeignKeyConstraint(['environment_id'], ['environment.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('host', 'environment_id'),
    )
    op.create_index('ix_registry_credential_host', 'registry_credential', ['host'])
    op.create_table(
        'webhook',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('project_id', sa.Integer(), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('secret', sa.Text(), nullable=True),
        sa.Column('format', TEXT(), nullable=False),
        sa.Column('restricted', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('created_by', TEXT(), nullable=True),
        sa.Column('created_at', TIME(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['project.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_webhook_project_id', 'webhook', ['project_id'])
    op.create_table(
        'webhook_delivery',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('webhook_id', sa.Integer(), nullable=False),
        sa.Column('event', TEXT(), nullable=False),
        sa.Column('event_id', TEXT(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('status', TEXT(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', TIME(), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('tries', sa.JSON(), nullable=False),
        sa.Column('created_at', TIME(), nullable=False),
        sa.Column('delivered_at', TIME(), nullable=True),
        sa.ForeignKeyConstraint(['webhook_id'], ['webhook.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('webhook_id', 'event_id'),
    )
    op.create_index('ix_webhook_delivery_webhook_id', 'webhook_delivery', ['webhook_id'])
    op.create_index('ix_webhook_delivery_due', 'webhook_delivery', ['status', 'next_attempt_at'])


def downgrade() -> None:
    op.drop_index('ix_webhook_delivery_due', table_name='webhook_delivery')
    op.drop_index('ix_webhook_delivery_webhook_id', table_name='webhook_delivery')
    op.drop_table('webhook_delivery')
    op.drop_index('ix_webhook_project_id', table_name='webhook')
    op.drop_table('webhook')
    op.drop_index('ix_registry_credential_host', table_name='registry_credential')
    op.drop_table('registry_credential')
    op.drop_index('ix_project_secret_project_id', table_name='project_secret')
    op.drop_table('project_secret')
    with op.batch_alter_table('project', schema=None) as batch_op:
        for column in ('git_host_key', 'repo_token', 'deploy_key_private', 'deploy_key_public'):
            batch_op.drop_column(column)
