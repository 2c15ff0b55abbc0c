"""compliance_results: each device's standing against each compliance rule (jobs.compliance)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30 06:20:00
"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'compliance_results',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id'), nullable=False),
        sa.Column('rule', sa.String(255), nullable=False),
        sa.Column('version_id', sa.Integer(), nullable=False),
        sa.Column('violated', sa.Boolean(), nullable=False),
        sa.Column('lines', sa.Text(), nullable=False),
        sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('since', sa.DateTime(timezone=True), nullable=False),
        sa.Column('published', sa.String(16), nullable=False),
        sa.UniqueConstraint('device_id', 'rule', name='uq_compliance_device_rule'),
    )
    op.create_index('ix_compliance_results_device_id', 'compliance_results', ['device_id'])
    op.create_index('ix_compliance_results_violated', 'compliance_results', ['violated'])


def downgrade() -> None:
    op.drop_index('ix_compliance_results_violated', table_name='compliance_results')
    op.drop_index('ix_compliance_results_device_id', table_name='compliance_results')
    op.drop_table('compliance_results')
