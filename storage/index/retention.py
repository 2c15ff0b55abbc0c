"""Index retention: old device results and runs go, so the index stays bounded (``device_results`` grows by one
row per device per run: 600,000 rows a day at 100,000 devices backed up every 4 hours).

The one rule, applied by :func:`prune_index` (the maintenance pass, ``jobs.ops.maintenance``, hourly; and
``devicevault prune-index [--dry-run]``). With ``DEVICEVAULT_RESULT_RETENTION_DAYS`` = N (``jobs.settings``:
default 90, the dashboard's longest chart and a quarter of history on the device page; 0 keeps everything), a
device result of a *finished* run started more than N days ago is removed, **except**:

- a result that made a version (status ``changed``, or a version of that device in that run): versions are
  never pruned ("keeps every version, never loses one"), and their result names the run and the outcome a
  redelivered message or a late storage outcome is checked against (``records._recorded_decision``,
  ``records.apply_storage_result``); the version's run stays with it;
- each device's latest result and latest successful one: the rows ``devices.last_status`` /
  ``last_attempt_at`` / ``last_success_at`` were taken from (a result at or after them). Health
  (``storage.index.health``: failed, never backed up, stale, unsaved, changed, ok), the freshness check, the
  notifier's sweeps and compliance read the device row and versions, never old results, so they read the same
  after a prune; the rows are kept so the device page still shows the outcome the health word stands for (a
  device never attempted, only ever skipped for a busy lock, keeps its results);
- every result of a run that has not finished (``records.refresh_run`` counts them to finish it).

A run goes once it is older than N days, finished, and nothing names it any more: no result left, no version
made in it (``versions.run_id``: the device page's "run" column, ``export``), no schedule naming it as its last
run (``schedules.last_run_id``). ``export --run`` of a run that went says it is not in the index
(``export --at`` with its time still works: it reads versions).

What the removed results counted stays on their run (``runs.pruned_unchanged`` / ``pruned_failed`` /
``pruned_skipped``, migration 0012), so the portal's Runs page (devices per outcome), its dashboard (backups
and failures per day) and ``backup --wait``'s progress read the same before and after.

Work is done in batches of :data:`BATCH` rows by primary key, each in its own short transaction (no long
lock on SQLite, no giant transaction on PostgreSQL); the rows of a batch are deleted and their run's counts
raised in the same transaction, so a prune cut short anywhere leaves a consistent index and the next one
goes on. ``max_rows`` bounds one call (the maintenance pass takes a share per pass and comes back). A pass
reads only the old runs that still hold a result of a status that may go (``unchanged``, ``failed``,
``skipped_locked``) and only those rows (the index on ``run_id, status``): the ``changed`` results kept for
good are never read again, so a pass costs what there is to remove plus the few rows kept as a device's latest,
not the index's whole history.
Results before runs: ``device_results.run_id`` is a foreign key, valid on SQLite and PostgreSQL throughout.

A removed result no longer makes its stream message idempotent (``records.apply_device_result`` looks the task
id up). Processed messages are trimmed from the streams long before N days, so only a message replayed from
the dead letters (``devicevault dlq replay``) more than N days after it was first recorded could be recorded a
second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import and_, delete, exists, func, not_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from .models import Device, DeviceResultRow, Run, Schedule, Version
from .statuses import DeviceStatus

#: rows per delete (and per transaction)
BATCH = 2000
#: runs whose results one query looks at (``run_id IN (...)``)
RUNS_PER_QUERY = 50
#: ``runs`` counter column of each status a pruned result can have: only these go (``changed`` never does)
COUNTERS = Run.PRUNED_COLUMNS


@dataclass
class IndexPruning:
    """What one :func:`prune_index` removed (``dry_run``: would remove)."""

    days: float
    cutoff: datetime | None  # results of runs started before this go; None: retention is off (days 0)
    dry_run: bool = False
    results: dict[str, int] = field(default_factory=dict)  # status -> rows
    runs: int = 0
    complete: bool = True  # False: ``max_rows`` was reached, more is left for the next call

    @property
    def removed(self) -> int:
        return sum(self.results.values())

    def as_dict(self) -> dict:
        return {"days": self.days, "cutoff": self.cutoff.isoformat() if self.cutoff else None, "dry_run": self.dry_run,
                "results": self.removed, "by_status": dict(sorted(self.results.items())), "runs": self.runs,
                "complete": self.complete}


def _kept():
    """SQL condition on a result (``DeviceResultRow`` joined to its ``Device``): retention keeps it, whatever
    its age (module docstring)."""
    r, d = DeviceResultRow, Device
    made_version = exists().where(Version.device_id == r.device_id, Version.run_id == r.run_id)
    latest = or_(d.last_attempt_at.is_(None), r.timestamp >= d.last_attempt_at)
    latest_success = and_(r.status.in_(DeviceStatus.OK),
                          or_(d.last_success_at.is_(None), r.timestamp >= d.last_success_at))
    # ``changed`` (and any status this module has no counter for) is kept
    return or_(r.status.not_in(list(COUNTERS)), made_version, latest, latest_success)


def _old_runs(cutoff: datetime):
    """SQL condition on a run: started before ``cutoff`` and finished."""
    return and_(Run.created_at < cutoff, Run.finished_at.is_not(None))


def _candidates():
    """SQL condition on a result: a status retention may remove (``run_id`` and ``status`` together: one range of
    the index ``ix_device_results_run_status`` per run, so the rows kept for good, ``changed``, are never read)."""
    return DeviceResultRow.status.in_(list(COUNTERS))


def _prunable(run_ids: list[str]):
    return (select(DeviceResultRow.id, DeviceResultRow.run_id, DeviceResultRow.status)
            .join(Device, Device.id == DeviceResultRow.device_id)
            .where(DeviceResultRow.run_id.in_(run_ids), _candidates(), not_(_kept())))


def _unreferenced_runs(cutoff: datetime, *, dry_run: bool):
    """Runs that go: old, finished, named by no result (``dry_run``: by no result retention keeps), version or
    schedule."""
    if dry_run:
        results = (select(DeviceResultRow.id).join(Device, Device.id == DeviceResultRow.device_id)
                   .where(DeviceResultRow.run_id == Run.id, _kept()).exists())
    else:
        results = exists().where(DeviceResultRow.run_id == Run.id)
    return select(Run.id).where(_old_runs(cutoff), ~results, ~exists().where(Version.run_id == Run.id),
                                ~exists().where(Schedule.last_run_id == Run.id))


def prune_index(
    sessions: sessionmaker[Session],
    days: float,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    batch: int = BATCH,
    max_rows: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> IndexPruning:
    """Apply index retention (module docstring): remove old device results and then the runs nothing names any
    more, ``batch`` rows per transaction, at most ``max_rows`` rows (results and runs) in this call. Returns what
    it removed; ``dry_run`` changes nothing and returns what would go. ``days`` 0: keep everything."""
    if days <= 0:
        return IndexPruning(days, None, dry_run)
    now = now or datetime.now(timezone.utc)
    report = IndexPruning(days, now - timedelta(days=days), dry_run)
    cutoff = report.cutoff
    budget = max_rows if max_rows is not None else float("inf")

    def sizes():
        """The size of each next batch, until this call's ``max_rows`` are used up (then it is not complete)."""
        while (size := int(min(batch, budget - report.removed - report.runs))) > 0:
            yield size
        report.complete = False

    with sessions() as session:  # old runs that still hold a result of a status that may go (one index probe each)
        candidates = exists().where(DeviceResultRow.run_id == Run.id, _candidates())
        old = list(session.scalars(select(Run.id).where(_old_runs(cutoff), candidates)
                                   .order_by(Run.created_at, Run.id)))
    for start in range(0, len(old), RUNS_PER_QUERY):
        part = old[start:start + RUNS_PER_QUERY]
        if dry_run:
            with sessions() as session:
                found = _prunable(part).subquery()
                for status, n in session.execute(select(found.c.status, func.count()).group_by(found.c.status)):
                    report.results[status] = report.results.get(status, 0) + int(n)
            continue
        after = 0  # keyset on the primary key: no batch reads again what the last deleted (PostgreSQL: dead tuples)
        for size in sizes():
            with sessions.begin() as session:
                rows = session.execute(_prunable(part).where(DeviceResultRow.id > after)
                                       .order_by(DeviceResultRow.id).limit(size)).all()
                if not rows:
                    break
                after = rows[-1][0]
                session.execute(delete(DeviceResultRow).where(DeviceResultRow.id.in_([r[0] for r in rows])))
                per_run: dict[tuple[str, str], int] = {}
                for _, run_id, status in rows:
                    per_run[(run_id, status)] = per_run.get((run_id, status), 0) + 1
                for (run_id, status), n in per_run.items():
                    column = getattr(Run, COUNTERS[status])
                    session.execute(update(Run).where(Run.id == run_id).values({column: column + n}))
            for (_, status), n in per_run.items():
                report.results[status] = report.results.get(status, 0) + n
            if progress is not None:
                progress(len(rows))
        if not report.complete:
            return report
    if dry_run:
        with sessions() as session:
            report.runs = int(session.scalar(select(func.count()).select_from(
                _unreferenced_runs(cutoff, dry_run=True).subquery())) or 0)
        return report
    for size in sizes():
        with sessions.begin() as session:
            ids = list(session.scalars(_unreferenced_runs(cutoff, dry_run=False).limit(size)))
            if not ids:
                break
            session.execute(delete(Run).where(Run.id.in_(ids)))
        report.runs += len(ids)
        if progress is not None:
            progress(len(ids))
    return report
