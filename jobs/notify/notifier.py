"""``devicevault notifier``: the subscriber that turns DeviceVault's events into deliveries, and the pump that
sends them.

:class:`Notifier` is a :class:`jobs.streams.group.StreamConsumer` with its own consumer group (``notifier``)
on ``versions:created``, ``device:results`` and ``compliance:changed``: at least once, never in the
indexer's way (the indexer has its own group on ``device:results``). For each message it derives the events
(:mod:`jobs.notify.events`), finds the rules that want them (:mod:`jobs.notify.rules`) and queues one
delivery per event, rule and channel (:mod:`jobs.notify.queue`: keyed, so a redelivered message queues
nothing new). Every ``sweep_interval`` it also asks the index for stale and unsaved devices and stuck
copies, and reads new dead letters. The rules file is read again when it changes (a broken edit is logged
and the rules before it kept).

:class:`Pump` sends what is due, in a thread of the same process: a channel that fails is retried with
backoff, dead after its ``max_tries``; quiet hours and rate limits only move a delivery's due time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from redis import Redis

from jobs.notify import queue
from jobs.notify.channels import ChannelError, open_channel
from jobs.notify.events import (Event, NotReady, compliance_event, dead_letter_events, decoded, health_events,
                                result_events, version_event)
from jobs.notify.rules import EventKind, Rule, Rules, RulesError, load_rules
from jobs.streams.events import COMPLIANCE_CHANGED_STREAM, VERSIONS_CREATED_STREAM
from jobs.streams.group import Malformed, StreamConsumer, Wait
from jobs.streams.results import DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM, parse

log = logging.getLogger(__name__)

GROUP = "notifier"
STREAMS = (VERSIONS_CREATED_STREAM, DEVICE_RESULTS_STREAM, COMPLIANCE_CHANGED_STREAM)
#: whose dead letters are notified
WATCHED = (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM, VERSIONS_CREATED_STREAM, COMPLIANCE_CHANGED_STREAM)
DIGEST_PREFIX = "notify:digest:"
RATE_PREFIX = "notify:rate:"
#: events a digest channel collects per run (the others are sent as they come)
DIGESTED = frozenset({EventKind.VERSION, EventKind.FAILED, EventKind.RECOVERED})


class RulesFile:
    """The rules of ``path``, read again when the file changes; a broken edit keeps the previous rules."""

    def __init__(self, path: Path, env=None):
        self.path, self.env = path, env
        self._stamp: tuple | None = None
        self.rules = self._read()  # a broken file at start: RulesError (the command says it in one line)

    def _signature(self) -> tuple | None:
        try:
            st = self.path.stat()
            return st.st_mtime_ns, st.st_size
        except OSError:
            return None

    def _read(self) -> Rules:
        self._stamp = self._signature()
        return load_rules(self.path, self.env)

    def current(self) -> Rules:
        if self._signature() != self._stamp:
            try:
                self.rules = self._read()
                log.info("notification rules read again from %s: %d rule(s)", self.path, len(self.rules.rules))
            except RulesError as exc:
                log.error("%s; keeping the rules read before", exc)
        return self.rules


def _due(redis: Redis, rule: Rule, key: str, now: float) -> float:
    """When a new delivery of ``rule`` may go: after its quiet hours, within its rate limit."""
    due = now
    quiet = rule.quiet_until(datetime.fromtimestamp(now, timezone.utc))
    if quiet is not None:
        due = quiet.timestamp()
    if rule.rate_limit is not None:
        limit, period = rule.rate_limit
        window = math.floor(due / period)
        for _ in range(1000):  # the first window with room (bounded: a flood waits at most 1000 periods)
            counter = f"{RATE_PREFIX}{rule.name}:{window}"
            count = redis.incr(counter)
            redis.expire(counter, int(period * 2) + 60)
            if count <= limit:
                break
            window += 1
        due = max(due, window * period)
    return due


def route(redis: Redis, rules: Rules, events: list[Event], *, now: float | None = None) -> int:
    """Queue a delivery of each event for each matching rule and channel; returns how many were new."""
    now = time.time() if now is None else now
    queued = 0
    for event in events:
        for rule in rules.matching(event.kind, event.device, event.group, event.platform):
            if event.kind == EventKind.VERSION and event.data.get("first") and not rule.first_versions:
                continue
            for channel in rule.channels:
                config = rules.channels[channel]
                if config.options.get("digest") and event.kind == EventKind.RUN_FINISHED:
                    continue  # a digest channel gets the summary at the head of the run's digest
                if config.options.get("digest") and event.kind in DIGESTED and event.run_id:
                    held = queue.hold_for_digest(redis, _digest_key(event.run_id, rule.name, channel),
                                                 _digest(event.run_id, rule.name, channel), event.as_dict())
                    if held:
                        continue  # else: the run's digest went already; this one goes on its own
                key = queue.delivery_key(event.id, rule.name, channel)
                if redis.exists(queue.PREFIX + key):
                    continue
                if queue.enqueue(redis, key, rule.name, channel, [event.as_dict()], due=_due(redis, rule, key, now)):
                    queued += 1
        if event.kind == EventKind.RUN_FINISHED:
            queued += _queue_digests(redis, rules, event, now)
    return queued


def _digest_key(run_id: str, rule: str, channel: str) -> str:
    return queue.delivery_key(f"digest:{run_id}", rule, channel)


def _digest(run_id: str, rule: str, channel: str) -> str:
    """The hash holding the events of a run's digest until it is sent."""
    return f"{DIGEST_PREFIX}{rule}:{channel}:{run_id}"


def _queue_digests(redis: Redis, rules: Rules, finished: Event, now: float) -> int:
    """A run ended: the digest of every digest channel (its events are read when it is sent, ``digest_delay``
    later, so results still on their way are in it)."""
    queued = 0
    for rule in rules.rules.values():
        for channel in rule.channels:
            if not rules.channels[channel].options.get("digest"):
                continue
            head = [finished.as_dict()] if EventKind.RUN_FINISHED in rule.events else []
            key = _digest_key(finished.run_id, rule.name, channel)
            if queue.enqueue(redis, key, rule.name, channel, head, digest=_digest(finished.run_id, rule.name, channel),
                             due=max(now + rules.digest_delay, _due(redis, rule, key, now))):
                queued += 1
    return queued


class Notifier(StreamConsumer):
    streams = STREAMS
    group = GROUP

    def __init__(self, redis: Redis, sessions, open_backend: Callable[[str], object], rules: RulesFile, **kwargs):
        from sqlalchemy.exc import OperationalError

        self.transient_errors = (*StreamConsumer.transient_errors, OperationalError)
        super().__init__(redis, **kwargs)
        self.sessions, self.open_backend, self.rules_file = sessions, open_backend, rules
        self.routed = 0
        self._last_sweep = float("-inf")

    @property
    def rules(self) -> Rules:
        return self.rules_file.current()

    def describe_error(self, exc: BaseException) -> str:
        return self.rules.mask(super().describe_error(exc))

    def apply(self, stream: str, message_id: str, fields: dict) -> int:
        rules = self.rules
        if stream == VERSIONS_CREATED_STREAM:
            values = decoded(fields)
            if not rules.matching(EventKind.VERSION, values.get("device", ""), values.get("group", ""),
                                  values.get("platform", "")):
                return 0  # nobody asks: no texts read
            try:
                event = version_event(values, self.sessions, self.open_backend)
            except NotReady as exc:
                raise Wait(str(exc)) from None
            except (KeyError, ValueError) as exc:
                raise Malformed(f"{stream} entry: {exc}") from None
            return route(self.redis, rules, [event])
        if stream == COMPLIANCE_CHANGED_STREAM:
            try:
                event = compliance_event(decoded(fields))
            except ValueError as exc:
                raise Malformed(str(exc)) from None
            return route(self.redis, rules, [event])
        try:
            record = parse(stream, fields)
        except (ValueError, KeyError, TypeError) as exc:
            raise Malformed(f"{stream} entry: {exc}") from None
        events, remember = result_events(self.redis, record)
        queued = route(self.redis, rules, events)
        remember()
        return queued

    def after_apply(self, stream: str, outcome) -> None:
        self.routed += int(outcome or 0)

    def sweep(self) -> int:
        """Stale and unsaved devices, stuck copies, new dead letters (every ``sweep_interval``)."""
        rules = self.rules
        self._last_sweep = time.monotonic()
        wanted = {kind for rule in rules.rules.values() for kind in rule.events}
        queued = 0
        if wanted & {EventKind.STALE, EventKind.UNSAVED, EventKind.OUTBOX_STUCK}:
            queued += route(self.redis, rules, health_events(self.sessions, stuck_after=rules.outbox_stuck_after))
        events, advance = dead_letter_events(self.redis, WATCHED)
        queued += route(self.redis, rules, events)
        advance()
        return queued

    def poll(self) -> int:
        done = super().poll()
        if time.monotonic() - self._last_sweep >= self.rules.sweep_interval:
            try:
                self.routed += self.sweep()
            except self.transient_errors:
                raise
            except Exception as exc:  # noqa: BLE001 - a sweep is retried at the next interval
                log.error("notification sweep failed (tried again in %gs): %s", self.rules.sweep_interval,
                          self.describe_error(exc))
        return done


class Pump:
    """Sends due deliveries (``run`` in a thread, ``once`` for one pass). Each channel sends from a thread of
    its own, its deliveries in the order they fell due, so a receiver that is slow or hangs until its
    ``timeout`` holds back only its own channel's deliveries, never another channel's."""

    def __init__(self, redis: Redis, rules: RulesFile, *, poll: float = 0.5):
        self.redis, self.rules_file, self.poll = redis, rules, poll
        self.sent = 0
        self.failures = 0
        self._senders: dict[str, ThreadPoolExecutor] = {}  # channel -> its one sending thread
        self._count = threading.Lock()
        self._in_flight: set[str] = set()  # handed to a sending thread, not finished (a lease may end meanwhile)

    def deliver(self, key: str) -> str:
        rules = self.rules_file.current()
        delivery = queue.load(self.redis, key)
        if delivery is None or delivery.status != queue.Status.QUEUED:
            self.redis.zrem(queue.DUE, key)
            return "gone"
        config = rules.channels.get(delivery.channel)
        if config is None or delivery.rule not in rules.rules:
            log.warning("delivery %s dropped: rule %s or channel %s is no longer in %s", key, delivery.rule,
                        delivery.channel, rules.path)
            queue.drop(self.redis, key)
            return "dropped"
        events = list(delivery.events)
        if delivery.digest:
            events = queue.freeze_digest(self.redis, key, delivery.digest)
            events.sort(key=lambda e: (e["kind"] != EventKind.RUN_FINISHED, e.get("device", ""), e.get("at", "")))
            if not events:
                queue.sent(self.redis, key)  # an empty digest: nothing to say
                return "sent"
        try:
            open_channel(config).send(key, delivery.rule, events)
        except Exception as exc:  # noqa: BLE001 - any failure of the receiver: retried, then dead
            error = rules.mask(str(exc) if isinstance(exc, ChannelError) else f"channel {config.name}: "
                               f"{type(exc).__name__}: {exc}")
            with self._count:
                self.failures += 1
            status = queue.failed(self.redis, key, error, max_tries=config.max_tries, base=config.retry_base,
                                  cap=config.retry_max)
            (log.error if status == queue.Status.DEAD else log.warning)(
                "delivery %s (%s -> %s) failed on try %d: %s%s", key, delivery.rule, config.name,
                delivery.tries + 1, error, "; dead" if status == queue.Status.DEAD else "; tried again later")
            return status
        queue.sent(self.redis, key)
        with self._count:
            self.sent += 1
        log.info("delivery %s sent to %s", key, config.name)
        return "sent"

    def _deliver_logged(self, key: str) -> str:
        try:
            return self.deliver(key)
        except Exception as exc:  # noqa: BLE001 - Redis gone mid-delivery: its lease hands it out again later
            log.warning("notification pump: delivery %s not finished, tried again once its lease ends: %s", key, exc)
            return "interrupted"
        finally:
            with self._count:
                self._in_flight.discard(key)

    def dispatch(self) -> list[Future]:
        """Claim the due deliveries and hand each to its channel's sending thread; returns their futures."""
        futures = []
        for key in queue.claim_due(self.redis):
            with self._count:
                if key in self._in_flight:  # its lease ended while it waited behind a slow receiver
                    continue
                self._in_flight.add(key)
            channel = queue.channel_of(key)
            sender = self._senders.get(channel)
            if sender is None:
                sender = self._senders[channel] = ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix=f"devicevault-notify-{channel}")
            futures.append(sender.submit(self._deliver_logged, key))
        return futures

    def once(self) -> int:
        """One pass: every due delivery sent (or failed) before it returns."""
        futures = self.dispatch()
        for future in futures:
            future.result()
        return len(futures)

    def run(self, stop: Callable[[], bool]) -> None:
        from redis.exceptions import RedisError

        try:
            while not stop():
                try:
                    if self.dispatch():  # claimed deliveries are leased: the next claim takes only new ones
                        continue
                except RedisError as exc:
                    log.warning("notification pump: Redis unavailable, retrying: %s", exc)
                time.sleep(self.poll)
        finally:
            for sender in self._senders.values():
                sender.shutdown(wait=False, cancel_futures=True)

    def start(self, stop: Callable[[], bool]) -> threading.Thread:
        thread = threading.Thread(target=self.run, args=(stop,), name="devicevault-notify-pump", daemon=True)
        thread.start()
        return thread
