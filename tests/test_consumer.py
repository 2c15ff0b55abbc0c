"""The index consumer against a real redis-server and a real index (SQLite and PostgreSQL): ack after commit, idempotent on
task id, pending messages taken over, malformed messages dead-lettered, results checked against a real
Ansible inventory."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from jobs.deliver import outbox
from jobs.deliver.outbox import StorageItem
from jobs.deliver.release import Releaser
from jobs.streams.consumer import GROUP, Consumer, dead_letter_stream
from jobs.streams.events import VERSIONS_CREATED_STREAM
from jobs.streams.results import (
    DEVICE_RESULTS_STREAM,
    STORAGE_RESULTS_STREAM,
    DeviceResult,
    DeviceStatus,
    StorageResult,
    StorageStatus,
    utcnow,
)
from storage.index.db import connect
from storage.index.models import Copy, DeviceResultRow, Run, Version
from storage.index.records import create_run


ALL_STREAMS = (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM,
               dead_letter_stream(DEVICE_RESULTS_STREAM), dead_letter_stream(STORAGE_RESULTS_STREAM))
HOSTS = [f"r{i}" for i in range(1, 4)]


def within(seconds: float):
    """A ``stop`` for ``Consumer.run``: a test never waits forever, even when the consumer keeps retrying."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() > deadline


def write_inventory(path: Path, hosts: list[str]) -> Path:
    """A tiny Ansible inventory (INI) naming ``hosts``."""
    lines = ["[site_x]"] + [f"{h} ansible_host=127.0.0.1 ansible_network_os=cisco.ios.ios" for h in hosts]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture()
def sessions(index_url):
    """The index: every test here runs on SQLite and on PostgreSQL (``index_url``, tests/conftest.py)."""
    return connect(index_url)


@pytest.fixture()
def inventory(tmp_path) -> Path:
    return write_inventory(tmp_path / "hosts.ini", HOSTS)


@pytest.fixture()
def enqueued(streams) -> list[tuple[str, list[str]]]:
    """The storage jobs the consumers' releasers enqueued (target, item ids); the outbox and the
    ``versions:created`` stream start empty."""
    streams.delete(VERSIONS_CREATED_STREAM, outbox.ITEMS, *streams.keys("storage:outbox:*"))
    yield []
    streams.delete(VERSIONS_CREATED_STREAM, outbox.ITEMS, *streams.keys("storage:outbox:*"))


@pytest.fixture()
def consumer(streams, sessions, inventory, enqueued):
    """``consumer(name, **options)``: a Consumer on the test's streams, index and inventory, whose after-commit
    steps are real (outbox, cache, events in the test's Redis) and whose storage jobs are recorded in
    ``enqueued`` instead of going to RQ (no storage worker runs here)."""

    def make(name: str, **options) -> Consumer:
        releaser = Releaser(streams, lease=60, enqueue=lambda target, ids: enqueued.append((target, ids)))
        options = {"block_ms": 100, "inventory": inventory, "releaser": releaser, **options}
        return Consumer(streams, sessions, name=name, **options)

    return make


def _device_result(run_id: str, host: str, status=DeviceStatus.CHANGED, sha="a" * 64,
                   targets="git,fs") -> DeviceResult:
    return DeviceResult(task_id=f"{run_id}:{host}", run_id=run_id, device=host, status=status, timestamp=utcnow(),
                        group="site_x", platform="cisco.ios.ios", sha256=sha, view_sha256=sha, size=10,
                        targets=targets if status == DeviceStatus.CHANGED else "")


def _storage_result(run_id: str, host: str, backend: str, sha="a" * 64) -> StorageResult:
    return StorageResult(task_id=f"{run_id}:{host}:{backend}", run_id=run_id, device=host, backend=backend,
                         status=StorageStatus.STORED, timestamp=utcnow(), group="site_x", sha256=sha, size=10,
                         ref=f"ref-{host}-{backend}")


def _publish(redis, run_id: str, hosts: list[str], targets=("git", "fs")) -> None:
    for h in hosts:
        redis.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message())
        for t in targets:
            redis.xadd(STORAGE_RESULTS_STREAM, _storage_result(run_id, h, t).to_message())


def _count(sessions, model) -> int:
    with sessions() as s:
        return s.scalar(select(func.count()).select_from(model))


def test_results_land_once_and_run_finishes(streams, sessions, consumer):
    run_id = uuid.uuid4().hex
    with sessions.begin() as s:
        create_run(s, run_id, total=3, selector="all", targets=["git", "fs"])
    _publish(streams, run_id, ["r1", "r2", "r3"])
    consumer("c1").run(idle_exit=0.3, stop=within(20))
    assert _count(sessions, DeviceResultRow) == 3
    assert _count(sessions, Version) == 3
    assert _count(sessions, Copy) == 6
    with sessions() as s:
        run = s.get(Run, run_id)
        assert run.finished_at is not None and run.status == "succeeded"
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 0
    assert streams.xpending(STORAGE_RESULTS_STREAM, GROUP)["pending"] == 0


def test_redelivered_message_changes_nothing(streams, sessions, consumer):
    run_id = uuid.uuid4().hex
    _publish(streams, run_id, ["r1"])
    consumer("c1").run(idle_exit=0.3, stop=within(20))
    before = (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy))
    _publish(streams, run_id, ["r1"])  # the same task ids again, as after a crash between commit and ack
    consumer("c2").run(idle_exit=0.3, stop=within(20))
    assert (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy)) == before == (1, 1, 2)


def test_messages_pending_on_a_dead_consumer_are_taken_over(streams, sessions, consumer):
    run_id = uuid.uuid4().hex
    consumer("dead")  # creates the group
    _publish(streams, run_id, ["r1", "r2"])
    # "dead" receives everything and dies before applying or acknowledging any of it
    streams.xreadgroup(GROUP, "dead", {DEVICE_RESULTS_STREAM: ">", STORAGE_RESULTS_STREAM: ">"})
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 2
    consumer("alive", claim_idle_ms=0).run(idle_exit=0.3, stop=within(20))
    assert _count(sessions, DeviceResultRow) == 2
    assert _count(sessions, Copy) == 4
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 0


def test_malformed_message_is_dead_lettered_not_dropped(streams, sessions, consumer):
    run_id = uuid.uuid4().hex
    streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "x", "data": "{not json"})
    _publish(streams, run_id, ["r1"])
    consumer("c1").run(idle_exit=0.3, stop=within(20))
    dead = streams.xrange(dead_letter_stream(DEVICE_RESULTS_STREAM))
    assert len(dead) == 1 and b"malformed" in dead[0][1][b"error"]
    assert _count(sessions, DeviceResultRow) == 1  # the message behind it flowed on


def test_a_candidate_equal_to_the_newest_version_is_unchanged_and_adds_no_version(streams, sessions, consumer):
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    _publish(streams, first, ["r1"])
    # a second run's collector had no cache entry (lost), so it staged r1 as a candidate: the decider says no
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(second, "r1").to_message())
    consumer("c1").run(idle_exit=0.3, stop=within(20))
    assert (_count(sessions, Version), _count(sessions, Copy)) == (1, 2)
    with sessions() as s:
        statuses = sorted(s.scalars(select(DeviceResultRow.status)).all())
        assert s.get(Run, second).finished_at is not None  # an unchanged device waits for no copy
    assert statuses == ["changed", "unchanged"]


# --- failures: retried without blocking, then dead-lettered ------------------------------------------------
def _pending(redis, stream) -> list[dict]:
    return redis.xpending_range(stream, GROUP, "-", "+", 100)


def test_malformed_message_dead_letter_entry_format(streams, consumer):
    bad_id = streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "x", "data": "{not json", "error": "theirs"})
    consumer("c1").run(idle_exit=0.3, stop=within(20))
    (dead_id, entry), = streams.xrange(dead_letter_stream(DEVICE_RESULTS_STREAM))
    assert entry[b"task_id"] == b"x" and entry[b"data"] == b"{not json"
    assert entry[b"original:error"] == b"theirs"  # an original field never hides the dead-letter fields
    assert entry[b"error"].startswith(b"malformed message:")
    assert entry[b"source_stream"] == DEVICE_RESULTS_STREAM.encode() and entry[b"source_id"] == bad_id
    assert entry[b"deliveries"] == b"1"  # it can never succeed: dead-lettered at once
    from datetime import datetime

    assert datetime.fromisoformat(entry[b"dead_at"].decode()).tzinfo is not None
    assert _pending(streams, DEVICE_RESULTS_STREAM) == []


def test_unknown_device_is_retried_and_applied_once_the_inventory_knows_it(streams, sessions, consumer, inventory):
    run_id = uuid.uuid4().hex
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "r9").to_message())
    _publish(streams, run_id, ["r1"])
    c = consumer("c1", claim_idle_ms=100, max_deliveries=5)
    assert c.poll() == 4
    assert _count(sessions, DeviceResultRow) == 1  # r1 flowed past r9
    (entry,) = _pending(streams, DEVICE_RESULTS_STREAM)
    assert entry["times_delivered"] == 1 and c.failed == 1
    write_inventory(inventory, HOSTS + ["r9"])  # the inventory is fixed before the last retry
    c.run(idle_exit=0.5, stop=within(20))
    assert _count(sessions, DeviceResultRow) == 2
    assert streams.xlen(dead_letter_stream(DEVICE_RESULTS_STREAM)) == 0
    assert _pending(streams, DEVICE_RESULTS_STREAM) == []


def test_an_inventory_that_cannot_be_read_rejects_nothing(streams, sessions, consumer, tmp_path, caplog):
    _publish(streams, uuid.uuid4().hex, ["not-in-any-inventory"])
    consumer("c1", inventory=tmp_path / "no-such-inventory").run(idle_exit=0.3, stop=within(20))
    assert _count(sessions, DeviceResultRow) == 1 and _count(sessions, Copy) == 2
    assert "cannot read the inventory" in caplog.text


def test_an_apply_that_raises_is_retried_then_dead_lettered(streams, sessions, consumer, monkeypatch):
    run_id = uuid.uuid4().hex
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "r1").to_message())
    broken = _storage_result(run_id, "r1", "git")
    broken.status = StorageStatus.PENDING
    broken.next_attempt_at = "soon"  # parses as a message, but the index cannot store it
    streams.xadd(STORAGE_RESULTS_STREAM, broken.to_message())
    _publish(streams, run_id, ["r2"])
    monkeypatch.setenv("DEVICEVAULT_STREAM_MAX_DELIVERIES", "2")
    c = consumer("c1", claim_idle_ms=50)
    assert c.max_deliveries == 2
    c.run(idle_exit=0.5, stop=within(20))
    assert _count(sessions, Copy) == 4  # r1's (made pending by the decider) and r2's
    with sessions() as s:
        assert {c.status for c in s.scalars(select(Copy).join(Version).where(Version.run_id == run_id))} == {
            "pending", "stored"}
    (_, entry), = streams.xrange(dead_letter_stream(STORAGE_RESULTS_STREAM))
    assert entry[b"deliveries"] == b"2" and b"ValueError" in entry[b"error"] and b"soon" in entry[b"error"]
    assert c.failed == 1 and c.dead == 1
    assert _pending(streams, STORAGE_RESULTS_STREAM) == []


def test_deliveries_are_counted_across_consumers(streams, sessions, consumer):
    run_id = uuid.uuid4().hex
    first = consumer("first", claim_idle_ms=60_000, max_deliveries=2)
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "unknown-host").to_message())
    assert first.poll() == 1 and first.failed == 1  # delivery 1 fails; then "first" dies
    second = consumer("second", claim_idle_ms=0, max_deliveries=2)
    second.run(idle_exit=0.3, stop=within(20))
    (_, entry), = streams.xrange(dead_letter_stream(DEVICE_RESULTS_STREAM))
    assert entry[b"deliveries"] == b"2" and second.failed == 0 and second.dead == 1


def test_entry_deleted_while_pending_is_acknowledged_not_dead_lettered(streams, consumer):
    consumer("dead")
    message_id = streams.xadd(DEVICE_RESULTS_STREAM, _device_result(uuid.uuid4().hex, "r1").to_message())
    streams.xreadgroup(GROUP, "dead", {DEVICE_RESULTS_STREAM: ">"})
    streams.xdel(DEVICE_RESULTS_STREAM, message_id)
    consumer("dead").run(idle_exit=0.3, stop=within(20))  # restarts under the same name: its own pending entry is gone
    assert _pending(streams, DEVICE_RESULTS_STREAM) == []
    assert streams.xlen(dead_letter_stream(DEVICE_RESULTS_STREAM)) == 0


def test_an_unreachable_index_is_an_outage_not_a_poison_message(streams, sessions, consumer, tmp_path, index_url):
    import sqlite3

    if not index_url.startswith("sqlite"):
        pytest.skip("SQLite's file lock; a PostgreSQL writer waits for row locks instead of failing")
    _publish(streams, uuid.uuid4().hex, ["r1", "r2"])
    lock = sqlite3.connect(tmp_path / "index.sqlite", timeout=0, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # another writer holds the index: "database is locked"
    c = consumer("c1", max_deliveries=1, claim_idle_ms=60_000)
    try:
        deadline = time.monotonic() + 1.5
        c.run(stop=lambda: time.monotonic() > deadline)
    finally:
        lock.rollback()
        lock.close()
    assert c.dead == 0 and c.failed == 0 and streams.xlen(dead_letter_stream(DEVICE_RESULTS_STREAM)) == 0
    assert _count(sessions, DeviceResultRow) == 0
    assert len(_pending(streams, DEVICE_RESULTS_STREAM)) == 2 and len(_pending(streams, STORAGE_RESULTS_STREAM)) == 4
    held = _pending(streams, DEVICE_RESULTS_STREAM) + _pending(streams, STORAGE_RESULTS_STREAM)
    assert {e["times_delivered"] for e in held} == {1}  # kept in hand, not redelivered
    c.run(idle_exit=0.3, stop=within(20))  # the index is back: what was in hand is applied
    assert (_count(sessions, DeviceResultRow), _count(sessions, Copy)) == (2, 4)
    assert _pending(streams, DEVICE_RESULTS_STREAM) == [] and _pending(streams, STORAGE_RESULTS_STREAM) == []


# --- one decision, one event -------------------------------------------------------------------------------
def _stage(redis, run_id: str, host: str, targets=("git", "fs"), sha="a" * 64) -> StorageItem:
    """What the collector does with a candidate: its text waits in the outbox for the decider."""
    item = StorageItem(task_id=f"{run_id}:{host}", run_id=run_id, device=host, group="site_x", sha256=sha,
                       config=f"hostname {host}\n", collected_at=time.time(), targets=tuple(targets))
    outbox.stage(redis, [item])
    return item


def _events(redis) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in redis.xrange(VERSIONS_CREATED_STREAM)]


def test_a_storage_result_before_its_device_result_waits_and_is_applied_after_it(streams, sessions, consumer):
    run_id = uuid.uuid4().hex
    with sessions.begin() as s:
        create_run(s, run_id, total=1, selector="all", targets=["git"])
    _stage(streams, run_id, "r1", targets=("git",))
    streams.xadd(STORAGE_RESULTS_STREAM, _storage_result(run_id, "r1", "git").to_message())  # replayed, or manual
    c = consumer("c1", claim_idle_ms=100, max_deliveries=2)
    assert c.poll() == 1 and c.waiting == 1
    assert _count(sessions, Version) == 0  # a storage result never makes a version by itself
    assert len(_pending(streams, STORAGE_RESULTS_STREAM)) == 1
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "r1", targets="git").to_message())
    c.run(idle_exit=0.5, stop=within(20))
    with sessions() as s:
        (copy,) = s.scalars(select(Copy)).all()
        assert (copy.status, copy.ref) == ("stored", "ref-r1-git")
        assert s.get(Run, run_id).status == "succeeded"
    assert c.waiting >= 2  # retried more often than max_deliveries, never dead-lettered
    assert streams.xlen(dead_letter_stream(STORAGE_RESULTS_STREAM)) == 0
    assert _pending(streams, STORAGE_RESULTS_STREAM) == []


@pytest.mark.parametrize("storage_first", [True, False], ids=["storage-result-first", "device-result-first"])
def test_with_the_cache_lost_either_order_leaves_the_index_consistent(streams, sessions, consumer, storage_first):
    """Run 2's collector had lost its cache and staged r1 again; a storage result naming run 2 (a replay, or a
    producer of an older DeviceVault) comes before or after the device result."""
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    _publish(streams, first, ["r1"])
    consumer("c0").run(idle_exit=0.3, stop=within(20))
    with sessions.begin() as s:
        create_run(s, second, total=1, selector="all", targets=["git", "fs"])
    _stage(streams, second, "r1")
    messages = [(DEVICE_RESULTS_STREAM, _device_result(second, "r1")),
                (STORAGE_RESULTS_STREAM, _storage_result(second, "r1", "git"))]
    for stream, message in (messages[::-1] if storage_first else messages):
        streams.xadd(stream, message.to_message())
    consumer("c1", claim_idle_ms=50, max_deliveries=2).run(idle_exit=0.5, stop=within(20))
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Version)) == 1
        row = s.scalar(select(DeviceResultRow).where(DeviceResultRow.run_id == second))
        assert row.status == "unchanged" and row.sha256 == "a" * 64
        assert s.get(Run, second).status == "succeeded"
        assert {c.status for c in s.scalars(select(Copy))} == {"stored"}
    assert outbox.load(streams, [f"{second}:r1"]) == [] and streams.hget(outbox.ITEMS, f"{second}:r1") is None
    (_, dead), = streams.xrange(dead_letter_stream(STORAGE_RESULTS_STREAM))  # it names no version: kept aside
    assert b"NoSuchVersion" in dead[b"error"]
    assert len(_events(streams)) == 1  # run 1's version only


def test_a_version_whose_text_redis_lost_finishes_its_run_and_is_stored_from_the_next_read(
        streams, sessions, consumer, enqueued):
    """Redis lost run 1's staged text between the collector and the decision: the version is made, each copy
    gets a pending outcome naming the loss (run 1 finishes), the collector's cache is not set; run 2 reads the
    same configuration (unchanged): its text is put in the outbox as run 1's version, its copies land, and no
    second version is made."""
    from jobs.collect import cache

    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    with sessions.begin() as s:
        create_run(s, first, total=1, selector="all", targets=["git", "fs"])
        create_run(s, second, total=1, selector="all", targets=["git", "fs"])
    _stage(streams, first, "r1")
    streams.hdel(outbox.ITEMS, f"{first}:r1")  # lost with Redis (an append-only file a second behind)
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(first, "r1").to_message())
    consumer("c1").run(idle_exit=0.5, stop=within(20))
    with sessions() as s:
        run = s.get(Run, first)
        assert run.finished_at is not None, "run 1 stays running"
        copies = s.scalars(select(Copy)).all()
        assert {(c.backend, c.status) for c in copies} == {("git", "pending"), ("fs", "pending")}
        assert all("lost with Redis" in c.error for c in copies)
    assert enqueued == [] and cache.lookup(streams, "r1") is None  # the next backup reads and stages again

    item = _stage(streams, second, "r1")  # the same text, read again
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(second, "r1").to_message())
    consumer("c2").run(idle_exit=0.5, stop=within(20))
    assert sorted(enqueued) == [("fs", [f"{first}:r1"]), ("git", [f"{first}:r1"])]
    (restored,) = outbox.load(streams, [f"{first}:r1"])
    assert (restored.run_id, restored.config, restored.sha256) == (first, item.config, item.sha256)
    assert streams.hget(outbox.ITEMS, f"{second}:r1") is None  # the candidate itself is discarded
    for target in ("git", "fs"):  # what the storage job then publishes for the item
        streams.xadd(STORAGE_RESULTS_STREAM, _storage_result(first, "r1", target).to_message())
    consumer("c3").run(idle_exit=0.5, stop=within(20))
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(Version)) == 1
        assert {(c.status, c.error) for c in s.scalars(select(Copy))} == {("stored", "")}
        assert s.scalar(select(DeviceResultRow.status).where(DeviceResultRow.run_id == second)) == "unchanged"
        assert s.get(Run, second).finished_at is not None


def _crashing_consumer(redis_url: str, database_url: str, inventory: str) -> None:
    """A consumer process that dies right after committing its first message (before its after-commit steps
    and its acknowledgement)."""
    from redis import Redis

    redis = Redis.from_url(redis_url)
    Consumer(redis, connect(database_url), name="crasher", block_ms=100, inventory=inventory,
             releaser=Releaser(redis, lease=60, enqueue=None), crash_after_commit=1).run(stop=within(60))


def test_one_event_per_new_version_also_when_the_consumer_dies_between_commit_and_ack(
        streams, sessions, consumer, enqueued, redis_server, index_url, inventory, monkeypatch):
    import multiprocessing
    import sys
    import types

    # "spawn" re-runs __main__ in the child; after a Streamlit AppTest in the same pytest worker that is
    # portal/app.py, which the child cannot run: give it an empty one
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))

    run_id = uuid.uuid4().hex
    item = _stage(streams, run_id, "r1")
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "r1").to_message())
    consumer("crasher")  # the group exists before the crashing process reads
    child = multiprocessing.get_context("spawn").Process(
        target=_crashing_consumer, args=(redis_server.url, index_url, str(inventory)))
    child.start()
    child.join(60)
    assert child.exitcode == 17
    assert _count(sessions, Version) == 1 and _events(streams) == []  # committed; nothing after the commit yet
    assert len(_pending(streams, DEVICE_RESULTS_STREAM)) == 1
    consumer("crasher").run(idle_exit=0.3, stop=within(20))  # restarted: its own pending message again
    (event,) = _events(streams)
    with sessions() as s:
        version = s.scalar(select(Version))
    assert event["version_id"] == str(version.id) and event["device"] == "r1" and event["run_id"] == run_id
    assert event["sha256"] == event["view_sha256"] == "a" * 64 and set(event["targets"].split(",")) == {"git", "fs"}
    assert sorted(enqueued) == [("fs", [item.task_id]), ("git", [item.task_id])]
    assert outbox.load(streams, [item.task_id]) == [item]
    assert outbox.waiting(streams, ["git", "fs"]) == {"git": 1, "fs": 1}
    # the same message again (a replay): no second event, no second release
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "r1").to_message())
    consumer("c2").run(idle_exit=0.3, stop=within(20))
    assert len(_events(streams)) == 1 and len(enqueued) == 2
    assert _pending(streams, DEVICE_RESULTS_STREAM) == []


# --- batches: the messages read together are applied in one transaction ------------------------------------
BATCH_HOSTS = [f"b{i:02}" for i in range(8)]


@pytest.fixture()
def commits(sessions):
    """The COMMITs the index's engine really issues (SQLAlchemy's engine ``commit`` event), as a list."""
    from sqlalchemy import event

    engine, seen = sessions.kw["bind"], []

    def count(_connection):
        seen.append(1)

    event.listen(engine, "commit", count)
    yield seen
    event.remove(engine, "commit", count)


def test_a_batch_of_device_results_is_committed_in_one_transaction(streams, sessions, consumer, inventory, enqueued,
                                                                   commits):
    write_inventory(inventory, BATCH_HOSTS)
    run_id = uuid.uuid4().hex
    items = [_stage(streams, run_id, h) for h in BATCH_HOSTS]
    ids = [streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message()) for h in BATCH_HOSTS]
    c = consumer("c1")
    assert c.poll() == len(BATCH_HOSTS)
    assert len(commits) == 1  # one transaction for the 8 decisions
    assert (c.committed, c.applied, _count(sessions, Version), _count(sessions, Copy)) == (8, 8, 8, 16)
    assert [e["device"] for e in _events(streams)] == BATCH_HOSTS  # after the commit, in the order read
    assert sorted(enqueued) == [("fs", [i.task_id for i in items]), ("git", [i.task_id for i in items])]
    assert _pending(streams, DEVICE_RESULTS_STREAM) == [] and len(ids) == 8
    # one message per batch (count=1) is the old way: one transaction each
    for host in BATCH_HOSTS[:2]:
        run = uuid.uuid4().hex
        _stage(streams, run, host, sha="b" * 64)  # as the collector does (unstaged: a text Redis lost)
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run, host, sha="b" * 64).to_message())
    consumer("c2", count=1).run(idle_exit=0.3, stop=within(20))
    assert len(commits) == 3 and _count(sessions, Version) == 10


def test_versions_published_one_by_one_are_gathered_into_one_storage_job_per_target(
        streams, sessions, inventory, enqueued):
    """Collectors publish each device as soon as it is fetched; the consumer's releaser gathers a target's
    versions for ``gather`` seconds from the first (its own clock here, an explicit argument) before the
    storage job, and a full chunk goes at once."""
    write_inventory(inventory, BATCH_HOSTS)
    now = [1000.0]
    releaser = Releaser(streams, lease=60, enqueue=lambda target, ids: enqueued.append((target, ids)),
                        chunk=5, gather=2.0, clock=lambda: now[0])
    c = Consumer(streams, sessions, name="gather", block_ms=100, inventory=inventory, releaser=releaser)
    run_id = uuid.uuid4().hex
    items = [_stage(streams, run_id, h) for h in BATCH_HOSTS]
    for host in BATCH_HOSTS[:3]:  # three reads of one device each, within the gathering time
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, host).to_message())
        assert c.poll() == 1
        now[0] += 0.5
    assert enqueued == [] and _count(sessions, Version) == 3  # decided and released, not handed to a job yet
    now[0] += 1.0  # 2.5 s after the first
    assert c.poll() == 0  # an empty read flushes too
    assert sorted(enqueued) == [("fs", [i.task_id for i in items[:3]]), ("git", [i.task_id for i in items[:3]])]
    enqueued.clear()
    for host in BATCH_HOSTS[3:]:  # five at once fill a chunk: no waiting
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, host).to_message())
    assert c.poll() == 5
    assert sorted(enqueued) == [("fs", [i.task_id for i in items[3:]]), ("git", [i.task_id for i in items[3:]])]


def test_while_a_targets_storage_job_waits_in_its_queue_new_versions_are_left_for_it(
        streams, sessions, inventory, enqueued):
    """Busy workers: while the target's last storage job still waits in its RQ queue (a real queue, no worker
    here), new versions stay due and no other job is enqueued; the job claims them when it starts
    (``claim_more``, its first step); once it has started, the next versions get a job of their own."""
    from rq.job import JobStatus

    from jobs.deliver.store import claim_more, job_waiting
    from jobs.queues import Queue
    from jobs.settings import Settings

    write_inventory(inventory, BATCH_HOSTS)
    queue = Queue("storage.test-waiting", connection=streams)
    queue.empty()

    def enqueue(target, ids):
        enqueued.append((target, ids))
        return queue.enqueue("jobs.tasks.store_batch", target, ids)

    releaser = Releaser(streams, lease=60, enqueue=enqueue, waiting=lambda job_id: job_waiting(streams, job_id))
    c = Consumer(streams, sessions, name="waiting", block_ms=100, inventory=inventory, releaser=releaser)
    run_id = uuid.uuid4().hex
    items = [_stage(streams, run_id, h, targets=("git",)) for h in BATCH_HOSTS]

    def publish(hosts):
        for host in hosts:
            streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, host, targets="git").to_message())
        assert c.poll() == len(hosts)

    publish(BATCH_HOSTS[:1])
    assert enqueued == [("git", [items[0].task_id])]
    publish(BATCH_HOSTS[1:4])
    assert c.poll() == 0 and len(enqueued) == 1  # the job still waits: the three are left due for it
    job = queue.jobs[0]
    job.set_status(JobStatus.STARTED)  # what a worker does when it takes the job
    assert claim_more(streams, Settings.load(), "git", [items[0].task_id], job.id) == \
        [i.task_id for i in items[:4]]
    assert c.poll() == 0 and len(enqueued) == 1  # nothing is due any more: no job for nothing
    publish(BATCH_HOSTS[4:5])
    assert enqueued[1:] == [("git", [items[4].task_id])]  # the first job has started: a job of its own
    queue.empty()


@pytest.mark.parametrize("poison", ["malformed", "refused-by-the-index"])
def test_a_batch_with_one_poisoned_message_commits_the_others_and_dead_letters_only_it(
        streams, sessions, consumer, inventory, commits, poison):
    write_inventory(inventory, BATCH_HOSTS)
    run_id = uuid.uuid4().hex
    hosts = BATCH_HOSTS[:6]
    for h in hosts[:3]:
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message())
    if poison == "malformed":  # it cannot be parsed: left out of the batch, which still commits as one
        bad_id = streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "x", "data": "{not json"})
        bad_stream = DEVICE_RESULTS_STREAM
    else:  # it parses, but the index refuses it: the batch is rolled back and applied one message at a time
        broken = _storage_result(run_id, hosts[0], "git")
        broken.status = StorageStatus.PENDING
        broken.next_attempt_at = "soon"
        bad_id = streams.xadd(STORAGE_RESULTS_STREAM, broken.to_message())
        bad_stream = STORAGE_RESULTS_STREAM
    for h in hosts[3:]:
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message())
    c = consumer("c1", max_deliveries=1)
    assert c.poll() == 7
    assert (c.dead, c.failed) == (1, 0)
    assert len(commits) == (1 if poison == "malformed" else 6)
    assert (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy)) == (6, 6, 12)
    with sessions() as s:
        assert {c.status for c in s.scalars(select(Copy))} == {"pending"}  # the refused storage result left no trace
    (_, dead), = streams.xrange(dead_letter_stream(bad_stream))
    assert dead[b"source_id"] == bad_id
    assert _pending(streams, DEVICE_RESULTS_STREAM) == [] and _pending(streams, STORAGE_RESULTS_STREAM) == []
    other = STORAGE_RESULTS_STREAM if bad_stream == DEVICE_RESULTS_STREAM else DEVICE_RESULTS_STREAM
    assert streams.xlen(dead_letter_stream(other)) == 0


def test_a_message_that_must_wait_is_left_out_of_the_batch_and_applied_later(streams, sessions, consumer, inventory,
                                                                              commits):
    write_inventory(inventory, BATCH_HOSTS)
    run_id = uuid.uuid4().hex
    early = streams.xadd(STORAGE_RESULTS_STREAM, _storage_result(run_id, "b01", "git").to_message())
    for h in ("b00", "b02"):
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h, targets="git").to_message())
    streams.xadd(STORAGE_RESULTS_STREAM, _storage_result(run_id, "b00", "git").to_message())
    c = consumer("c1", claim_idle_ms=100, max_deliveries=1)
    assert c.poll() == 4
    assert len(commits) == 1 and c.waiting == 1 and c.committed == 3
    (waiting,) = _pending(streams, STORAGE_RESULTS_STREAM)  # not acknowledged: it waits for b01's device result
    assert waiting["message_id"] == early and _pending(streams, DEVICE_RESULTS_STREAM) == []
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "b01", targets="git").to_message())
    c.run(idle_exit=0.5, stop=within(20))
    with sessions() as s:
        assert sorted((v.device.name, c.status) for v in s.scalars(select(Version)) for c in v.copies) == [
            ("b00", "stored"), ("b01", "stored"), ("b02", "pending")]
    assert streams.xlen(dead_letter_stream(STORAGE_RESULTS_STREAM)) == 0  # waiting never counts towards it
    assert _pending(streams, STORAGE_RESULTS_STREAM) == []


def test_a_batch_redelivered_after_a_crash_between_commit_and_ack_stores_nothing_twice(
        streams, sessions, consumer, enqueued, redis_server, index_url, inventory, commits, monkeypatch):
    import multiprocessing
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))  # see the test above
    write_inventory(inventory, BATCH_HOSTS)
    run_id = uuid.uuid4().hex
    items = [_stage(streams, run_id, h) for h in BATCH_HOSTS]
    for h in BATCH_HOSTS:
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message())
    consumer("crasher")
    child = multiprocessing.get_context("spawn").Process(
        target=_crashing_consumer, args=(redis_server.url, index_url, str(inventory)))
    child.start()
    child.join(60)
    assert child.exitcode == 17  # died right after the batch's commit, before any after-commit step or ack
    assert _count(sessions, Version) == 8 and _events(streams) == []
    assert len(_pending(streams, DEVICE_RESULTS_STREAM)) == 8
    before = (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy))
    assert before == (8, 8, 16)
    restarted = consumer("crasher")
    restarted.run(idle_exit=0.3, stop=within(20))  # its own pending batch again
    assert restarted.applied == 0 and restarted.committed == 8  # recorded before: the same decisions again
    assert (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy)) == before
    assert sorted(e["device"] for e in _events(streams)) == BATCH_HOSTS  # one event per version
    assert sorted(enqueued) == [("fs", [i.task_id for i in items]), ("git", [i.task_id for i in items])]
    assert _pending(streams, DEVICE_RESULTS_STREAM) == []
    for h in BATCH_HOSTS:  # and replayed once more
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message())
    consumer("c2").run(idle_exit=0.3, stop=within(20))
    assert (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy)) == before
    assert len(_events(streams)) == 8 and len(enqueued) == 2
