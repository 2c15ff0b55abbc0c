"""Start and stop the processes DeviceVault runs on one machine: redis-server, workers, the consumer.

Used by ``devicevault demo`` and by the test suite (which starts them once per session).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from jobs.settings import SOURCE_ROOT


class ServiceError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@dataclass
class RedisServer:
    """A real ``redis-server`` (Debian's package) with its data in ``directory``."""

    directory: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def start(self, timeout: float = 20) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed (Debian: apt-get install -y redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.directory),
             "--daemonize", "yes", "--appendonly", "yes", "--save", "", "--pidfile", str(self.pidfile),
             "--logfile", str(self.directory / "redis.log")],
            check=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if time.monotonic() > deadline:
                raise ServiceError(f"redis-server did not start on {self.host}:{self.port}; see {self.directory / 'redis.log'}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except OSError:
                return
            time.sleep(0.05)


def redis_address(url: str) -> tuple[str, int]:
    parsed = urlparse(url)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379


@dataclass
class Process:
    """A background DeviceVault process (``python -m cli ...``) with its output in a log file."""

    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None

    def start(self) -> "Process":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, LC_ALL="C.UTF-8", **self.env)
        # the same cli package as this process (a checkout or an installed one), in the same working
        # directory (so a relative DEVICEVAULT_HOME or the default ./var means the same place)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args], stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,
            )
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        try:
            os.killpg(self.popen.pid, sig)
        except OSError:
            pass
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            return self.popen.wait(5)

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
