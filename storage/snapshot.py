"""Point-in-time snapshots: the whole network's configuration as it was at one moment, as one archive.

:func:`versions_at` picks, for every device (optionally of some groups), its newest version recorded at or
before the moment; :func:`write_snapshot` streams them into a ``.tar.gz`` laid out ``<group>/<host>.cfg``
(both names path-encoded as in storage, ``storage.paths``), one configuration in memory at a time, followed
by ``MANIFEST.json`` (device, group, path, version number, sha256, timestamp, author, run, and the devices
whose copies could not be read); :func:`verify_snapshot` reads an archive back in one pass and checks every
file against the manifest (and gzip's own checksum catches any other changed byte).

The moment of ``--run RUN_ID`` is the run's end: what the network looked like once that run had finished.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from .errors import StorageError
from .index.models import Device, Run, Version, aware
from .paths import encode_component
from .retrieve import read_first

MANIFEST = "MANIFEST.json"
FORMAT = "devicevault-snapshot/1"


class SnapshotError(ValueError):
    """A snapshot that cannot be made (no such run, a run not finished) or an archive that does not verify."""


@dataclass(frozen=True)
class SnapshotEntry:
    device: str
    group: str
    number: int  # the device's version number (1 = its first)
    sha256: str
    created_at: datetime
    author: str
    run_id: str
    copies: tuple[tuple[str, str, str], ...] = field(repr=False)

    @property
    def path(self) -> str:
        return f"{encode_component(self.group or 'ungrouped')}/{encode_component(self.device)}.cfg"


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-30T03:00``, ``2026-11-30 03:00:00+01:00``), in UTC; without a zone it is
    UTC. Raises :class:`SnapshotError`."""
    from datetime import timezone

    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise SnapshotError(f"{text!r} is not an ISO 8601 time such as 2026-11-30T03:00") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def run_moment(session: Session, run_id: str) -> datetime:
    """The end of run ``run_id``: the moment ``--run`` stands for."""
    run = session.get(Run, run_id)
    if run is None:
        raise SnapshotError(f"run {run_id!r} is not in the index")
    if run.finished_at is None:
        raise SnapshotError(f"run {run_id!r} has not finished: a snapshot of it would change under you")
    return aware(run.finished_at)


def versions_at(session: Session, at: datetime, groups: Iterable[str] = ()) -> Iterator[SnapshotEntry]:
    """For every device (of ``groups``, if given) with a version at or before ``at``: that newest version,
    by device name."""
    newest = (select(Version.device_id, func.max(Version.id).label("id"))
              .where(Version.created_at <= at).group_by(Version.device_id).subquery())
    numbers = (select(Version.device_id, func.count(Version.id).label("n"))  # its number: versions up to it
               .join(newest, Version.device_id == newest.c.device_id).where(Version.id <= newest.c.id)
               .group_by(Version.device_id).subquery())
    query = (select(Version, Device.name, Device.group_name, numbers.c.n)
             .join(newest, Version.id == newest.c.id).join(numbers, numbers.c.device_id == Version.device_id)
             .join(Device, Device.id == Version.device_id)
             .options(selectinload(Version.copies)).order_by(Device.name))
    wanted = list(groups)
    if wanted:
        query = query.where(Device.group_name.in_(wanted))
    for version, name, group, count in session.execute(query):
        yield SnapshotEntry(device=name, group=group, number=int(count), sha256=version.sha256,
                            created_at=aware(version.created_at), author=version.author, run_id=version.run_id,
                            copies=tuple((c.backend, c.ref, c.status) for c in version.copies))


def _fill(archive: tarfile.TarFile, entries: Iterable[SnapshotEntry], open_backend: Callable[[str], object],
          manifest: dict, progress: Callable[[SnapshotEntry], None] | None) -> Iterator[None]:
    """Add each entry's configuration to ``archive`` (one in memory at a time), then the manifest; yields after
    each entry (a streamed archive hands on what was written so far)."""
    for entry in entries:
        try:
            content, _ = read_first(entry.copies, entry.sha256, open_backend)
        except StorageError as exc:
            manifest["unreadable"].append({"device": entry.device, "version": entry.number, "error": str(exc)})
        else:
            _add(archive, entry.path, content, entry.created_at.timestamp())
            manifest["devices"].append({
                "device": entry.device, "group": entry.group, "path": entry.path, "version": entry.number,
                "sha256": entry.sha256, "created_at": entry.created_at.isoformat(), "author": entry.author,
                "run_id": entry.run_id})
        if progress is not None:
            progress(entry)
        yield
    _add(archive, MANIFEST, json.dumps(manifest, indent=1).encode(), time.time())


def _manifest(at: datetime, run_id: str) -> dict:
    return {"format": FORMAT, "at": at.isoformat(), "run_id": run_id,
            "created_at": datetime.now(at.tzinfo).isoformat(), "devices": [], "unreadable": []}


def write_snapshot(entries: Iterable[SnapshotEntry], out: Path, open_backend: Callable[[str], object], *,
                   at: datetime, run_id: str = "", progress: Callable[[SnapshotEntry], None] | None = None
                   ) -> dict:
    """Stream ``entries`` into the archive ``out`` (written to ``out.partial`` first, then renamed: a snapshot
    cut short never looks whole). Returns the manifest."""
    manifest = _manifest(at, run_id)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as archive:
        for _ in _fill(archive, entries, open_backend, manifest, progress):
            pass
    partial.replace(out)
    return manifest


class _Chunks(io.RawIOBase):
    """A write-only sink keeping what was written until :meth:`drain` hands it on."""

    def __init__(self) -> None:
        super().__init__()
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def drain(self) -> Iterator[bytes]:
        parts, self._parts = self._parts, []
        if parts:
            yield b"".join(parts)


def stream_snapshot(entries: Iterable[SnapshotEntry], open_backend: Callable[[str], object], *, at: datetime,
                    run_id: str = "") -> Iterator[bytes]:
    """The same archive as :func:`write_snapshot`, as chunks of bytes made while they are read (an HTTP
    response): one configuration in memory at a time, no file."""
    sink = _Chunks()
    with tarfile.open(fileobj=sink, mode="w|gz") as archive:
        for _ in _fill(archive, entries, open_backend, _manifest(at, run_id), None):
            yield from sink.drain()
    yield from sink.drain()


def _add(archive: tarfile.TarFile, name: str, content: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(content), int(mtime), 0o600
    archive.addfile(info, io.BytesIO(content))


def verify_snapshot(path: Path) -> dict:
    """Check the archive at ``path`` against its manifest: every listed file present with its sha256, nothing
    else in it. Returns the manifest; raises :class:`SnapshotError` naming the first problem."""
    seen: dict[str, str] = {}
    manifest = None
    try:
        with tarfile.open(path, "r:gz") as archive:
            for member in archive:
                data = archive.extractfile(member).read() if member.isfile() else b""
                if member.name == MANIFEST:
                    manifest = json.loads(data)
                else:
                    seen[member.name] = hashlib.sha256(data).hexdigest()
    except (tarfile.TarError, OSError, EOFError, zlib.error, ValueError) as exc:
        raise SnapshotError(f"{path}: not a readable snapshot archive ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"{path}: no {MANIFEST} of a DeviceVault snapshot in it")
    listed = {d["path"]: d["sha256"] for d in manifest["devices"]}
    for name, sha in listed.items():
        if name not in seen:
            raise SnapshotError(f"{path}: {name} is in the manifest but not in the archive")
        if seen[name] != sha:
            raise SnapshotError(f"{path}: {name} does not match its sha256 in the manifest")
    extra = sorted(set(seen) - set(listed))
    if extra:
        raise SnapshotError(f"{path}: {extra[0]} is in the archive but not in the manifest")
    return manifest
