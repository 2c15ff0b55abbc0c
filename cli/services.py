"""Start and stop the processes DeviceVault runs on one machine: redis-server, workers, the consumer.

Used by ``devicevault demo`` and by the test suite (which starts them once per session).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlparse

from jobs.processes import end_with_parent
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


def redis_password(path: Path) -> str:
    """The password of the Redis DeviceVault starts: read from ``path``, or generated once and written there
    with mode 0600 (never printed; ``jobs.settings`` puts it into the Redis URL)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    password = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it meanwhile
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(password + "\n")
    return password


@dataclass
class RedisServer:
    """A real ``redis-server`` (Debian's package) with its data in ``directory``, locked down: it requires
    the password of ``password_file`` (default ``<directory>/password``, created once, mode 0600), listens on
    ``host`` only (loopback unless told otherwise) and keeps an append-only file. The password reaches
    redis-server through a configuration file of mode 0600, never the command line (``ps`` shows that)."""

    directory: Path
    port: int
    host: str = "127.0.0.1"
    password_file: Path | None = None

    @property
    def password(self) -> str:
        return redis_password(self.password_file or self.directory / "password")

    @property
    def url(self) -> str:
        """The URL to connect with (holds the password: never print it; :attr:`shown_url` is for people)."""
        return f"redis://:{quote(self.password, safe='')}@{self.host}:{self.port}/0"

    @property
    def shown_url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.directory / "redis.pid"

    def _config(self) -> Path:
        config = self.directory / "redis.conf"
        lines = [f"port {self.port}", f"bind {self.host}", f"dir {self.directory}", "daemonize yes",
                 "appendonly yes", "appendfsync everysec", 'save ""', f"pidfile {self.pidfile}",
                 f"logfile {self.directory / 'redis.log'}", f'requirepass "{self.password}"']
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        return config

    def start(self, timeout: float = 20) -> "RedisServer":
        binary = shutil.which("redis-server")
        if binary is None:
            raise ServiceError("redis-server is not installed (Debian: apt-get install -y redis-server)")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)  # the append-only file holds the outbox: configurations not yet stored
        subprocess.run([binary, str(self._config())], check=True)
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


def _listens_on(bind: str, host: str) -> bool:
    """Whether a server bound to ``bind`` answers at ``host``."""
    return host == bind or bind in ("0.0.0.0", "::") or (host == "localhost" and bind in ("127.0.0.1", "::1"))


def ensure_redis(settings, echo=print) -> RedisServer | None:
    """The Redis of ``settings.redis_url``: a redis-server that answers there is used (with a warning when it
    keeps no append-only file or takes connections without a password); otherwise one is started, locked
    down (:class:`RedisServer`), on ``DEVICEVAULT_REDIS_BIND`` and returned. Settings loaded before this
    call may lack the new password: load them again."""
    from jobs.ops.status import redis_warnings
    from jobs.settings import redact_url

    host, port = redis_address(settings.redis_url)
    if port_open(host, port):
        from redis import Redis

        # something listens there: it must answer as Redis, with our password (else one line, cli.common)
        Redis.from_url(settings.redis_url, socket_timeout=10, socket_connect_timeout=10).ping()
        echo(f"using the redis-server at {redact_url(settings.redis_url)}")
        for warning in redis_warnings(settings.redis_url):
            echo(f"warning: {warning}")
        return None
    if not _listens_on(settings.redis_bind, host):
        raise ServiceError(f"DEVICEVAULT_REDIS_URL names {host}, but the redis-server DeviceVault starts listens "
                           f"on DEVICEVAULT_REDIS_BIND={settings.redis_bind}; set DEVICEVAULT_REDIS_BIND={host} "
                           "to listen there (clients then need its password)")
    server = RedisServer(settings.home / "redis", port, settings.redis_bind,
                         password_file=settings.redis_password_file).start()
    echo(f"redis-server started at {server.shown_url} (password in {server.password_file or server.directory / 'password'}, "
         f"data in {server.directory})")
    return server


@dataclass
class Process:
    """A background DeviceVault process (``python -m cli ...``) with its output in a log file."""

    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    #: SIGTERM it when the process that started it dies (``devicevault up``'s children; the demo's outlive it)
    with_parent: bool = False

    def start(self) -> "Process":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, LC_ALL="C.UTF-8", **self.env)
        # the same cli package as this process (a checkout or an installed one), in the same working
        # directory (so a relative DEVICEVAULT_HOME or the default ./var means the same place)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE_ROOT), env.get("PYTHONPATH")]))
        with open(self.log, "ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cli", *self.args], stdout=out, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=end_with_parent if self.with_parent else None,
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
