"""Result streams that never drop a message, against a real redis-server, a real SQLite index and real
``devicevault consumer`` processes: a consumer killed with SIGKILL while holding 100 messages, poison
messages and unknown devices dead-lettered after N tries without blocking the others, replay from the
dead-letter stream, several consumers at once, and trimming only below what every group has processed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select

from jobs.streams.consumer import GROUP, Consumer, stream_status, trim_streams
from jobs.streams.deadletters import dead_letter_stream
from jobs.streams.results import DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM
from storage.index.db import connect
from storage.index.models import Copy, DeviceResultRow, Version
from tests.conftest import DeviceVault
from tests.test_consumer import _device_result, _storage_result, within, write_inventory

DEVICE_DEAD = dead_letter_stream(DEVICE_RESULTS_STREAM)


@pytest.fixture()
def vault(tmp_path, redis_server) -> DeviceVault:
    """``devicevault`` with this test's Redis, SQLite index and inventory (``vault.inventory``)."""
    home = tmp_path / "home"
    home.mkdir()
    tool = DeviceVault({
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url,
        "DEVICEVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'index.sqlite'}",
        "DEVICEVAULT_INVENTORY": str(tmp_path / "hosts.ini"),
    }, home)
    tool.inventory = tmp_path / "hosts.ini"
    tool.db_path = tmp_path / "index.sqlite"
    tool.sessions = connect(tool.env["DEVICEVAULT_DATABASE_URL"])  # creates the schema
    return tool


def _publish(redis, run_id: str, hosts: list[str], targets=("git",)) -> int:
    """Device results with their candidates staged, as the collector publishes them (an unstaged one is a text
    Redis lost: jobs.deliver.release), and a storage result per target; returns the number of messages."""
    from jobs.deliver import outbox

    pipe = redis.pipeline(transaction=False)
    for h in hosts:
        outbox.stage(pipe, [outbox.StorageItem(task_id=f"{run_id}:{h}", run_id=run_id, device=h, group="site_x",
                                               sha256="a" * 64, config=f"hostname {h}\n", targets=tuple(targets))])
        pipe.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h, targets=",".join(targets)).to_message())
        for t in targets:
            pipe.xadd(STORAGE_RESULTS_STREAM, _storage_result(run_id, h, t).to_message())
    return sum(1 for reply in pipe.execute() if isinstance(reply, bytes))  # the stream entries' ids


def _scalar(sessions, query):
    with sessions() as s:
        return s.scalar(query)


def _each_once(sessions, model) -> tuple[int, int]:
    """(rows, rows whose task id appears more than once)."""
    with sessions() as s:
        rows = s.scalar(select(func.count()).select_from(model))
        dupes = s.scalar(select(func.count()).select_from(
            select(model.task_id).group_by(model.task_id).having(func.count() > 1).subquery()))
    return rows, dupes


def _versions(sessions) -> tuple[int, int]:
    """(versions, distinct (device, run) pairs among them)."""
    with sessions() as s:
        total = s.scalar(select(func.count()).select_from(Version))
        distinct = s.scalar(select(func.count()).select_from(
            select(Version.device_id, Version.run_id).distinct().subquery()))
    return total, distinct


def _consumer_pending(redis, name: str) -> int:
    total = 0
    for stream in (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM):
        total += sum(c["pending"] for c in redis.xinfo_consumers(stream, GROUP) if c["name"] == name.encode())
    return total


def _group_pending(redis) -> int:
    return sum(redis.xpending(s, GROUP)["pending"] for s in (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM))


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


# --- a consumer killed while holding 100 messages ---------------------------------------------------------
def test_consumer_killed_with_100_pending_messages_is_taken_over_and_each_result_lands_once(streams, vault):
    hosts = [f"h{i:02}" for i in range(50)]
    write_inventory(vault.inventory, hosts)
    Consumer(streams, vault.sessions, name="setup", inventory=None)  # the group, before anything is published
    run_id = uuid.uuid4().hex
    assert _publish(streams, run_id, hosts) == 100
    # hold the index's write lock: c1 takes its whole batch (100 messages) but cannot commit any of it
    lock = sqlite3.connect(vault.db_path, timeout=0, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    c1 = vault.process("consumer", "--name", "c1", "--claim-idle", "60", name="c1").start()
    try:
        _wait(lambda: _consumer_pending(streams, "c1") == 100, 60, "c1 to hold 100 messages")
        time.sleep(0.3)
    finally:
        c1.stop(signal.SIGKILL)
        lock.rollback()
        lock.close()
    assert c1.popen.returncode == -signal.SIGKILL
    assert _consumer_pending(streams, "c1") == 100  # died holding them, nothing acknowledged
    # the locked index was an outage, not the messages' fault: c1 kept them in hand without redelivering
    assert {e["times_delivered"] for s in (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM)
            for e in streams.xpending_range(s, GROUP, "-", "+", 200)} == {1}
    assert _each_once(vault.sessions, DeviceResultRow) == (0, 0)

    out = vault("consumer", "--name", "c2", "--claim-idle", "0.2", "--idle-exit", "1.5", timeout=120)
    assert "c2: 100 result(s) applied" in out.stderr
    assert _each_once(vault.sessions, DeviceResultRow) == (50, 0)
    assert _each_once(vault.sessions, Copy) == (50, 0)
    assert _versions(vault.sessions) == (50, 50)
    assert _group_pending(streams) == 0
    assert streams.xlen(DEVICE_DEAD) == 0 and streams.xlen(dead_letter_stream(STORAGE_RESULTS_STREAM)) == 0


# --- poison messages, unknown devices, replay -------------------------------------------------------------
def test_poison_and_unknown_device_are_dead_lettered_after_n_tries_while_20_good_ones_are_applied(streams, vault):
    hosts = [f"r{i}" for i in range(1, 21)]
    write_inventory(vault.inventory, hosts)
    run_id = uuid.uuid4().hex
    poison_id = streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "poison", "data": "{not json"}).decode()
    ghost_id = streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "ghost").to_message()).decode()
    for h in hosts:
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, h).to_message())

    c = Consumer(streams, vault.sessions, name="c1", block_ms=50, claim_idle_ms=100, max_deliveries=3,
                 inventory=vault.inventory, trim_interval=None)
    assert c.poll() == 22
    # the 20 good ones are applied while the unknown device is still pending; the poison is dead at once
    assert _each_once(vault.sessions, DeviceResultRow) == (20, 0)
    (pending,) = streams.xpending_range(DEVICE_RESULTS_STREAM, GROUP, "-", "+", 10)
    assert pending["message_id"].decode() == ghost_id and pending["times_delivered"] == 1
    assert [e[1][b"source_id"].decode() for e in streams.xrange(DEVICE_DEAD)] == [poison_id]

    deadline = time.monotonic() + 20
    c.run(stop=lambda: streams.xlen(DEVICE_DEAD) == 2 or time.monotonic() > deadline)
    assert c.failed == 2 and c.dead == 2  # tried 3 times: 2 failures left pending, dead on the 3rd
    assert streams.xpending(DEVICE_RESULTS_STREAM, GROUP)["pending"] == 0

    listed = {e["source_id"]: e for e in vault.json("dlq", "list")}
    assert set(listed) == {poison_id, ghost_id}
    ghost = listed[ghost_id]
    assert ghost["stream"] == DEVICE_RESULTS_STREAM and ghost["device"] == "ghost"
    assert ghost["task_id"] == f"{run_id}:ghost" and ghost["deliveries"] == 3 and ghost["dead_at"]
    assert "'ghost'" in ghost["error"] and str(vault.inventory) in ghost["error"]
    assert listed[poison_id]["deliveries"] == 1 and "malformed" in listed[poison_id]["error"]

    shown = vault("dlq", "show", ghost["id"]).stdout
    assert '"device": "ghost"' in shown and f"source_id:          {ghost_id}" in shown
    assert vault.json("dlq", "show", ghost["id"])["payload"]["device"] == "ghost"

    write_inventory(vault.inventory, hosts + ["ghost"])
    replayed = vault("dlq", "replay", ghost["id"]).stdout
    assert f"replayed {ghost['id']} to {DEVICE_RESULTS_STREAM}" in replayed and "device ghost" in replayed
    c2 = Consumer(streams, vault.sessions, name="c2", block_ms=50, inventory=vault.inventory)
    c2.run(idle_exit=0.3, stop=within(20))
    assert _each_once(vault.sessions, DeviceResultRow) == (21, 0)

    again = vault("dlq", "replay", ghost["id"], check=False)
    assert again.returncode == 1 and again.stderr.strip() == (
        f"Error: no dead-letter entry {ghost['id']} in {DEVICE_DEAD} or {dead_letter_stream(STORAGE_RESULTS_STREAM)}")
    # the same result put back once more (two operators replaying it) is still applied once
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "ghost").to_message())
    c2 = Consumer(streams, vault.sessions, name="c2", block_ms=50, inventory=vault.inventory)
    c2.run(idle_exit=0.3, stop=within(20))
    assert _each_once(vault.sessions, DeviceResultRow) == (21, 0)

    poison = listed[poison_id]["id"]
    refused = subprocess.run([sys.executable, "-m", "cli", "dlq", "purge", poison], input="n\n", text=True,
                             capture_output=True, env={**os.environ, **vault.env}, timeout=60)
    assert refused.returncode == 1 and "Aborted" in refused.stderr and streams.xlen(DEVICE_DEAD) == 1
    assert "1 dead letter(s) purged" in vault("dlq", "purge", poison, "--yes").stdout
    assert streams.xlen(DEVICE_DEAD) == 0 and vault("dlq", "list").stdout.strip() == "(none)"


def test_dlq_replay_all_and_clear_errors(streams, vault):
    write_inventory(vault.inventory, ["r1"])
    consumer = Consumer(streams, vault.sessions, name="c1", block_ms=50, max_deliveries=1, inventory=vault.inventory,
                        trim_interval=None)
    run_id = uuid.uuid4().hex
    for host in ("x1", "x2"):
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, host, targets="git").to_message())
    streams.xadd(STORAGE_RESULTS_STREAM, _storage_result(run_id, "x1", "git").to_message())
    consumer.run(idle_exit=0.3, stop=within(20))
    assert len(vault.json("dlq", "list")) == 3
    assert len(vault.json("dlq", "list", "--stream", "storage")) == 1
    bad = vault("dlq", "show", "nonsense", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error: 'nonsense' is not a stream entry id (like 1712345678901-0)"
    none = vault("dlq", "replay", check=False)
    assert none.returncode == 1 and "or --all" in none.stderr
    write_inventory(vault.inventory, ["r1", "x1", "x2"])
    rows = vault.json("dlq", "replay", "--all")
    assert sorted(r["device"] for r in rows) == ["x1", "x1", "x2"]
    assert vault.json("dlq", "list") == []
    consumer.run(idle_exit=0.3, stop=within(20))
    assert _each_once(vault.sessions, DeviceResultRow) == (2, 0)
    assert _each_once(vault.sessions, Copy) == (2, 0)  # one git copy per version, created by the decision
    with vault.sessions() as s:
        assert sorted(s.scalars(select(Copy.status)).all()) == ["pending", "stored"]  # x1's landed, x2's waits


# --- several consumers at once ----------------------------------------------------------------------------
def test_three_consumer_processes_apply_300_messages_each_once(streams, vault):
    hosts = [f"s{i:03}" for i in range(100)]
    write_inventory(vault.inventory, hosts)
    Consumer(streams, vault.sessions, name="setup", inventory=None)
    names = ["c1", "c2", "c3"]
    procs = [vault.process("consumer", "--name", n, "--claim-idle", "5", name=n).start() for n in names]
    try:
        def readers() -> set[str]:
            return {c["name"].decode() for c in streams.xinfo_consumers(DEVICE_RESULTS_STREAM, GROUP)}

        _wait(lambda: readers() >= set(names), 60, "three consumers reading")
        run_id = uuid.uuid4().hex
        published = 0
        for i in range(0, 100, 5):  # a steady flow while they read
            published += _publish(streams, run_id, hosts[i:i + 5], targets=("git", "fs"))
            time.sleep(0.02)
        assert published == 300
        _wait(lambda: _scalar(vault.sessions, select(func.count()).select_from(Copy)) == 200
              and _group_pending(streams) == 0, 90, "every result applied and acknowledged")
    finally:
        codes = [p.stop() for p in procs]  # SIGTERM: each finishes its batch and prints what it applied
    assert codes == [0, 0, 0]
    applied = {}
    for p, n in zip(procs, names):
        line = [ln for ln in p.log.read_text().splitlines() if ln.startswith(f"consumer {n}:")][-1]
        applied[n] = int(line.split(": ")[1].split()[0])
    assert sum(applied.values()) == 300, applied
    assert sum(1 for v in applied.values() if v) >= 2, applied  # they really shared the work
    assert _each_once(vault.sessions, DeviceResultRow) == (100, 0)
    assert _each_once(vault.sessions, Copy) == (200, 0)
    assert _versions(vault.sessions) == (100, 100)
    assert _group_pending(streams) == 0 and streams.xlen(DEVICE_DEAD) == 0


# --- trimming and status ----------------------------------------------------------------------------------
def test_trimming_removes_only_what_every_group_has_processed(streams, tmp_path):
    sessions = connect(f"sqlite:///{tmp_path / 'index.sqlite'}")
    # no releaser: these results stage nothing (with one, each would be a text Redis lost: jobs.deliver.release)
    c = Consumer(streams, sessions, name="c1", block_ms=50, inventory=None, trim_interval=0, releaser=None)
    streams.xgroup_create(DEVICE_RESULTS_STREAM, "laggard", id="0")
    run_id = uuid.uuid4().hex
    ids = [streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, f"r{i}").to_message()) for i in range(10)]
    streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "bad", "data": "{"})  # dead-lettered by the indexer
    ids.append(streams.xrange(DEVICE_RESULTS_STREAM)[-1][0])
    # the laggard read 5 and acknowledged 3 of them
    streams.xreadgroup("laggard", "slow", {DEVICE_RESULTS_STREAM: ">"}, count=5)
    streams.xack(DEVICE_RESULTS_STREAM, "laggard", *ids[:3])

    assert trim_streams(streams) == {DEVICE_RESULTS_STREAM: 0, STORAGE_RESULTS_STREAM: 0}  # indexer read nothing
    c.run(idle_exit=0.3, stop=within(20))  # applies everything, and trims on the way (trim_interval=0)
    assert c.trimmed == 3
    assert [i for i, _ in streams.xrange(DEVICE_RESULTS_STREAM)] == ids[3:]  # from the laggard's oldest pending

    streams.xack(DEVICE_RESULTS_STREAM, "laggard", ids[3])
    assert trim_streams(streams)[DEVICE_RESULTS_STREAM] == 1
    streams.xack(DEVICE_RESULTS_STREAM, "laggard", ids[4])
    assert trim_streams(streams)[DEVICE_RESULTS_STREAM] == 1
    assert trim_streams(streams)[DEVICE_RESULTS_STREAM] == 0  # the rest was never delivered to the laggard
    assert [i for i, _ in streams.xrange(DEVICE_RESULTS_STREAM)] == ids[5:]

    # a message pending in the indexer group holds trimming back just the same
    streams.xreadgroup("laggard", "slow", {DEVICE_RESULTS_STREAM: ">"})
    streams.xack(DEVICE_RESULTS_STREAM, "laggard", *ids[5:])
    late = streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "late").to_message())
    streams.xreadgroup(GROUP, "crashed", {DEVICE_RESULTS_STREAM: ">"})
    streams.xreadgroup("laggard", "slow", {DEVICE_RESULTS_STREAM: ">"})
    streams.xack(DEVICE_RESULTS_STREAM, "laggard", late)
    assert trim_streams(streams)[DEVICE_RESULTS_STREAM] == 6
    assert [i for i, _ in streams.xrange(DEVICE_RESULTS_STREAM)] == [late]

    assert streams.xlen(DEVICE_DEAD) == 1  # dead letters are never trimmed automatically
    with pytest.raises(ValueError, match="never trimmed"):
        trim_streams(streams, [DEVICE_DEAD])


def test_stream_status_reports_length_consumers_pending_lag_and_dead_letters(streams, tmp_path):
    sessions = connect(f"sqlite:///{tmp_path / 'index.sqlite'}")
    assert {r["stream"]: (r["group"], r["length"], r["lag"]) for r in stream_status(streams)} == {
        DEVICE_RESULTS_STREAM: (None, 0, 0), STORAGE_RESULTS_STREAM: (None, 0, 0)}
    c = Consumer(streams, sessions, name="c1", block_ms=50, inventory=None, trim_interval=None, releaser=None)
    run_id = uuid.uuid4().hex
    for i in range(6):
        streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, f"r{i}").to_message())
    streams.xadd(DEVICE_RESULTS_STREAM, {"task_id": "bad", "data": "{"})
    c.poll()  # 6 applied, 1 dead-lettered
    streams.xgroup_create(DEVICE_RESULTS_STREAM, "laggard", id="0")
    streams.xreadgroup("laggard", "slow", {DEVICE_RESULTS_STREAM: ">"}, count=2)
    streams.xadd(DEVICE_RESULTS_STREAM, _device_result(run_id, "r6").to_message())
    rows = {(r["stream"], r["group"]): r for r in stream_status(streams)}
    indexer = rows[(DEVICE_RESULTS_STREAM, GROUP)]
    assert indexer["length"] == 8 and indexer["pending"] == 0 and indexer["lag"] == 1
    assert indexer["dead_letters"] == 1 and indexer["dead_letter_stream"] == DEVICE_DEAD
    assert [(x["name"], x["pending"]) for x in indexer["consumers"]] == [("c1", 0)]
    assert isinstance(indexer["consumers"][0]["idle_ms"], int)
    laggard = rows[(DEVICE_RESULTS_STREAM, "laggard")]
    assert laggard["pending"] == 2 and laggard["lag"] == 6 and laggard["consumers"] == [
        {"name": "slow", "pending": 2, "idle_ms": laggard["consumers"][0]["idle_ms"]}]
    assert rows[(STORAGE_RESULTS_STREAM, GROUP)]["length"] == 0 and rows[(STORAGE_RESULTS_STREAM, GROUP)]["lag"] == 0
    # a deletion inside the undelivered range makes Redis stop reporting 'lag': it is counted instead
    streams.xdel(DEVICE_RESULTS_STREAM, streams.xrange(DEVICE_RESULTS_STREAM)[3][0])
    laggard = {(r["stream"], r["group"]): r for r in stream_status(streams)}[(DEVICE_RESULTS_STREAM, "laggard")]
    assert streams.xinfo_groups(DEVICE_RESULTS_STREAM)[1]["lag"] is None
    assert laggard["lag"] == 5
    json.dumps(stream_status(streams))  # plain data for `devicevault status --json`
