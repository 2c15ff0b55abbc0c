"""Open the index and keep its schema at the newest Alembic revision."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema (creates it from nothing).

    Processes starting together (a worker, the consumer, a CLI command) migrate one at a time: SQLite
    through a lock file beside the database, PostgreSQL through an advisory lock held for the migration.
    """
    from alembic import command

    config = _alembic_config(url)
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        from storage._lock import file_lock

        with file_lock(path.with_name(path.name + ".migrate.lock")):
            command.upgrade(config, "head")
    elif url.startswith("postgresql"):
        from sqlalchemy import text

        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(7400321)"))  # any fixed number, ours
                try:
                    command.upgrade(config, "head")
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(7400321)"))
        finally:
            engine.dispose()
    else:
        command.upgrade(config, "head")


def _engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


@lru_cache(maxsize=8)
def _migrated_engine(url: str) -> Engine:
    upgrade(url)
    return _engine(url)


def connect(url: str) -> sessionmaker[Session]:
    """A session factory for the index at ``url``, migrated to the newest schema on first use."""
    return sessionmaker(bind=_migrated_engine(url), expire_on_commit=False)
