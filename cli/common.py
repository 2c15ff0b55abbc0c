"""What every ``devicevault`` command shares: settings, the Redis connection, the index, the storage layout,
clear one-line errors, and table/JSON output.

The command modules (``cli/main.py`` and the ones it registers: operations, schedule, streams, portal) all
import from here and never from each other, so no module of ``cli/`` imports one that imports it back.
"""

from __future__ import annotations

import functools
import json
import logging

import click

from jobs.errors import BackupError
from jobs.settings import Settings


def load_settings() -> Settings:
    return Settings.load()


def redis_client(settings: Settings, *, blocking: bool = False):
    """A Redis connection; ``blocking`` for daemons that wait on the server (no socket timeout)."""
    from redis import Redis

    return Redis.from_url(settings.redis_url, socket_timeout=None if blocking else 30)


def storage_layout(settings: Settings):
    from jobs.deliver.locations import StorageLayout

    return StorageLayout.load(settings)


def index_sessions(settings: Settings):
    """The index's session factory."""
    from storage.index.db import connect

    return connect(settings.database_url)


def daemon_logging(settings: Settings) -> None:
    """Long-running processes log JSON lines (DEVICEVAULT_LOG_FORMAT), credentials masked."""
    from jobs.logs import configure_logging

    configure_logging(settings, level=logging.INFO)


def table(rows: list[dict], columns: list[str]) -> None:
    if not rows:
        click.echo("(none)")
        return
    widths = {c: max(len(c), *(len(str(r.get(c) if r.get(c) is not None else "")) for r in rows)) for c in columns}
    widths = {c: min(w, 70) for c, w in widths.items()}
    click.echo("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        cells = []
        for c in columns:
            value = "" if r.get(c) is None else str(r.get(c))
            cells.append((value[: widths[c] - 1] + "…" if len(value) > widths[c] else value).ljust(widths[c]))
        click.echo("  ".join(cells).rstrip())


def emit(rows, columns, as_json: bool) -> None:
    """A table, or JSON for scripts."""
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
    else:
        table(rows, columns)


class Fail(click.ClickException):
    """A clear one-line error (no traceback)."""


def guard(fn):
    """The command's expected errors (backup, lookup, storage, OS) as one clear line instead of a traceback."""
    from storage.errors import StorageError
    from storage.index.queries import NotFound

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BackupError, NotFound, StorageError, OSError) as exc:
            raise Fail(str(exc)) from exc

    return wrapper
