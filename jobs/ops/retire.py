"""Retired devices: a device that has left the inventory is *retired* once it has been missing for longer than
the grace period (``DEVICEVAULT_RETIRE_AFTER`` hours, default 168, a week; 0: at the next check).

This module is the one place that decides it. :func:`mark_retired` compares the index's devices with the
inventory's host names: a device missing from the inventory gets ``devices.absent_since`` (when it was first
found missing), and ``retired_at`` once the grace period is over; a device that is in the inventory (again)
has both cleared, so it comes back with its whole history (its versions, results and copies were never
touched). A retired device is not failed and not stale (``jobs.ops.freshness`` leaves it alone); the default
listings, the counts and the alerts leave it out (``storage.index.health.active``); ``devicevault devices
--all`` and the portal's device page still show it.

When: in every maintenance pass (``devicevault scheduler``, every minute; ``devicevault hygiene`` now), with
the inventory that pass reads for freshness. An inventory that cannot be read, or that has no host at all,
retires nothing (a broken inventory source must not hide the whole network).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.index.models import Device, aware

log = logging.getLogger(__name__)


@dataclass
class Retirement:
    retired: list[str] = field(default_factory=list)  # retired by this pass
    returned: list[str] = field(default_factory=list)  # back in the inventory, no longer retired
    absent: list[str] = field(default_factory=list)  # missing, within the grace period


def mark_retired(sessions: sessionmaker[Session], names: Iterable[str], retire_after_hours: float, *,
                 now: datetime | None = None) -> Retirement:
    """Mark and unmark retired devices against the inventory's host ``names`` (module docstring)."""
    now = now or datetime.now(timezone.utc)
    present = set(names)
    outcome = Retirement()
    if not present:
        log.warning("the inventory has no host: no device is retired for it")
        return outcome
    grace = timedelta(hours=retire_after_hours)
    with sessions.begin() as session:
        for device in session.scalars(select(Device)):
            if device.name in present:
                if device.retired_at is not None:
                    outcome.returned.append(device.name)
                    log.warning("device %s is back in the inventory: no longer retired", device.name)
                device.absent_since = device.retired_at = None
                continue
            if device.absent_since is None:
                device.absent_since = now
            if device.retired_at is None and now - aware(device.absent_since) >= grace:
                device.retired_at = now
                device.stale_since = None  # retired, not stale
                outcome.retired.append(device.name)
                log.warning("device %s has been missing from the inventory since %s: retired", device.name,
                            aware(device.absent_since).isoformat())
            elif device.retired_at is None:
                outcome.absent.append(device.name)
    return outcome
