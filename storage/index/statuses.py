"""The one status vocabulary of DeviceVault: what the jobs publish, the index stores, and the CLI and the portal
show. ``str`` enums (like rq's ``JobStatus``), so a member equals its value, is stored as it, and prints as it
in JSON.

It lives at the bottom of the layers (the index) so that everything above (jobs, cli, portal) can use it and
the index needs nothing from above.
"""

from __future__ import annotations

from enum import Enum, nonmember


class DeviceStatus(str, Enum):
    """A device's outcome in one run (``device_results.status``, ``devices.last_status``)."""

    #: on the wire: a *candidate* (differs from the collector's cache, its text is staged in the outbox); in
    #: the index: the decider (``storage.index.records.apply_device_result``) made a new version of it
    CHANGED = "changed"
    #: collected; same as the newest version once volatile lines are removed (on the wire: the collector's
    #: cache said so; in the index: the decider found it so, or confirmed the cache)
    UNCHANGED = "unchanged"
    FAILED = "failed"  # not collected; ``error`` says why
    SKIPPED_LOCKED = "skipped_locked"  # another job holds lock:device:<host>

    OK = nonmember(("changed", "unchanged"))

    @property
    def ok(self) -> bool:
        return self in DeviceStatus.OK

    def __str__(self) -> str:
        return self.value


class CopyStatus(str, Enum):
    """A storage target's copy of a version (``copies.status``); a storage job's outcome is one of the first
    three."""

    STORED = "stored"  # the target holds it
    UNCHANGED = "unchanged"  # written by older versions of DeviceVault only (the target already held it)
    #: not landed yet: waits in the outbox, retried with backoff. Created with the version by the decider
    #: (``attempts`` 0) and updated by every storage outcome until it lands
    PENDING = "pending"
    MISSING = "missing"  # verify found no copy at ``ref``
    CORRUPT = "corrupt"  # verify read it back with another sha256 (or could not decode it)
    PRUNED = "pruned"  # removed on purpose by retention

    LANDED = nonmember(("stored", "unchanged"))
    CHECKED = nonmember(("stored", "unchanged", "missing", "corrupt"))  # copies verify reads

    @property
    def landed(self) -> bool:
        return self in CopyStatus.LANDED

    def __str__(self) -> str:
        return self.value


class RunStatus(str, Enum):
    """A backup run (``runs.status``): running until every device has a result and every new version an
    outcome on every target of its location."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # no device failed
    PARTIAL = "partial"  # some failed
    FAILED = "failed"  # every device failed

    def __str__(self) -> str:
        return self.value


class Health(str, Enum):
    """A device at a glance (the portal's status column, filters and dashboard, ``devicevault status``): the
    rule that picks one is ``storage.index.health``."""

    FAILED = "failed"  # its last backup failed
    NEVER = "never backed up"  # no backup has succeeded yet
    STALE = "stale"  # no successful backup within its allowed age (jobs.ops.freshness marks it)
    UNSAVED = "unsaved"  # running configuration differs from the startup one at its newest backup
    CHANGED = "changed"  # its last backup made a new version
    OK = "ok"  # its last backup found the configuration unchanged
    #: gone from the inventory for longer than the grace period (jobs.ops.retire): hidden from the default
    #: listings, counts and alerts, its history kept; shown only where retired devices are asked for
    RETIRED = "retired"

    def __str__(self) -> str:
        return self.value
