"""Reading the index: the functions the CLI and the portal call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, selectinload

from .health import health_of
from .models import Copy, Device, DeviceResultRow, Run, Version, aware
from .statuses import CopyStatus


class NotFound(LookupError):
    """A device, version or run that the index does not hold (the message names it)."""


@dataclass(frozen=True)
class VersionInfo:
    number: int  # 1 = the device's first version
    id: int
    sha256: str
    size: int
    created_at: datetime
    run_id: str
    author: str
    copies: tuple[tuple[str, str, str], ...]  # (backend, ref, status)
    raw_copies: tuple[tuple[str, str], ...] = ()  # (backend, raw ref): raw device output kept with it

    def as_dict(self) -> dict:
        return {
            "number": self.number,
            "sha256": self.sha256,
            "size": self.size,
            "created_at": aware(self.created_at).isoformat(),
            "run_id": self.run_id,
            "author": self.author,
            "copies": [{"backend": b, "ref": r, "status": s} for b, r, s in self.copies],
        }


def list_devices(session: Session, *, include_retired: bool = False) -> list[dict]:
    """Every device (retired ones only with ``include_retired``: ``storage.index.health.active``)."""
    from .health import active

    counts = dict(session.execute(select(Version.device_id, func.count()).group_by(Version.device_id)).all())
    rows = []
    query = select(Device).order_by(Device.name)
    for d in session.scalars(query if include_retired else query.where(active())):
        rows.append(
            {
                "name": d.name,
                "group": d.group_name,
                "platform": d.platform,
                "status": d.last_status,  # the last run's outcome
                # at a glance, the portal's word (storage.index.health): failed, never backed up, stale, ...
                "health": health_of(d.last_status, d.last_success_at, d.stale_since, d.unsaved, d.retired_at).value,
                "last_attempt": _iso(d.last_attempt_at),
                "last_success": _iso(d.last_success_at),
                "last_change": _iso(d.last_change_at),
                "versions": counts.get(d.id, 0),
                "last_error": d.last_error,
                # running != startup at the newest backup; None when unknown (no startup on the platform)
                "unsaved": d.unsaved,
                "unsaved_since": _iso(d.unsaved_since),
                "retired_at": _iso(d.retired_at),  # gone from the inventory (jobs.ops.retire); None: not retired
            }
        )
    return rows


def _iso(value: datetime | None) -> str | None:
    return aware(value).isoformat() if value else None


def get_device(session: Session, name: str) -> Device:
    device = session.scalar(select(Device).where(Device.name == name))
    if device is None:
        raise NotFound(f"device {name!r} is not in the index")
    return device


def device_versions(session: Session, name: str) -> list[VersionInfo]:
    device = get_device(session, name)
    versions = session.scalars(
        select(Version).where(Version.device_id == device.id).options(selectinload(Version.copies)).order_by(Version.id)
    ).all()
    return [
        VersionInfo(
            number=i,
            id=v.id,
            sha256=v.sha256,
            size=v.size,
            created_at=aware(v.created_at),
            run_id=v.run_id,
            author=v.author,
            copies=tuple((c.backend, c.ref, c.status) for c in v.copies),
            raw_copies=tuple((c.backend, c.raw_ref) for c in v.copies if c.raw_ref),
        )
        for i, v in enumerate(versions, start=1)
    ]


def resolve_version(versions: list[VersionInfo], selector: str | int | None, *, device: str) -> VersionInfo:
    """A version by number (``3``; negative counts from the newest, ``-1`` = newest) or sha256 prefix."""
    if not versions:
        raise NotFound(f"device {device!r} has no stored version yet")
    if selector is None:
        return versions[-1]
    text = str(selector)
    if text.lstrip("-").isdigit():
        n = int(text)
        index = n - 1 if n > 0 else n
        try:
            if n == 0:
                raise IndexError
            return versions[index]
        except IndexError:
            raise NotFound(f"device {device!r} has no version {n} (it has {len(versions)})") from None
    matches = [v for v in versions if v.sha256.startswith(text.lower())]
    if len(matches) == 1:
        return matches[0]
    raise NotFound(f"device {device!r}: {'no' if not matches else 'more than one'} version matches {text!r}")


def get_run(session: Session, run_id: str) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        raise NotFound(f"run {run_id!r} is not in the index")
    return run


def run_results(session: Session, run_id: str) -> list[dict]:
    rows = session.execute(
        select(DeviceResultRow, Device.name, Device.group_name, Device.platform)
        .join(Device, Device.id == DeviceResultRow.device_id)
        .where(DeviceResultRow.run_id == run_id)
        .order_by(Device.name)
    ).all()
    return [
        {
            "device": name,
            "group": group,
            "platform": platform,
            "status": r.status,
            "duration": round(r.duration, 2),
            "sha256": r.sha256,
            "error": r.error,
            "log": r.log,
            "timestamp": _iso(r.timestamp),
        }
        for r, name, group, platform in rows
    ]


def run_progress(session: Session, run_id: str) -> tuple[int, int, bool]:
    """(results so far, devices in the run, finished?)"""
    run = get_run(session, run_id)
    done = session.scalar(select(func.count(DeviceResultRow.id)).where(DeviceResultRow.run_id == run_id)) or 0
    done += sum(run.pruned().values())  # results index retention removed (storage.index.retention)
    return done, run.total, run.finished_at is not None


def list_runs(session: Session, limit: int = 20) -> list[dict]:
    runs = session.scalars(select(Run).order_by(Run.created_at.desc()).limit(limit)).all()
    return [
        {
            "run_id": r.id,
            "created_at": _iso(r.created_at),
            "finished_at": _iso(r.finished_at),
            "status": r.status,
            "selector": r.selector,
            "total": r.total,
            "targets": r.targets,
            "requested_by": r.requested_by,
        }
        for r in runs
    ]


def copy_counts(session: Session, run_id: str) -> dict[str, dict[str, int]]:
    """target -> status -> number of copies of one run's versions."""
    query = (select(Copy.backend, Copy.status, func.count()).join(Version).where(Version.run_id == run_id)
             .group_by(Copy.backend, Copy.status))
    counts: dict[str, dict[str, int]] = {}
    for backend, status, n in session.execute(query).all():
        counts.setdefault(backend, {})[status] = n
    return counts


def pending_copies(session: Session, limit: int = 100) -> list[dict]:
    """Copies that have not landed yet, oldest first, with their last error and next attempt."""
    rows = session.execute(
        select(Copy, Version.sha256, Version.run_id, Device.name)
        .join(Version, Version.id == Copy.version_id)
        .join(Device, Device.id == Version.device_id)
        .where(Copy.status == CopyStatus.PENDING.value)
        .order_by(Copy.id)
        .limit(limit)
    ).all()
    return [
        {
            "device": name,
            "target": c.backend,
            "sha256": sha[:12],
            "run_id": run_id,
            "attempts": c.attempts,
            "next_attempt": _iso(c.next_attempt_at),
            "error": c.error,
        }
        for c, sha, run_id, name in rows
    ]
