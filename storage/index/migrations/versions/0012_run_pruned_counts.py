"""runs: pruned_unchanged, pruned_failed, pruned_skipped (the run's device results removed by index retention,
per outcome; storage.index.retention), so a run's counts stay the same after its old rows are gone

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30 09:00:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

COLUMNS = ('pruned_unchanged', 'pruned_failed', 'pruned_skipped')


def upgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('runs') as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
