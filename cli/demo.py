"""``devicevault demo``: everything on one machine, from nothing, with the embedded defaults.

Starts a real redis-server (if none answers at the configured URL), the simulated lab, the workers
(``DEVICEVAULT_WORKERS``), the index consumer, the notifier and the scheduler in the background, backs up every
lab device and prints a per-device summary. The processes keep running so you can look around (``devicevault
devices``, ``diff``, ``lab change``…); ``devicevault demo --stop`` stops them.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from jobs.processes import process_gone
from jobs.settings import Settings

from .services import Process, RedisServer, ensure_redis, port_open, redis_address


#: seconds the demo's processes get to end after SIGTERM before they are killed
STOP_GRACE = 30.0


def _pidfile(settings: Settings, name: str) -> Path:
    return settings.home / "run" / f"{name}.pid"


def _alive(pidfile: Path) -> bool:
    try:
        os.kill(int(pidfile.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


def start_services(settings: Settings, echo=print, portal_port: int = 8501) -> None:
    """Start what the demo runs (what already runs is kept); ``portal_port`` 0: no portal."""
    from lab import commands as lab

    ensure_redis(settings, echo)
    pid = lab.up(settings.inventory, settings.home / "lab", daemon=True)
    echo(f"lab up (pid {pid}): devices from {settings.inventory}")
    plan = [(f"worker-{i}", ["worker", "--name", f"demo-worker-{i}-{os.getpid()}"])
            for i in range(1, settings.workers + 1)]
    plan += [("consumer", ["consumer", "--name", "demo-consumer"]),
             ("notifier", ["notifier", "--name", "demo-notifier"]),
             ("scheduler", ["scheduler"])]
    for name, args in plan:
        pidfile = _pidfile(settings, name)
        if _alive(pidfile):
            continue
        proc = Process(args, settings.home / "logs" / f"{name}.log").start()
        pidfile.parent.mkdir(parents=True, exist_ok=True)
        pidfile.write_text(str(proc.popen.pid))
        echo(f"{name} started (pid {proc.popen.pid}, log {settings.home / 'logs' / (name + '.log')})")
    if portal_port:
        _start_portal(settings, echo, portal_port)


def _start_portal(settings: Settings, echo, port: int = 8501) -> None:
    """The portal on ``port``; on first use a user ``admin`` with a random password, printed once here."""
    import secrets

    from portal.users import UsersFile

    users = UsersFile(settings.users_file or settings.home / "users.yml")
    if not users.users():
        password = secrets.token_urlsafe(12)
        users.add("admin", "admin", password)
        echo(f"portal user admin created; its password (shown only now): {password}")
    pidfile = _pidfile(settings, "portal")
    if _alive(pidfile) or port_open("127.0.0.1", port):
        return
    proc = Process(["portal", "--port", str(port), "--address", "127.0.0.1"],
                   settings.home / "logs" / "portal.log").start()
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.write_text(str(proc.popen.pid))
    echo(f"portal: http://127.0.0.1:{port} (more users: devicevault users add NAME --role viewer|operator|admin)")


def stop_services(settings: Settings, echo=print) -> None:
    from lab import commands as lab

    stopping = {}
    workers = sorted(p.stem for p in (settings.home / "run").glob("worker-*.pid"))  # however many were started
    for name in (*workers, "consumer", "notifier", "scheduler", "portal"):
        pidfile = _pidfile(settings, name)
        if _alive(pidfile):
            stopping[name] = int(pidfile.read_text())
            os.killpg(stopping[name], signal.SIGTERM)
        pidfile.unlink(missing_ok=True)
    # they say goodbye to Redis on the way out (a worker unregisters, the consumer leaves its group): Redis
    # stops only after them, or they would wait for it to come back (they ride out Redis restarts)
    deadline = time.monotonic() + STOP_GRACE
    while any(not process_gone(pid) for pid in stopping.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for name, pid in stopping.items():
        if not process_gone(pid):
            os.killpg(pid, signal.SIGKILL)
        echo(f"{name} stopped")
    lab.down(settings.home / "lab")
    echo("lab stopped")
    redis_dir = settings.home / "redis"
    if (redis_dir / "redis.pid").exists():
        _, port = redis_address(settings.redis_url)
        RedisServer(redis_dir, port, settings.redis_bind).stop()
        echo("redis-server stopped")
