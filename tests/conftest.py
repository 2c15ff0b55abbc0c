"""Shared fixtures: one real redis-server, one lab and one set of DeviceVault processes per test session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


@pytest.fixture()
def redis(redis_server):
    from redis import Redis

    client = Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture()
def streams(redis):
    """The session Redis with empty result streams and dead-letter streams, as on a new installation."""
    from jobs.consumer import STREAMS, dead_letter_stream

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
