"""Recurring backups: schedules in the index, fired by ``devicevault scheduler`` through rq-scheduler.

A schedule backs up one inventory group (or every device) on a 5-field cron expression
(``minute hour day-of-month month day-of-week``, evaluated in the scheduler host's local time zone)::

    devicevault schedule add --cron "*/30 * * * *" --group site_ams --name ams-half-hourly
    devicevault schedule add --cron "0 2 * * *"                      # every device at 02:00
    devicevault schedule list [--json]                               # with last run, last error, next run
    devicevault schedule disable ams-half-hourly                     # by name or by id
    devicevault schedule enable 2
    devicevault schedule remove ams-half-hourly
    devicevault scheduler [--interval 5] [--maintenance-interval 60] # the process that fires them

Schedules live in the index (table ``schedules``); the functions below take an explicit SQLAlchemy session
and only flush, the caller commits (the CLI and the portal both call them). ``devicevault scheduler``
turns every enabled schedule into an rq-scheduler cron job (:func:`cron_job_id`) on every pass, so changes
take effect without restarting anything; the job calls :func:`run_schedule` on a collector worker, which
reads the schedule again and does nothing if it has been disabled or removed in the meantime.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.index.models import Schedule, aware, utcnow

from jobs.errors import BackupError
from jobs.settings import Settings

log = logging.getLogger("devicevault.schedules")

#: prefix of the rq-scheduler job ids of schedules (``<prefix><id>-<hash of cron and group>``)
JOB_PREFIX = "devicevault-schedule-"
CRON_FIELDS = "minute hour day-of-month month day-of-week"


class ScheduleError(BackupError):
    """Base of the schedule errors; the message is one clear line."""

    kind = "schedule"


class InvalidCron(ScheduleError, ValueError):
    """The cron expression is not 5 valid fields, or never matches a date."""

    kind = "invalid_cron"

    def __init__(self, expression: str, reason: str):
        self.expression = expression
        super().__init__(f"invalid cron expression {expression!r}: {reason} (expected 5 fields: {CRON_FIELDS}, "
                         f"e.g. '*/15 * * * *')")


class ScheduleNotFound(ScheduleError, LookupError):
    kind = "schedule_not_found"

    def __init__(self, id_or_name: int | str):
        self.id_or_name = id_or_name
        super().__init__(f"schedule {str(id_or_name)!r} not found (devicevault schedule list shows them)")


class InvalidScheduleName(ScheduleError, ValueError):
    """The name is taken, or would be mistaken for an id."""

    kind = "schedule_name"


# --- cron expressions ------------------------------------------------------------------------------------------
def validate_cron(expression: str) -> str:
    """``expression`` with single spaces between its 5 fields. Raises :class:`InvalidCron` naming it."""
    import crontab

    text = " ".join(str(expression or "").split())
    fields = text.split(" ") if text else []
    if len(fields) != 5:
        raise InvalidCron(text or str(expression), f"{len(fields)} field(s)")
    try:
        parsed = crontab.CronTab(text)
    except ValueError as exc:
        raise InvalidCron(text, str(exc)) from None
    if parsed.next(now=datetime.now(), return_datetime=True, default_utc=False) is None:
        raise InvalidCron(text, "it never matches a date")
    return text


def next_run(expression: str) -> datetime:
    """When rq-scheduler fires ``expression`` next (UTC), computed the way it does."""
    import warnings

    from rq_scheduler.utils import get_next_scheduled_time

    with warnings.catch_warnings():  # crontab's notice about its future default, about rq-scheduler's call
        warnings.simplefilter("ignore", FutureWarning)
        return get_next_scheduled_time(expression)


def cron_job_id(schedule_id: int, cron: str, group: str) -> str:
    """The rq-scheduler job id of a schedule: a changed cron or group gives a new id, so a new job."""
    digest = hashlib.sha256(f"{cron}\0{group}".encode()).hexdigest()[:12]
    return f"{JOB_PREFIX}{schedule_id}-{digest}"


def check_group(inventory: Path | str, group: str) -> None:
    """Raise :class:`~jobs.errors.InventoryError` if ``group`` ("" = every device) has no host in ``inventory``."""
    from jobs.collect.inventory import load_inventory, select_hosts

    hosts = load_inventory(inventory)
    if group:
        select_hosts(hosts, groups=[group])


# --- the schedules table ---------------------------------------------------------------------------------------
def as_dict(schedule: Schedule) -> dict:
    def iso(value: datetime | None) -> str | None:
        return aware(value).isoformat() if value is not None else None

    upcoming = None
    if schedule.enabled:
        try:
            upcoming = iso(next_run(schedule.cron))
        except Exception:  # noqa: BLE001 - a row written by hand with a bad expression: show it, no next run
            upcoming = None
    return {
        "id": schedule.id,
        "name": schedule.name or "",
        "group": schedule.group or "",
        "cron": schedule.cron,
        "enabled": bool(schedule.enabled),
        "created_at": iso(schedule.created_at),
        "updated_at": iso(schedule.updated_at),
        "last_run_at": iso(schedule.last_run_at),
        "last_run_id": schedule.last_run_id or "",
        "last_error": schedule.last_error or "",
        "next_run": upcoming,
    }


def get_schedule(session: Session, id_or_name: int | str) -> Schedule:
    """The schedule with this id (a number) or name. Raises :class:`ScheduleNotFound`."""
    key = str(id_or_name).strip()
    found = None
    if key.isdigit():
        found = session.get(Schedule, int(key))
    elif key:
        found = session.scalar(select(Schedule).where(Schedule.name == key))
    if found is None:
        raise ScheduleNotFound(id_or_name)
    return found


def add_schedule(
    session: Session, cron: str, group: str = "", name: str = "", enabled: bool = True, *,
    inventory: Path | str | None = None,
) -> Schedule:
    """Add a schedule (flushed, so it has its id). With ``inventory``, ``group`` must be one of its groups.

    Raises :class:`InvalidCron`, :class:`InvalidScheduleName` or :class:`~jobs.errors.InventoryError`.
    """
    cron = validate_cron(cron)
    group = (group or "").strip()
    name = (name or "").strip()
    if name.isdigit():
        raise InvalidScheduleName(f"schedule name {name!r} is a number; numbers are schedule ids")
    if name and session.scalar(select(Schedule.id).where(Schedule.name == name)) is not None:
        raise InvalidScheduleName(f"a schedule named {name!r} already exists")
    if inventory is not None:
        check_group(inventory, group)
    now = utcnow()
    schedule = Schedule(name=name or None, group=group, cron=cron, enabled=bool(enabled), created_at=now,
                        updated_at=now, last_run_id="", last_error="")
    session.add(schedule)
    session.flush()
    return schedule


def list_schedules(session: Session) -> list[dict]:
    """Every schedule, oldest first, as plain dicts (with ``next_run`` for enabled ones)."""
    return [as_dict(s) for s in session.scalars(select(Schedule).order_by(Schedule.id)).all()]


def set_enabled(session: Session, id_or_name: int | str, enabled: bool) -> Schedule:
    """Enable or disable a schedule; a disabled one starts no run, even from a job already queued."""
    schedule = get_schedule(session, id_or_name)
    if bool(schedule.enabled) != bool(enabled):
        schedule.enabled = bool(enabled)
        schedule.updated_at = utcnow()
    session.flush()
    return schedule


def remove_schedule(session: Session, id_or_name: int | str) -> dict:
    """Delete a schedule; returns what it was (:func:`as_dict`)."""
    schedule = get_schedule(session, id_or_name)
    described = as_dict(schedule)
    session.delete(schedule)
    session.flush()
    return described


def wanted_jobs(session: Session) -> dict[str, Schedule]:
    """rq-scheduler job id -> enabled schedule: the cron jobs ``devicevault scheduler`` keeps."""
    enabled = session.scalars(select(Schedule).where(Schedule.enabled.is_(True)).order_by(Schedule.id)).all()
    return {cron_job_id(s.id, s.cron, s.group or ""): s for s in enabled}


# --- the RQ job ----------------------------------------------------------------------------------------------
def _record(Session, schedule_id: int, *, at: datetime, run_id: str = "", error: str = "") -> None:
    with Session.begin() as session:
        schedule = session.get(Schedule, schedule_id)
        if schedule is None:  # removed while it was firing
            return
        schedule.last_run_at = at
        schedule.last_error = error
        if run_id:
            schedule.last_run_id = run_id


def run_schedule(schedule_id: int) -> str | None:
    """RQ job of a schedule's cron job: start a backup run of its group; returns the run id.

    Returns None without starting anything if the schedule is disabled or gone, or if this firing already
    ran (rq-scheduler queues a cron job again at each firing even while it waits in a busy queue). A
    :class:`~jobs.errors.BackupError` (e.g. the group is no longer in the inventory) is recorded in the
    schedule's ``last_error`` and returns None; anything else is recorded and raised.
    """
    from rq import get_current_job

    from storage.index.db import connect

    from jobs.collect.runs import start_backup

    job = get_current_job()
    if job is None:
        raise RuntimeError("jobs.ops.schedules.run_schedule runs inside an RQ worker")
    settings = Settings.load()
    Session = connect(settings.database_url, settings.index_wait)
    with Session() as session:
        schedule = session.get(Schedule, schedule_id)
        if schedule is None or not schedule.enabled:
            log.info("schedule %s is %s: no run", schedule_id, "gone" if schedule is None else "disabled")
            return None
        last = aware(schedule.last_run_at)
        if last is not None and job.enqueued_at is not None and last >= aware(job.enqueued_at):
            log.info("schedule %s already ran for the firing queued at %s", schedule_id, job.enqueued_at)
            return None
        group, label = schedule.group or "", schedule.name or str(schedule.id)
    fired = utcnow()
    try:
        started = start_backup(job.connection, settings, groups=[group] if group else None,
                               requested_by=f"schedule:{label}")
    except Exception as exc:
        message = str(exc) or type(exc).__name__
        _record(Session, schedule_id, at=fired, error=message)
        if isinstance(exc, BackupError):
            log.warning("schedule %s (%s): no run: %s", schedule_id, label, message)
            return None
        raise
    _record(Session, schedule_id, at=fired, run_id=started.run_id)
    log.info("schedule %s (%s): run %s, %d device(s)", schedule_id, label, started.run_id, len(started.hosts))
    return started.run_id
