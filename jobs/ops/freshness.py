"""Freshness: a device with no successful backup for longer than its allowed age is *stale*.

The allowed age is the host's ``devicevault_max_age`` inventory variable (hours), else
``DEVICEVAULT_MAX_AGE`` (default 24 h). Whatever the reason (failing, never scheduled, its collector down,
removed from every schedule), :func:`mark_stale` sets ``devices.stale_since`` and clears it once a backup
succeeds again. Inventory hosts never seen by the index are added to it, so a device that was never
backed up is stale too once its age (counted from when DeviceVault first saw it) is over.

A retired device (``jobs.ops.retire``: gone from the inventory for longer than its grace period) is never
stale.

This is the only staleness rule: everything else (``devicevault status``, the portal) reads the mark through
:func:`is_stale`, so the per-host age holds everywhere. The mark is as fresh as the last maintenance pass
(``devicevault scheduler`` runs one every minute; ``devicevault hygiene`` runs one now).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.index.models import Device, aware
from storage.index.records import get_or_create_device

from jobs.collect.inventory import InventoryHost
from jobs.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staleness:
    device: str
    last_success: datetime | None
    stale_since: datetime
    max_age_hours: float


def is_stale():
    """SQL condition: the device is stale (the freshness check marked it, with the host's own allowed age)."""
    return Device.stale_since.is_not(None)


def mark_stale(
    sessions: sessionmaker[Session], settings: Settings, inventory: dict[str, InventoryHost] | None,
    *, now: datetime | None = None,
) -> list[Staleness]:
    """Update ``devices.stale_since`` for every device; returns the stale ones."""
    now = now or datetime.now(timezone.utc)
    stale: list[Staleness] = []
    with sessions.begin() as session:
        if inventory:
            for host in inventory.values():
                get_or_create_device(session, host.name, group=host.group, platform=host.platform)
        for device in session.scalars(select(Device)):
            if device.retired_at is not None:  # retired (jobs.ops.retire): not stale, whatever its age
                device.stale_since = None
                continue
            host = (inventory or {}).get(device.name)
            hours = (host.max_age if host and host.max_age else 0.0) or settings.max_age
            reference = aware(device.last_success_at) or aware(device.first_seen) or now
            if now - reference > timedelta(hours=hours):
                if device.stale_since is None:
                    device.stale_since = reference + timedelta(hours=hours)
                    log.warning("device %s is stale: no successful backup for more than %g h", device.name, hours)
                stale.append(Staleness(device.name, aware(device.last_success_at), aware(device.stale_since), hours))
            elif device.stale_since is not None:
                device.stale_since = None
    return stale
