"""Shared fixtures: one real redis-server (locked down as DeviceVault starts it: a password, loopback, AOF), one
lab and one set of DeviceVault processes per test session; a throwaway PostgreSQL cluster for the index tests
that run on both SQLite and PostgreSQL (``index_url``)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.services import Process, RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("LC_ALL", "C.UTF-8")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"), free_port()).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres():
    """One throwaway PostgreSQL cluster per session (``tests/postgres.py``), started on first use; skipped
    where PostgreSQL is not installed (``.ci/run`` installs it)."""
    from tests.postgres import PostgresCluster, bin_dir

    if bin_dir() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def index_url(request, tmp_path):
    """The URL of a new, empty index: a SQLite file, then a PostgreSQL database (tests using it run on both)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture()
def redis(redis_server):
    from redis import Redis

    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture()
def streams(redis):
    """The session Redis with empty result streams and dead-letter streams, as on a new installation."""
    from jobs.streams.consumer import STREAMS, dead_letter_stream

    names = [*STREAMS, *(dead_letter_stream(s) for s in STREAMS)]
    redis.delete(*names)
    yield redis
    redis.delete(*names)


class DeviceVault:
    """Runs ``devicevault`` (as ``python -m cli``) with one session's settings, like a user at a shell."""

    def __init__(self, env: dict[str, str], home: Path):
        self.env = env
        self.home = home

    def __call__(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "cli", *args], env={**os.environ, **self.env}, cwd=ROOT,
            capture_output=True, text=True, timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"devicevault {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str, check: bool = True):
        return json.loads(self(*args, "--json", check=check).stdout)

    def process(self, *args: str, name: str, env: dict[str, str] | None = None) -> Process:
        return Process(list(args), self.home / "logs" / f"{name}.log", env={**self.env, **(env or {})})

    @property
    def settings(self):
        from jobs.settings import Settings

        return Settings.load(env=self.env)


@contextlib.contextmanager
def serving(tool: DeviceVault, inventory: Path, name: str, personalities_dir: Path | None = None):
    """The lab of ``inventory`` (state under ``tool.home / "lab"``), one worker serving every queue and the
    index consumer, as processes, for as long as the block runs (a module fixture's ``yield`` inside it)."""
    from lab.testing import start_lab, stop_lab

    start_lab(inventory, tool.home / "lab", personalities_dir=personalities_dir)
    procs = []
    try:
        procs.append(tool.process("worker", "--name", f"{name}-{free_port()}", name="worker").start())
        procs.append(tool.process("consumer", "--name", f"{name}-indexer", "--claim-idle", "2", name="consumer").start())
        yield tool
    finally:
        for proc in procs:
            proc.stop()
        stop_lab(tool.home / "lab")


def wait_for(condition, what: str, timeout: float = 60, interval: float = 0.2):
    """``condition()``'s first true value, polled every ``interval`` seconds; an AssertionError naming ``what``
    after ``timeout`` seconds (tests wait for conditions, never for fixed times)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def redis_blobs(redis_url: str) -> list[bytes]:
    """Every value in a Redis database, to search for secrets: strings, hashes (the outbox, caches), lists,
    sets, sorted sets (RQ's jobs and registries) and stream entries, each also zlib-decompressed (RQ job
    data) where that works."""
    import zlib

    from redis import Redis

    redis = Redis.from_url(redis_url)
    blobs: list[bytes] = []
    for key in redis.scan_iter():
        kind = redis.type(key)
        if kind == b"string":
            blobs.append(redis.get(key) or b"")
        elif kind == b"hash":
            blobs += list(redis.hgetall(key).values())
        elif kind == b"list":
            blobs += redis.lrange(key, 0, -1)
        elif kind == b"set":
            blobs += list(redis.smembers(key))
        elif kind == b"zset":
            blobs += redis.zrange(key, 0, -1)
        elif kind == b"stream":
            blobs += [json.dumps({k.decode(): v.decode() for k, v in f.items()}).encode() for _, f in redis.xrange(key)]
    expanded = []
    for blob in blobs:
        expanded.append(blob)
        try:
            expanded.append(zlib.decompress(blob))
        except zlib.error:
            pass
    return expanded
