"""Issue 14, items 3 and 7: Redis locked down, RQ jobs as JSON (never pickle), and one clear line for every
operational error.

Real redis-server (the session's, locked down as ``devicevault up`` starts it, plus an open one started here),
real DeviceVault processes (``python -m cli``), a real lab on 127.0.110.x for the end-to-end JSON check; no
DeviceVault code is mocked. Redis database 10 of the session's server.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from cli.services import RedisServer, free_port, port_open
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
DB = 10


@pytest.fixture()
def dv(tmp_path, redis_server):
    """``devicevault`` with a home of its own, on database 10 of the session's locked-down Redis."""
    from redis import Redis

    from tests.conftest import DeviceVault

    url = redis_server.url.rsplit("/", 1)[0] + f"/{DB}"
    Redis.from_url(url).flushdb()
    env = {"DEVICEVAULT_HOME": str(tmp_path / "home"), "DEVICEVAULT_REDIS_URL": url}
    for key in ("DEVICEVAULT_DATABASE_URL", "DEVICEVAULT_STORAGE_CONFIG", "DEVICEVAULT_INDEX_WAIT"):
        env[key] = ""  # the documented defaults, whatever the environment of the test run says
    tool = DeviceVault(env, tmp_path / "home")
    yield tool
    Redis.from_url(url).flushdb()


# --- Redis locked down ----------------------------------------------------------------------------------------
def test_the_redis_devicevault_starts_refuses_clients_without_its_password(redis_server):
    port = str(redis_server.port)
    anonymous = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", port, "ping"], capture_output=True, text=True,
                               timeout=30, env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"})
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr and "PONG" not in anonymous.stdout
    print(f"\nredis-cli without the password: {(anonymous.stdout + anonymous.stderr).strip()!r}")
    wrong = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", port, "ping"], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "REDISCLI_AUTH": "not-the-password"})
    assert "PONG" not in wrong.stdout
    right = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", port, "ping"], capture_output=True, text=True,
                           timeout=30, env={**os.environ, "REDISCLI_AUTH": redis_server.password})
    assert right.stdout.strip() == "PONG"

    password_file = redis_server.directory / "password"
    assert password_file.stat().st_mode & 0o777 == 0o600
    assert (redis_server.directory / "redis.conf").stat().st_mode & 0o777 == 0o600
    assert redis_server.directory.stat().st_mode & 0o777 == 0o700  # the append-only file too
    pid = int(redis_server.pidfile.read_text())
    assert redis_server.password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()  # not visible in ps
    from redis import Redis

    config = Redis.from_url(redis_server.url, decode_responses=True).config_get("*")
    assert config["appendonly"] == "yes" and config["bind"].split() == ["127.0.0.1"]
    assert redis_server.password not in redis_server.shown_url


def test_the_url_setting_picks_up_the_password_and_never_shows_it(tmp_path):
    from jobs.settings import Settings

    server = RedisServer(tmp_path / "home" / "redis", free_port())
    password = server.password  # generated once, into <home>/redis/password
    assert server.password == password and (tmp_path / "home" / "redis" / "password").stat().st_mode & 0o777 == 0o600
    settings = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path / "home"),
                                  "DEVICEVAULT_REDIS_URL": f"redis://127.0.0.1:{server.port}/0"})
    assert settings.redis_url == f"redis://:{password}@127.0.0.1:{server.port}/0"
    assert password not in repr(settings) and "REDACTED" in repr(settings)
    assert password in settings.secrets()  # masked in every log line
    other = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path / "home"),
                               "DEVICEVAULT_REDIS_URL": "rediss://:own@redis.example.com:6380/0"})
    assert other.redis_url == "rediss://:own@redis.example.com:6380/0"  # a URL with its own password keeps it


def test_ensure_redis_starts_a_locked_down_redis_or_warns_about_an_open_one(tmp_path):
    """What ``up`` and ``demo`` do about Redis (cli.services.ensure_redis)."""
    from redis import Redis
    from redis.exceptions import AuthenticationError, ResponseError

    from cli.services import ensure_redis
    from jobs.settings import Settings

    port = free_port()
    env = {"DEVICEVAULT_HOME": str(tmp_path / "home"), "DEVICEVAULT_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    lines: list[str] = []
    server = ensure_redis(Settings.load(env=env), lines.append)
    try:
        assert server is not None and port_open("127.0.0.1", port)
        assert not any(server.password in line for line in lines), lines
        with pytest.raises((AuthenticationError, ResponseError)):
            Redis(port=port).ping()
        assert Redis.from_url(Settings.load(env=env).redis_url).ping()  # settings loaded again: the password
        again: list[str] = []
        assert ensure_redis(Settings.load(env=env), again.append) is None
        assert again == [f"using the redis-server at redis://:REDACTED@127.0.0.1:{port}/0"]  # no warning
    finally:
        server.stop()

    open_port = free_port()
    open_redis = subprocess.Popen(["redis-server", "--port", str(open_port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: port_open("127.0.0.1", open_port), "the open redis-server", interval=0.05)
        lines = []
        assert ensure_redis(Settings.load(env={**env, "DEVICEVAULT_REDIS_URL": f"redis://127.0.0.1:{open_port}/0",
                                               "DEVICEVAULT_REDIS_PASSWORD_FILE": str(tmp_path / "none")}),
                            lines.append) is None
        warnings = [line for line in lines if line.startswith("warning: ")]
        assert len(warnings) == 2, lines
        assert "appendonly no" in warnings[0] and "without a password" in warnings[1]
    finally:
        open_redis.terminate()
        open_redis.wait(10)


# --- RQ jobs are JSON -----------------------------------------------------------------------------------------
def _job_hashes(redis) -> dict[str, dict[bytes, bytes]]:
    return {k.decode(): redis.hgetall(k) for k in redis.scan_iter(match="rq:job:*") if k.count(b":") == 2}


def test_job_payloads_and_results_are_json_and_a_pickled_job_never_runs(dv, tmp_path):
    """A real backup through a real worker on a lab of two devices: every job's data, meta and result in
    Redis is JSON (no pickle); a job written with RQ's pickle serializer is refused by the worker."""
    from redis import Redis
    from rq import Queue as PickleQueue

    from jobs.queues import fetch_job
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    inventory = tmp_path / "inventory"
    hosts = generate_inventory(count=2, out=inventory, port=free_port(), base="127.0.110.0", platforms=["ios"])
    start_lab(inventory, tmp_path / "lab")
    try:
        started = json.loads(dv("backup", "--inventory", str(inventory), "--json").stdout)
        redis = Redis.from_url(dv.settings.redis_url)
        (job_id,) = started["jobs"]
        queued = _job_hashes(redis)[f"rq:job:{job_id}"]
        data = zlib.decompress(queued[b"data"])
        assert not data.startswith(b"\x80")  # pickle's protocol marker
        func, _instance, args, _kwargs = json.loads(data)
        assert func == "jobs.tasks.collect_batch" and set(args[1]) == set(hosts)
        assert json.loads(queued[b"meta"])["hosts"] == args[1]

        worker = dv.process("worker", "--burst", "--queue", "collector", "--name", f"json-{free_port()}",
                            name="json-worker", env={"DEVICEVAULT_INVENTORY": str(inventory)}).start()
        assert worker.popen.wait(300) == 0, (dv.home / "logs" / "json-worker.log").read_text()[-3000:]
        result = fetch_job(job_id, redis).latest_result()
        assert result is not None and result.return_value == {h: "changed" for h in hosts}
        assert all(type(k) is str and type(v) is str for k, v in result.return_value.items())
        for key in redis.scan_iter(match="rq:results:*"):
            for _, fields in redis.xrange(key):
                for value in fields.values():
                    assert not value.startswith(b"\x80"), (key, value[:40])
        for blob in (v for h in _job_hashes(redis).values() for v in h.values()):
            try:
                blob = zlib.decompress(blob)
            except zlib.error:
                pass
            assert not blob.startswith(b"\x80"), blob[:40]

        # a job written with pickle (RQ's default) where the workers read: never loaded, never run
        target = tmp_path / "pwned"
        PickleQueue("collector", connection=redis).enqueue(os.mkdir, str(target))
        worker = dv.process("worker", "--burst", "--queue", "collector", "--name", f"json2-{free_port()}",
                            name="json-worker-2").start()
        worker.popen.wait(120)
        assert not target.exists()
        print(f"\njob payload in Redis: JSON {data[:60].decode()!r}...; no pickle marker in "
              f"{len(_job_hashes(redis))} job hashes or their results; a pickled job never ran")
    finally:
        stop_lab(tmp_path / "lab")


# --- status: dead workers and consumers go ----------------------------------------------------------------------
def test_status_drops_workers_and_consumers_whose_processes_are_gone(dv):
    name = f"doomed-{free_port()}"
    worker = dv.process("worker", "--queue", "collector", "--name", name, name="doomed-worker").start()
    consumer = dv.process("consumer", name="doomed-consumer").start()  # default name: <host>-<pid>
    consumer_name = f"{socket.gethostname()}-{consumer.popen.pid}"

    def seen() -> tuple[set[str], set[str]]:
        data = dv.json("status")
        return ({w["worker"] for w in data["workers"]},
                {c["name"] for row in data["streams"] for c in row.get("consumers", [])})

    try:
        wait_for(lambda: name in seen()[0] and consumer_name in seen()[1], "the worker and the consumer")
    finally:
        worker.kill()  # SIGKILL to the whole process group: no chance to unregister
        consumer.kill()
    workers, consumers = seen()
    assert name not in workers and consumer_name not in consumers


# --- one line per operational error ------------------------------------------------------------------------------
def _one_line(proc: subprocess.CompletedProcess, *names: str) -> str:
    output = (proc.stdout + proc.stderr).strip()
    assert proc.returncode != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.mark.parametrize("command", [["backup"], ["status"], ["pending"], ["worker"], ["consumer"], ["hygiene"],
                                     ["scheduler"]])
def test_redis_down_is_one_line_naming_the_url(dv, command):
    port = free_port()
    url = f"redis://:secret-pw@127.0.0.1:{port}/0"
    dv.env["DEVICEVAULT_REDIS_URL"] = url
    line = _one_line(dv(*command, check=False, timeout=120), f"127.0.0.1:{port}", "DEVICEVAULT_REDIS_URL")
    assert "secret-pw" not in line and "not reachable" in line


@pytest.mark.parametrize("command", [["up", "--no-portal"], ["demo", "--portal-port", "0"]])
def test_up_and_demo_with_something_else_at_the_redis_address_are_one_line(dv, command):
    """Something that is not Redis listens at the URL's address: not used, not replaced, one line."""
    import threading

    with socket.socket() as server:
        server.bind(("127.0.110.20", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_http() -> None:
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                with conn:
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_http, daemon=True).start()
        dv.env["DEVICEVAULT_REDIS_URL"] = f"redis://127.0.110.20:{port}/0"
        _one_line(dv(*command, check=False, timeout=120), f"redis://127.0.110.20:{port}/0", "not Redis")


def test_up_refuses_to_start_redis_where_it_would_not_listen(dv):
    port = free_port()
    dv.env["DEVICEVAULT_REDIS_URL"] = f"redis://127.0.110.21:{port}/0"  # nothing there; DEVICEVAULT_REDIS_BIND: loopback 127.0.0.1
    _one_line(dv("up", "--no-portal", check=False, timeout=120), "DEVICEVAULT_REDIS_BIND=127.0.0.1", "127.0.110.21")
    assert not (dv.home / "redis" / "redis.pid").exists()


def test_a_wrong_redis_password_is_one_line(dv, redis_server):
    dv.env["DEVICEVAULT_REDIS_URL"] = f"redis://:wrong-pw@127.0.0.1:{redis_server.port}/{DB}"
    line = _one_line(dv("status", check=False), f"127.0.0.1:{redis_server.port}", "DEVICEVAULT_REDIS_URL")
    assert "wrong-pw" not in line


def test_a_locked_index_is_waited_for_then_one_line(dv):
    import sqlite3

    dv("devices")  # creates the index
    path = dv.home / "index.sqlite"
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("PRAGMA locking_mode=EXCLUSIVE")
    lock.execute("BEGIN EXCLUSIVE")
    lock.execute("CREATE TABLE held_by_the_test (x)")  # takes the exclusive lock (WAL readers are shut out too)
    try:
        dv.env["DEVICEVAULT_INDEX_WAIT"] = "1"
        started = time.monotonic()
        line = _one_line(dv("devices", check=False), f"sqlite:///{path}", "DEVICEVAULT_DATABASE_URL", "locked")
        assert time.monotonic() - started >= 1  # it waited first
        assert line
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    dv.env["DEVICEVAULT_INDEX_WAIT"] = ""
    assert dv("devices").returncode == 0  # and works again once the lock is gone


def test_an_index_server_that_does_not_answer_is_retried_then_one_line(dv):
    port = free_port()
    dv.env.update({"DEVICEVAULT_DATABASE_URL": f"postgresql+psycopg://dv:db-secret@127.0.0.1:{port}/index",
                   "DEVICEVAULT_INDEX_WAIT": "1"})
    line = _one_line(dv("devices", check=False), f"postgresql+psycopg://dv:REDACTED@127.0.0.1:{port}/index",
                     "DEVICEVAULT_DATABASE_URL")
    assert "db-secret" not in line


def test_a_missing_database_driver_is_one_line(dv):
    """A driver DeviceVault does not install (MySQL's); PostgreSQL's, psycopg, is in the requirements."""
    dv.env["DEVICEVAULT_DATABASE_URL"] = "mysql+pymysql://dv:db-secret@127.0.0.1/index"
    line = _one_line(dv("devices", check=False), "mysql+pymysql://dv:REDACTED@127.0.0.1/index",
                     "DEVICEVAULT_DATABASE_URL", "driver")
    assert "db-secret" not in line


@pytest.mark.parametrize("variable,value", [("DEVICEVAULT_JOB_TIMEOUT", "abc"), ("DEVICEVAULT_RETRY_BASE", "soon"),
                                            ("DEVICEVAULT_BATCH_SIZE", "0"), ("DEVICEVAULT_INDEX_WAIT", "x"),
                                            ("DEVICEVAULT_REDIS_URL", "localhost:6379"),
                                            ("DEVICEVAULT_DATABASE_URL", "nonsense"),
                                            ("DEVICEVAULT_DATABASE_URL", "postgresql+psycopg://dv@db:port/x")])
def test_a_bad_setting_value_is_one_line_naming_the_variable(dv, variable, value):
    dv.env[variable] = value
    _one_line(dv("devices", check=False), variable, value)


def test_lab_up_on_a_busy_address_is_one_line(dv, tmp_path):
    from lab.generate_inventory import generate_inventory

    port = free_port()
    generate_inventory(count=2, out=tmp_path / "inv", port=port, base="127.0.111.0", platforms=["ios"])
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.111.1", port))
        busy.listen()
        _one_line(dv("lab", "up", "--inventory", str(tmp_path / "inv"), "--state-dir", str(tmp_path / "lab"),
                     check=False), f"127.0.111.1:{port}", "already in use")
        # the lab's own command line says the same
        _one_line(subprocess.run([sys.executable, "-m", "lab", "up", "--inventory", str(tmp_path / "inv"),
                                  "--state-dir", str(tmp_path / "lab")], capture_output=True, text=True, timeout=120,
                                 cwd=Path(__file__).resolve().parent.parent), f"127.0.111.1:{port}", "already in use")
    assert not (tmp_path / "lab" / "lab.pid").exists()
    # a lab already running for that state directory (its pid file names a live process): one line too
    holder = subprocess.Popen(["sleep", "300"])
    try:
        (tmp_path / "lab" / "lab.pid").write_text(str(holder.pid))
        _one_line(dv("lab", "up", "--inventory", str(tmp_path / "inv"), "--state-dir", str(tmp_path / "lab"),
                     check=False), "already running", str(holder.pid))
    finally:
        holder.kill()
        holder.wait()


def test_an_unknown_run_exits_non_zero(dv):
    _one_line(dv("run", "not-a-run", check=False), "not-a-run")


def test_debug_shows_the_traceback(dv):
    dv.env["DEVICEVAULT_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    proc = dv("--debug", "status", check=False)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_status_never_prints_the_password(dv, redis_server):
    proc = dv("status")
    assert redis_server.password not in proc.stdout + proc.stderr
