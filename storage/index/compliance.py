"""Compliance results in the index: each device's standing against each rule (``compliance_results``).

``jobs.compliance`` evaluates the rules and calls :func:`record` (in its transaction) and, after the commit,
:func:`unannounced` / :func:`mark_announced` to publish every change of standing on ``compliance:changed``
exactly as ``jobs.streams.events`` says. The CLI and the portal read :func:`violations`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from .health import active
from .models import ComplianceResult, Device, SearchText, aware

VIOLATED = "violated"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Announcement:
    """A change of standing not published yet (the fields of a ``compliance:changed`` entry, and the row)."""

    row_id: int
    device: str
    group: str
    platform: str
    version_id: int
    rule: str
    state: str  # violated | resolved
    lines: tuple[str, ...]
    checked_at: datetime


def _line_text(item: dict) -> str:
    return f"{item['section']}: {item['line']}" if item.get("section") else item["line"]


def record(session: Session, device_id: int, version_id: int, outcomes: dict[str, list[dict]],
           now: datetime) -> None:
    """Store the standing of device ``device_id`` (checked on ``version_id``) against every rule that covers
    it: ``outcomes`` maps each rule's name to what breaks it (``[]``: it complies). Rows of rules that no
    longer cover the device (or no longer exist) are removed, without an event. ``since`` moves only when the standing changes."""
    rows = {r.rule: r for r in session.scalars(select(ComplianceResult).where(ComplianceResult.device_id == device_id))}
    for rule, offences in outcomes.items():
        violated = bool(offences)
        row = rows.get(rule)
        if row is None:
            session.add(ComplianceResult(device_id=device_id, rule=rule, version_id=version_id, violated=violated,
                                         lines=json.dumps(offences), checked_at=now, since=now, published=""))
            continue
        if row.violated != violated:
            row.since = now
        row.version_id, row.violated, row.lines, row.checked_at = version_id, violated, json.dumps(offences), now
    gone = [r.id for name, r in rows.items() if name not in outcomes]
    if gone:
        session.execute(delete(ComplianceResult).where(ComplianceResult.id.in_(gone)))


def has_results(session: Session, device_ids: Sequence[int] | None = None) -> bool:
    """Whether any result is stored (for these devices; None: any device)."""
    query = select(ComplianceResult.id).limit(1)
    if device_ids is not None:
        query = query.where(ComplianceResult.device_id.in_(list(device_ids)))
    return session.scalar(query) is not None


def remove(session: Session, device_ids: Sequence[int] | None = None) -> None:
    """Forget the results (of these devices; None: all): no rule covers them any more. No event is published."""
    query = delete(ComplianceResult)
    if device_ids is not None:
        query = query.where(ComplianceResult.device_id.in_(list(device_ids)))
    session.execute(query)


def unannounced(session: Session, device_ids: Sequence[int] | None = None) -> list[Announcement]:
    """Standings that changed since they were last published: a violation not announced yet, or a device
    that complies again after an announced violation."""
    query = (select(ComplianceResult, Device.name, Device.group_name, Device.platform)
             .join(Device, Device.id == ComplianceResult.device_id)
             .where(((ComplianceResult.violated.is_(True)) & (ComplianceResult.published != VIOLATED))
                    | ((ComplianceResult.violated.is_(False)) & (ComplianceResult.published == VIOLATED)))
             .order_by(ComplianceResult.id))
    if device_ids is not None:
        query = query.where(ComplianceResult.device_id.in_(list(device_ids)))
    found = []
    for row, name, group, platform in session.execute(query):
        found.append(Announcement(row.id, name, group, platform, row.version_id, row.rule,
                                  VIOLATED if row.violated else RESOLVED,
                                  tuple(_line_text(i) for i in json.loads(row.lines or "[]")), aware(row.checked_at)))
    return found


def mark_announced(session: Session, announcements: Iterable[Announcement]) -> None:
    for item in announcements:
        row = session.get(ComplianceResult, item.row_id)
        if row is not None and (VIOLATED if row.violated else RESOLVED) == item.state:
            row.published = item.state


def violations(session: Session, *, devices: Sequence[str] | None = None, rules: Sequence[str] = ()) -> list[dict]:
    """Every (device, rule) the device breaks, by device then rule: ``device``, ``group``, ``platform``,
    ``rule``, ``version_id``, ``since``, ``checked_at``, ``lines`` (``{"line", "problem", "section"}``).
    ``devices``: only these (None: all)."""
    query = (select(ComplianceResult, Device.name, Device.group_name, Device.platform)
             .join(Device, Device.id == ComplianceResult.device_id)
             .where(ComplianceResult.violated.is_(True), active())  # retired devices are not listed
             .order_by(Device.name, ComplianceResult.rule))
    if devices is not None:
        query = query.where(Device.name.in_(list(devices)))
    if rules:
        query = query.where(ComplianceResult.rule.in_(list(rules)))
    return [{"device": name, "group": group, "platform": platform, "rule": row.rule, "version_id": row.version_id,
             "since": aware(row.since).isoformat(), "checked_at": aware(row.checked_at).isoformat(),
             "lines": json.loads(row.lines or "[]")}
            for row, name, group, platform in session.execute(query)]


def standing_counts(session: Session) -> dict[str, int]:
    """``{"checked": devices with a result, "violating": devices breaking at least one rule}``."""
    from sqlalchemy import func

    devices = (select(func.count(func.distinct(ComplianceResult.device_id)))
               .join(Device, Device.id == ComplianceResult.device_id).where(active()))
    checked = session.scalar(devices) or 0
    violating = session.scalar(devices.where(ComplianceResult.violated.is_(True))) or 0
    return {"checked": int(checked), "violating": int(violating)}


@dataclass(frozen=True)
class Checkable:
    """A device and its newest version's masked view (``body`` None: not in the search index)."""

    device_id: int
    name: str
    group: str
    platform: str
    version_id: int
    body: str | None


def newest_views(session: Session, *, device_ids: Sequence[int] | None = None,
                 version_ids: dict[int, int] | None = None) -> Iterator[Checkable]:
    """The newest version of each device (``device_ids``: of these only) with its masked view from the search
    index (``storage.index.search``) when that holds this very version; ``version_ids`` (device id -> newest
    version id) avoids asking for them."""
    from sqlalchemy import func

    from .models import Version

    newest = (select(Version.device_id, func.max(Version.id).label("vid")).group_by(Version.device_id))
    if device_ids is not None:
        newest = newest.where(Version.device_id.in_(list(device_ids)))
    sub = newest.subquery()
    query = (select(Device.id, Device.name, Device.group_name, Device.platform, sub.c.vid, SearchText.version_id,
                    SearchText.body)
             .join(sub, sub.c.device_id == Device.id)
             .outerjoin(SearchText, SearchText.device_id == Device.id)
             .order_by(Device.name))
    for device_id, name, group, platform, vid, indexed, body in session.execute(query):
        yield Checkable(device_id, name, group, platform, vid, body if indexed == vid else None)
