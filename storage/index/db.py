"""Open the index and keep its schema at the newest Alembic revision."""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
log = logging.getLogger(__name__)

#: seconds a connection waits for a locked SQLite index, or retries a PostgreSQL server that does not answer
#: (``DEVICEVAULT_INDEX_WAIT``); then the error is raised (the CLI makes it one line naming the index)
DEFAULT_WAIT = 30.0


def _alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, wait: float | None = None) -> None:
    """Bring the database at ``url`` to the newest schema (creates it from nothing).

    Processes starting together (a worker, the consumer, a CLI command) migrate one at a time: SQLite
    through a lock file beside the database, PostgreSQL through an advisory lock held for the migration.
    """
    from alembic import command

    config = _alembic_config(url)
    if url.startswith("sqlite"):
        config.attributes["connect_args"] = {"timeout": DEFAULT_WAIT if wait is None else wait}
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


def _engine(url: str, wait: float = DEFAULT_WAIT) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": wait})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            cursor.close()

        return engine
    engine = create_engine(url, pool_pre_ping=True)

    @event.listens_for(engine, "do_connect")
    def _retry_connect(dialect, _record, cargs, cparams):
        """A server that does not answer (restarting, failing over) is tried again, for ``wait`` seconds."""
        deadline = time.monotonic() + wait
        delay = 0.2
        while True:
            try:
                return dialect.loaded_dbapi.connect(*cargs, **cparams)
            except dialect.loaded_dbapi.OperationalError as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.info("index %s does not answer (%s); trying again", engine.url, str(exc).splitlines()[0])
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    return engine


@lru_cache(maxsize=8)
def _migrated_engine(url: str, wait: float = DEFAULT_WAIT) -> Engine:
    engine = _engine(url, wait)
    if not url.startswith("sqlite"):
        engine.connect().close()  # wait for the server (bounded) before the migration's own connection
    upgrade(url, wait)
    return engine


def connect(url: str, wait: float | None = None) -> sessionmaker[Session]:
    """A session factory for the index at ``url``, migrated to the newest schema on first use; ``wait``:
    seconds to wait for a locked or unreachable index (:data:`DEFAULT_WAIT`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(url)
    except ValueError as exc:  # a port that is not a number, ...: as SQLAlchemy's own parse errors
        raise ArgumentError(f"Could not parse SQLAlchemy URL: {exc}") from None
    return sessionmaker(bind=_migrated_engine(url, DEFAULT_WAIT if wait is None else float(wait)),
                        expire_on_commit=False)
