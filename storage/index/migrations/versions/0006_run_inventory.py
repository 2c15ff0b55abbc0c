"""runs: inventory (the Ansible inventory the run was started with; the run's devices are checked against it)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 12:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inventory', sa.String(length=1024), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('inventory')
