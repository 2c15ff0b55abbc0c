"""Dead-letter streams: results the index consumer could not apply.

Every result stream ``<stream>`` has a dead-letter stream ``<stream>:dead`` (``device:results:dead``,
``storage:results:dead``). The consumer moves a message there when it is malformed (at once: it can never
succeed) or when handling it failed on its last allowed delivery. One dead-letter entry holds:

==================  =====================================================================================
field               meaning
==================  =====================================================================================
(original fields)   the message exactly as it was on the source stream (``task_id``, ``data``); a field
                    whose name is one of the five below is kept as ``original:<name>``
``error``           the last error text (from our own code; results carry no credentials)
``source_stream``   the stream the message came from (``device:results`` / ``storage:results``)
``source_id``       its id there
``deliveries``      how many times it had been delivered when it was given up
``dead_at``         when (ISO 8601, UTC)
==================  =====================================================================================

Moving a message to the dead-letter stream and acknowledging it on the source stream is one atomic step
(:func:`dead_letter`), so a message is never acknowledged without being applied or dead-lettered, and never
dead-lettered twice. :func:`replay` puts the original fields back on the source stream as a new message and
removes the dead-letter entry, again atomically; applying a result is idempotent on its task id, so a replay
applies it at most once. Dead-letter streams are never trimmed automatically: only :func:`purge` removes
entries.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from redis import Redis

from jobs.streams.results import DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM

STREAMS = (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM)
DEAD_SUFFIX = ":dead"
META_FIELDS = ("error", "source_stream", "source_id", "deliveries", "dead_at")
ORIGINAL_PREFIX = "original:"
MAX_ERROR_CHARS = 2000
_ENTRY_ID = re.compile(r"\A[0-9]+-[0-9]+\Z")


class DeadLetterError(LookupError):
    """A dead-letter entry that does not exist, or an id that names entries in several streams."""


def dead_letter_stream(stream: str) -> str:
    return f"{stream}{DEAD_SUFFIX}"


def source_of(dead_stream: str) -> str:
    return dead_stream[: -len(DEAD_SUFFIX)] if dead_stream.endswith(DEAD_SUFFIX) else dead_stream


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def entry_fields(fields: dict, *, error: str, source_stream: str, source_id: Any, deliveries: int,
                 dead_at: datetime | None = None) -> dict:
    """The fields of a dead-letter entry for the message ``fields`` (see the module docstring)."""
    entry: dict[Any, Any] = {}
    for key, value in fields.items():
        name = _text(key)
        entry[f"{ORIGINAL_PREFIX}{name}" if name in META_FIELDS or name.startswith(ORIGINAL_PREFIX) else key] = value
    if len(error) > MAX_ERROR_CHARS:
        error = error[: MAX_ERROR_CHARS - 1] + "…"
    entry.update({
        "error": error,
        "source_stream": source_stream,
        "source_id": _text(source_id),
        "deliveries": str(int(deliveries)),
        "dead_at": (dead_at or datetime.now(timezone.utc)).astimezone(timezone.utc).isoformat(),
    })
    return entry


# XACK then XADD in one atomic script: only the consumer whose XACK removed the message writes the entry.
_DEAD_LETTER = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
"""

# XDEL then XADD in one atomic script: a dead-letter entry is replayed once even by two concurrent replays.
_REPLAY = """
if redis.call('XDEL', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('XADD', KEYS[2], '*', unpack(ARGV, 2))
"""


def dead_letter(redis: Redis, stream: str, group: str, message_id: Any, fields: dict, *, error: str,
                deliveries: int) -> str | None:
    """Acknowledge ``message_id`` on ``stream`` for ``group`` and add it to ``<stream>:dead``, atomically.

    Returns the dead-letter entry's id, or None when the message was no longer pending (another consumer
    already applied or dead-lettered it): then nothing is written.
    """
    entry = entry_fields(fields, error=error, source_stream=stream, source_id=message_id, deliveries=deliveries)
    args: list[Any] = [group, message_id]
    for key, value in entry.items():
        args += [key, value]
    new_id = redis.eval(_DEAD_LETTER, 2, stream, dead_letter_stream(stream), *args)
    return None if new_id is None else _text(new_id)


@dataclass
class DeadLetter:
    """One dead-letter entry. ``fields`` are the original message's fields, as stored (bytes)."""

    id: str
    dead_stream: str
    fields: dict[bytes, bytes] = field(repr=False)
    error: str = ""
    source_stream: str = ""
    source_id: str = ""
    deliveries: int = 0
    dead_at: str = ""

    @classmethod
    def from_entry(cls, dead_stream: str, entry_id: Any, raw: dict) -> "DeadLetter":
        meta = {name: "" for name in META_FIELDS}
        original: dict[bytes, bytes] = {}
        for key, value in raw.items():
            name = _text(key)
            if name in META_FIELDS:
                meta[name] = _text(value)
            else:
                key_bytes = key if isinstance(key, bytes) else str(key).encode()
                if name.startswith(ORIGINAL_PREFIX):
                    key_bytes = key_bytes[len(ORIGINAL_PREFIX):]
                original[key_bytes] = value if isinstance(value, bytes) else str(value).encode()
        try:
            deliveries = int(meta["deliveries"] or 0)
        except ValueError:
            deliveries = 0
        return cls(id=_text(entry_id), dead_stream=dead_stream, fields=original, error=meta["error"],
                   source_stream=source_of(dead_stream), source_id=meta["source_id"], deliveries=deliveries,
                   dead_at=meta["dead_at"])

    @property
    def payload(self) -> Any:
        """The message's ``data`` field as JSON, or its text when it is not valid JSON (None when absent)."""
        raw = self.fields.get(b"data")
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return _text(raw)

    @property
    def task_id(self) -> str:
        raw = self.fields.get(b"task_id")
        if raw is not None:
            return _text(raw)
        payload = self.payload
        return str(payload.get("task_id", "")) if isinstance(payload, dict) else ""

    @property
    def device(self) -> str:
        payload = self.payload
        return str(payload.get("device", "")) if isinstance(payload, dict) else ""

    def summary(self) -> dict[str, Any]:
        """id, stream (the source stream), source_id, task_id, device, error, deliveries, dead_at."""
        return {"id": self.id, "stream": self.source_stream, "source_id": self.source_id, "task_id": self.task_id,
                "device": self.device, "error": self.error, "deliveries": self.deliveries, "dead_at": self.dead_at}

    def as_dict(self) -> dict[str, Any]:
        """The summary plus the dead-letter stream, every original field (text) and the decoded payload."""
        return {**self.summary(), "dead_letter_stream": self.dead_stream,
                "fields": {_text(k): _text(v) for k, v in self.fields.items()}, "payload": self.payload}


def _dead_streams(streams: Iterable[str] | None) -> list[str]:
    return [dead_letter_stream(s) for s in (streams or STREAMS)]


def list_dead_letters(redis: Redis, streams: Iterable[str] | None = None) -> list[DeadLetter]:
    """Every dead-letter entry of ``streams`` (default: both result streams), oldest first per stream."""
    letters = []
    for dead in _dead_streams(streams):
        letters += [DeadLetter.from_entry(dead, entry_id, raw) for entry_id, raw in redis.xrange(dead)]
    return letters


def count_dead_letters(redis: Redis, stream: str) -> int:
    return int(redis.xlen(dead_letter_stream(stream)))


def find_dead_letter(redis: Redis, entry_id: str, streams: Iterable[str] | None = None) -> DeadLetter:
    """The dead-letter entry ``entry_id``; raises :class:`DeadLetterError` if it is in none or several streams."""
    if not _ENTRY_ID.match(entry_id):
        raise DeadLetterError(f"{entry_id!r} is not a stream entry id (like 1712345678901-0)")
    found = []
    for dead in _dead_streams(streams):
        found += [DeadLetter.from_entry(dead, i, raw) for i, raw in redis.xrange(dead, min=entry_id, max=entry_id)]
    names = " or ".join(_dead_streams(streams))
    if not found:
        raise DeadLetterError(f"no dead-letter entry {entry_id} in {names}")
    if len(found) > 1:
        raise DeadLetterError(f"dead-letter entry {entry_id} is in {names}: choose one with --stream")
    return found[0]


def replay(redis: Redis, letter: DeadLetter) -> str:
    """Put the original fields back on the source stream as a new message and delete the dead-letter entry
    (atomically). Returns the new message id; raises :class:`DeadLetterError` if the entry is gone."""
    if not letter.fields:
        raise DeadLetterError(f"dead-letter entry {letter.id} of {letter.dead_stream} has no original fields")
    args: list[Any] = [letter.id]
    for key, value in letter.fields.items():
        args += [key, value]
    new_id = redis.eval(_REPLAY, 2, letter.dead_stream, letter.source_stream, *args)
    if new_id is None:
        raise DeadLetterError(
            f"no dead-letter entry {letter.id} in {letter.dead_stream} (replayed or purged meanwhile)")
    return _text(new_id)


def purge(redis: Redis, letter: DeadLetter) -> bool:
    """Delete the dead-letter entry; False if it was already gone."""
    return bool(redis.xdel(letter.dead_stream, letter.id))
