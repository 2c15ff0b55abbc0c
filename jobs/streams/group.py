"""A consumer in a Redis consumer group: the machinery every subscriber of DeviceVault's streams shares.

A subscriber is a :class:`StreamConsumer` subclass that names its ``streams`` and ``group`` and implements
:meth:`StreamConsumer.apply`; everything else is here and is the same for all of them:

- a message is acknowledged only after :meth:`~StreamConsumer.apply` returned (so after whatever it made
  durable: the index consumer commits there), or after it was moved to the dead-letter stream
  ``<stream>:dead`` (in the same atomic step as the acknowledgement, :func:`jobs.streams.deadletters.dead_letter`);
  it is never acknowledged and dropped. ``apply`` must be idempotent: a message can be delivered again;
- messages left pending by a consumer that died are taken over: a consumer applies its own pending entries
  when it starts, and every ``claim_idle_ms`` takes over (XAUTOCLAIM) entries idle longer than that;
- a message whose handling fails does not block the ones behind it: it stays pending and is retried (taken
  over again once it has been idle ``claim_idle_ms``); a failure on its ``max_deliveries``-th delivery
  (XPENDING's delivery count) moves it to the dead-letter stream. :class:`Malformed` (it can never succeed)
  goes there at once; :class:`Wait` (not yet: something it needs comes later) is retried without counting;
  the subclass's ``transient_errors`` (its store or Redis cannot be reached: not the message's fault) make the
  consumer back off and retry, the message staying pending with its delivery count untouched;
- streams are trimmed (:func:`trim_streams`, every ``trim_interval`` seconds) only below what every group
  has processed; dead-letter streams are never trimmed automatically;
- a subscriber whose store gains from it may apply the messages read together at once
  (:meth:`~StreamConsumer.apply_batch`, opt-in: one transaction for all of them); the steps after the commit
  then run for each message in order and the messages are acknowledged together. A batch that fails as a
  whole is handled one message at a time, as without batches, so a bad message is retried or dead-lettered
  on its own.

A second subscriber of, say, ``versions:created`` is a few lines::

    class Notifier(StreamConsumer):
        streams = (VERSIONS_CREATED_STREAM,)
        group = "notifier"

        def apply(self, stream, message_id, fields):
            send(fields)  # idempotent on the event's version id

    Notifier(redis).run()
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Callable, Iterable

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jobs.streams.deadletters import count_dead_letters, dead_letter, dead_letter_stream

log = logging.getLogger(__name__)

DEFAULT_MAX_DELIVERIES = 5
MAX_DELIVERIES_ENV = "DEVICEVAULT_STREAM_MAX_DELIVERIES"
TRIM_INTERVAL = 30.0


class Malformed(ValueError):
    """The message can never be applied (it cannot be parsed): dead-lettered at once."""


class Wait(Exception):
    """The message cannot be applied *yet* (what it refers to comes later): left pending and retried, never
    counted towards the dead-letter stream."""


def ensure_groups(redis: Redis, group: str, streams: Iterable[str]) -> None:
    for stream in streams:
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


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class StreamConsumer:
    """One consumer (``name``) of the consumer group ``group`` over ``streams``. Subclasses set ``streams``,
    ``group`` (and ``transient_errors`` if :meth:`apply` reaches more than Redis) and implement :meth:`apply`;
    :meth:`after_apply` and :meth:`after_batch` are optional hooks. See the module docstring."""

    streams: tuple[str, ...] = ()
    group: str = ""
    #: not the message's fault: back off and retry, never dead-letter
    transient_errors: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError)

    def __init__(
        self,
        redis: Redis,
        *,
        name: str | None = None,
        group: str | None = None,
        streams: Iterable[str] | None = None,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        count: int = 100,
        max_deliveries: int | None = None,
        trim_interval: float | None = TRIM_INTERVAL,
        crash_after_commit: int | None = None,
    ):
        """``claim_idle_ms``: take over messages pending this long, and retry failed ones this often.
        ``max_deliveries``: a message whose handling fails on this delivery goes to the dead-letter stream
        (None: ``$DEVICEVAULT_STREAM_MAX_DELIVERIES``, else 5). ``trim_interval``: seconds between
        :func:`trim_streams` calls (None: never). ``crash_after_commit``: for failure tests only; the process
        exits right after that many messages were applied and before the last one is acknowledged (and before
        :meth:`after_apply`), as a consumer killed at the worst moment would."""
        self.redis = redis
        self.name = name or default_name()
        self.group = group or self.group
        self.streams = tuple(streams or self.streams)
        if not self.group or not self.streams:
            raise ValueError(f"{type(self).__name__} needs a consumer group and at least one stream")
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self.max_deliveries = max_deliveries_from_env() if max_deliveries is None else int(max_deliveries)
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be at least 1, not {self.max_deliveries}")
        self.trim_interval = trim_interval
        self.crash_after_commit = crash_after_commit
        self.committed = 0  # messages applied (their effects durable)
        self.failed = 0  # failed attempts left pending for a retry
        self.waiting = 0  # messages left pending because they cannot be applied yet (:class:`Wait`)
        self.dead = 0  # messages this consumer moved to a dead-letter stream
        self.trimmed = 0
        self._backlog: list[tuple[str, list, dict | None]] = []
        ensure_groups(redis, self.group, self.streams)

    # --- what a subscriber implements ------------------------------------------------------------------
    def apply(self, stream: str, message_id: str, fields: dict) -> Any:
        """Apply one message and make its effects durable; must be idempotent. Raise :class:`Malformed`,
        :class:`Wait`, one of ``transient_errors``, or anything else (a failure: retried, then dead-lettered).
        What it returns is handed to :meth:`after_apply`."""
        raise NotImplementedError

    def apply_batch(self, messages: list[tuple[str, str, dict]]) -> list | None:
        """Optional: apply several messages together and make their effects durable at once (one transaction).
        ``messages``: ``(stream, message id, fields)`` in the order read. Returns one entry per message: its
        outcome (handed to :meth:`after_apply`, like :meth:`apply`'s), or an exception for a message left out
        of the batch, nothing of it durable: a :class:`Wait` leaves it pending (retried later), anything else
        has it handled on its own by :meth:`handle` once the batch is done (so it is retried or dead-lettered
        as without batches). Raising (other than the ``transient_errors``) must leave nothing durable: every
        message is then handled one at a time by :meth:`handle`. Must be idempotent, like :meth:`apply`.

        The default returns None: batches are not supported, every message is handled one at a time."""
        return None

    def after_apply(self, stream: str, outcome: Any) -> None:
        """Steps that follow a durable :meth:`apply`, before the acknowledgement (idempotent: they run again
        when the message is redelivered). A failure leaves the message pending for a retry."""

    def after_batch(self) -> None:
        """Called after each batch of messages (e.g. to enqueue work collected while applying them)."""

    def describe_error(self, exc: BaseException) -> str:
        """One line naming a failure, for logs and the dead-letter stream."""
        return error_text(exc)

    # --- one message -----------------------------------------------------------------------------------
    def handle(self, stream: str, message_id: bytes | str, fields: dict, deliveries: int = 1) -> str:
        """Apply one message; ``deliveries`` is its delivery count. Returns ``applied`` (applied, then
        acknowledged), ``retry`` (failed or not yet, left pending) or ``dead`` (moved to the dead-letter
        stream). Raises the ``transient_errors`` (the message stays pending)."""
        try:
            outcome = self.apply(stream, _name(message_id), fields)
        except self.transient_errors:
            raise
        except Malformed as exc:
            self._dead_letter(stream, message_id, fields, f"malformed message: {exc}", deliveries)
            return "dead"
        except Wait as exc:
            self._not_ready(stream, message_id, deliveries, exc)
            return "retry"
        except Exception as exc:  # noqa: BLE001 - any failure of this message: retry, then dead-letter
            error = self.describe_error(exc)
            if deliveries >= self.max_deliveries:
                self._dead_letter(stream, message_id, fields, error, deliveries)
                return "dead"
            self.failed += 1
            log.warning("message %s of %s failed on delivery %d of %d, left pending for a retry: %s",
                        _name(message_id), stream, deliveries, self.max_deliveries, error)
            return "retry"
        if not self._after_commit(stream, message_id, outcome):
            return "retry"
        self.redis.xack(stream, self.group, message_id)
        return "applied"

    def _not_ready(self, stream: str, message_id, deliveries: int, exc: BaseException) -> None:
        """A message that must :class:`Wait`: left pending, retried later, never counted as a failure."""
        self.waiting += 1
        log.info("message %s of %s is not ready (delivery %d): %s", _name(message_id), stream, deliveries, exc)

    def _after_commit(self, stream: str, message_id, outcome: Any) -> bool:
        """Once a message's effects are durable: :meth:`after_apply`. True when the message can be acknowledged;
        False when those steps failed (it stays pending, retried). Raises the ``transient_errors``."""
        self.committed += 1
        if self.crash_after_commit is not None and self.committed >= self.crash_after_commit:
            log.error("crash_after_commit reached: exiting before acknowledging %s", message_id)
            os._exit(17)
        try:
            self.after_apply(stream, outcome)
        except self.transient_errors:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a broken storage file: keep it pending, retry it
            self.failed += 1
            log.error("message %s of %s is applied, but the steps after it failed (left pending, retried): %s",
                      _name(message_id), stream, self.describe_error(exc))
            return False
        return True

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
            self.trimmed += sum(trim_streams(self.redis, self.streams).values())
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
        """Handle batches ``(stream, messages, delivery counts)`` in order: together (:meth:`apply_batch`) when
        the subscriber supports it and there are several, else one at a time (:meth:`handle`). On a transient
        error (index or Redis unreachable) the messages not handled yet are kept in ``self._backlog`` and
        handled again by :meth:`run` after a pause: they stay pending, and their delivery count is not raised
        by the outage (a redelivery would count against ``max_deliveries``)."""
        items = [(stream, message_id, fields, (deliveries or {}).get(_name(message_id), 1))
                 for stream, messages, deliveries in batches for message_id, fields in messages]
        try:
            live = self._ack_deleted(items)
            if len(live) > 1:
                entries = self._apply_together(live)
                if entries is not None:
                    return self._after_together(live, entries)
            return self._handle_each(live)
        finally:
            self.after_batch()

    def _ack_deleted(self, items: list[tuple]) -> list[tuple]:
        """Acknowledge the entries deleted from their stream while pending (no fields left); the others."""
        live = [item for item in items if item[2]]
        deleted = [item for item in items if not item[2]]
        if deleted:
            try:
                self._ack(deleted)
            except self.transient_errors:
                self._backlog = _as_batches(items)
                raise
        return live

    def _handle_each(self, items: list[tuple]) -> int:
        """Handle ``items`` (stream, message id, fields, deliveries) one at a time, in order."""
        done = 0
        for i, (stream, message_id, fields, deliveries) in enumerate(items):
            try:
                self.handle(stream, message_id, fields, deliveries)
            except self.transient_errors:
                self._backlog = _as_batches(items[i:])
                raise
            done += 1
        return done

    def _apply_together(self, items: list[tuple]) -> list | None:
        """:meth:`apply_batch` of ``items``; None when the subscriber has no batches, or the batch failed as a
        whole (nothing of it durable: its messages are then handled one at a time)."""
        try:
            entries = self.apply_batch([(stream, _name(message_id), fields) for stream, message_id, fields, _ in items])
        except self.transient_errors:
            self._backlog = _as_batches(items)
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a race with another consumer, or one bad message
            log.warning("%s: a batch of %d messages failed as a whole, applying them one at a time: %s",
                        self.group, len(items), self.describe_error(exc))
            return None
        if entries is not None and len(entries) != len(items):
            raise RuntimeError(f"{type(self).__name__}.apply_batch returned {len(entries)} entries for "
                               f"{len(items)} messages")
        return entries

    def _after_together(self, items: list[tuple], entries: list) -> int:
        """After a committed :meth:`apply_batch`: :meth:`after_apply` for each applied message in order, one
        acknowledgement of those it succeeded for, then the messages left out of the batch one at a time."""
        ready: list[int] = []  # applied, after_apply done: to acknowledge
        alone: list[int] = []  # left out of the batch for a reason other than Wait: handled on their own
        position = 0
        try:
            for position, ((stream, message_id, _, deliveries), entry) in enumerate(zip(items, entries)):
                if isinstance(entry, Wait):
                    self._not_ready(stream, message_id, deliveries, entry)
                elif isinstance(entry, BaseException):
                    alone.append(position)
                elif self._after_commit(stream, message_id, entry):
                    ready.append(position)
            position = len(items)
            self._ack([items[i] for i in ready])
        except self.transient_errors:
            again = sorted({*ready, *alone, *range(position, len(items))})
            self._backlog = _as_batches([items[i] for i in again])
            raise
        return len(items) - len(alone) + self._handle_each([items[i] for i in alone])

    def _ack(self, items: list[tuple]) -> None:
        """Acknowledge ``items`` (stream, message id, ...): one XACK per stream."""
        ids: dict[str, list] = {}
        for stream, message_id, *_ in items:
            ids.setdefault(stream, []).append(message_id)
        if len(ids) == 1:
            (stream, message_ids), = ids.items()
            self.redis.xack(stream, self.group, *message_ids)
        elif ids:
            pipe = self.redis.pipeline(transaction=False)
            for stream, message_ids in ids.items():
                pipe.xack(stream, self.group, *message_ids)
            pipe.execute()

    def _own_pending(self) -> int:
        """Messages delivered to this consumer name earlier (before a restart) and never acknowledged."""
        done = 0
        for stream in self.streams:
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
        for stream in self.streams:
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
            self.group, self.name, {s: ">" for s in self.streams}, count=self.count, block=self.block_ms
        )
        ordered = sorted(entries or [], key=lambda e: self.streams.index(_name(e[0])))  # in the order of streams
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
            except self.transient_errors as exc:
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.warning("%s: unavailable, retrying in %.1fs (messages stay pending): %s",
                            self.group, backoff, self.describe_error(exc))
                time.sleep(backoff)
                continue
            except ResponseError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):  # UNBLOCKED: deleted while we waited
                    raise
                # a Redis that came back without its data (no append-only file, a fresh replica): the
                # streams and the group are made again and consuming goes on, never an exit
                log.warning("%s: the consumer group is gone from Redis (restarted without its data?): "
                            "creating it again: %s", self.group, exc)
                ensure_groups(self.redis, self.group, self.streams)
                own = True
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


def trim_streams(redis: Redis, streams: Iterable[str]) -> dict[str, int]:
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


def stream_status(redis: Redis, streams: Iterable[str]) -> list[dict]:
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


def _as_batches(items: list[tuple]) -> list[tuple[str, list, dict]]:
    """``(stream, message id, fields, deliveries)`` items as the batches of :meth:`StreamConsumer._process_batches`."""
    batches: list[tuple[str, list, dict]] = []
    for stream, message_id, fields, deliveries in items:
        if not batches or batches[-1][0] != stream:
            batches.append((stream, [], {}))
        batches[-1][1].append((message_id, fields))
        batches[-1][2][_name(message_id)] = deliveries
    return batches
