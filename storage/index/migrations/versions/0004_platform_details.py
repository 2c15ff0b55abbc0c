"""devices: unsaved (running differs from startup) and unsaved_since; device_results: unsaved, changed_by;
copies: raw_ref (the raw device output kept next to a version on an encrypted target)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 23:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unsaved', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('unsaved_since', sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table('device_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('unsaved', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('changed_by', sa.String(length=255), nullable=False, server_default=''))
    with op.batch_alter_table('copies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('raw_ref', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('copies', schema=None) as batch_op:
        batch_op.drop_column('raw_ref')
    with op.batch_alter_table('device_results', schema=None) as batch_op:
        batch_op.drop_column('changed_by')
        batch_op.drop_column('unsaved')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_column('unsaved_since')
        batch_op.drop_column('unsaved')
