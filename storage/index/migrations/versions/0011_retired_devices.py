"""devices: absent_since (missing from the inventory since) and retired_at (retired after the grace period,
DEVICEVAULT_RETIRE_AFTER; jobs.ops.retire)

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30 06:40:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.add_column(sa.Column('absent_since', sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))
        batch.create_index('ix_devices_retired_at', ['retired_at'])


def downgrade() -> None:
    with op.batch_alter_table('devices') as batch:
        batch.drop_index('ix_devices_retired_at')
        batch.drop_column('retired_at')
        batch.drop_column('absent_since')
