"""versions (created_at, device_id): the dashboard's first backups and changes per day come from this index
alone (a version is a first backup when its device has no older version: one probe of ix_versions_device_id)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 05:10:00
"""
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_versions_created_device', 'versions', ['created_at', 'device_id'])


def downgrade() -> None:
    op.drop_index('ix_versions_created_device', table_name='versions')
