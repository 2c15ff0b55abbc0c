"""Put a stored version back on its device: ``devicevault restore HOST VERSION`` and the portal's Restore.

1. the version's text comes from storage (the first good copy), its secrets from the raw copy kept with it
   where they were masked (``devicevault_keep_raw``), or from the text itself (``devicevault_secrets:
   keep``); otherwise the restore is refused: pushing ``<secret hidden>`` would break the device;
2. the device's current configuration is read through the one fetch (:func:`jobs.collect.fetch.fetch_configs`)
   and compared with the version, both masked (:func:`jobs.diffs.unified_diff`): what a dry run shows;
3. holding the device's host lock (``jobs.collect.locks``: no backup of it runs meanwhile, and a restore
   waits for none), the version is pushed through Ansible (:func:`jobs.collect.fetch.push_config`) with the
   platform file's ``restore`` commands: a full replace or a merge, as that file says; a platform without a
   ``restore`` section is refused;
4. a backup of the device is taken at once, through the collector (a run of its own, requested by
   ``restore``), and the restore reports whether the device now matches the version (masked views equal).

Texts with secrets stay in this process and the push's private file; what is returned, logged and shown is
masked, and credentials are masked by the inventory's :class:`~jobs.redact.Redactor`.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from redis import Redis

from jobs import errors
from jobs.collect.fetch import fetch_configs, push_config
from jobs.collect.inventory import InventoryHost, load_inventory
from jobs.collect.locks import host_locks
from jobs.collect.normalize import SECRET_PLACEHOLDER, SecretsMode, clean_lines, normalize, sha256_text
from jobs.collect.platforms import Platform, all_platforms, get_platform
from jobs.diffs import unified_diff
from jobs.redact import Redactor
from jobs.settings import Settings
from jobs.streams.results import DeviceStatus

log = logging.getLogger(__name__)


class RestoreRefused(errors.DeviceError, PermissionError):
    """The restore cannot be done safely (no mechanism, secrets not kept, the device busy)."""

    kind = "restore_refused"


class RestoreFailed(errors.DeviceError):
    """The device did not take the configuration (it refused a step, or the push broke off)."""

    kind = "restore_failed"


class RestoreStatus(str, Enum):
    DRY_RUN = "dry_run"  # nothing pushed: the difference is shown
    SAME = "same"  # the device already matched the version: nothing pushed
    MATCHES = "matches"  # pushed, and the backup after it matches the version
    DIFFERS = "differs"  # pushed, but the device still differs (a merge keeps what was added since)
    UNCHECKED = "unchecked"  # pushed, but the backup after it did not read the device (its result says why)


@dataclass
class RestorePlan:
    """What a restore would do (``push`` holds secrets: never shown, never logged)."""

    host: str
    number: int
    sha256: str
    mode: str  # replace | merge (the platform file's restore.mode)
    view: str  # the version, masked
    current: str  # the device now, masked
    diff: str  # current -> version, masked
    push: str = field(repr=False, default="")


@dataclass
class RestoreResult:
    host: str
    number: int
    sha256: str
    mode: str
    status: RestoreStatus
    diff: str  # before the push: current -> version (masked)
    sent: int = 0  # configuration lines sent
    run_id: str = ""  # the backup taken after the push
    backup_status: str = ""  # that backup's device status (changed, unchanged, failed ...)
    remaining: str = ""  # after the push: device -> version, when they still differ (masked)
    error: str = ""

    def as_dict(self) -> dict:
        return {"host": self.host, "version": self.number, "sha256": self.sha256, "mode": self.mode,
                "status": self.status.value, "diff": self.diff, "sent": self.sent, "run_id": self.run_id,
                "backup_status": self.backup_status, "remaining": self.remaining, "error": self.error}

    def summary(self) -> str:
        """One line for people."""
        head = f"{self.host}: restore of v{self.number} ({self.mode})"
        return {
            RestoreStatus.DRY_RUN: f"{head}: dry run, nothing pushed",
            RestoreStatus.SAME: f"{head}: the device already matches v{self.number}; nothing pushed",
            RestoreStatus.MATCHES: f"{head}: {self.sent} line(s) pushed; the device now matches v{self.number} "
                                   f"(backup run {self.run_id}: {self.backup_status})",
            RestoreStatus.DIFFERS: f"{head}: {self.sent} line(s) pushed, but the device still differs from "
                                   f"v{self.number} (backup run {self.run_id}: {self.backup_status})"
                                   + ("; a merge keeps what was added since" if self.mode == "merge" else ""),
            RestoreStatus.UNCHECKED: f"{head}: {self.sent} line(s) pushed; the backup after it could not tell "
                                     f"whether the device matches: {self.error}",
        }[self.status]


def restorable_platforms() -> dict[str, str]:
    """``{platform: mode}`` of every platform file with a ``restore`` section."""
    return {name: p.restore.mode for name, p in sorted(all_platforms().items()) if p.restore is not None}


def _header_length(platform: Platform, lines: list[str]) -> int:
    """How many leading lines of a version are the identity header (comment lines, ``normalize``)."""
    identity = [c for c in platform.commands if c.comment]
    if not identity:
        return 0
    keep = [p for c in identity for p in c.keep]
    any_comment = any(not c.keep for c in identity)
    prefix = platform.comment_prefix
    count = 0
    for line in lines:
        if not line.startswith(prefix):
            break
        rest = line[len(prefix):]
        if not any_comment and not any(p.search(rest) for p in keep):
            break
        count += 1
    return count


def push_text(host: str, number: int, platform: Platform, text: str, raw: str | None) -> str:
    """The configuration to push: the version without its identity header, each line the normaliser
    rewrote (a masked secret, a volatile part) as the device printed it, from the raw copy ``raw``.
    :class:`RestoreRefused` when a masked secret has no raw original."""
    lines = text.rstrip("\n").split("\n")
    lines = lines[_header_length(platform, lines):]
    originals: dict[str, deque[str]] = defaultdict(deque)
    for line in (raw or "").replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = line.rstrip()
        cleaned = clean_lines(platform, line, SecretsMode.MASK)
        if cleaned and cleaned[0] != line:
            originals[cleaned[0]].append(line)
    out = []
    for line in lines:
        found = originals.get(line)
        if found:
            out.append(found.popleft() if len(found) > 1 else found[0])
        elif SECRET_PLACEHOLDER in line:
            raise RestoreRefused(host, f"v{number}: a masked secret has no original in the raw copy kept "
                                       f"with it; restore refused")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _masked(platform: Platform, text: str) -> str:
    """A stored version's masked view: kept secrets masked, lines masked already left as they are."""
    return "\n".join(line if SECRET_PLACEHOLDER in line else next(iter(clean_lines(platform, line, SecretsMode.MASK)), line)
                     for line in text.split("\n"))


def _entry(host: str, inventory: Path, settings: Settings) -> tuple[InventoryHost, Platform]:
    inv = load_inventory(inventory, settings, only=[host])
    entry = inv.get(host)
    if entry is None:
        raise errors.InventoryError(f"{host}: not in inventory {inventory}")
    platform = get_platform(entry.platform)
    if platform is None:
        raise errors.UnknownPlatform(host, f"unknown platform {entry.platform or '(no ansible_network_os)'}")
    if platform.restore is None:
        able = ", ".join(f"{name} ({mode})" for name, mode in restorable_platforms().items()) or "none"
        raise RestoreRefused(host, f"platform {platform.name} has no restore mechanism in its platform file "
                                   f"(restorable: {able}); restore refused")
    return entry, platform


def _stored(settings: Settings, host: str, selector: str):
    """(version info, its text, its raw copy or None), from the index and the first good copies."""
    from storage.errors import StorageError
    from storage.index.db import connect
    from storage.index.queries import device_versions, resolve_version
    from storage.retrieve import read_first

    from jobs.deliver.locations import StorageLayout

    with connect(settings.database_url, settings.index_wait)() as session:
        version = resolve_version(device_versions(session, host), selector, device=host)
    layout = StorageLayout.load(settings)
    content, _ = read_first(version.copies, version.sha256, layout.open)
    raw = None
    for backend, ref in version.raw_copies:
        try:
            raw = layout.open(backend).read(ref).decode("utf-8", errors="surrogateescape")
            break
        except (StorageError, OSError) as exc:
            log.warning("%s v%d: raw copy on %s unreadable: %s", host, version.number, backend, exc)
    return version, content.decode("utf-8", errors="surrogateescape"), raw


def plan_restore(settings: Settings, host: str, selector: str, *, inventory: Path | str | None = None) -> RestorePlan:
    """Everything a restore decides before it touches the device: refusals, the text to push, and the
    difference between the device's current configuration (a fresh read) and the version."""
    inventory_path = Path(inventory or settings.inventory).absolute()
    entry, platform = _entry(host, inventory_path, settings)
    if entry.secrets_mode == SecretsMode.DROP:
        raise RestoreRefused(host, "devicevault_secrets: drop leaves secret lines out of every version, so a "
                                   "restore would remove them from the device; restore refused")
    version, text, raw = _stored(settings, host, selector)
    if SECRET_PLACEHOLDER in text and raw is None:
        raise RestoreRefused(host, f"v{version.number} has masked secrets and no raw copy (set "
                                   "devicevault_keep_raw: true or devicevault_secrets: keep, with an encrypted "
                                   "target); restore refused")
    push = push_text(host, version.number, platform, text, raw)
    redactor = Redactor(entry.secrets)
    outcome = fetch_configs([host], inventory=inventory_path, settings=settings, redactor=redactor)[host]
    if outcome.error is not None or outcome.outputs is None:
        raise outcome.error or errors.CollectionFailed(host, "the fetch returned nothing")
    current = normalize(host, platform, outcome.outputs, SecretsMode.MASK).text
    view = _masked(platform, text)
    diff = unified_diff(current, view, f"{host} now", f"{host} v{version.number} {version.sha256[:12]}")
    return RestorePlan(host=host, number=version.number, sha256=version.sha256, mode=platform.restore.mode,
                       view=view, current=current, diff=diff, push=push)


def restore(redis: Redis, settings: Settings, host: str, selector: str, *, dry_run: bool = False,
            inventory: Path | str | None = None, requested_by: str = "") -> RestoreResult:
    """Restore version ``selector`` (a number, -1 = newest, or a sha256 prefix) of ``host``: see the module.
    Raises :class:`RestoreRefused` (nothing was done), :class:`RestoreFailed` (the device refused the
    configuration), a :class:`~jobs.errors.DeviceError` when the device cannot be read, or
    ``storage.index.queries.NotFound``."""
    from jobs.collect.collector import collect
    from jobs.collect.runs import announce_run, new_run_id
    from jobs.deliver.locations import StorageLayout

    inventory_path = Path(inventory or settings.inventory).absolute()
    if dry_run:  # reads only: no lock, a backup may run meanwhile
        plan = plan_restore(settings, host, selector, inventory=inventory_path)
        return RestoreResult(host=host, number=plan.number, sha256=plan.sha256, mode=plan.mode,
                             status=RestoreStatus.DRY_RUN, diff=plan.diff)
    with host_locks(redis, [host], settings.lock_ttl, owner=f"restore-{uuid.uuid4().hex}") as (_, busy):
        if busy:
            raise RestoreRefused(host, "a backup or restore of this device is running; try again when it ends")
        plan = plan_restore(settings, host, selector, inventory=inventory_path)
        result = RestoreResult(host=host, number=plan.number, sha256=plan.sha256, mode=plan.mode,
                               status=RestoreStatus.DRY_RUN, diff=plan.diff)
        if not plan.diff:
            result.status = RestoreStatus.SAME
            return result
        entry, _ = _entry(host, inventory_path, settings)
        pushed = push_config(host, plan.push, inventory=inventory_path, settings=settings,
                             redactor=Redactor(entry.secrets))
        if pushed.error is not None:
            raise RestoreFailed(host, f"v{plan.number} not restored: {pushed.error.cause}")
        result.sent = pushed.sent
        log.info("%s: v%d pushed (%s, %d lines) for %s", host, plan.number, plan.mode, pushed.sent,
                 requested_by or "?")
    # the lock is free again: the backup below takes it like any other
    layout = StorageLayout.load(settings)
    run_id = new_run_id()
    announce_run(redis, run_id, [host], layout.targets_for(entry.group, entry.location), inventory_path,
                 selector=f"host={host}", requested_by=f"restore v{plan.number}" + (f" by {requested_by}" if requested_by else ""))
    (backup,) = [r for r in collect(redis, settings, run_id, [host], inventory=inventory_path, layout=layout)
                 if r.device == host]
    result.run_id, result.backup_status = run_id, str(backup.status.value)
    if backup.status in (DeviceStatus.CHANGED, DeviceStatus.UNCHANGED):
        if backup.view_sha256 == sha256_text(plan.view):
            result.status = RestoreStatus.MATCHES
        else:
            result.status = RestoreStatus.DIFFERS
            result.remaining = unified_diff(backup.config, plan.view, f"{host} after the restore",
                                            f"{host} v{plan.number} {plan.sha256[:12]}")
    else:
        result.status = RestoreStatus.UNCHECKED
        result.error = backup.error or backup.status.value
    return result
