"""Logging for every DeviceVault process: one JSON object per line (python-json-logger), secrets masked.

Masking happens in a handler filter, after the message is formatted and on tracebacks too: device
passwords from the inventory, the S3 secret key, encryption keys, passwords inside database/Redis URLs and
generic ``password=...`` patterns all become ``REDACTED``. Control characters in a message (a newline, an
ANSI escape or a bidi override in a host name) are escaped there too (``jobs.controls``), so a record is one
line. RQ's worker logger goes through the same handler (``rq.logutils`` does not add its own when one is
already in effect).

A JSON line looks like::

    {"time": "2026-11-22T20:41:03.518Z", "level": "WARNING", "logger": "jobs.deliver.store", "process": 4242,
     "message": "storing ams-ios-01 on s3 failed (attempt 2): ..."}
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

from pythonjsonlogger.json import JsonFormatter

from jobs.controls import one_line
from jobs.redact import Redactor
from jobs.settings import Settings

FIELDS = "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s"


def _message(record: logging.LogRecord) -> str:
    """The record's message, formatted (a bad format string must not lose the record)."""
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001
        return f"{record.msg!r} {record.args!r}"


class OneLine(logging.Filter):
    """Formats each record's message once, its control characters escaped (``jobs.controls``): for the
    plain text logging of the ``devicevault`` command, where nothing else would."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = one_line(_message(record)), ()
        return True


class MaskSecrets(logging.Filter):
    """Formats each record's message (and traceback) once, masked; the formatter then only lays it out."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        # one record, one line: a host name or device text carrying a newline, an ANSI escape or a bidi
        # override cannot forge another line or act on the terminal that reads the log
        record.msg, record.args = one_line(self.redactor.redact(_message(record))), ()
        if record.exc_info and record.exc_info[0] is not None:
            record.traceback = self.redactor.redact("".join(traceback.format_exception(*record.exc_info)))
            record.exc_info, record.exc_text = None, None
        return True


class _UTCJson(JsonFormatter):
    converter = time.gmtime

    def formatTime(self, record, datefmt=None):  # noqa: N802 - logging's name
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


def configure_logging(settings: Settings, *, level: int = logging.INFO, fmt: str | None = None,
                      extra_secrets: list[str] | None = None) -> logging.Handler:
    """Send every log record of this process to stderr, as JSON (``fmt="json"``) or text, masked."""
    secrets = list(settings.secrets()) + list(extra_secrets or []) + _inventory_secrets(settings)
    handler = logging.StreamHandler(sys.stderr)
    if (fmt or settings.log_format) == "json":
        handler.setFormatter(_UTCJson(FIELDS, rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(MaskSecrets(Redactor(secrets)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def _inventory_secrets(settings: Settings) -> list[str]:
    try:
        from jobs.collect.inventory import load_inventory

        return [s for host in load_inventory(settings.inventory, settings).values() for s in host.secrets]
    except Exception:  # noqa: BLE001 - a broken inventory is reported by the jobs that use it
        return []
