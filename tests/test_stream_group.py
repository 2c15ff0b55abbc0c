"""The generic stream consumer (jobs/streams/group.py) against a real redis-server: a second subscriber of
``versions:created`` is a few lines, gets every event once in its own consumer group beside any other, and
has the indexer's guarantees (ack after apply, retries, dead letters, not-yet messages that wait)."""

from __future__ import annotations

import time

import pytest

from jobs.streams.deadletters import dead_letter_stream
from jobs.streams.events import VERSIONS_CREATED_STREAM
from jobs.streams.group import Malformed, StreamConsumer, Wait

DEAD = dead_letter_stream(VERSIONS_CREATED_STREAM)


def within(seconds: float):
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


class Recorder(StreamConsumer):
    """The whole subscriber: which stream, which group, what to do with one event."""

    streams = (VERSIONS_CREATED_STREAM,)
    group = "recorder"

    def __init__(self, redis, **options):
        super().__init__(redis, **options)
        self.seen: dict[str, dict] = {}

    def apply(self, stream, message_id, fields):
        event = {k.decode(): v.decode() for k, v in fields.items()}
        if "version_id" not in event:
            raise Malformed("no version_id")
        if event["device"] == "flaky":
            raise RuntimeError("the notification service answered 500")
        if event["device"] == "later" and "ready" not in self.seen:
            raise Wait("waits for the event of device 'ready'")
        self.seen.setdefault(event["device"], event)  # idempotent on the event


@pytest.fixture()
def events(redis):
    redis.delete(VERSIONS_CREATED_STREAM, DEAD)
    yield redis
    redis.delete(VERSIONS_CREATED_STREAM, DEAD)


def _event(device: str, version_id: int) -> dict[str, str]:
    return {"version_id": str(version_id), "device": device, "run_id": "r1", "sha256": "a" * 64}


def test_two_subscribers_each_get_every_event_once(events):
    first = Recorder(events, name="a", block_ms=50, trim_interval=None)
    second = Recorder(events, name="b", group="exporter", block_ms=50, trim_interval=None)
    for i, device in enumerate(["r1", "r2", "r3"], 1):
        events.xadd(VERSIONS_CREATED_STREAM, _event(device, i))
    for consumer in (first, second):
        consumer.run(idle_exit=0.3, stop=within(20))
        assert sorted(consumer.seen) == ["r1", "r2", "r3"]
        assert consumer.committed == 3 and consumer.dead == 0
        assert events.xpending(VERSIONS_CREATED_STREAM, consumer.group)["pending"] == 0


def test_failures_are_retried_then_dead_lettered_malformed_at_once_and_waiting_is_not_a_failure(events):
    sub = Recorder(events, name="a", block_ms=50, claim_idle_ms=50, max_deliveries=3, trim_interval=None)
    events.xadd(VERSIONS_CREATED_STREAM, {"device": "nobody"})  # malformed
    events.xadd(VERSIONS_CREATED_STREAM, _event("flaky", 1))
    events.xadd(VERSIONS_CREATED_STREAM, _event("later", 2))
    limit = within(30)  # a test never waits forever
    sub.run(stop=lambda: (sub.dead >= 2 and sub.waiting >= 3) or limit(), idle_exit=None)
    dead = {fields[b"error"].decode() for _, fields in events.xrange(DEAD)}
    assert any("malformed message: no version_id" in e for e in dead), dead
    assert any("notification service answered 500" in e for e in dead), dead
    assert sub.failed == 2  # deliveries 1 and 2 of the flaky event; the 3rd dead-lettered it
    pending = events.xpending_range(VERSIONS_CREATED_STREAM, "recorder", "-", "+", 10)
    assert len(pending) == 1 and pending[0]["times_delivered"] >= 3  # 'later' waits, past max_deliveries
    events.xadd(VERSIONS_CREATED_STREAM, _event("ready", 3))
    limit = within(30)
    sub.run(stop=lambda: "later" in sub.seen or limit(), idle_exit=None)
    assert sorted(sub.seen) == ["later", "ready"]
    assert events.xpending(VERSIONS_CREATED_STREAM, "recorder")["pending"] == 0


class BatchRecorder(Recorder):
    """The same subscriber, opting in to batches: what it returns for each message of a batch decides it."""

    def __init__(self, redis, **options):
        super().__init__(redis, **options)
        self.batches: list[list[str]] = []

    def apply_batch(self, messages):
        events = [{k.decode(): v.decode() for k, v in fields.items()} for _, _, fields in messages]
        self.batches.append([e.get("device", "?") for e in events])
        entries = []
        for event in events:
            if event.get("device") == "later" and "ready" not in self.seen:
                entries.append(Wait("waits for 'ready'"))
            elif event.get("device") in ("flaky", "nobody"):
                entries.append(RuntimeError("left out: handled on its own"))
            else:
                entries.append(event)
        return entries

    def after_apply(self, stream, outcome):
        self.seen.setdefault(outcome["device"], outcome)


def test_a_subscriber_that_opts_in_to_batches_gets_them_and_its_left_out_messages_are_handled_alone(events):
    sub = BatchRecorder(events, name="a", block_ms=50, claim_idle_ms=60_000, max_deliveries=1, trim_interval=None)
    events.xadd(VERSIONS_CREATED_STREAM, _event("r1", 1))
    events.xadd(VERSIONS_CREATED_STREAM, _event("later", 2))
    events.xadd(VERSIONS_CREATED_STREAM, _event("flaky", 3))
    events.xadd(VERSIONS_CREATED_STREAM, {"device": "nobody"})
    events.xadd(VERSIONS_CREATED_STREAM, _event("r2", 4))
    assert sub.poll() == 5
    assert sub.batches == [["r1", "later", "flaky", "nobody", "r2"]]  # one call for the messages read together
    assert sorted(sub.seen) == ["r1", "r2"] and sub.committed == 2 and sub.waiting == 1
    dead = [fields[b"error"].decode() for _, fields in events.xrange(DEAD)]  # each on its own, by apply()
    assert len(dead) == 2 and "answered 500" in dead[0] and "malformed message: no version_id" in dead[1]
    (pending,) = events.xpending_range(VERSIONS_CREATED_STREAM, "recorder", "-", "+", 10)  # 'later' waits
    assert pending["message_id"] == events.xrange(VERSIONS_CREATED_STREAM)[1][0]


def test_a_group_lost_with_redis_data_is_made_again_and_consuming_goes_on(events):
    """A Redis that comes back without its data (no append-only file) has no consumer group: the consumer
    makes it again instead of exiting on NOGROUP."""
    import threading

    consumer = Recorder(events, name="a", block_ms=50, trim_interval=None)
    events.xadd(VERSIONS_CREATED_STREAM, _event("r1", 1))
    done = threading.Event()
    thread = threading.Thread(target=consumer.run, kwargs={"stop": lambda: done.is_set() or "r2" in consumer.seen})
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while "r1" not in consumer.seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "r1" in consumer.seen
        events.delete(VERSIONS_CREATED_STREAM)  # the stream and its group are gone, as after a restart without data
        events.xadd(VERSIONS_CREATED_STREAM, _event("r2", 2))
        thread.join(30)
        assert not thread.is_alive() and "r2" in consumer.seen
    finally:
        done.set()
        thread.join(5)
