"""versions: view_sha256 (the masked view's sha256, on which the decider tells a new version from the
newest one; old rows get their sha256, which is the same unless secrets were kept)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('view_sha256', sa.String(length=64), nullable=False, server_default=''))
    op.execute("UPDATE versions SET view_sha256 = sha256 WHERE view_sha256 = ''")


def downgrade() -> None:
    with op.batch_alter_table('versions', schema=None) as batch_op:
        batch_op.drop_column('view_sha256')
