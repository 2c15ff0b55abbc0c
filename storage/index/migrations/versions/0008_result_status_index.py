"""device_results (run_id, status): the dashboard's failures per day count a run's failed results from this
index alone, without reading the result rows

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 05:00:00
"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_device_results_run_status', 'device_results', ['run_id', 'status'])


def downgrade() -> None:
    op.drop_index('ix_device_results_run_status', table_name='device_results')
