"""search_texts: the newest masked configuration of every device, for search (SQLite: an FTS5 trigram index
``search_fts`` kept in step by triggers; PostgreSQL: a pg_trgm GIN index, when the extension can be created)

Existing indexes get the table empty: ``devicevault search-index`` fills it from storage (once), the index
consumer keeps it current from then on.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 04:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'search_texts',
        sa.Column('device_id', sa.Integer(), sa.ForeignKey('devices.id'), primary_key=True, autoincrement=False),
        sa.Column('version_id', sa.Integer(), nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    )
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        op.execute("CREATE VIRTUAL TABLE search_fts USING fts5(body, content='search_texts', "
                   "content_rowid='device_id', tokenize='trigram')")
        op.execute("CREATE TRIGGER search_texts_ai AFTER INSERT ON search_texts BEGIN "
                   "INSERT INTO search_fts(rowid, body) VALUES (new.device_id, new.body); END")
        op.execute("CREATE TRIGGER search_texts_ad AFTER DELETE ON search_texts BEGIN "
                   "INSERT INTO search_fts(search_fts, rowid, body) VALUES ('delete', old.device_id, old.body); END")
        op.execute("CREATE TRIGGER search_texts_au AFTER UPDATE ON search_texts BEGIN "
                   "INSERT INTO search_fts(search_fts, rowid, body) VALUES ('delete', old.device_id, old.body); "
                   "INSERT INTO search_fts(rowid, body) VALUES (new.device_id, new.body); END")
    elif bind.dialect.name == 'postgresql':
        # pg_trgm is a trusted extension (PostgreSQL 13+): a database owner may create it. Without it the
        # search reads the table without an index (still no storage read).
        available = bind.execute(sa.text(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")).scalar()
        if available:
            try:
                with bind.begin_nested():  # a refusal rolls back to here, not the whole migration
                    bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
                created = True
            except sa.exc.DBAPIError:
                created = False
            if created:
                op.execute("CREATE INDEX ix_search_texts_body_trgm ON search_texts USING gin (body gin_trgm_ops)")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == 'sqlite':
        for trigger in ('search_texts_ai', 'search_texts_ad', 'search_texts_au'):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS search_fts")
    op.drop_table('search_texts')
