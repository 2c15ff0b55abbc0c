"""Writing outcomes into the index. Every function is idempotent on the message's task id, so a redelivered
stream message changes nothing; the caller commits, then acknowledges the message.

The functions take duck-typed results (``jobs.streams.results.DeviceResult`` / ``StorageResult`` or anything with
the same attributes), so this package stays independent of ``jobs``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Copy, CopyStatus, Device, DeviceResultRow, Run, Version, aware

OK_STATUSES = ("changed", "unchanged")


def _value(status: Any) -> str:
    return getattr(status, "value", status)


def create_run(
    session: Session, run_id: str, *, total: int, selector: str, targets: list[str] | tuple[str, ...], requested_by: str = ""
) -> Run:
    run = session.get(Run, run_id)
    if run is None:
        run = Run(id=run_id, total=total, selector=selector, targets=",".join(targets), requested_by=requested_by)
        session.add(run)
    return run


def get_or_create_device(session: Session, name: str, *, group: str = "", platform: str = "") -> Device:
    device = session.scalar(select(Device).where(Device.name == name))
    if device is None:
        device = Device(name=name, group_name=group, platform=platform, last_error="")
        session.add(device)
        session.flush()
    else:
        device.group_name = group or device.group_name
        device.platform = platform or device.platform
    return device


def apply_device_result(session: Session, result: Any) -> bool:
    """Record one device's outcome in one run. Returns False if this task id was already recorded."""
    if session.scalar(select(DeviceResultRow.id).where(DeviceResultRow.task_id == result.task_id)):
        return False
    status = _value(result.status)
    device = get_or_create_device(session, result.device, group=result.group, platform=result.platform)
    if session.get(Run, result.run_id) is None:  # a run started by someone who did not write the index
        session.add(Run(id=result.run_id, total=0, selector="unknown", targets=""))
        session.flush()
    session.add(
        DeviceResultRow(
            task_id=result.task_id,
            run_id=result.run_id,
            device_id=device.id,
            status=status,
            timestamp=result.timestamp,
            duration=result.duration,
            error=result.error,
            error_kind=result.error_kind,
            log=result.log,
            sha256=result.sha256,
            size=result.size,
            targets=getattr(result, "targets", "") or "",
            unsaved=getattr(result, "unsaved", None),
            changed_by=getattr(result, "author", "") or "",
        )
    )
    if status != "skipped_locked":
        last = aware(device.last_attempt_at)
        if last is None or last <= result.timestamp:
            device.last_attempt_at = result.timestamp
            device.last_status = status
            device.last_error = result.error if status == "failed" else ""
            unsaved = getattr(result, "unsaved", None)
            if status in OK_STATUSES and unsaved is not None:
                if unsaved and not device.unsaved:
                    device.unsaved_since = result.timestamp
                elif not unsaved:
                    device.unsaved_since = None
                device.unsaved = bool(unsaved)
        if status in OK_STATUSES:
            success = aware(device.last_success_at)
            if success is None or success < result.timestamp:
                device.last_success_at = result.timestamp
    session.flush()
    return True


def apply_storage_result(session: Session, result: Any) -> bool:
    """Record one target's copy of a new version. Returns False if this task id was already recorded.

    Any outcome makes sure the version (device, run) exists: the collector has the text, the outbox keeps it
    until every target has it. One copy row per (version, target): a later attempt's outcome replaces an
    earlier one's, and a landed copy is never turned back into a pending one by a late message.
    """
    if session.scalar(select(Copy.id).where(Copy.task_id == result.task_id)):
        return False
    status = _value(result.status)
    attempt = int(getattr(result, "attempt", 1) or 1)
    device = get_or_create_device(session, result.device, group=result.group)
    version = session.scalar(select(Version).where(Version.device_id == device.id, Version.run_id == result.run_id))
    if version is None and status == CopyStatus.UNCHANGED:
        latest = session.scalar(select(Version).where(Version.device_id == device.id).order_by(Version.id.desc()).limit(1))
        if latest is not None and latest.sha256 == result.sha256:
            # The collector thought the config changed (stale cache, or two runs racing) but the target
            # already holds it as the newest version: no new version; the device's result says unchanged.
            _set_result_status(session, device.id, result.run_id, "unchanged")
            return True
    if version is None:
        version = Version(
            device_id=device.id,
            run_id=result.run_id,
            sha256=result.sha256,
            size=result.size,
            created_at=result.timestamp,
            author=getattr(result, "author", "") or "",
        )
        session.add(version)
        session.flush()
        change = aware(device.last_change_at)
        if change is None or change < result.timestamp:
            device.last_change_at = result.timestamp
    next_at = getattr(result, "next_attempt_at", "") or None
    fields = dict(
        task_id=result.task_id, ref=result.ref, status=status, stored_at=result.timestamp, error=result.error,
        attempts=attempt, key_id=getattr(result, "key_id", "") or "", raw_ref=getattr(result, "raw_ref", "") or "",
        next_attempt_at=datetime.fromisoformat(next_at) if isinstance(next_at, str) else next_at,
    )
    existing = session.scalar(select(Copy).where(Copy.version_id == version.id, Copy.backend == result.backend))
    if existing is None:
        session.add(Copy(version_id=version.id, backend=result.backend, **fields))
    elif existing.status in CopyStatus.LANDED and status not in CopyStatus.LANDED:
        return True  # a late message about an earlier, failed attempt
    elif status in CopyStatus.LANDED or attempt >= (existing.attempts or 0):
        for key, value in fields.items():
            setattr(existing, key, value)
    session.flush()
    return True


def _set_result_status(session: Session, device_id: int, run_id: str, status: str) -> None:
    row = session.scalar(
        select(DeviceResultRow).where(DeviceResultRow.device_id == device_id, DeviceResultRow.run_id == run_id)
    )
    if row is not None and row.status in OK_STATUSES:
        row.status = status


def refresh_run(session: Session, run_id: str, now: datetime | None = None) -> Run | None:
    """Mark a run finished once every device has a result and every new version a copy on every target."""
    run = session.get(Run, run_id)
    if run is None or run.finished_at is not None:
        return run
    statuses = dict(
        session.execute(
            select(DeviceResultRow.status, func.count()).where(DeviceResultRow.run_id == run_id).group_by(DeviceResultRow.status)
        ).all()
    )
    done = sum(statuses.values())
    if run.total and done < run.total:
        return run
    if statuses.get("changed", 0):
        # every changed device's version needs an outcome (landed or pending) from each target of its location
        expected = {
            device_id: [t for t in (targets or run.targets).split(",") if t]
            for device_id, targets in session.execute(
                select(DeviceResultRow.device_id, DeviceResultRow.targets).where(
                    DeviceResultRow.run_id == run_id, DeviceResultRow.status == "changed")
            ).all()
        }
        have: dict[int, set[str]] = {}
        for device_id, backend in session.execute(
            select(Version.device_id, Copy.backend).join(Copy).where(Version.run_id == run_id)
        ).all():
            have.setdefault(device_id, set()).add(backend)
        if any(not set(targets) <= have.get(device_id, set()) for device_id, targets in expected.items()):
            return run
    run.finished_at = now or datetime.now(timezone.utc)
    failed = statuses.get("failed", 0)
    run.status = "succeeded" if not failed else ("failed" if failed == done else "partial")
    session.flush()
    return run
