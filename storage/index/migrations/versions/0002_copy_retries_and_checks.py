"""copies: attempts, next attempt, key id, last check; device results: expected targets

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 20:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('copies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='1'))
        batch_op.add_column(sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('key_id', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('checked_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_copies_status', ['status'], unique=False)
    with op.batch_alter_table('device_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('targets', sa.String(length=512), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('device_results', schema=None) as batch_op:
        batch_op.drop_column('targets')
    with op.batch_alter_table('copies', schema=None) as batch_op:
        batch_op.drop_index('ix_copies_status')
        batch_op.drop_column('checked_at')
        batch_op.drop_column('key_id')
        batch_op.drop_column('next_attempt_at')
        batch_op.drop_column('attempts')
