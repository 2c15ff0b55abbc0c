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


def redis_client(settings: Settings, *, blocking: bool = False, resilient: bool | None = None):
    """A Redis connection; ``blocking`` for daemons that wait on the server (no socket timeout).

    ``resilient`` (default: ``blocking``, i.e. the worker and the consumer; the scheduler asks for it too):
    once the connection has worked, a command that meets a lost connection or a Redis still loading its
    append-only file is tried again with backoff for about a minute (``jobs.redisretry``) before its caller
    sees the error, so a Redis restart or a short outage is ridden out inside each command: the workers'
    jobs, the consumer and the pump just wait. Before the first success the first error is raised at once
    (Redis down at start: one line, ``cli.common.operational_error``)."""
    from redis import Redis

    kwargs = {}
    if blocking if resilient is None else resilient:
        from jobs.redisretry import resilient_options

        kwargs = resilient_options()
    return Redis.from_url(settings.redis_url, socket_timeout=None if blocking else 30, **kwargs)


def storage_layout(settings: Settings):
    from jobs.deliver.locations import StorageLayout

    return StorageLayout.load(settings)


def index_sessions(settings: Settings):
    """The index's session factory."""
    from storage.index.db import connect

    return connect(settings.database_url, settings.index_wait)


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


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _setting(name: str, default: str) -> str:
    """A setting for an error message, even when the settings cannot be loaded (a bad value elsewhere)."""
    import os

    try:
        return getattr(Settings.load(), name)
    except Exception:  # noqa: BLE001 - the message still names the variable
        return os.environ.get(f"DEVICEVAULT_{name.upper()}") or default


def operational_error(exc: BaseException) -> str | None:
    """One line naming what failed and where (the URL without its password, the variable) for the errors
    an operator meets (Redis or the index down or locked, a missing database driver, a bad setting, a busy
    address), or None for anything else (a bug keeps its traceback)."""
    from redis.exceptions import AuthenticationError, BusyLoadingError, InvalidResponse, RedisError, ResponseError
    from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeout
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    from jobs.settings import SettingsError, redact_url

    if isinstance(exc, (Fail, click.exceptions.Exit, click.exceptions.Abort)):
        return None
    from .services import ServiceError

    if isinstance(exc, (SettingsError, ServiceError)):
        return str(exc)
    if isinstance(exc, RedisError):
        url = redact_url(_setting("redis_url", "redis://127.0.0.1:6379/0"))
        auth = isinstance(exc, AuthenticationError) or (
            isinstance(exc, ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "AUTH")))
        if auth:
            return (f"Redis at {url} refused DeviceVault's credentials (DEVICEVAULT_REDIS_URL, or the password file "
                    f"DEVICEVAULT_REDIS_PASSWORD_FILE): {_first_line(exc)}")
        if isinstance(exc, (RedisConnectionError, RedisTimeout, BusyLoadingError)):
            return f"Redis is not reachable at {url} (DEVICEVAULT_REDIS_URL): {_first_line(exc)}"
        if isinstance(exc, InvalidResponse):
            return f"what answers at {url} (DEVICEVAULT_REDIS_URL) is not Redis: {_first_line(exc)}"
        if isinstance(exc, ResponseError) and str(exc).startswith("NOPERM"):
            return f"Redis at {url} (DEVICEVAULT_REDIS_URL): its user may not do this: {_first_line(exc)}"
        return None
    database = lambda: redact_url(_setting("database_url", "sqlite:///./var/index.sqlite"))  # noqa: E731
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if isinstance(exc, NoSuchModuleError) or missing in ("psycopg", "psycopg2", "pymysql", "MySQLdb", "asyncpg"):
        hint = " (pip install 'psycopg[binary]')" if "postgres" in database() or missing == "psycopg" else ""
        return (f"the index database driver is not installed for {database()} (DEVICEVAULT_DATABASE_URL): "
                f"{_first_line(exc)}{hint}")
    if isinstance(exc, ArgumentError):
        return f"the index URL {database()} (DEVICEVAULT_DATABASE_URL) cannot be used: {_first_line(exc)}"
    if isinstance(exc, OperationalError):
        detail = _first_line(getattr(exc, "orig", None) or exc)
        what = "is locked by another process" if "locked" in detail else "cannot be used"
        return f"the index at {database()} (DEVICEVAULT_DATABASE_URL) {what}: {detail}"
    return None


def guard(fn):
    """The command's expected errors (backup, lookup, storage, OS) as one clear line instead of a traceback."""
    from storage.errors import StorageError
    from storage.index.queries import NotFound

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (BackupError, NotFound, StorageError, OSError) as exc:
            raise Fail(operational_error(exc) or str(exc)) from exc

    return wrapper


class Main(click.Group):
    """The ``devicevault`` command group: an operational error of any command (:func:`operational_error`)
    is one line on stderr and exit status 1; with ``--debug``, its traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except Exception as exc:  # noqa: BLE001 - one line for what an operator meets, the rest as it was
            line = None if ctx.meta.get("devicevault.debug") else operational_error(exc)
            if line is None:
                raise
            raise Fail(line) from exc
