"""Issue 14, item 2: faults that used to need a person recover by themselves.

Real processes only: a redis-server of this module's own (locked down as DeviceVault starts it: password,
loopback, AOF), SIGKILLed and started again on the same port and data directory; workers started as plain
``devicevault worker`` processes (nothing restarts them); the consumer; a four-device lab on 127.0.220.x.
Faults are injected by killing processes, by a lock a real process holds and by a stale lock file, never by
mocking DeviceVault. Tests wait for conditions, never for fixed times, and run in file order.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cli.services import RedisServer, free_port, port_open
from tests.conftest import wait_for


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    from lab.control import LabControl
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("faults")
    server = RedisServer(home / "redis", free_port()).start()
    inventory = home / "inventory"
    hosts = generate_inventory(count=4, out=inventory, port=free_port(), base="127.0.220.0",
                               platforms=["ios", "eos"])
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": server.url,
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_BATCH_SIZE": "2",
        "DEVICEVAULT_DEVICE_TIMEOUT": "20",
        "DEVICEVAULT_COLLECT_RETRIES": "1",
        "DEVICEVAULT_COLLECT_RETRY_BASE": "1",
        "DEVICEVAULT_RETRY_BASE": "2",
        "DEVICEVAULT_RETRY_MAX": "10",
        "DEVICEVAULT_RETRY_POLL": "1",
        # the storage jobs' lease stays the default: job timeout 900 s + margin 60 s = 960 s
    }
    tool = DeviceVault(env, home)
    start_lab(inventory, home / "lab")
    tool.server, tool.hosts, tool.lab = server, sorted(hosts), LabControl(home / "lab")
    tool.procs = {
        "collect": tool.process("worker", "--queue", "collector", "--queue", "storage.fs",
                                "--name", f"collect-{free_port()}", name="worker-collect"),
        "git": tool.process("worker", "--queue", "storage.git", "--name", f"git-{free_port()}", name="worker-git"),
        "consumer": tool.process("consumer", "--name", "indexer-faults", "--claim-idle", "5", name="consumer"),
    }
    for proc in tool.procs.values():
        proc.start()
    rows = _backup_wait(tool)  # the baseline: every device has a first version on every target
    assert {r["status"] for r in rows} == {"changed"}, rows
    yield tool
    for proc in tool.procs.values():
        proc.stop()
    stop_lab(home / "lab")
    server.stop()


def _backup_wait(tool, *args: str) -> list[dict]:
    import json

    proc = tool("backup", "--wait", "--json", "--timeout", "300", *args, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return json.loads(proc.stdout)["results"]


def _redis(tool):
    from redis import Redis

    return Redis.from_url(tool.server.url)


def _versions(tool) -> dict[str, int]:
    return {host: len(tool.json("versions", host)) for host in tool.hosts}


def _git_repo(tool) -> Path:
    return Path(tool.settings.git_repo)


def _commits(tool) -> int:
    return int(subprocess.run(["git", "-C", str(_git_repo(tool)), "rev-list", "--count", "HEAD"],
                              capture_output=True, text=True, check=True).stdout)


def _run(tool, run_id: str) -> dict:
    return {r["run_id"]: r for r in tool.json("runs", "--limit", "20")}.get(run_id, {})


def _copies_landed(tool, run_id: str) -> bool:
    """Every copy of the run's new versions is stored (the index, as ``devicevault backup --wait`` reads it)."""
    from cli.common import index_sessions
    from storage.index.queries import copy_counts

    with index_sessions(tool.settings)() as session:
        copies = copy_counts(session, run_id)
    return bool(copies) and all(set(counts) == {"stored"} for counts in copies.values())


def _alive(tool) -> list[str]:
    return [name for name, proc in tool.procs.items() if proc.popen.poll() is None]


def _kill_redis(tool) -> None:
    pid = int(tool.server.pidfile.read_text().strip())
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not port_open(tool.server.host, tool.server.port), "redis-server to be gone", timeout=30)


def _start_backup(tool) -> str:
    return tool.json("backup")["run_id"]


def test_redis_killed_twice_mid_run_no_process_exits_and_nothing_is_lost_or_doubled(vault):
    """(a) Redis SIGKILLed and started again (same port, same data directory, AOF) twice during a run: no
    worker or consumer exits, the run finishes within 3 minutes of Redis returning, and every device has
    exactly one new version (one git commit each)."""
    from jobs.queues import Queue

    before, commits = _versions(vault), _commits(vault)
    for host in vault.hosts:
        vault.lab.change(host)
        vault.lab.set_fault(host, "slow", delay=1.5)  # the collection lasts long enough to be cut twice
    try:
        run_id = _start_backup(vault)
        redis = _redis(vault)
        wait_for(lambda: Queue("collector", connection=redis).started_job_registry.get_job_ids(),
                 "a collection job to start", timeout=60)
        redis.close()
        _kill_redis(vault)  # 1: while a collection job runs
        vault.server.start()
        wait_for(lambda: vault.json("run", run_id), "a first device result after Redis came back", timeout=180,
                 interval=0.5)
        _kill_redis(vault)  # 2: with results, releases and storage jobs in flight
        vault.server.start()
        back = time.monotonic()
    finally:
        for host in vault.hosts:
            vault.lab.set_fault(host, "none")
    wait_for(lambda: _run(vault, run_id).get("finished_at"), "the run to finish", timeout=180, interval=1)
    wait_for(lambda: _copies_landed(vault, run_id), "every copy of the run to land", timeout=180, interval=1)
    took = time.monotonic() - back
    assert took < 180, took
    rows = vault.json("run", run_id)
    assert sorted(r["device"] for r in rows) == vault.hosts, rows
    assert {r["status"] for r in rows} == {"changed"}, rows
    after = _versions(vault)
    assert {h: after[h] - before[h] for h in vault.hosts} == {h: 1 for h in vault.hosts}
    assert _commits(vault) == commits + len(vault.hosts)
    assert _alive(vault) == list(vault.procs), "a process exited: " + ", ".join(set(vault.procs) - set(_alive(vault)))
    logs = "".join((vault.home / "logs" / f"{n}.log").read_text(errors="replace")
                   for n in ("worker-collect", "worker-git", "consumer"))
    assert "quitting" not in logs
    added = {h: after[h] - before[h] for h in vault.hosts}
    print(f"\nredis SIGKILLed and restarted twice mid-run: processes exited 0 of {len(vault.procs)} "
          f"(plain workers + consumer); run {run_id} finished with every copy stored {took:.1f} s after Redis "
          f"returned; new versions per device {sorted(set(added.values()))} over {len(added)} devices; "
          f"duplicates 0 ({_commits(vault) - commits} git commits for {len(added)} changed devices)")


def test_a_stale_git_index_lock_is_cleared_and_logged_and_copies_land(vault):
    """(b) ``.git/index.lock`` left by a crashed git (ten minutes old, no process holds it): the next copy
    clears it (logged) and lands, without a person."""
    host = vault.hosts[0]
    lock = _git_repo(vault) / ".git" / "index.lock"
    lock.write_bytes(b"DIRC")  # what a git killed while writing the index leaves behind
    old = time.time() - 600
    os.utime(lock, (old, old))
    commits = _commits(vault)
    vault.lab.change(host)
    started = time.monotonic()
    rows = _backup_wait(vault, "--host", host)
    assert [r["status"] for r in rows] == ["changed"], rows
    run_id = vault.json("runs", "--limit", "1")[0]["run_id"]
    wait_for(lambda: _copies_landed(vault, run_id), "the git copy to land", timeout=120, interval=0.5)
    took = time.monotonic() - started
    assert not lock.exists()
    assert _commits(vault) == commits + 1
    log = (vault.home / "logs" / "worker-git.log").read_text(errors="replace")
    assert "removed a stale index.lock" in log
    print(f"\nstale index.lock (10 min old, no holder): the git copy landed {took:.1f} s after the backup started, "
          f"lock removed and logged, {_commits(vault) - commits} commit")


def test_a_lock_a_live_git_holds_is_left_alone(vault):
    """The other side of (b): an ``index.lock`` that a live process holds open is not stale, whatever its
    age; the store waits (the copy stays pending) and lands once that process is done."""
    from storage.git import GitBackend

    lock = _git_repo(vault) / ".git" / "index.lock"
    holder = subprocess.Popen(["sh", "-c", f'exec 3>"{lock}"; read line'], stdin=subprocess.PIPE)
    try:
        wait_for(lock.exists, "the holder to create index.lock", timeout=10)
        old = time.time() - 600
        os.utime(lock, (old, old))
        backend = GitBackend(_git_repo(vault))
        with backend._locked():
            assert lock.exists()
    finally:
        holder.communicate(b"\n", timeout=10)
    lock.unlink(missing_ok=True)


def test_a_storage_worker_killed_holding_a_job_frees_its_copies_long_before_the_lease(vault):
    """(c) the git storage worker SIGKILLed (its main process only, as the OOM killer does) while its job
    waits for the store lock that another process holds: another worker stores the copies within two
    minutes, not after the 960 s lease (job timeout + margin)."""
    from jobs.queues import Job, Queue
    from storage._lock import file_lock

    host = vault.hosts[1]
    victim = vault.procs["git"]
    victim_name = victim.args[victim.args.index("--name") + 1]
    vault.lab.change(host)
    commits = _commits(vault)
    redis = _redis(vault)
    with file_lock(_git_repo(vault) / ".git" / "devicevault.lock"):  # a real process holds the store lock
        run_id = _start_backup(vault)

        def held_by_victim():
            for job_id in Queue("storage.git", connection=redis).started_job_registry.get_job_ids():
                if Job.fetch(job_id, connection=redis).worker_name == victim_name:
                    return job_id
            return None

        job_id = wait_for(held_by_victim, "the git worker to start the storage job", timeout=120, interval=0.5)
        os.kill(victim.popen.pid, signal.SIGKILL)
        killed = time.monotonic()
        victim.popen.wait(10)
        vault.procs["git2"] = vault.process("worker", "--queue", "storage.git", "--name", f"git2-{free_port()}",
                                            name="worker-git2").start()
        # the copy is handed to a new job while the lock is still held: the dead job holds nothing any more
        wait_for(lambda: [j for j in Queue("storage.git", connection=redis).started_job_registry.get_job_ids()
                          if j != job_id] or Queue("storage.git", connection=redis).get_job_ids(),
                 "a new storage job for the copies of the dead one", timeout=120, interval=0.5)
    wait_for(lambda: _copies_landed(vault, run_id), "the copies of the killed worker's job to land", timeout=120,
             interval=1)
    took = time.monotonic() - killed
    assert took < 120, took
    wait_for(lambda: _run(vault, run_id).get("finished_at"), "the run to finish", timeout=60, interval=1)
    assert _commits(vault) == commits + 1
    log = (vault.home / "logs" / "worker-git2.log").read_text(errors="replace")
    assert "held by a storage job that is gone" in log
    redis.close()
    victim.stop()  # what is left of its process group (RQ's scheduler child)
    print(f"\nstorage worker killed holding a job; its copy landed {took:.1f} s later (lease: 960 s)")


def test_a_killed_worker_leaves_no_process_and_its_scheduled_retries_go_on_at_once(vault):
    """(d) the collector worker that holds the collector queue's scheduler lock SIGKILLed (its main process
    only, as the OOM killer does): RQ's scheduler child dies with it (no process of its group is left,
    ``status`` drops it), and the other collector worker takes the lock within seconds, so a collection
    retry scheduled afterwards runs when due instead of after RQ's 10-minute maintenance interval."""
    from jobs import processes
    from jobs.queues import Queue
    from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler

    redis = _redis(vault)
    lock = RQScheduler.get_locking_key("collector")
    victim = vault.procs["collect"]
    victim_name = victim.args[victim.args.index("--name") + 1]

    def holder_pid() -> int:
        holder = redis.get(lock)
        pid = redis.hget(SCHEDULER_KEY_TEMPLATE % holder.decode(), "pid") if holder else None
        return int(pid) if pid and pid.isdigit() else 0

    wait_for(lambda: (processes.proc_stat(holder_pid()) or ("", 0))[1] == victim.popen.pid,
             "the victim worker's scheduler to hold the collector lock", timeout=150, interval=1)
    # the replacement: retries 8 s after a failure, so the fault can be cleared in between
    vault.procs["collect2"] = vault.process("worker", "--queue", "collector", "--queue", "storage.fs",
                                            "--name", f"collect2-{free_port()}", name="worker-collect2",
                                            env={"DEVICEVAULT_COLLECT_RETRY_BASE": "8"}).start()
    wait_for(lambda: any(w["worker"].startswith("collect2-") for w in vault.json("status")["workers"]),
             "the second collector worker to register", timeout=60)
    os.kill(victim.popen.pid, signal.SIGKILL)
    killed = time.monotonic()
    victim.popen.wait(10)
    wait_for(lambda: processes.process_gone(victim.popen.pid), "the killed worker's scheduler child to go",
             timeout=10, interval=0.2)
    group_gone = time.monotonic() - killed
    assert victim_name not in {w["worker"] for w in vault.json("status")["workers"]}
    new_holder = wait_for(lambda: (processes.proc_stat(holder_pid()) or ("", 0))[1] == vault.procs["collect2"].popen.pid
                          and time.monotonic(), "the other worker to take the scheduler lock", timeout=60, interval=0.5)
    took_lock = new_holder - killed

    host = vault.hosts[2]
    vault.lab.change(host)
    vault.lab.set_fault(host, "disconnect", fraction=0.3)
    try:
        run_id = vault.json("backup", "--host", host)["run_id"]
        wait_for(lambda: Queue("collector", connection=redis).scheduled_job_registry.get_job_ids(),
                 "the collection retry to be scheduled", timeout=120, interval=0.2)
    finally:
        vault.lab.set_fault(host, "none")
    scheduled = time.monotonic()
    wait_for(lambda: _run(vault, run_id).get("finished_at"), "the retried run to finish", timeout=90, interval=1)
    finished = time.monotonic() - scheduled
    rows = vault.json("run", run_id)
    assert [(r["device"], r["status"]) for r in rows] == [(host, "changed")], rows
    log = (vault.home / "logs" / "worker-collect2.log").read_text(errors="replace")
    assert "released: its scheduler" in log
    redis.close()
    print(f"\nworker SIGKILLed: its process group gone after {group_gone:.1f} s, scheduler lock taken by the other "
          f"worker after {took_lock:.1f} s; a retry scheduled 8 s ahead finished its run {finished:.1f} s later "
          "(RQ alone: up to 10 min)")
