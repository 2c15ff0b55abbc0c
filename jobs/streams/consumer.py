"""The index consumer: reads ``device:results`` and ``storage:results`` in the consumer group ``indexer`` and
writes every outcome into the index. Any number of consumers (processes, hosts) may run at once.

Guarantees:

- a message is acknowledged only after its index rows are committed, or after it was moved to the
  dead-letter stream ``<stream>:dead`` (in the same atomic step as the acknowledgement,
  :func:`jobs.streams.deadletters.dead_letter`); it is never acknowledged and dropped;
- applying a message is idempotent on its task id, so a redelivered (or replayed) message changes nothing;
- messages left pending by a consumer that died are taken over: a consumer applies its own pending entries
  when it starts, and every ``claim_idle_ms`` takes over (XAUTOCLAIM) entries idle longer than that;
- a message whose handling fails does not block the ones behind it: it stays pending and is retried (taken
  over again by XAUTOCLAIM once it has been idle ``claim_idle_ms``); a failure on its ``max_deliveries``-th
  delivery (XPENDING's delivery count) moves it to the dead-letter stream. Failures are: an apply that
  raises, and a result naming a device that is not in the Ansible inventory (:class:`UnknownDevice`; the
  inventory is read again when a name is missing, so fixing the inventory lets the next retry through). A
  message that cannot be parsed can never succeed and goes to the dead-letter stream at once. An index that
  cannot be reached (connection lost, database locked) is not the message's fault: the consumer backs off
  and retries without moving anything to the dead-letter stream. Neither is a storage result whose device
  result has not been applied yet (:class:`storage.index.records.NotDecided`): it stays pending and is
  retried (XAUTOCLAIM) until its device result is in, and never counts towards the dead-letter stream;
- a device result is where "new version or not" is decided (``storage.index.records.apply_device_result``);
  after its commit :meth:`Consumer.after_commit` releases the candidate to storage and adds the one
  ``versions:created`` event, or discards it, and sets the collector's cache (``jobs.deliver.release``);
  these steps are idempotent and run again when the message is redelivered;
- streams are trimmed (:func:`trim_streams`, every ``trim_interval`` seconds) only below what every group
  has processed; dead-letter streams are never trimmed automatically.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from storage.index.records import (
    NotDecided, apply_device_result, apply_run_started, apply_storage_result, refresh_run,
)

from jobs.streams.deadletters import count_dead_letters, dead_letter, dead_letter_stream
from jobs.errors import InventoryError
from jobs.streams.results import (
    DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM, DeviceResult, RunStarted, StorageResult, parse,
)

log = logging.getLogger(__name__)

GROUP = "indexer"
STREAMS = (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM)
DEFAULT_MAX_DELIVERIES = 5
MAX_DELIVERIES_ENV = "DEVICEVAULT_STREAM_MAX_DELIVERIES"
TRIM_INTERVAL = 30.0

#: the index or Redis cannot be reached: not the message's fault, so never a reason to dead-letter it
TRANSIENT_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError,
                    RedisConnectionError, RedisTimeoutError)

#: ``Consumer(inventory=...)`` default: the inventory of the settings (``DEVICEVAULT_INVENTORY``)
FROM_SETTINGS: Any = object()

__all__ = [
    "GROUP", "STREAMS", "Consumer", "InventoryCheck", "UnknownDevice", "dead_letter_stream", "ensure_groups",
    "stream_status", "trim_streams",
]


class UnknownDevice(InventoryError):
    """A result names a device that is not in the Ansible inventory."""


def ensure_groups(redis: Redis, group: str = GROUP) -> None:
    for stream in STREAMS:
        try:
            redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def max_deliveries_from_env(env: dict[str, str] | None = None) -> int:
    """``$DEVICEVAULT_STREAM_MAX_DELIVERIES``, else 5."""
    raw = (os.environ if env is None else env).get(MAX_DELIVERIES_ENV, "")
    if raw.strip() == "":
        return DEFAULT_MAX_DELIVERIES
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{MAX_DELIVERIES_ENV} must be a whole number of deliveries, not {raw!r}") from None
    if value < 1:
        raise ValueError(f"{MAX_DELIVERIES_ENV} must be at least 1, not {value}")
    return value


class InventoryCheck:
    """Whether a device is in the Ansible inventory at ``path`` (read with :func:`jobs.collect.inventory.load_inventory`).

    The host names are cached. A name that is missing makes the inventory be read again when its files
    changed, or at most every ``min_reload`` seconds otherwise (dynamic inventories), so a device added to
    the inventory is known to the next retry. An inventory that cannot be read at all rejects nothing: the
    problem is logged and reading is tried again after ``min_reload`` seconds.
    """

    def __init__(self, path: Path | str, *, min_reload: float = 5.0):
        self.path = Path(path)
        self.min_reload = min_reload
        self.names: set[str] | None = None
        self.loaded_at = float("-inf")
        self.signature: tuple | None = None

    def _signature(self) -> tuple | None:
        try:
            files = sorted(p for p in self.path.rglob("*") if p.is_file()) if self.path.is_dir() else [self.path]
            return tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
        except OSError:
            return None

    def _load(self) -> None:
        from jobs.collect.inventory import load_inventory

        self.signature = self._signature()
        self.loaded_at = time.monotonic()
        try:
            self.names = set(load_inventory(self.path))
        except Exception as exc:  # noqa: BLE001 - InventoryError, or Ansible failing in any other way
            self.names = None
            log.warning("cannot read the inventory %s, so results are not checked against it: %s", self.path, exc)

    def check(self, device: str) -> None:
        """Raise :class:`UnknownDevice` if ``device`` is not in the inventory (and the inventory can be read)."""
        stale = time.monotonic() - self.loaded_at >= self.min_reload
        if self.names is None and stale:
            self._load()
        if self.names is None or device in self.names:
            return
        if stale or self._signature() != self.signature:
            self._load()
            if self.names is None or device in self.names:
                return
        raise UnknownDevice(f"device {device!r} is not in the Ansible inventory {self.path}")


def _error_text(exc: BaseException) -> str:
    """One line naming the error, without SQL statements or their parameters (results may be large)."""
    if isinstance(exc, sa_exc.StatementError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    if isinstance(exc, UnknownDevice):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Consumer:
    def __init__(
        self,
        redis: Redis,
        sessions: sessionmaker[Session],
        *,
        name: str | None = None,
        group: str = GROUP,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        count: int = 100,
        max_deliveries: int | None = None,
        inventory: Path | str | None = FROM_SETTINGS,
        trim_interval: float | None = TRIM_INTERVAL,
        crash_after_commit: int | None = None,
        releaser: Any = FROM_SETTINGS,
    ):
        """``claim_idle_ms``: take over messages pending this long, and retry failed ones this often.

        ``max_deliveries``: a message whose handling fails on this delivery goes to the dead-letter stream
        (None: ``$DEVICEVAULT_STREAM_MAX_DELIVERIES``, else 5). ``inventory``: a device result is checked
        against the inventory its run was started with (``DeviceResult.inventory``, from ``backup
        --inventory``); this one is for results that name none (default: the settings' inventory,
        ``DEVICEVAULT_INVENTORY``; None: no check at all). ``trim_interval``: seconds between :func:`trim_streams` calls (None: never).
        ``crash_after_commit``: for failure tests only; the process exits right after committing that many
        messages and before acknowledging the last one (and before the after-commit steps), as a consumer
        killed at the worst moment would. ``releaser``: the after-commit steps of the decider
        (:class:`jobs.deliver.release.Releaser`; default: built from the settings on first use; None: none,
        for tests of the index alone)."""
        self.redis = redis
        self.sessions = sessions
        self.name = name or default_name()
        self.group = group
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self.max_deliveries = max_deliveries_from_env() if max_deliveries is None else int(max_deliveries)
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, not {self.max_deliveries}")
        if inventory is FROM_SETTINGS:
            from jobs.settings import Settings

            inventory = Settings.load().inventory
        self.inventory = InventoryCheck(inventory) if inventory is not None else None
        self._inventories: dict[str, InventoryCheck] = {}  # a run's own inventory -> its check
        self.trim_interval = trim_interval
        self.crash_after_commit = crash_after_commit
        self._releaser = releaser
        self.committed = 0
        self.applied = 0
        self.failed = 0  # failed attempts left pending for a retry
        self.waiting = 0  # storage outcomes left pending until their device result is in
        self.dead = 0  # messages this consumer moved to a dead-letter stream
        self.trimmed = 0
        self._backlog: list[tuple[str, list, dict | None]] = []
        ensure_groups(redis, group)

    # --- one message -----------------------------------------------------------------------------------
    def handle(self, stream: str, message_id: bytes | str, fields: dict, deliveries: int = 1) -> str:
        """Apply one message; ``deliveries`` is its delivery count. Returns ``applied`` (committed, then
        acknowledged), ``retry`` (failed, left pending) or ``dead`` (moved to the dead-letter stream).
        Raises the :data:`TRANSIENT_ERRORS` (the message stays pending)."""
        try:
            record = parse(stream, fields)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._dead_letter(stream, message_id, fields, f"malformed message: {exc}", deliveries)
            return "dead"
        try:
            self._check_inventory(record)
            decision = self._apply(stream, record)
        except TRANSIENT_ERRORS:
            raise
        except NotDecided as exc:  # its device result comes later: wait for it, never dead-letter
            self.waiting += 1
            log.info("message %s of %s waits for its device result (delivery %d): %s",
                     _name(message_id), stream, deliveries, exc)
            return "retry"
        except Exception as exc:  # noqa: BLE001 - any failure of this message: retry, then dead-letter
            error = _error_text(exc)
            if deliveries >= self.max_deliveries:
                self._dead_letter(stream, message_id, fields, error, deliveries)
                return "dead"
            self.failed += 1
            log.warning("message %s of %s failed on delivery %d of %d, left pending for a retry: %s",
                        _name(message_id), stream, deliveries, self.max_deliveries, error)
            return "retry"
        self.committed += 1
        if self.crash_after_commit is not None and self.committed >= self.crash_after_commit:
            log.error("crash_after_commit reached: exiting before acknowledging %s", message_id)
            os._exit(17)
        if isinstance(record, DeviceResult):
            try:
                self.after_commit(decision)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. a broken storage file: keep it pending, retry it
                self.failed += 1
                log.error("message %s of %s is committed, but its after-commit steps failed (left pending, "
                          "retried): %s", _name(message_id), stream, _error_text(exc))
                return "retry"
        self.redis.xack(stream, self.group, message_id)
        return "applied"

    def _check_inventory(self, record) -> None:
        """A device result must name a device of its run's inventory (:class:`UnknownDevice` otherwise). A run's
        start names no device, and a storage result exists only for a version its device result decided."""
        if self.inventory is None or not isinstance(record, DeviceResult):
            return
        check = self.inventory
        if record.inventory and Path(record.inventory) != self.inventory.path:
            check = self._inventories.setdefault(record.inventory, InventoryCheck(record.inventory))
        check.check(record.device)

    # --- the decider's after-commit hook ---------------------------------------------------------------
    def after_commit(self, decision) -> None:
        """The steps that follow a committed decision (release + event, or discard; the collector's cache):
        :class:`jobs.deliver.release.Releaser`. Idempotent, so a redelivered message runs them again safely."""
        if self._releaser is FROM_SETTINGS:
            from jobs.deliver.release import Releaser

            self._releaser = Releaser.from_settings(self.redis)
        if self._releaser is not None:
            self._releaser.after_commit(decision)

    def flush_releases(self) -> None:
        """Enqueue the storage jobs for the versions released since the last call (one per target)."""
        if self._releaser not in (None, FROM_SETTINGS):
            self._releaser.flush()

    def _apply(self, stream: str, record):
        """Apply and commit one result. Consumers running at once may race to create the same row (a new
        device, or a new version, seen in results handled at the same time): the loser's transaction is
        rolled back and applied again at once, which then finds the row (a race costs one retry per row it
        creates: device, then version), before it counts as a failure."""
        apply = {RunStarted: apply_run_started, DeviceResult: apply_device_result,
                 StorageResult: apply_storage_result}[type(record)]
        for attempt in (1, 2, 3):
            try:
                with self.sessions.begin() as session:
                    outcome = apply(session, record)
                    refresh_run(session, record.run_id)
                self.applied += bool(getattr(outcome, "new", outcome))  # counted once committed
                return outcome
            except sa_exc.IntegrityError as exc:
                if attempt == 3:
                    raise
                log.info("task %s raced another consumer (%s): applying it again", record.task_id, _error_text(exc))

    def _dead_letter(self, stream: str, message_id, fields: dict, error: str, deliveries: int) -> None:
        entry = dead_letter(self.redis, stream, self.group, message_id, fields, error=error, deliveries=deliveries)
        if entry is None:
            log.info("message %s of %s was acknowledged meanwhile by another consumer", _name(message_id), stream)
            return
        self.dead += 1
        log.error("message %s of %s moved to %s after %d delivery(ies): %s",
                  _name(message_id), stream, dead_letter_stream(stream), deliveries, error)

    def _trim(self) -> None:
        try:
            self.trimmed += sum(trim_streams(self.redis).values())
        except ResponseError as exc:  # trimming is housekeeping: never a reason to stop consuming
            log.warning("could not trim the result streams: %s", exc)

    # --- reading ---------------------------------------------------------------------------------------
    def _deliveries(self, stream: str, message_ids: list) -> dict:
        """Delivery count of each of ``message_ids`` (pending entries of this group), from XPENDING."""
        pipe = self.redis.pipeline(transaction=False)
        for message_id in message_ids:
            pipe.xpending_range(stream, self.group, min=message_id, max=message_id, count=1)
        counts = {}
        for message_id, found in zip(message_ids, pipe.execute()):
            counts[_name(message_id)] = int(found[0]["times_delivered"]) if found else 1
        return counts

    def _process(self, stream: str, messages, deliveries: dict | None = None) -> int:
        """Handle ``messages`` of ``stream`` in order; ``deliveries``: their delivery counts (None: all new)."""
        return self._process_batches([(stream, list(messages), deliveries)])

    def _process_batches(self, batches: list[tuple[str, list, dict | None]]) -> int:
        """Handle batches ``(stream, messages, delivery counts)`` in order. On a transient error (index or Redis
        unreachable) the message being handled and those after it are kept in ``self._backlog`` and handled
        again by :meth:`run` after a pause: they stay pending, and their delivery count is not raised by
        the outage (a redelivery would count against ``max_deliveries``)."""
        done = 0
        try:
            for b, (stream, messages, deliveries) in enumerate(batches):
                for i, (message_id, fields) in enumerate(messages):
                    try:
                        if not fields:  # deleted from the stream while pending
                            self.redis.xack(stream, self.group, message_id)
                            continue
                        self.handle(stream, message_id, fields, (deliveries or {}).get(_name(message_id), 1))
                    except TRANSIENT_ERRORS:
                        self._backlog = [(stream, messages[i:], deliveries), *batches[b + 1:]]
                        raise
                    done += 1
        finally:
            self.flush_releases()
        return done

    def _own_pending(self) -> int:
        """Messages delivered to this consumer name earlier (before a restart) and never acknowledged."""
        done = 0
        for stream in STREAMS:
            start = "0-0"
            while True:
                entries = self.redis.xreadgroup(self.group, self.name, {stream: start}, count=self.count)
                messages = entries[0][1] if entries else []
                if not messages:
                    break
                done += self._process(stream, messages, self._deliveries(stream, [m for m, _ in messages]))
                start = messages[-1][0]
        return done

    def _claim_idle(self) -> int:
        """Take over (XAUTOCLAIM) messages idle longer than ``claim_idle_ms``: those of dead consumers, and
        this consumer's own failed ones, which are retried this way."""
        done = 0
        for stream in STREAMS:
            start = "0-0"
            while True:
                start, messages, *_ = self.redis.xautoclaim(
                    stream, self.group, self.name, self.claim_idle_ms, start_id=start, count=self.count
                )
                if messages:
                    done += self._process(stream, messages, self._deliveries(stream, [m for m, _ in messages]))
                if _name(start) == "0-0":
                    break
        return done

    def recover(self, *, own: bool = True) -> int:
        """Apply messages delivered to this consumer name earlier but never acknowledged (``own``), then take
        over messages pending for longer than ``claim_idle_ms``. Returns how many were handled."""
        return (self._own_pending() if own else 0) + self._claim_idle()

    def poll(self) -> int:
        entries = self.redis.xreadgroup(
            self.group, self.name, {s: ">" for s in STREAMS}, count=self.count, block=self.block_ms
        )
        ordered = sorted(entries or [], key=lambda e: _name(e[0]) != DEVICE_RESULTS_STREAM)
        return self._process_batches([(_name(stream), list(messages), None) for stream, messages in ordered])

    def run(self, *, stop: Callable[[], bool] = lambda: False, idle_exit: float | None = None) -> None:
        """Consume until ``stop()`` is true (or, with ``idle_exit``, after that many seconds without messages).

        Handled messages count as activity, failed retries included, so with ``idle_exit`` a failing message
        is retried until it is applied or dead-lettered (when retries come faster than ``idle_exit``)."""
        own = True
        backoff = 0.0
        last_activity = time.monotonic()
        last_recover = last_trim = float("-inf")
        while not stop():
            try:
                done = 0
                if self._backlog:  # left by a transient error: handled first, in order
                    backlog, self._backlog = self._backlog, []
                    done += self._process_batches(backlog)
                if own or time.monotonic() - last_recover >= self.claim_idle_ms / 1000:
                    read_own, own, last_recover = own, False, time.monotonic()
                    done += self.recover(own=read_own)
                done += self.poll()
                if self.trim_interval is not None and time.monotonic() - last_trim >= self.trim_interval:
                    last_trim = time.monotonic()
                    self._trim()
            except TRANSIENT_ERRORS as exc:
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.warning("index or redis unavailable, retrying in %.1fs (messages stay pending): %s",
                            backoff, _error_text(exc))
                time.sleep(backoff)
                continue
            backoff = 0.0
            if done:
                last_activity = time.monotonic()
            elif idle_exit is not None and time.monotonic() - last_activity > idle_exit:
                return


# --- trimming and status ----------------------------------------------------------------------------------
def _parse_id(value: Any) -> tuple[int, int]:
    ms, _, seq = _name(value).partition("-")
    return int(ms), int(seq or 0)


def _format_id(value: tuple[int, int]) -> str:
    return f"{value[0]}-{value[1]}"


def _groups(redis: Redis, stream: str) -> list[dict]:
    try:
        return redis.xinfo_groups(stream)
    except ResponseError as exc:  # no such key
        if "no such key" in str(exc).lower():
            return []
        raise


def safe_minid(redis: Redis, stream: str) -> str | None:
    """The smallest id every group of ``stream`` still needs: for each group the smaller of its oldest
    pending id and the id right after its last-delivered-id; the smallest over the groups. Everything below
    it was delivered to every group and acknowledged. None when the stream has no group (keep everything)."""
    bounds = []
    for group in _groups(redis, stream):
        last = _parse_id(group["last-delivered-id"])
        bound = (last[0], last[1] + 1)
        if int(group.get("pending") or 0):
            oldest = redis.xpending(stream, group["name"]).get("min")
            if oldest is not None:
                bound = min(bound, _parse_id(oldest))
        bounds.append(bound)
    return _format_id(min(bounds)) if bounds else None


def trim_streams(redis: Redis, streams: Iterable[str] = STREAMS) -> dict[str, int]:
    """Remove from each result stream the entries every consumer group has processed (XTRIM MINID, exact;
    see :func:`safe_minid`). A stream without groups is left alone; dead-letter streams are never trimmed
    here. Returns ``{stream: entries removed}``."""
    removed = {}
    for stream in streams:
        if stream.endswith(":dead"):
            raise ValueError(f"{stream} is a dead-letter stream: it is never trimmed automatically")
        minid = safe_minid(redis, stream)
        removed[stream] = int(redis.xtrim(stream, minid=minid, approximate=False)) if minid else 0
        if removed[stream]:
            log.info("trimmed %d processed entries from %s (below %s)", removed[stream], stream, minid)
    return removed


def _lag(redis: Redis, stream: str, group: dict) -> int:
    """Entries of ``stream`` not yet delivered to ``group`` (XINFO GROUPS 'lag' when Redis knows it)."""
    if group.get("lag") is not None:
        return int(group["lag"])
    lag, start = 0, f"({_name(group['last-delivered-id'])}"
    while True:
        page = redis.xrange(stream, min=start, max="+", count=1000)
        lag += len(page)
        if len(page) < 1000:
            return lag
        start = f"({_name(page[-1][0])}"


def stream_status(redis: Redis, streams: Iterable[str] = STREAMS) -> list[dict]:
    """One dict per (result stream, consumer group); a stream without groups gives one dict with group None.

    Shape of each dict::

        {
            "stream": "device:results",
            "group": "indexer",                 # None: the stream has no consumer group yet
            "length": 120,                      # entries in the stream (XLEN; trimmed ones are gone)
            "last_delivered_id": "1712...-0",   # None without a group
            "pending": 3,                       # delivered to the group, not acknowledged yet
            "lag": 17,                          # entries not yet delivered to the group
            "consumers": [{"name": "host-123", "pending": 3, "idle_ms": 250}],
            "dead_letter_stream": "device:results:dead",
            "dead_letters": 2,                  # entries in the dead-letter stream (of the stream, any group)
        }
    """
    rows = []
    for stream in streams:
        length = int(redis.xlen(stream))
        dead = {"dead_letter_stream": dead_letter_stream(stream), "dead_letters": count_dead_letters(redis, stream)}
        groups = _groups(redis, stream)
        if not groups:
            rows.append({"stream": stream, "group": None, "length": length, "last_delivered_id": None, "pending": 0,
                         "lag": length, "consumers": [], **dead})
            continue
        for group in groups:
            consumers = [
                {"name": _name(c["name"]), "pending": int(c.get("pending") or 0), "idle_ms": int(c.get("idle") or 0)}
                for c in redis.xinfo_consumers(stream, group["name"])
            ]
            rows.append({"stream": stream, "group": _name(group["name"]), "length": length,
                         "last_delivered_id": _name(group["last-delivered-id"]),
                         "pending": int(group.get("pending") or 0), "lag": _lag(redis, stream, group),
                         "consumers": consumers, **dead})
    return rows


def _name(stream) -> str:
    return stream.decode() if isinstance(stream, bytes) else stream
