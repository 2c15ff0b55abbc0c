"""What is notified, and where each kind of event comes from. Every event has an ``id`` that is the same
each time the same fact is derived again (a stream message redelivered, a sweep repeated), so a delivery
keyed on it (``jobs.notify.queue``) is sent once.

- ``version``: from ``versions:created`` (``jobs.streams.events``). The masked unified diff
  (``jobs.diffs.unified_diff``) against the device's previous version; the texts come from the index's
  search table (the newest masked view) or storage (``storage.retrieve.read_first``), masked with the
  platform's rules (``jobs.ops.search_index.masked``). While no copy of a text has landed yet the event
  waits (the message is retried). id ``version:<version id>``.
- ``failed`` / ``recovered``: from ``device:results`` (the notifier's own consumer group beside the indexer's).
  The first failed result of a device opens an *incident* (id: that result's task id) and is notified with
  its error; further failures of the same incident are not; the next successful result closes it and is
  notified as ``recovered``. Results skipped for a held lock change nothing. The open incidents are the
  Redis hash ``notify:incidents`` (device -> the incident's task id and error).
- ``run_finished``: from ``device:results`` too: when every device a run started with (its ``RunStarted``
  ``total``) has a result, with the counts per status and the failed devices. Collection is then done;
  copies still waiting for a target are the ``outbox_stuck`` event's business. id ``run:<run id>``.
- ``stale`` / ``unsaved``: asked of the owners of those words (``storage.index.health.condition``: the
  freshness check's ``stale_since`` mark, the decider's ``unsaved_since``) every ``sweep_interval``; once
  per incident: id ``stale:<device>:<since>``.
- ``outbox_stuck``: copies pending (``CopyStatus.PENDING``) for longer than ``outbox_stuck_after``, one event
  per target while its oldest stuck copy is the same (id ``outbox:<target>:<copy id>``).
- ``dead_letter``: each new entry of the dead-letter streams of DeviceVault's streams (id
  ``dead:<stream>:<entry id>``).
- ``compliance``: from ``compliance:changed`` (``jobs.streams.events``): ``violated`` or ``resolved``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from redis import Redis
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs.notify.rules import EventKind

#: a diff longer than this is cut in the notification (``devicevault diff`` shows it whole)
DIFF_LIMIT = 200_000
INCIDENTS = "notify:incidents"
RUN_PREFIX = "notify:run:"
CURSOR_PREFIX = "notify:cursor:"
#: seconds the notifier remembers a run's results (a run longer than this gets no summary)
RUN_KEEP = 7 * 86400


@dataclass
class Event:
    id: str
    kind: EventKind
    title: str
    text: str = ""
    device: str = ""
    group: str = ""
    platform: str = ""
    run_id: str = ""
    diff: str = ""
    at: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["kind"] = self.kind.value
        return out


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value or "")


def decoded(fields: dict) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in fields.items()}


# --- version ------------------------------------------------------------------------------------------------
class NotReady(Exception):
    """A text the event needs has no landed copy yet."""


def version_event(fields: dict[str, str], sessions: sessionmaker[Session],
                  open_backend: Callable[[str], object]) -> Event:
    """The ``version`` event of a ``versions:created`` entry. Raises :class:`NotReady` while a text cannot be
    read yet, ``LookupError`` when the version is not in the index."""
    from storage.index.models import Copy, SearchText, Version

    version_id = int(fields["version_id"])
    with sessions() as session:
        version = session.get(Version, version_id)
        if version is None:
            raise LookupError(f"version {version_id} is not in the index")
        number = int(session.scalar(select(func.count(Version.id)).where(
            Version.device_id == version.device_id, Version.id <= version_id)) or 0)
        previous = session.scalars(select(Version).where(Version.device_id == version.device_id, Version.id < version_id)
                                   .order_by(Version.id.desc()).limit(1)).first()
        indexed = session.get(SearchText, version.device_id)
        new_body = indexed.body if indexed is not None and indexed.version_id == version_id else None

        def copies(v: Version) -> list[tuple[str, str, str]]:
            return [(c.backend, c.ref, c.status) for c in session.scalars(
                select(Copy).where(Copy.version_id == v.id).order_by(Copy.id))]

        wanted = [(version, copies(version))] + ([(previous, copies(previous))] if previous is not None else [])
        shas = {v.id: v.sha256 for v, _ in wanted}
        # a stored text holds secrets only when they are kept (its view differs); a masked one is not masked
        # again (the masker is not idempotent: '<secret hidden>' would be cut again)
        kept = {v.id: bool(v.view_sha256) and v.view_sha256 != v.sha256 for v, _ in wanted}
    platform = fields.get("platform", "")
    texts: dict[int, str] = {}
    for v, found in wanted:
        if v.id == version_id and new_body is not None:
            texts[v.id] = new_body
            continue
        texts[v.id] = _read(found, shas[v.id], open_backend, platform if kept[v.id] else None)
    device = fields.get("device", "")
    old = texts[previous.id] if previous is not None else ""
    new = texts[version_id]
    from jobs.diffs import unified_diff

    diff = unified_diff(_line_end(old), _line_end(new), f"{device} v{number - 1}" if previous else "/dev/null",
                        f"{device} v{number}")
    if len(diff) > DIFF_LIMIT:
        diff = diff[:DIFF_LIMIT] + "\n… (diff cut; devicevault diff shows it whole)\n"
    added = sum(1 for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff.splitlines() if line.startswith("-") and not line.startswith("---"))
    author = fields.get("author", "")
    return Event(
        id=f"version:{version_id}", kind=EventKind.VERSION,
        title=f"{device}: new configuration version {number}" + (f" (by {author})" if author else ""),
        text=(f"Device {device} (group {fields.get('group') or '-'}, platform {platform or '-'}): version {number} "
              f"collected {fields.get('created_at', '')} in run {fields.get('run_id', '')}; "
              f"{added} line(s) added, {removed} removed."),
        device=device, group=fields.get("group", ""), platform=platform, run_id=fields.get("run_id", ""),
        diff=diff, at=fields.get("created_at") or now_iso(),
        data={"version_id": version_id, "number": number, "first": previous is None, "author": author,
              "sha256": fields.get("sha256", ""), "added": added, "removed": removed},
    )


def _line_end(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _read(copies: list[tuple[str, str, str]], sha256: str, open_backend, platform: str | None) -> str:
    """The text of a version from its first good copy; masked with ``platform``'s rules unless None (the
    stored text is the masked view already)."""
    from jobs.ops.search_index import masked
    from storage.errors import StorageError
    from storage.retrieve import read_first

    try:
        content, _ = read_first(copies, sha256, open_backend)
    except StorageError as exc:
        raise NotReady(f"no copy of version {sha256[:12]} can be read yet: {exc}") from None
    text = content.decode("utf-8", errors="replace")
    return text if platform is None else masked(platform, text)


# --- device results: failed / recovered, run finished -------------------------------------------------------
def _incident(redis: Redis, device: str) -> dict | None:
    raw = redis.hget(INCIDENTS, device)
    return json.loads(raw) if raw else None


def result_events(redis: Redis, record) -> tuple[list[Event], Callable[[], None]]:
    """Events a ``device:results`` record makes, and the step that records the notifier's state afterwards
    (run it after the events' deliveries are queued: a crash in between derives the same events again)."""
    from jobs.streams.results import DeviceResult, RunStarted
    from storage.index.statuses import DeviceStatus

    if isinstance(record, RunStarted):
        key = RUN_PREFIX + record.run_id

        def started() -> None:
            pipe = redis.pipeline()
            pipe.hset(key, mapping={"total": record.total, "selector": record.selector,
                                    "started": record.timestamp.isoformat()})
            pipe.expire(key, RUN_KEEP)
            pipe.execute()

        return [], started
    if not isinstance(record, DeviceResult):
        return [], lambda: None
    finished = _run_result(redis, record)  # a lock-skipped device counts towards its run's end too
    if record.status == DeviceStatus.SKIPPED_LOCKED:
        return [finished] if finished is not None else [], lambda: None
    events: list[Event] = []
    incident = _incident(redis, record.device)
    at = record.timestamp.isoformat()
    base = {"device": record.device, "group": record.group, "platform": record.platform, "run_id": record.run_id,
            "at": at}
    state: Callable[[], None] = lambda: None
    if record.status == DeviceStatus.FAILED:
        if incident is None or incident.get("task_id") == record.task_id:
            events.append(Event(id=f"failed:{record.device}:{record.task_id}", kind=EventKind.FAILED,
                                title=f"{record.device}: backup failed",
                                text=f"Device {record.device} could not be backed up in run {record.run_id}: "
                                     f"{record.error or 'no error given'}",
                                data={"error": record.error, "error_kind": record.error_kind}, **base))
            if incident is None:
                opened = json.dumps({"task_id": record.task_id, "error": record.error, "since": at})
                state = lambda: redis.hsetnx(INCIDENTS, record.device, opened)  # noqa: E731
    elif incident is not None:
        events.append(Event(id=f"recovered:{record.device}:{incident['task_id']}", kind=EventKind.RECOVERED,
                            title=f"{record.device}: backed up again",
                            text=f"Device {record.device} was backed up again in run {record.run_id} "
                                 f"(failing since {incident.get('since', '?')}: {incident.get('error', '')}).",
                            data={"failing_since": incident.get("since", ""), "status": record.status.value}, **base))
        state = lambda: redis.hdel(INCIDENTS, record.device)  # noqa: E731
    if finished is not None:
        events.append(finished)
    return events, state


def _run_result(redis: Redis, record) -> Event | None:
    """Count ``record`` in its run; the ``run_finished`` event when it is the run's last result."""
    key = RUN_PREFIX + record.run_id
    pipe = redis.pipeline()
    pipe.hset(key + ":devices", record.device, json.dumps([record.status.value, record.error[:300]]))
    pipe.expire(key + ":devices", RUN_KEEP)
    pipe.hgetall(key)
    pipe.hgetall(key + ":devices")
    _, _, run, results = pipe.execute()
    run = decoded(run)
    total = int(run.get("total") or 0)
    if not total or len(results) < total:
        return None
    counts: dict[str, int] = {}
    failed = []
    for device, raw in sorted(decoded(results).items()):
        status, error = json.loads(raw)
        counts[status] = counts.get(status, 0) + 1
        if status == "failed":
            failed.append({"device": device, "error": error})
    words = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    lines = [f"Run {record.run_id} ({run.get('selector', 'all')}): {total} device(s): {words}."]
    lines += [f"failed: {f['device']}: {f['error']}" for f in failed]
    return Event(id=f"run:{record.run_id}", kind=EventKind.RUN_FINISHED,
                 title=f"run {record.run_id} finished: {words}", text="\n".join(lines), run_id=record.run_id,
                 at=record.timestamp.isoformat(),
                 data={"total": total, "counts": counts, "failed": failed, "started": run.get("started", "")})


# --- compliance ---------------------------------------------------------------------------------------------
def compliance_event(fields: dict[str, str]) -> Event:
    state = fields.get("state", "")
    if state not in ("violated", "resolved"):
        raise ValueError(f"unknown compliance state {state!r}")
    try:
        lines = json.loads(fields.get("lines") or "[]")
    except ValueError:
        lines = []
    device, rule = fields.get("device", ""), fields.get("rule", "")
    verb = "breaks" if state == "violated" else "no longer breaks"
    return Event(id=f"compliance:{device}:{rule}:{fields.get('version_id', '')}:{state}", kind=EventKind.COMPLIANCE,
                 title=f"{device}: {verb} compliance rule {rule}",
                 text=f"Device {device} {verb} the compliance rule {rule} (version id {fields.get('version_id', '')})"
                      + (":\n" + "\n".join(f"  {line}" for line in lines) if lines else "."),
                 device=device, group=fields.get("group", ""), platform=fields.get("platform", ""),
                 at=fields.get("checked_at") or now_iso(),
                 data={"rule": rule, "state": state, "lines": lines, "version_id": fields.get("version_id", "")})


# --- sweeps: the index's health words, stuck copies, dead letters -------------------------------------------
def health_events(sessions: sessionmaker[Session], *, stuck_after: float,
                  now: datetime | None = None) -> list[Event]:
    """``stale`` and ``unsaved`` devices (asked of ``storage.index.health``) and ``outbox_stuck`` targets."""
    from storage.index.health import condition
    from storage.index.models import Copy, Device, Version, aware
    from storage.index.statuses import CopyStatus, Health

    now = now or datetime.now(timezone.utc)
    events = []
    with sessions() as session:
        for device in session.scalars(select(Device).where(condition(Health.STALE)).order_by(Device.name)):
            since = aware(device.stale_since).isoformat()
            last = aware(device.last_success_at).isoformat() if device.last_success_at else "never"
            events.append(Event(id=f"stale:{device.name}:{since}", kind=EventKind.STALE,
                                title=f"{device.name}: stale (no successful backup within its allowed age)",
                                text=f"Device {device.name} is stale since {since}; last successful backup: {last}.",
                                device=device.name, group=device.group_name, platform=device.platform, at=since,
                                data={"stale_since": since, "last_success": last}))
        for device in session.scalars(select(Device).where(condition(Health.UNSAVED)).order_by(Device.name)):
            since = aware(device.unsaved_since).isoformat() if device.unsaved_since else ""
            events.append(Event(id=f"unsaved:{device.name}:{since}", kind=EventKind.UNSAVED,
                                title=f"{device.name}: unsaved configuration",
                                text=f"Device {device.name}: its running configuration differs from the startup "
                                     f"configuration (since {since or 'its newest backup'}).",
                                device=device.name, group=device.group_name, platform=device.platform,
                                at=since or now.isoformat(), data={"unsaved_since": since}))
        cutoff = now - timedelta(seconds=stuck_after)
        rows = session.execute(
            select(Copy.backend, func.min(Copy.id), func.count(Copy.id), func.min(Version.created_at))
            .join(Version, Version.id == Copy.version_id)
            .where(Copy.status == CopyStatus.PENDING.value, Version.created_at < cutoff)
            .group_by(Copy.backend)).all()
        for target, oldest, count, since in rows:
            events.append(Event(id=f"outbox:{target}:{oldest}", kind=EventKind.OUTBOX_STUCK,
                                title=f"storage target {target}: {count} copy(ies) stuck in the outbox",
                                text=f"{count} version(s) have waited for target {target} for more than "
                                     f"{stuck_after / 60:g} min (the oldest since {aware(since).isoformat()}); "
                                     "devicevault status and the target's health say more.",
                                at=now.isoformat(), data={"target": target, "copies": int(count)}))
    return events


def dead_letter_events(redis: Redis, streams: tuple[str, ...]) -> tuple[list[Event], Callable[[], None]]:
    """One event per dead letter newer than the notifier's cursor of each stream's dead-letter stream, and the
    step that moves the cursors (after the deliveries are queued)."""
    from jobs.streams.deadletters import dead_letter_stream

    events: list[Event] = []
    cursors: dict[str, str] = {}
    for stream in streams:
        dead = dead_letter_stream(stream)
        cursor = _text(redis.get(CURSOR_PREFIX + dead)) or "0-0"
        for entry_id, raw in redis.xrange(dead, min=f"({cursor}", max="+", count=200):
            fields = decoded(raw)
            entry = _text(entry_id)
            error = fields.get("error", "")
            events.append(Event(id=f"dead:{stream}:{entry}", kind=EventKind.DEAD_LETTER,
                                title=f"a message of {stream} moved to {dead}",
                                text=f"Message {fields.get('source_id', '?')} of {stream} (group "
                                     f"{fields.get('group', '?')}) failed and moved to {dead} as {entry}: {error}. "
                                     "devicevault dlq shows and replays it.",
                                device=fields.get("device", ""), at=now_iso(),
                                data={"stream": stream, "entry": entry, "error": error}))
            cursors[CURSOR_PREFIX + dead] = entry
    return events, (lambda: redis.mset(cursors) if cursors else None)
