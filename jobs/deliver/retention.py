"""Retention: remove copies that a target's policy no longer keeps.

Per target, a version's copy is kept while it is one of the device's newest ``keep_last`` versions on
that target, *or* younger than ``keep_days`` (``jobs/deliver/locations.py`` has the defaults: fs 30 days, s3 365
days, git forever). Pruning never removes:

- the device's latest version, on any target;
- the last landed copy of any version (a copy goes only if another target still holds the version);
- anything from git: its history is immutable, so a git target's retention is reported and not applied.

Pruned copies stay in the index with status ``pruned``; reading that version uses another target.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import RefNotFound, StorageError
from storage.index.models import Copy, CopyStatus, Device, Version, aware

from jobs.deliver.locations import StorageLayout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pruned:
    device: str
    version_id: int
    target: str
    ref: str
    created_at: datetime

    def as_dict(self) -> dict:
        return {"device": self.device, "target": self.target, "created_at": self.created_at.isoformat(), "ref": self.ref}


def prune(
    sessions: sessionmaker[Session],
    layout: StorageLayout,
    *,
    now: datetime | None = None,
    dry_run: bool = False,
    targets: list[str] | None = None,
) -> list[Pruned]:
    """Apply every target's retention; returns the copies removed (or, with ``dry_run``, to be removed)."""
    now = now or datetime.now(timezone.utc)
    pruned: list[Pruned] = []
    for name in targets or layout.all_targets():
        config = layout.targets[name]
        if not config.has_retention:
            continue
        backend = layout.open(name)
        if getattr(backend, "history_is_immutable", False):
            log.warning("retention of target %s not applied: %s history is immutable", name, config.type)
            continue
        with sessions.begin() as session:
            pruned += _prune_target(session, backend, config, now=now, dry_run=dry_run)
    return pruned


def _prune_target(session: Session, backend, config, *, now: datetime, dry_run: bool) -> list[Pruned]:
    newest = dict(session.execute(select(Version.device_id, func.max(Version.id)).group_by(Version.device_id)).all())
    landed = dict(
        session.execute(
            select(Copy.version_id, func.count(Copy.id)).where(Copy.status.in_(CopyStatus.LANDED)).group_by(Copy.version_id)
        ).all()
    )
    rows = session.execute(
        select(Copy, Version, Device.name)
        .join(Version, Version.id == Copy.version_id)
        .join(Device, Device.id == Version.device_id)
        .where(Copy.backend == config.name, Copy.status.in_(CopyStatus.LANDED))
        .order_by(Version.device_id, Version.id.desc())
    ).all()
    per_device: dict[int, list] = defaultdict(list)
    for row in rows:
        per_device[row[1].device_id].append(row)
    cutoff = now - timedelta(days=config.keep_days) if config.keep_days else None
    removed: list[Pruned] = []
    for device_id, copies in per_device.items():
        for position, (copy, version, device) in enumerate(copies):
            created = aware(version.created_at)
            keep = (
                version.id == newest.get(device_id)
                or (config.keep_last is not None and position < config.keep_last)
                or (cutoff is not None and created >= cutoff)
            )
            if keep or landed.get(version.id, 0) < 2:
                continue
            if not dry_run:
                try:
                    if copy.raw_ref:  # the raw output kept with this version goes with it, first: a failure
                        try:       # below then leaves a stored copy without raw output, never the reverse
                            backend.delete(copy.raw_ref)
                        except RefNotFound:
                            pass
                        copy.raw_ref = ""
                    backend.delete(copy.ref)
                except RefNotFound:
                    pass  # already gone: record it as pruned all the same
                except (StorageError, OSError) as exc:
                    log.warning("retention: removing %s of %s from %s failed: %s", copy.ref, device, config.name, exc)
                    continue
                copy.status, copy.error = CopyStatus.PRUNED, ""
            landed[version.id] -= 1
            removed.append(Pruned(device, version.id, config.name, copy.ref, created))
    return removed
