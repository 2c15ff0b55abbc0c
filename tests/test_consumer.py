"""The index consumer against a real redis-server and a real SQLite index: ack after commit, idempotent on
task id, pending messages taken over, malformed messages dead-lettered."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, select

from jobs.consumer import GROUP, Consumer, dead_letter_stream
from jobs.results import (
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


@pytest.fixture()
def streams(redis):
    # each test gets fresh streams, as if on a new installation
    redis.delete(DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM, dead_letter_stream(DEVICE_RESULTS_STREAM))
    yield redis


@pytest.fixture()
def sessions(tmp_path):
    return connect(f"sqlite:///{tmp_path / 'index.sqlite'}")


def _device_result(run_id: str, host: str, status=DeviceStatus.CHANGED, sha="a" * 64) -> DeviceResult:
    return DeviceResult(task_id=f"{run_id}:{host}", run_id=run_id, device=host, status=status, timestamp=utcnow(),
                        group="site_x", platform="cisco.ios.ios", sha256=sha, size=10)


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


def test_results_land_once_and_run_finishes(streams, sessions):
    run_id = uuid.uuid4().hex
    with sessions.begin() as s:
        create_run(s, run_id, total=3, selector="all", targets=["git", "fs"])
    _publish(streams, run_id, ["r1", "r2", "r3"])
    consumer = Consumer(streams, sessions, name="c1", block_ms=100)
    consumer.run(idle_exit=0.3)
    assert _count(sessions, DeviceResultRow) == 3
    assert _count(sessions, Version) == 3
    assert _count(sessions, Copy) == 6
    with sessions() as s:
        run = s.get(Run, run_id)
        assert run.finished_at is not None and run.status == "succeeded"
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 0
    assert streams.xpending(STORAGE_RESULTS_STREAM, GROUP)["pending"] == 0


def test_redelivered_message_changes_nothing(streams, sessions):
    run_id = uuid.uuid4().hex
    _publish(streams, run_id, ["r1"])
    Consumer(streams, sessions, name="c1", block_ms=100).run(idle_exit=0.3)
    before = (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy))
    _publish(streams, run_id, ["r1"])  # the same task ids again, as after a crash between commit and ack
    Consumer(streams, sessions, name="c2", block_ms=100).run(idle_exit=0.3)
    assert (_count(sessions, DeviceResultRow), _count(sessions, Version), _count(sessions, Copy)) == before == (1, 1, 2)


def test_messages_pending_on_a_dead_consumer_are_taken_over(streams, sessions):
    run_id = uuid.uuid4().hex
    Consumer(streams, sessions, name="dead")  # creates the group
    _publish(streams, run_id, ["r1", "r2"])
    # "dead" receives everything and dies before applying or acknowledging any of it
    streams.xreadgroup(GROUP, "dead", {DEVICE_RESULTS_STREAM: ">", STORAGE_RESULTS_STREAM: ">"})
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 2
    Consumer(streams, sessions, name="alive", block_ms=100, claim_idle_ms=0).run(idle_exit=0.3)
    assert _count(sessions, DeviceResultRow) == 2
    assert _count(sessions, Copy) == 4
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 0


def test_malformed_message_is_dead_lettered_not_dropped(streams, sessions):
    run_id = uuid.uuid4().hex
    streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "x", "data": "{not json"})
    _publish(streams, run_id, ["r1"])
    Consumer(streams, sessions, name="c1", block_ms=100).run(idle_exit=0.3)
    dead = streams.xrange(dead_letter_stream(DEVICE_RESULTS_STREAM))
    assert len(dead) == 1 and b"malformed" in dead[0][1][b"error"]
    assert _count(sessions, DeviceResultRow) == 1  # the message behind it flowed on


def test_unchanged_storage_outcome_of_the_latest_version_adds_no_version(streams, sessions):
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    _publish(streams, first, ["r1"])
    # a second run believed r1 changed (stale cache) but every target already held it
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(second, "r1").to_message())
    for t in ("git", "fs"):
        msg = _storage_result(second, "r1", t)
        msg.status = StorageStatus.UNCHANGED
        streams.xadd(STORAGE_RESULTS_STREAM, msg.to_message())
    Consumer(streams, sessions, name="c1", block_ms=100).run(idle_exit=0.3)
    assert _count(sessions, Version) == 1
    with sessions() as s:
        statuses = sorted(s.scalars(select(DeviceResultRow.status)).all())
    assert statuses == ["changed", "unchanged"]
