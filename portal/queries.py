"""The portal's reads of the index: small aggregate queries that stay fast on 10,000 devices and
1,000,000 versions (paged tables, counts grouped in SQL, versions' copies fetched only for what is shown).

Every function takes an open SQLAlchemy session and returns plain values or pandas DataFrames; the pages in
``portal/views/`` only lay them out. Times are UTC (tz-aware).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import pandas as pd
from sqlalchemy import case, exists, func, or_, select
from sqlalchemy.orm import Session, aliased

from jobs.ops.freshness import is_stale
from storage.index.models import Copy, Device, DeviceResultRow, Run, Version, aware
from storage.index.queries import NotFound
from storage.index import health
from storage.index.statuses import DeviceStatus, Health, RunStatus

from .content import Target

OK_STATUSES = DeviceStatus.OK
#: the status filter's choices on the Devices page: the one vocabulary (``storage.index.health``); a device
#: matches each of its conditions, and shows the most urgent one
STATUS_FILTERS = tuple(h.value for h in health.ORDER)
#: what "stale" means, beside the stale counts and filters (the rule itself: ``jobs.ops.freshness``)
STALE_HELP = ("no successful backup within the device's allowed age (its devicevault_max_age, else "
              "DEVICEVAULT_MAX_AGE = {max_age:g} h), as of the last freshness check (every minute)")
SORTS = {
    "name": Device.name,
    "group": Device.group_name,
    "platform": Device.platform,
    "status": health.rank_column(),  # the most urgent first (storage.index.health.ORDER)
    "last success": Device.last_success_at,
    "last change": Device.last_change_at,
    "last attempt": Device.last_attempt_at,
}
_CHUNK = 500  # ids per IN (...) list


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _chunks(items: Sequence, size: int = _CHUNK):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _status_condition(status: str):
    if status not in STATUS_FILTERS:
        raise ValueError(f"unknown status filter {status!r} (choices: {', '.join(STATUS_FILTERS)})")
    return health.condition(status)


# --- dashboard --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overview:
    total: int
    ok: int  # last backup succeeded
    failed: int  # last backup failed
    stale: int  # marked stale by the freshness check (jobs.ops.freshness; may overlap with failed)
    versions: int
    unsaved: int = 0  # running != startup at the newest backup
    never: int = 0  # no backup succeeded yet
    changed: int = 0  # the last backup made a new version


def overview(session: Session) -> Overview:
    """Devices per condition of ``storage.index.health`` (the counts ``devicevault status`` prints too)."""
    n = health.counts(session)
    versions = session.scalar(select(func.count(Version.id))) or 0
    return Overview(n["total"], n[Health.OK], n[Health.FAILED], n[Health.STALE], int(versions),
                    unsaved=n[Health.UNSAVED], never=n[Health.NEVER], changed=n[Health.CHANGED])


KINDS = ("backups", "first backups", "changes", "failures")


def activity_per_day(session: Session, *, days: int = 30, now: datetime | None = None) -> pd.DataFrame:
    """One row per day and kind: ``day``, ``kind``, ``count``. ``backups``: device results of the runs started
    that day, whatever their outcome; ``failures``: those that failed; ``first backups``: a device's first
    version, collected that day; ``changes``: every other new version collected that day.

    All from indexes alone: results per run id (and per run id and status, migration 0008), versions per
    creation time (a version is a first backup when its device has no older one: one index probe each).
    """
    now = now or utcnow()
    since = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    per_run = (select(func.count()).where(DeviceResultRow.run_id == Run.id).correlate(Run).scalar_subquery())
    failed = (select(func.count()).where(DeviceResultRow.run_id == Run.id,
                                         DeviceResultRow.status == DeviceStatus.FAILED.value)
              .correlate(Run).scalar_subquery())
    counts: dict[tuple[str, str], int] = {}

    def add(day: str, kind: str, n) -> None:
        counts[(day, kind)] = counts.get((day, kind), 0) + int(n or 0)

    # plus the results index retention removed (storage.index.retention keeps their counts on the run)
    pruned = Run.pruned_unchanged + Run.pruned_failed + Run.pruned_skipped
    for created, n, f, gone, gone_failed in session.execute(
            select(Run.created_at, per_run, failed, pruned, Run.pruned_failed).where(Run.created_at >= since)):
        day = aware(created).date().isoformat()
        add(day, "backups", int(n or 0) + int(gone or 0))
        add(day, "failures", int(f or 0) + int(gone_failed or 0))
    older = aliased(Version)
    first = ~exists().where(older.device_id == Version.device_id, older.id < Version.id)
    vday = func.date(Version.created_at)
    for d, n, firsts in session.execute(select(vday, func.count(), func.sum(case((first, 1), else_=0)))
                                        .where(Version.created_at >= since).group_by(vday)):
        add(str(d), "first backups", firsts)
        add(str(d), "changes", int(n or 0) - int(firsts or 0))
    all_days = [(since + timedelta(days=i)).date().isoformat() for i in range(days)]
    rows = [{"day": d, "kind": k, "count": counts.get((d, k), 0)} for d in all_days for k in KINDS]
    frame = pd.DataFrame(rows, columns=["day", "kind", "count"])
    frame["day"] = pd.to_datetime(frame["day"])
    return frame


def recently_changed(session: Session, limit: int = 10) -> pd.DataFrame:
    rows = session.execute(
        select(Device.name, Device.group_name, Device.platform, Device.last_change_at)
        .where(Device.last_change_at.is_not(None), health.active())
        .order_by(Device.last_change_at.desc())
        .limit(limit)
    ).all()
    return pd.DataFrame(
        [{"device": n, "group": g, "platform": p, "last change": _ts(c)} for n, g, p, c in rows],
        columns=["device", "group", "platform", "last change"],
    )


def failing_devices(session: Session, limit: int = 100) -> pd.DataFrame:
    rows = session.execute(
        select(Device.name, Device.group_name, Device.last_attempt_at, Device.last_success_at, Device.last_error)
        .where(Device.last_status == DeviceStatus.FAILED.value, health.active())
        .order_by(Device.last_attempt_at.desc())
        .limit(limit)
    ).all()
    return pd.DataFrame(
        [{"device": n, "group": g, "failed at": _ts(a), "last success": _ts(s), "error": e}
         for n, g, a, s, e in rows],
        columns=["device", "group", "failed at", "last success", "error"],
    )


# --- devices ----------------------------------------------------------------------------------------------
def filter_choices(session: Session) -> tuple[list[str], list[str]]:
    """(groups, platforms) present in the index."""
    groups = [g for (g,) in session.execute(select(Device.group_name).distinct().order_by(Device.group_name)) if g]
    platforms = [p for (p,) in session.execute(select(Device.platform).distinct().order_by(Device.platform)) if p]
    return groups, platforms


def device_names(session: Session) -> list[str]:
    return list(session.scalars(select(Device.name).order_by(Device.name)))


DEVICE_COLUMNS = ["device", "status", "last backup", "group", "platform", "unsaved", "stale", "last success",
                  "last change", "versions", "last error"]
#: the Devices page's "Unsaved" column: running != startup at the newest backup, or unknown (no startup
#: command on the platform, or never backed up)
UNSAVED_LABELS = {True: "yes", False: "no", None: "—"}


def unsaved_label(value: bool | None) -> str:
    return UNSAVED_LABELS[None if value is None else bool(value)]


def devices_table(
    session: Session,
    *,
    name: str = "",
    groups: Sequence[str] = (),
    platforms: Sequence[str] = (),
    statuses: Sequence[str] = (),
    unsaved_only: bool = False,
    sort: str = "name",
    descending: bool = False,
    offset: int = 0,
    limit: int = 200,
) -> tuple[pd.DataFrame, int]:
    """One page of the devices matching the filters, sorted in SQL; returns (page, number matching).

    ``statuses`` are :data:`STATUS_FILTERS` (a device matching any of them is shown); ``unsaved_only`` keeps
    the devices whose running configuration was not saved at their newest backup. The version count is
    computed for the page's devices only, except when sorting by it.
    """
    where = [health.active()]  # retired devices (jobs.ops.retire) are hidden here; their own page still shows them
    if name:
        where.append(Device.name.icontains(name.strip(), autoescape=True))
    if groups:
        where.append(Device.group_name.in_(list(groups)))
    if platforms:
        where.append(Device.platform.in_(list(platforms)))
    if statuses:
        where.append(or_(*[_status_condition(s) for s in statuses]))
    if unsaved_only:
        where.append(Device.unsaved.is_(True))
    total = session.scalar(select(func.count(Device.id)).where(*where)) or 0
    columns = [Device.id, Device.name, Device.group_name, Device.platform, Device.last_status,
               case((is_stale(), True), else_=False), Device.last_success_at, Device.last_change_at, Device.last_error,
               Device.unsaved, health.health_column()]
    if sort == "versions":
        counts = select(Version.device_id.label("device_id"), func.count().label("n")).group_by(Version.device_id).subquery()
        n = func.coalesce(counts.c.n, 0)
        query = (select(*columns, n).outerjoin(counts, counts.c.device_id == Device.id).where(*where)
                 .order_by(n.desc() if descending else n.asc(), Device.name))
    else:
        key = SORTS.get(sort)
        if key is None:
            raise ValueError(f"cannot sort by {sort!r} (choices: {', '.join([*SORTS, 'versions'])})")
        order = key.desc().nulls_last() if descending else key.asc().nulls_first()
        query = select(*columns).where(*where).order_by(order, Device.name)
    rows = session.execute(query.offset(max(0, offset)).limit(max(1, limit))).all()
    if sort == "versions":
        counts_by_id = {r[0]: r[-1] for r in rows}
    else:
        counts_by_id = version_counts(session, [r[0] for r in rows])
    now = utcnow()
    frame = pd.DataFrame(
        [{"device": r[1], "group": r[2], "platform": r[3], "status": r[10], "last backup": health.ago(_ts(r[6]), now),
          "stale": bool(r[5]), "unsaved": unsaved_label(r[9]), "last success": _ts(r[6]), "last change": _ts(r[7]),
          "versions": int(counts_by_id.get(r[0], 0)), "last error": r[8] or ""} for r in rows],
        columns=DEVICE_COLUMNS,
    )
    for column in ("last success", "last change"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame, int(total)


def version_counts(session: Session, device_ids: Sequence[int]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for part in _chunks(list(device_ids)):
        counts.update(session.execute(
            select(Version.device_id, func.count()).where(Version.device_id.in_(part)).group_by(Version.device_id)
        ).all())
    return counts


# --- one device ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceInfo:
    id: int
    name: str
    group: str
    platform: str
    status: str
    last_attempt: datetime | None
    last_success: datetime | None
    last_change: datetime | None
    last_error: str
    stale_since: datetime | None
    unsaved: bool | None = None  # running != startup at the newest backup (None: unknown)
    unsaved_since: datetime | None = None
    health: str = ""  # the word it shows (storage.index.health)


def device_info(session: Session, name: str) -> DeviceInfo:
    d = session.scalar(select(Device).where(Device.name == name))
    if d is None:
        raise NotFound(f"device {name!r} is not in the index")
    return DeviceInfo(d.id, d.name, d.group_name, d.platform, d.last_status or "never", aware(d.last_attempt_at),
                      aware(d.last_success_at), aware(d.last_change_at), d.last_error or "", aware(d.stale_since),
                      d.unsaved, aware(d.unsaved_since),
                      health.health_of(d.last_status, d.last_success_at, d.stale_since, d.unsaved, d.retired_at).value)


@dataclass(frozen=True)
class VersionRow:
    number: int  # 1 = the device's first version
    id: int
    sha256: str
    size: int
    created_at: datetime
    run_id: str
    author: str


def versions_of(session: Session, device_id: int) -> list[VersionRow]:
    """Every version of a device, oldest first (no copies: see :func:`copies_of`)."""
    rows = session.execute(
        select(Version.id, Version.sha256, Version.size, Version.created_at, Version.run_id, Version.author)
        .where(Version.device_id == device_id).order_by(Version.id)
    ).all()
    return [VersionRow(i, r[0], r[1], r[2], aware(r[3]), r[4], r[5] or "") for i, r in enumerate(rows, start=1)]


def copies_of(session: Session, version_ids: Sequence[int]) -> dict[int, tuple[tuple[str, str, str], ...]]:
    """version id -> its copies ``(backend, ref, status)``, in the order they were recorded."""
    found: dict[int, list[tuple[str, str, str]]] = {v: [] for v in version_ids}
    for part in _chunks(list(version_ids)):
        for vid, backend, ref, status in session.execute(
            select(Copy.version_id, Copy.backend, Copy.ref, Copy.status).where(Copy.version_id.in_(part)).order_by(Copy.id)
        ):
            found[vid].append((backend, ref, status))
    return {k: tuple(v) for k, v in found.items()}


# --- runs -------------------------------------------------------------------------------------------------
RUN_COLUMNS = ["run", "started", "finished", "status", "selector", "requested by", "devices", "changed",
               "unchanged", "failed", "skipped", "duration s"]


def count_runs(session: Session) -> int:
    return int(session.scalar(select(func.count(Run.id))) or 0)


def runs_table(session: Session, *, limit: int = 20, offset: int = 0) -> pd.DataFrame:
    """The newest runs with the number of devices per outcome (results index retention removed included:
    ``Run.pruned``)."""
    found = session.scalars(select(Run).order_by(Run.created_at.desc()).offset(offset).limit(limit)).all()
    runs = [(r.id, r.created_at, r.finished_at, r.status, r.selector, r.requested_by, r.total) for r in found]
    counts: dict[str, dict[str, int]] = {r.id: {k: n for k, n in r.pruned().items() if n} for r in found}
    ids = [r[0] for r in runs]
    for part in _chunks(ids):
        for run_id, status, n in session.execute(
            select(DeviceResultRow.run_id, DeviceResultRow.status, func.count())
            .where(DeviceResultRow.run_id.in_(part)).group_by(DeviceResultRow.run_id, DeviceResultRow.status)
        ):
            counts.setdefault(run_id, {})[status] = counts.get(run_id, {}).get(status, 0) + n
    rows = []
    for run_id, created, finished, status, selector, who, total in runs:
        c = counts.get(run_id, {})
        created, finished = aware(created), aware(finished)
        rows.append({
            "run": run_id, "started": created, "finished": finished,
            "status": status if finished else RunStatus.RUNNING.value, "selector": selector, "requested by": who or "",
            "devices": total or sum(c.values()), "changed": c.get(DeviceStatus.CHANGED.value, 0), "unchanged": c.get(DeviceStatus.UNCHANGED.value, 0),
            "failed": c.get(DeviceStatus.FAILED.value, 0), "skipped": c.get(DeviceStatus.SKIPPED_LOCKED.value, 0),
            "duration s": round((finished - created).total_seconds(), 1) if finished and created else None,
        })
    frame = pd.DataFrame(rows, columns=RUN_COLUMNS)
    for column in ("started", "finished"):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def finished_runs(session: Session, limit: int = 200) -> list[tuple[str, datetime, str]]:
    """The newest finished runs, newest first: ``(run id, finished at, selector)`` (what a snapshot of a run
    can be made of: ``storage.snapshot.run_moment``)."""
    rows = session.execute(select(Run.id, Run.finished_at, Run.selector).where(Run.finished_at.is_not(None))
                           .order_by(Run.finished_at.desc()).limit(limit)).all()
    return [(run_id, aware(finished), selector) for run_id, finished, selector in rows]


def snapshot_size(session: Session, at: datetime, groups: Sequence[str] = ()) -> int:
    """How many devices a snapshot at ``at`` (of ``groups``) holds: those with a version at or before it."""
    query = select(func.count(func.distinct(Version.device_id))).where(Version.created_at <= at)
    if groups:
        query = query.join(Device, Device.id == Version.device_id).where(Device.group_name.in_(list(groups)))
    return int(session.scalar(query) or 0)


@dataclass(frozen=True)
class RunState:
    run_id: str
    status: str  # running / succeeded / partial / failed
    total: int
    done: int
    finished: bool
    requested_by: str
    selector: str
    created_at: datetime | None
    finished_at: datetime | None


def run_state(session: Session, run_id: str, started_hosts: Sequence[str] | None = None) -> RunState:
    """A run's progress. A run this process just started (``started_hosts``) may not be in the index yet (the
    index consumer records it from its start message): it is then shown running with nothing done."""
    run = session.get(Run, run_id)
    if run is None and started_hosts is not None:
        return RunState(run_id, RunStatus.RUNNING.value, len(started_hosts), 0, False, "", "", None, None)
    if run is None:
        raise NotFound(f"run {run_id!r} is not in the index")
    done = session.scalar(select(func.count(DeviceResultRow.id)).where(DeviceResultRow.run_id == run_id)) or 0
    done += sum(run.pruned().values())  # results index retention removed (storage.index.retention)
    finished = run.finished_at is not None
    return RunState(run.id, run.status if finished else RunStatus.RUNNING.value, run.total or 0, int(done), finished,
                    run.requested_by or "", run.selector, aware(run.created_at), aware(run.finished_at))


def pruned_results(session: Session, run_id: str) -> int:
    """How many of a run's device results index retention removed (``storage.index.retention``; 0 for a run
    not in the index)."""
    run = session.get(Run, run_id)
    return sum(run.pruned().values()) if run is not None else 0


RUN_DEVICE_COLUMNS = ["device", "group", "status", "duration s", "error", "sha"]


def run_devices(session: Session, run_id: str, hosts: Sequence[str] = (), groups: dict[str, str] | None = None
                ) -> pd.DataFrame:
    """Each device of a run with its outcome; ``hosts`` without a result yet are listed as ``waiting`` (with
    their group from ``groups``, the inventory's, and no duration)."""
    rows = session.execute(
        select(Device.name, Device.group_name, DeviceResultRow.status, DeviceResultRow.duration,
               DeviceResultRow.error, DeviceResultRow.sha256)
        .join(Device, Device.id == DeviceResultRow.device_id)
        .where(DeviceResultRow.run_id == run_id).order_by(Device.name)
    ).all()
    seen = {r[0] for r in rows}
    data = [{"device": n, "group": g, "status": s, "duration s": round(d or 0.0, 2), "error": e or "",
             "sha": (sha or "")[:12]} for n, g, s, d, e, sha in rows]
    data += [{"device": h, "group": (groups or {}).get(h, ""), "status": "waiting", "duration s": None, "error": "",
              "sha": ""} for h in hosts if h not in seen]
    return pd.DataFrame(sorted(data, key=lambda r: r["device"]), columns=RUN_DEVICE_COLUMNS)


# --- search -----------------------------------------------------------------------------------------------
def search_targets(session: Session, *, all_versions: bool = False, devices: Sequence[str] = (),
                   groups: Sequence[str] = (), platforms: Sequence[str] = ()) -> list[Target]:
    """The configurations a search reads from storage: each device's newest version (or every version), by
    device name (the newest alone are searched from the index instead: ``content.search_index``)."""
    where = []
    if devices:
        where.append(Device.name.in_(list(devices)))
    if groups:
        where.append(Device.group_name.in_(list(groups)))
    if platforms:
        where.append(Device.platform.in_(list(platforms)))
    if all_versions:
        number = func.row_number().over(partition_by=Version.device_id, order_by=Version.id).label("number")
        numbered = (select(Version.id.label("id"), Version.device_id.label("device_id"), number)
                    .join(Device, Device.id == Version.device_id).where(*where).subquery())
        query = (select(numbered.c.id, Device.name, numbered.c.number, Version.sha256, Version.created_at)
                 .join(Device, Device.id == numbered.c.device_id).join(Version, Version.id == numbered.c.id)
                 .order_by(Device.name, numbered.c.number.desc()))
    else:
        latest = (select(Version.device_id.label("device_id"), func.max(Version.id).label("id"), func.count().label("n"))
                  .join(Device, Device.id == Version.device_id).where(*where).group_by(Version.device_id).subquery())
        query = (select(latest.c.id, Device.name, latest.c.n, Version.sha256, Version.created_at)
                 .join(Device, Device.id == latest.c.device_id).join(Version, Version.id == latest.c.id)
                 .order_by(Device.name))
    rows = session.execute(query).all()
    copies = copies_of(session, [r[0] for r in rows])
    return [Target(name, int(n), sha, aware(created), copies.get(vid, ())) for vid, name, n, sha, created in rows]


def _ts(value: datetime | None) -> datetime | None:
    return aware(value)


# --- the device picker and a device's runs -----------------------------------------------------------------
def find_devices(session: Session, text: str = "", limit: int = 50) -> list[str]:
    """Up to ``limit`` device names containing ``text`` (case-insensitive), names starting with it first: one
    query with LIMIT, never the whole list (the device picker on 10,000 devices)."""
    text = (text or "").strip()
    query = select(Device.name)
    if text:
        escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        lowered = func.lower(Device.name)
        query = (query.where(lowered.like(f"%{escaped}%", escape="\\"))
                 .order_by(case((lowered.like(f"{escaped}%", escape="\\"), 0), else_=1), Device.name))
    else:
        query = query.order_by(Device.name)
    return list(session.scalars(query.limit(limit)))


def device_exists(session: Session, name: str) -> bool:
    return session.scalar(select(Device.id).where(Device.name == name)) is not None


DEVICE_RUN_COLUMNS = ["run", "started", "status", "duration s", "error", "sha", "requested by"]


def device_runs(session: Session, device_id: int, limit: int = 20) -> pd.DataFrame:
    """A device's newest ``limit`` results, one per run (newest first)."""
    rows = session.execute(
        select(DeviceResultRow.run_id, DeviceResultRow.timestamp, DeviceResultRow.status, DeviceResultRow.duration,
               DeviceResultRow.error, DeviceResultRow.sha256, Run.requested_by)
        .join(Run, Run.id == DeviceResultRow.run_id)
        .where(DeviceResultRow.device_id == device_id)
        .order_by(DeviceResultRow.id.desc()).limit(limit)
    ).all()
    frame = pd.DataFrame(
        [{"run": r, "started": aware(t), "status": s, "duration s": None if d is None else round(d, 2),
          "error": e or "", "sha": (sha or "")[:12], "requested by": who or ""} for r, t, s, d, e, sha, who in rows],
        columns=DEVICE_RUN_COLUMNS)
    frame["started"] = pd.to_datetime(frame["started"], utc=True)
    return frame


def device_result(session: Session, run_id: str, name: str) -> tuple[str, str] | None:
    """(status, error) of ``name`` in run ``run_id``, or None while it has no result."""
    row = session.execute(
        select(DeviceResultRow.status, DeviceResultRow.error).join(Device, Device.id == DeviceResultRow.device_id)
        .where(DeviceResultRow.run_id == run_id, Device.name == name).order_by(DeviceResultRow.id.desc()).limit(1)
    ).first()
    return None if row is None else (row[0], row[1] or "")


# --- compliance -------------------------------------------------------------------------------------------
COMPLIANCE_COLUMNS = ["device", "group", "platform", "rule", "problem", "section", "line", "since"]


def compliance_table(session: Session, *, groups: Sequence[str] = (), rules: Sequence[str] = ()) -> pd.DataFrame:
    """One row per offending line of every device that breaks a compliance rule (``storage.index.compliance``:
    what ``jobs.compliance`` found in the newest version's masked view): ``problem`` is ``missing`` (a line
    the rule asks for) or ``forbidden`` (a line it forbids), ``section`` the configuration section ("" = the
    whole configuration). ``groups``: only devices of these storage groups."""
    from storage.index.compliance import violations

    rows = []
    for found in violations(session, rules=list(rules)):
        if groups and found["group"] not in groups:
            continue
        for item in found["lines"] or [{"line": "", "problem": "", "section": ""}]:
            rows.append({"device": found["device"], "group": found["group"], "platform": found["platform"],
                         "rule": found["rule"], "problem": item["problem"], "section": item["section"],
                         "line": item["line"], "since": pd.Timestamp(found["since"])})
    return pd.DataFrame(rows, columns=COMPLIANCE_COLUMNS)


def compliance_summary(session: Session) -> dict[str, int]:
    """``{"checked": devices checked, "violating": devices breaking at least one rule}``."""
    from storage.index.compliance import standing_counts

    return standing_counts(session)
