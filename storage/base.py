"""The storage protocol every backend implements, plus small shared helpers."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

from jobs.controls import one_line

from .paths import split_relpath


@dataclass(frozen=True)
class StoreOptions:
    """Metadata attached to one stored version."""

    message: str = ""
    device: str = ""
    run_id: str = ""
    author: str = "DeviceVault"
    timestamp: datetime | None = None


@runtime_checkable
class Backend(Protocol):
    """Where configuration versions are kept.

    Refs are opaque strings produced by :meth:`store` and understood by the
    same backend's :meth:`read` / :meth:`delete`.

    Idempotence: storing the same version again (same content, same
    ``StoreOptions.timestamp``: a storage job repeated after it died) creates
    nothing and returns that version's ref.  Whether content is a *new*
    version is decided before it is stored (DeviceVault's index), not here.

    ``delete(ref)`` retires one version (retention deletes *older* versions).
    Unknown refs raise ``RefNotFound``.  fs and s3 erase the version (reading
    it raises ``RefNotFound``; deleting the newest makes the previous one
    latest).  git never rewrites history (``history_is_immutable = True``):
    deleting an older version is a no-op, deleting the newest commits the
    file's removal so ``latest`` becomes None.

    ``restore(content, ref)`` puts ``content`` back as the version ``ref``
    names, to repair a missing or corrupt copy (a scrub).  Afterwards
    ``read(returned_ref) == content``; the returned ref may differ from
    ``ref``.  If ``ref`` already reads back as ``content`` nothing is written
    and ``ref`` is returned.  Restoring a version that is not the newest does
    not change ``latest`` (git: see :meth:`storage.git.GitBackend.restore`).

    ``store_many(items)`` stores several versions, refs in input order (the storage jobs store a batch with
    one call: one lock, one git process); a path that is not safe stores nothing of the batch.  ``close()``
    releases what the backend holds (a git process, connections).  ``history_is_immutable`` says that
    ``delete`` cannot erase an older version (retention then only forgets it).  :class:`BackendBase` gives
    all three a default (a loop over ``store``, nothing to release, False).
    """

    name: str
    history_is_immutable: bool

    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str: ...

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes: ...

    def delete(self, ref: str) -> None: ...

    def restore(self, content: bytes, ref: str, options: StoreOptions | None = None) -> str: ...

    def latest(self, path: str) -> str | None: ...

    def healthy(self) -> bool: ...

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]: ...

    def close(self) -> None: ...


class BackendBase:
    """Defaults for the members of :class:`Backend` that a simple backend need not write itself."""

    history_is_immutable: bool = False

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """One ``store`` per item after checking every path first, so an unsafe path stores nothing."""
        for _content, path, _options in items:
            split_relpath(path, target=getattr(self, "name", type(self).__name__))
        return [self.store(content, path, options) for content, path, options in items]  # type: ignore[attr-defined]

    def close(self) -> None:
        """Nothing to release."""


# --- helpers shared by the timestamp-named backends (fs, s3) ---------------

STAMP_FORMAT = "%Y%m%dT%H%M%S.%fZ"
VERSION_NAME = re.compile(r"\A(\d{8}T\d{6}\.\d{6}Z)_([0-9a-f]{12})\.cfg\Z")


def as_content(content: object, path: str) -> bytes:
    """``content`` as bytes; anything but a bytes-like object is a caller's mistake."""
    if not isinstance(content, (bytes, bytearray, memoryview)):
        raise TypeError(f"content for {path!r} must be bytes, not {type(content).__name__}")
    return bytes(content)


def sha256_hex(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def as_utc(ts: datetime) -> datetime:
    if ts.tzinfo is None:
        return ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def format_stamp(ts: datetime) -> str:
    return as_utc(ts).strftime(STAMP_FORMAT)


def parse_stamp(stamp: str) -> datetime:
    return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=timezone.utc)


def next_stamp(options: StoreOptions, previous_name: str | None) -> str:
    """Version timestamp for a new version.

    An explicit ``options.timestamp`` is used as given.  Otherwise "now", but
    strictly after the previous version so ``latest`` stays correct even if
    the clock steps back or two stores share a microsecond.
    """
    if options.timestamp is not None:
        return format_stamp(options.timestamp)
    now = datetime.now(timezone.utc)
    if previous_name:
        m = VERSION_NAME.match(previous_name)
        if m:
            prev = parse_stamp(m.group(1))
            if now <= prev:
                now = prev + timedelta(microseconds=1)
    return format_stamp(now)


def version_name(stamp: str, digest: str) -> str:
    return f"{stamp}_{digest[:12]}.cfg"


def restored_name(name: str, digest: str) -> str:
    """Name for restored bytes of the version file ``name``: same timestamp, so the
    same place in history, and the digest of the bytes actually written."""
    m = VERSION_NAME.match(name)
    if not m:
        raise ValueError(f"not a version file name: {name!r}")
    return version_name(m.group(1), digest)


def default_message(path: str, options: StoreOptions) -> str:
    if options.message:
        return options.message
    who = one_line(options.device or path)  # a newline in a host name must not forge the subject
    run = f" (run {options.run_id})" if options.run_id else ""
    return f"{who}: configuration changed{run}"


def already_holds(backend: object, ref: str, content: bytes) -> bool:
    """Whether ``ref`` reads back as ``content`` (a restore then writes nothing). Unreadable = False."""
    from .errors import IntegrityError, RefNotFound

    try:
        return backend.read(ref) == content  # type: ignore[attr-defined]
    except (RefNotFound, IntegrityError):
        return False
