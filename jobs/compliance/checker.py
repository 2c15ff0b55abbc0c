"""Checking devices against the compliance rules: on every new version (a subscriber of ``versions:created``
with its own consumer group ``compliance``) and on demand (``devicevault compliance --check``).

A check reads each device's newest version as its masked view (the search index holds it for the newest
version of every device; an index from before it, or a result without the text, is read from storage and
masked by the one masker), evaluates every rule that covers the device (``jobs.compliance.rules``), stores the
standing in the index (``storage.index.compliance.record``, one transaction), and *after the commit* publishes
each change of standing on ``compliance:changed`` (``jobs.streams.events``: ``violated`` when a device newly
breaks a rule, ``resolved`` when it no longer does). A change stays marked unpublished in the index until it
is published, so a process that dies between the commit and the publication leaves it to the next check:
at least once, like every DeviceVault event.

The subscriber runs as a thread of every ``devicevault consumer`` process (so ``devicevault up``, ``demo``
and any deployment that runs the index consumer check compliance; ``--no-compliance`` turns it off). It
reads the rules file again whenever the file changes, and when its content changed (told through one Redis
key shared by every checker) checks every device once, so a new rule shows its violations without a new
backup. A rules file that cannot be used is logged as one line naming the file and the cause; the events
wait (pending, retried) until it is fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.index import compliance as results
from storage.index.models import Copy, Device, Version

from jobs.compliance.rules import RulesFileError, RuleSet, load_rules
from jobs.streams.events import COMPLIANCE_CHANGED_STREAM, VERSIONS_CREATED_STREAM
from jobs.streams.group import Malformed, StreamConsumer, Wait

log = logging.getLogger(__name__)

GROUP = "compliance"
#: the content (sha256) of the rules file every device was last checked against, shared by every checker
RULES_KEY = "devicevault:compliance:rules"
#: entries kept on ``compliance:changed`` (about; like ``versions:created``)
EVENTS_MAXLEN = 100_000
#: devices evaluated per transaction of a full check
BATCH = 200
TRANSIENT_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError,
                    RedisConnectionError, RedisTimeoutError)


@dataclass
class CheckReport:
    checked: int = 0  # devices evaluated
    violating: int = 0  # of them, breaking at least one rule
    announced: int = 0  # changes of standing published
    unreadable: list[str] = field(default_factory=list)  # "device: why"


class Checker:
    """Evaluates the rules of ``rules_path`` on the index's devices and publishes the changes of standing.

    ``groups``: every device's inventory groups by name (None: rules see storage groups only); ``open_backend``:
    a storage target by name, to read a version the search index does not hold (None: such a device is
    skipped, logged)."""

    def __init__(self, sessions: sessionmaker[Session], redis: Redis, rules_path: Path | None, *,
                 groups: Callable[[], dict[str, Iterable[str]]] | None = None,
                 open_backend: Callable[[str], Any] | None = None):
        self.sessions = sessions
        self.redis = redis
        self.rules_path = rules_path
        self.groups = groups or dict
        self.open_backend = open_backend
        self._rules: RuleSet | None = None
        self._stamp: tuple | None = None

    # --- the rules -------------------------------------------------------------------------------------
    def _file_stamp(self) -> tuple | None:
        try:
            stat = Path(self.rules_path).stat() if self.rules_path else None
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else None

    def rules(self) -> RuleSet:
        """The rules, read again when the file changed. Raises :class:`RulesFileError`."""
        stamp = self._file_stamp()
        if self._rules is None or stamp != self._stamp:
            self._rules = None
            rules = load_rules(self.rules_path)
            self._rules, self._stamp = rules, stamp
        return self._rules

    # --- checking --------------------------------------------------------------------------------------
    def _text(self, session: Session, item: results.Checkable) -> str:
        """The masked view of the device's newest version: from the search index, else read and masked."""
        if item.body is not None:
            return item.body
        if self.open_backend is None:
            raise LookupError("its newest version is not in the search index (devicevault search-index fills it)")
        from storage.retrieve import read_first

        from jobs.ops.search_index import masked

        version = session.get(Version, item.version_id)
        copies = [(c.backend, c.ref, c.status) for c in
                  session.scalars(select(Copy).where(Copy.version_id == item.version_id).order_by(Copy.id))]
        content, _ = read_first(copies, version.sha256, self.open_backend)
        return masked(item.platform, content.decode("utf-8", errors="replace"))

    def check(self, device_ids: Iterable[int] | None = None) -> CheckReport:
        """Check the newest version of these devices (None: every device with a version), store the results,
        then publish the changes of standing. Raises :class:`RulesFileError`."""
        rules = self.rules()
        report = CheckReport()
        wanted = None if device_ids is None else list(device_ids)
        if not rules.rules:  # nothing to evaluate (the usual case without a rules file): no text read, and no
            with self.sessions() as session:  # write unless results of rules now gone are left to remove
                stale = results.has_results(session, wanted)
            if stale:
                with self.sessions.begin() as session:
                    results.remove(session, wanted)
            return report
        with self.sessions() as session:
            items = list(results.newest_views(session, device_ids=wanted))
            retired = _retired_ids(session)
        items = [i for i in items if i.device_id not in retired]
        membership = self.groups() if items and any(rule.groups for rule in rules.rules) else {}
        for start in range(0, len(items), BATCH):
            verdicts = []
            with self.sessions() as session:
                for item in items[start:start + BATCH]:
                    groups = set(membership.get(item.name, ())) | {item.group}
                    covering = rules.covering(item.name, groups, item.platform)
                    if not covering:
                        verdicts.append((item, {}))
                        continue
                    try:
                        text = self._text(session, item)
                    except Exception as exc:  # noqa: BLE001 - StorageError, LookupError: this device only
                        log.warning("compliance: %s cannot be checked: %s", item.name, exc)
                        report.unreadable.append(f"{item.name}: {exc}")
                        continue
                    verdicts.append((item, {rule.name: [o.as_dict() for o in rule.check(text)] for rule in covering}))
            now = datetime.now(timezone.utc)
            with self.sessions.begin() as session:
                for item, outcomes in verdicts:
                    results.record(session, item.device_id, item.version_id, outcomes, now)
            report.checked += len(verdicts)
            report.violating += sum(1 for _, outcomes in verdicts if any(outcomes.values()))
        report.announced = self.announce(wanted)
        return report

    def announce(self, device_ids: Iterable[int] | None = None) -> int:
        """Publish every change of standing not published yet (of these devices; None: all), then mark it."""
        with self.sessions() as session:
            pending = results.unannounced(session, None if device_ids is None else list(device_ids))
        if not pending:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for item in pending:
            pipe.xadd(COMPLIANCE_CHANGED_STREAM, event_fields(item), maxlen=EVENTS_MAXLEN, approximate=True)
        pipe.execute()
        with self.sessions.begin() as session:
            results.mark_announced(session, pending)
        for item in pending:
            log.info("compliance: %s %s rule %s (version %s)", item.device, item.state, item.rule, item.version_id)
        return len(pending)

    def check_if_rules_changed(self) -> CheckReport | None:
        """Check every device when the rules' content differs from the one every device was last checked
        against (the shared key :data:`RULES_KEY`); None when it did not change. Raises
        :class:`RulesFileError`."""
        digest = self.rules().digest
        if (self.redis.get(RULES_KEY) or b"").decode() == digest:
            return None
        report = self.check()
        self.redis.set(RULES_KEY, digest)
        return report


def _retired_ids(session: Session) -> set[int]:
    """Devices hidden as retired (``jobs.ops.retire``): not checked, not listed."""
    from storage.index.health import active

    return set(session.scalars(select(Device.id).where(~active())))


def event_fields(item: results.Announcement) -> dict[str, str]:
    """A ``compliance:changed`` entry (``jobs.streams.events``)."""
    import json

    return {"device": item.device, "group": item.group, "platform": item.platform,
            "version_id": str(item.version_id), "rule": item.rule, "state": item.state,
            "lines": json.dumps(list(item.lines)), "checked_at": item.checked_at.isoformat()}


class ComplianceConsumer(StreamConsumer):
    """The ``compliance`` consumer group over ``versions:created``: each new version's device is checked."""

    streams = (VERSIONS_CREATED_STREAM,)
    group = GROUP
    transient_errors = TRANSIENT_ERRORS

    def __init__(self, redis: Redis, checker: Checker, **kwargs: Any):
        kwargs.setdefault("trim_interval", None)  # versions:created is capped by its producer, never trimmed here
        super().__init__(redis, **kwargs)
        self.checker = checker
        self._rules_problem = ""

    def _rules_ok(self) -> bool:
        try:
            self.checker.check_if_rules_changed()
        except RulesFileError as exc:
            if str(exc) != self._rules_problem:
                log.error("%s (new versions are checked once it is fixed)", exc)
            self._rules_problem = str(exc)
            return False
        self._rules_problem = ""
        return True

    def poll(self) -> int:
        self._rules_ok()
        return super().poll()

    def apply(self, stream: str, message_id: str, fields: dict) -> Any:
        raw = fields.get(b"version_id", fields.get("version_id"))
        try:
            version_id = int(raw.decode() if isinstance(raw, bytes) else raw)
        except (TypeError, ValueError):
            raise Malformed(f"no version id in {fields!r}") from None
        if not self._rules_ok():
            raise Wait(self._rules_problem)
        with self.checker.sessions() as session:
            device_id = session.scalar(select(Version.device_id).where(Version.id == version_id))
        if device_id is None:
            raise Malformed(f"version {version_id} is not in the index")
        report = self.checker.check([device_id])
        if report.unreadable:  # its text is not at hand yet (copies still pending): retried, then dead-lettered
            raise LookupError(f"version {version_id} cannot be checked yet: {report.unreadable[0]}")
        return report


def inventory_groups(settings: Any) -> Callable[[], dict[str, Iterable[str]]]:
    """Each device's groups in the settings' inventory (the one inventory reader, which reuses its parse while
    the files are unchanged); {} when the inventory cannot be read (rules then see storage groups only)."""
    from jobs.collect import inventory

    def groups() -> dict[str, Iterable[str]]:
        try:
            return inventory.inventory_groups(settings.inventory, settings)
        except Exception as exc:  # noqa: BLE001 - InventoryError or Ansible's own: rules see the storage group
            log.warning("compliance: the inventory %s cannot be read, rules see storage groups only: %s",
                        settings.inventory, exc)
            return {}

    return groups


def checker_for(settings: Any, redis: Redis, sessions: sessionmaker[Session] | None = None) -> Checker:
    """The checker of these settings: their rules file, inventory, index and storage targets."""
    from storage.index.db import connect

    from jobs.deliver.locations import StorageLayout

    layout = StorageLayout.load(settings)
    return Checker(sessions or connect(settings.database_url, settings.index_wait), redis, settings.compliance_rules,
                   groups=inventory_groups(settings), open_backend=layout.open)
