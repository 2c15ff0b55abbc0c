"""A device's health at a glance: the one rule and the one vocabulary of the portal and ``devicevault status``.

Six words (:class:`~storage.index.statuses.Health`): ``failed`` (its last backup failed), ``never backed up``
(no backup has succeeded yet), ``stale`` (the freshness check marked it: no successful backup within its
``devicevault_max_age``, else ``DEVICEVAULT_MAX_AGE``; ``jobs.ops.freshness`` sets the mark), ``unsaved`` (its
running configuration differed from the startup one at its newest backup), ``changed`` (its last backup
made a new version) and ``ok`` (its last backup found the configuration unchanged).

A seventh word, ``retired`` (:func:`active` is its opposite), stands apart: a device gone from the inventory
for longer than the grace period (``jobs.ops.retire`` sets the mark) shows it, is not failed or stale, and
is left out of the default listings, the counts and the alerts (``devicevault devices --all`` and the
portal's device page still show it, with its history).

A device can be in several at once (failed and stale): each word is a *condition* (:func:`condition`, what
the filters and the counts use), and a device *shows* the most urgent of its conditions, in the order above
(:func:`health_of` in Python, :func:`health_column` in SQL: the same rule, tested against each other).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from .models import Device
from .statuses import DeviceStatus, Health

#: most urgent first: a device shows the first of its conditions
ORDER = (Health.FAILED, Health.NEVER, Health.STALE, Health.UNSAVED, Health.CHANGED, Health.OK)


def active():
    """SQL condition: the device is not retired (what the default listings, counts and alerts show)."""
    return Device.retired_at.is_(None)


def health_of(last_status: str | None, last_success: datetime | None, stale_since: datetime | None,
              unsaved: bool | None, retired_at: datetime | None = None) -> Health:
    """The word a device shows (module docstring)."""
    if retired_at is not None:
        return Health.RETIRED
    if last_status == DeviceStatus.FAILED:
        return Health.FAILED
    if last_success is None:
        return Health.NEVER
    if stale_since is not None:
        return Health.STALE
    if unsaved:
        return Health.UNSAVED
    if last_status == DeviceStatus.CHANGED:
        return Health.CHANGED
    return Health.OK


def condition(word: str):
    """SQL condition: the device is ``word`` (one of :class:`Health`'s values), whatever else it is too."""
    word = Health(word)
    if word is Health.RETIRED:
        return Device.retired_at.is_not(None)
    if word is Health.FAILED:
        return Device.last_status == DeviceStatus.FAILED.value
    if word is Health.NEVER:
        return Device.last_success_at.is_(None)
    if word is Health.STALE:
        return Device.stale_since.is_not(None)
    if word is Health.UNSAVED:
        return Device.unsaved.is_(True)
    if word is Health.CHANGED:
        return Device.last_status == DeviceStatus.CHANGED.value
    return Device.last_status.in_(DeviceStatus.OK)  # ok: the last backup succeeded (changed or not)


def health_column():
    """SQL expression: the word each device shows (:func:`health_of`'s rule)."""
    return case(
        (condition(Health.RETIRED), Health.RETIRED.value),
        (condition(Health.FAILED), Health.FAILED.value),
        (condition(Health.NEVER), Health.NEVER.value),
        (condition(Health.STALE), Health.STALE.value),
        (condition(Health.UNSAVED), Health.UNSAVED.value),
        (condition(Health.CHANGED), Health.CHANGED.value),
        else_=Health.OK.value,
    )


def rank_column():
    """SQL expression: the position of the device's word in :data:`ORDER` (0 = failed): sorting by it puts
    the most urgent first."""
    column = health_column()
    return case(*[(column == word.value, i) for i, word in enumerate(ORDER)], else_=len(ORDER))


def counts(session: Session) -> dict[str, int]:
    """Devices per condition (a device counts under each of its conditions), and ``total``, retired devices
    left out of all of them; ``retired``: how many are retired. One query."""
    words = [Health.OK, Health.CHANGED, Health.FAILED, Health.STALE, Health.UNSAVED, Health.NEVER]
    live = active()
    row = session.execute(select(func.sum(case((live, 1), else_=0)),
                                 *[func.sum(case((live & condition(w), 1), else_=0)) for w in words],
                                 func.sum(case((condition(Health.RETIRED), 1), else_=0)))).one()
    return {"total": int(row[0] or 0), **{w.value: int(n or 0) for w, n in zip(words, row[1:-1])},
            Health.RETIRED.value: int(row[-1] or 0)}


def ago(when: datetime | None, now: datetime | None = None) -> str:
    """``when`` as an age: "just now", "42 s ago", "5 min ago", "3 h ago", "2 d ago" ("never" for None)."""
    if when is None:
        return "never"
    now = now or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = (now - when).total_seconds()
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return "just now" if seconds < 1 else f"{int(seconds)} s ago"
