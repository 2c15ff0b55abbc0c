"""Writing outcomes into the index. Every function is idempotent on the message's task id, so a redelivered
stream message changes nothing; the caller commits, then acknowledges the message.

**The decider.** :func:`apply_device_result` is the one place that decides whether a collected configuration
is a new version: in the same transaction that records the device's result it compares the candidate's
masked-view sha256 with the device's newest :class:`Version`. New: a version row, one ``pending`` copy row
per target of the device's location and the device's searchable text (the masked view the result carries,
``storage.index.search``), all in this commit. Same: the result is recorded ``unchanged``, naming
the newest version's sha256. It returns a :class:`Decision`, which the caller hands, *after* the commit, to
the steps that release the candidate to storage, refresh the collector's cache and announce the version
(``jobs.deliver.release``). Storage outcomes (:func:`apply_storage_result`) only ever update copy rows of
versions decided here; they never create a version.

The functions take duck-typed results (``jobs.streams.results.DeviceResult`` / ``StorageResult`` or anything with
the same attributes), so this package stays independent of ``jobs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import search
from .models import Copy, Device, DeviceResultRow, Run, Version, aware
from .statuses import CopyStatus, DeviceStatus, RunStatus

OK_STATUSES = DeviceStatus.OK
#: ``device_results.error_kind`` of an ``unchanged`` claim the index contradicts (see :func:`apply_device_result`)
CACHE_DISAGREES = "cache"


class NotDecided(LookupError):
    """A storage outcome names a version whose device result the index has not seen yet. Not the message's
    fault: the consumer leaves it pending and applies it once the device result is in."""


class NoSuchVersion(ValueError):
    """A storage outcome names a version the decider did not create (the device's result in that run is
    recorded, and is not a new version): it can never apply."""


@dataclass(frozen=True)
class Decision:
    """What the decider made of one device result, for the steps after the commit.

    ``created``: this result made version ``version_id`` (release the staged candidate ``task_id`` to
    ``targets``, announce the version). ``discard``: the staged candidate is not needed (unchanged).
    ``version_id``/``sha256``/``view_sha256``: the device's newest version after the decision (what the
    collector's cache should say; None/"" when it has none). ``drop_cache``: the cache contradicted the index.
    ``new``: this call recorded the result; False when it was recorded before (a redelivered message), in
    which case the same decision is returned again so the after-commit steps can be completed.
    """

    task_id: str
    run_id: str
    device: str
    group: str
    platform: str
    status: str
    new: bool = True
    created: bool = False
    discard: bool = False
    drop_cache: bool = False
    version_id: int | None = None
    sha256: str = ""
    view_sha256: str = ""
    author: str = ""
    created_at: datetime | None = None
    targets: tuple[str, ...] = ()


def _value(status: Any) -> str:
    return getattr(status, "value", status)


#: the selector of a run the index learnt of from a device result before (or without) its start
UNKNOWN_SELECTOR = "unknown"


def create_run(
    session: Session, run_id: str, *, total: int, selector: str, targets: list[str] | tuple[str, ...],
    requested_by: str = "", inventory: str = "", created_at: datetime | None = None,
) -> Run:
    """The run's row, as its start says. A row the index made up from an earlier device result (several
    consumers may take a run's start and its first results at once) is filled in and counted again."""
    run = session.get(Run, run_id)
    fields = dict(total=total, selector=selector, targets=",".join(targets), requested_by=requested_by,
                  inventory=inventory)
    if run is None:
        run = Run(id=run_id, **fields, **({"created_at": created_at} if created_at else {}))
        session.add(run)
    elif run.selector == UNKNOWN_SELECTOR:
        for key, value in fields.items():
            setattr(run, key, value)
        run.finished_at, run.status = None, RunStatus.RUNNING
    session.flush()
    return run


def apply_run_started(session: Session, record: Any) -> bool:
    """Record a run's start (``jobs.streams.results.RunStarted``). Returns False if it was recorded before."""
    run = session.get(Run, record.run_id)
    if run is not None and run.selector != UNKNOWN_SELECTOR:
        return False
    create_run(session, record.run_id, total=record.total, selector=record.selector,
               targets=[t for t in record.targets.split(",") if t], requested_by=record.requested_by,
               inventory=record.inventory, created_at=record.timestamp)
    return True


def get_or_create_device(session: Session, name: str, *, group: str = "", platform: str = "",
                         lock: bool = False) -> Device:
    """``lock``: hold the device row (``SELECT ... FOR UPDATE`` where the database has it; SQLite serialises
    writers anyway), so two consumers cannot decide two candidates of one device at once."""
    query = select(Device).where(Device.name == name)
    device = session.scalar(query.with_for_update() if lock else query)
    if device is None:
        device = Device(name=name, group_name=group, platform=platform, last_error="")
        session.add(device)
        session.flush()
    else:
        device.group_name = group or device.group_name
        device.platform = platform or device.platform
    return device


def _newest(session: Session, device_id: int) -> Version | None:
    return session.scalar(select(Version).where(Version.device_id == device_id).order_by(Version.id.desc()).limit(1))


def _view(version: Version) -> str:
    return version.view_sha256 or version.sha256


def _decision(result: Any, status: str, device: Device, newest: Version | None, **fields: Any) -> Decision:
    return Decision(
        task_id=result.task_id, run_id=result.run_id, device=device.name, group=device.group_name,
        platform=device.platform, status=status,
        version_id=newest.id if newest is not None else None,
        sha256=newest.sha256 if newest is not None else "",
        view_sha256=_view(newest) if newest is not None else "",
        author=newest.author if newest is not None else "",
        created_at=aware(newest.created_at) if newest is not None else None,
        **fields,
    )


def _recorded_decision(session: Session, row: DeviceResultRow, result: Any) -> Decision:
    """The decision a result already in the index stands for (a redelivered message)."""
    device = session.get(Device, row.device_id)
    if row.status == DeviceStatus.CHANGED:
        version = session.scalar(select(Version).where(Version.device_id == device.id, Version.run_id == row.run_id))
        if version is not None:
            targets = tuple(c.backend for c in version.copies)
            return _decision(result, row.status, device, version, new=False, created=True, targets=targets)
    if row.status == DeviceStatus.UNCHANGED:
        return _decision(result, row.status, device, _newest(session, device.id), new=False, discard=True)
    return _decision(result, row.status, device, None, new=False, discard=True,
                     drop_cache=row.error_kind == CACHE_DISAGREES)


def apply_device_result(session: Session, result: Any) -> Decision:
    """Record one device's outcome in one run, deciding "new version or not" for a candidate (status
    ``changed``). See the module docstring; the caller commits, then runs the after-commit steps.

    A ``changed`` result is compared on ``view_sha256`` (``sha256`` when the producer sent none) with the
    device's newest version: same -> recorded ``unchanged`` naming that version's sha256; new -> a version and
    a ``pending`` copy per target of ``result.targets`` (comma separated). An ``unchanged`` result (the
    collector's cache said so) is checked the same way when it carries ``view_sha256``: if the newest version
    differs, the cache was wrong, the configuration is not in hand (the collector staged nothing), so the result
    is recorded ``failed`` (error kind ``cache``) and the cache entry dropped: the next backup decides again.
    Idempotent on the task id: a result recorded before returns its decision again (``new`` False).
    """
    row = session.scalar(select(DeviceResultRow).where(DeviceResultRow.task_id == result.task_id))
    if row is not None:
        return _recorded_decision(session, row, result)
    status = _value(result.status)
    error, error_kind = result.error, result.error_kind
    lock = status in OK_STATUSES
    device = get_or_create_device(session, result.device, group=result.group, platform=result.platform, lock=lock)
    if session.get(Run, result.run_id) is None:  # its start is not in yet (or it was started without one)
        session.add(Run(id=result.run_id, total=0, selector=UNKNOWN_SELECTOR, targets=""))
        session.flush()
    sha = result.sha256
    view = getattr(result, "view_sha256", "") or sha
    newest = _newest(session, device.id) if lock else None
    created = None
    targets: tuple[str, ...] = ()
    if status == DeviceStatus.CHANGED and newest is not None and _view(newest) == view:
        status, sha = DeviceStatus.UNCHANGED.value, newest.sha256
    elif status == DeviceStatus.CHANGED:
        run_targets = session.get(Run, result.run_id).targets
        targets = tuple(t for t in ((getattr(result, "targets", "") or run_targets or "").split(",")) if t)
        created = Version(device_id=device.id, run_id=result.run_id, sha256=sha, view_sha256=view,
                          size=result.size, created_at=result.timestamp, author=getattr(result, "author", "") or "")
        session.add(created)
        session.flush()
        for target in targets:
            session.add(Copy(version_id=created.id, backend=target, status=CopyStatus.PENDING, ref="",
                             task_id=f"{result.task_id}:{target}:decided", stored_at=result.timestamp, attempts=0))
        # the masked view: what search reads (storage.index.search); a result without it (an older producer)
        # leaves the device unindexed rather than searchable under an older version's text
        search.put(session, device.id, created.id, getattr(result, "config", "") or None)
        change = aware(device.last_change_at)
        if change is None or change < result.timestamp:
            device.last_change_at = result.timestamp
    elif status == DeviceStatus.UNCHANGED and getattr(result, "view_sha256", "") and (newest is None or _view(newest) != view):
        status, error_kind = DeviceStatus.FAILED.value, CACHE_DISAGREES
        error = (f"{result.device}: the collector's cache said unchanged, but the index's newest version is "
                 f"{newest.sha256[:12] if newest is not None else 'none'}: the cache entry is dropped and the next "
                 "backup stores the configuration")
    session.add(
        DeviceResultRow(
            task_id=result.task_id,
            run_id=result.run_id,
            device_id=device.id,
            status=status,
            timestamp=result.timestamp,
            duration=result.duration,
            error=error,
            error_kind=error_kind,
            log=result.log,
            sha256=sha,
            size=result.size,
            targets=",".join(targets),
            unsaved=getattr(result, "unsaved", None),
            changed_by=getattr(result, "author", "") or "",
        )
    )
    if status != DeviceStatus.SKIPPED_LOCKED:
        last = aware(device.last_attempt_at)
        if last is None or last <= result.timestamp:
            device.last_attempt_at = result.timestamp
            device.last_status = status
            device.last_error = error if status == DeviceStatus.FAILED else ""
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
    if created is not None:
        return _decision(result, status, device, created, created=True, targets=targets)
    if status == DeviceStatus.UNCHANGED:
        return _decision(result, status, device, newest, discard=True)
    return _decision(result, status, device, None, discard=True, drop_cache=error_kind == CACHE_DISAGREES)


def apply_storage_result(session: Session, result: Any) -> bool:
    """Record one target's outcome for a version the decider created. Returns False if this task id was
    already recorded.

    Never creates a version: an outcome for a (device, run) whose device result is not in the index yet
    raises :class:`NotDecided` (the consumer keeps it pending and applies it later); one whose device result
    is recorded without a version raises :class:`NoSuchVersion`. The copy row (made pending by the decider,
    or made here for producers that name no targets) is updated: a landed outcome always wins over a
    pending one, a landed copy is never turned back into a pending one by a late message (nor are copies
    that verify or retention marked), and among pending outcomes the newest (``timestamp``) wins.
    """
    if session.scalar(select(Copy.id).where(Copy.task_id == result.task_id)):
        return False
    status = _value(result.status)
    attempt = int(getattr(result, "attempt", 1) or 1)
    device = session.scalar(select(Device).where(Device.name == result.device))
    version = None
    if device is not None:
        version = session.scalar(select(Version).where(Version.device_id == device.id, Version.run_id == result.run_id))
    if version is None:
        decided = device is not None and session.scalar(select(DeviceResultRow.status).where(
            DeviceResultRow.device_id == device.id, DeviceResultRow.run_id == result.run_id))
        if not decided:
            raise NotDecided(f"{result.device}: no device result of run {result.run_id} yet for this {result.backend} copy")
        raise NoSuchVersion(f"{result.device}: run {result.run_id} made no new version ({decided}), so there is no "
                            f"{result.backend} copy to record")
    next_at = getattr(result, "next_attempt_at", "") or None
    landed = status in CopyStatus.LANDED
    fields = dict(
        task_id=result.task_id, ref=result.ref, status=status, stored_at=result.timestamp, error=result.error,
        key_id=getattr(result, "key_id", "") or "", raw_ref=getattr(result, "raw_ref", "") or "",
        next_attempt_at=datetime.fromisoformat(next_at) if isinstance(next_at, str) else next_at,
    )
    existing = session.scalar(select(Copy).where(Copy.version_id == version.id, Copy.backend == result.backend))
    if existing is None:
        session.add(Copy(version_id=version.id, backend=result.backend, attempts=attempt, **fields))
    elif existing.status == CopyStatus.PENDING:
        newer = aware(existing.stored_at) is None or aware(existing.stored_at) <= result.timestamp
        if landed or newer:
            for key, value in fields.items():
                setattr(existing, key, value)
            if landed:
                existing.error, existing.next_attempt_at = "", None
        existing.attempts = max(existing.attempts or 0, attempt)
    session.flush()
    return True


def refresh_run(session: Session, run_id: str, now: datetime | None = None) -> Run | None:
    """Mark a run finished once every device has a result and every new version an outcome on every target.

    The decider creates each new version's copy rows (``pending``, ``attempts`` 0) with it, so "an outcome
    on every target" is: no copy of this run's versions is still untried. A pending copy that a storage job
    reported counts (it is retried until it lands); an ``unchanged`` device needs no copy at all.
    """
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
    if statuses.get(DeviceStatus.CHANGED.value, 0):
        untried = session.scalar(
            select(func.count(Copy.id)).join(Version, Version.id == Copy.version_id).where(
                Version.run_id == run_id, Copy.status == CopyStatus.PENDING, Copy.attempts == 0)
        )
        if untried:
            return run
    run.finished_at = now or datetime.now(timezone.utc)
    failed = statuses.get(DeviceStatus.FAILED.value, 0)
    run.status = (RunStatus.SUCCEEDED if not failed else RunStatus.FAILED if failed == done else RunStatus.PARTIAL).value
    session.flush()
    return run
