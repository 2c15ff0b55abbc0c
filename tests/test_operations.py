"""Issue 4 through the CLI: collection groups, retries, killed workers, lost jobs, freshness, status, logs, up.

Real redis-server, real RQ workers as processes (one per collection group plus one for storage), real
Ansible against the lab. Tests share the lab and run in file order.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cli.services import Process, free_port
from tests.conftest import wait_for

AMS = ["ams-ios-01", "ams-eos-01", "ams-nxos-01"]
NYC = ["nyc-ios-01", "nyc-eos-01", "nyc-nxos-01"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def ops(tmp_path_factory, redis_server):
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("ops")
    inventory = home / "inventory"
    hosts = generate_inventory(count=6, out=inventory, port=free_port(), base="127.0.70.0",
                               platforms=["ios", "eos", "nxos"])
    assert sorted(hosts) == sorted(AMS + NYC), hosts
    (inventory / "group_vars" / "site_ams.yml").write_text("devicevault_collector_group: ams\n")
    (inventory / "group_vars" / "site_nyc.yml").write_text("devicevault_collector_group: nyc\n")
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "nyc-nxos-01.yml").write_text("devicevault_max_age: 1\n")
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/8",
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_DEVICE_TIMEOUT": "5",
        "DEVICEVAULT_JOB_TIMEOUT": "60",
        "DEVICEVAULT_LOCK_MARGIN": "10",
        "DEVICEVAULT_COLLECT_RETRIES": "1",
        "DEVICEVAULT_COLLECT_RETRY_BASE": "1",
    }
    tool = DeviceVault(env, home)
    start_lab(inventory, home / "lab")
    tool.workers = {
        "ams": tool.process("worker", "--group", "ams", "--name", f"ams-{free_port()}", name="worker-ams"),
        "nyc": tool.process("worker", "--group", "nyc", "--name", f"nyc-{free_port()}", name="worker-nyc"),
        "store": tool.process("worker", "--queue", "collector", "--queue", "storage.git", "--queue", "storage.fs",
                              "--name", f"store-{free_port()}", name="worker-store"),
    }
    for proc in tool.workers.values():
        proc.start()
    consumer = tool.process("consumer", "--name", "indexer-ops", "--claim-idle", "2", name="consumer").start()
    yield tool
    for proc in [*tool.workers.values(), consumer]:
        proc.stop()
    stop_lab(home / "lab")


def _redis(ops):
    from redis import Redis

    return Redis.from_url(ops.settings.redis_url)


def _worker_name(proc: Process) -> str:
    return proc.args[proc.args.index("--name") + 1]


def _results(ops, *args: str) -> dict[str, dict]:
    proc = ops("backup", "--wait", "--json", *args, check=False)
    assert proc.returncode in (0, 1) and proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return {r["device"]: r for r in json.loads(proc.stdout)["results"]}


def _wait_run(ops, run_id: str, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = {r["run_id"]: r for r in ops.json("runs")}
        if runs.get(run_id, {}).get("finished_at"):
            return ops.json("run", run_id)
        time.sleep(1)
    raise AssertionError(f"run {run_id} did not finish")


def test_each_collection_group_is_collected_only_by_its_own_worker(ops):
    from jobs.queues import Job, Queue

    results = _results(ops)
    assert {r["status"] for r in results.values()} == {"changed"}, results
    redis = _redis(ops)
    for group, members in (("ams", AMS), ("nyc", NYC)):
        ids = Queue(f"collector.group.{group}", connection=redis).finished_job_registry.get_job_ids()
        jobs = [Job.fetch(i, connection=redis) for i in ids]
        assert jobs, group
        assert {j.worker_name for j in jobs} == {_worker_name(ops.workers[group])}
        assert {h for j in jobs for h in j.meta["hosts"]} == set(members)
    assert Queue("collector", connection=redis).finished_job_registry.get_job_ids() == []  # every device has a group


def test_transient_failures_are_retried_and_permanent_ones_say_so(ops):
    from lab.control import LabControl

    lab = LabControl(ops.home / "lab")
    lab.set_fault("nyc-ios-01", "hang")
    lab.set_fault("ams-ios-01", "auth_fail")
    try:
        results = _results(ops, "--host", "nyc-ios-01", "--host", "ams-ios-01")
    finally:
        lab.set_fault("nyc-ios-01", "none")
        lab.set_fault("ams-ios-01", "none")
    hung, denied = results["nyc-ios-01"], results["ams-ios-01"]
    assert hung["status"] == denied["status"] == "failed"
    assert "timed out" in hung["error"] and "attempt 2 of 2" in hung["error"], hung
    assert "authentication failed" in denied["error"] and "permanent: not retried" in denied["error"], denied


def _processes() -> dict[int, tuple[int, int]]:
    """``{pid: (parent pid, start time)}`` of every process but zombies (nobody reaps them here). The start
    time tells a process from a later one given the same pid (pids wrap at 32768 on a busy machine)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != b"Z":
                found[int(entry.name)] = (int(fields[1]), int(fields[19]))
    return found


def _descendants(pid: int) -> dict[int, str]:
    """``{pid: command line}`` of every live process below ``pid``."""
    children: dict[int, list[int]] = {}
    for child, (parent, _) in _processes().items():
        children.setdefault(parent, []).append(child)
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            todo.append(child)
    return found


def _still_running(identities: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of ``identities`` (pid, start time) that are still running: the same pid and the same start."""
    return identities & {(pid, start) for pid, (_, start) in _processes().items()}


def test_a_killed_ansible_playbook_is_retried_and_leaves_nothing_behind(ops):
    """``ansible-playbook`` SIGKILLed mid-batch (the OOM killer's choice): its devices without a result are
    retried as transient (none is failed for good), every device gets exactly one new version, and no Ansible
    process or runner directory is left."""
    import tempfile

    from lab.control import LabControl

    lab = LabControl(ops.home / "lab")
    for host in AMS:
        lab.change(host)
    # the batch cannot finish before the kill, however slow the machine: the hung device waits 120 s
    slow = Path(ops.env["DEVICEVAULT_INVENTORY"]) / "host_vars" / "ams-eos-01.yml"
    slow.write_text("ansible_connect_timeout: 120\nansible_command_timeout: 120\n")
    lab.set_fault("ams-eos-01", "hang")
    before = {d["name"]: d["versions"] for d in ops.json("devices")}
    log = ops.home / "logs" / "worker-ams.log"
    log_start = log.stat().st_size
    try:
        started = json.loads(ops("backup", "--group", "site_ams", "--json").stdout)
        killed = _kill_playbook_mid_batch(ops, lab)
    finally:
        slow.unlink()
        lab.set_fault("ams-eos-01", "none")
    rows = _wait_run(ops, started["run_id"])
    assert sorted(r["device"] for r in rows) == sorted(AMS)
    assert {r["status"] for r in rows} == {"changed"}, rows
    after = {d["name"]: d["versions"] for d in ops.json("devices")}
    assert all(after[h] == before[h] + 1 for h in AMS), (before, after)
    worker = ops.workers["ams"].popen.pid
    horses = set(_descendants(worker)) | {worker}
    left = [p for p in Path(tempfile.gettempdir()).glob("devicevault-runner-*-*") if int(p.name.split("-")[2]) in horses]
    assert left == [], left
    retried = json.loads(ops("run", started["run_id"], "--json").stdout)
    with open(log, "rb") as fh:
        fh.seek(log_start)
        retrying = [line for line in fh.read().decode(errors="replace").splitlines() if "retrying" in line]
    assert retrying, "the devices without a result were not retried"
    print(f"\nansible-playbook SIGKILLed mid-batch ({killed} processes below it): processes left 0, runner "
          f"directories left {len(left)}; {sum(r['status'] == 'changed' for r in retried)} of {len(AMS)} devices "
          f"backed up, one new version each, by the retry: {json.loads(retrying[0])['message']}")


def _kill_playbook_mid_batch(ops, lab) -> None:
    """SIGKILL the ams worker's ``ansible-playbook`` once the hung device is connected; the device answers
    again at once (so the retry can back it up) and every process below ``ansible-playbook`` must go."""
    worker = ops.workers["ams"].popen.pid
    deadline = time.monotonic() + 120
    playbook: list[int] = []
    while time.monotonic() < deadline and not (
            playbook and lab.sessions()["per_device"].get("ams-eos-01", {}).get("open")):
        found = [pid for pid, cmd in _descendants(worker).items()
                 if any(part.endswith("/ansible-playbook") for part in cmd.split(" ")[:2])]
        # its own forks (workers, fetch processes) have the same command line: the one above them all
        playbook = [pid for pid in found if not any(pid in _descendants(other) for other in found if other != pid)]
        time.sleep(0.1)
    assert playbook, "the batch's ansible-playbook never started"
    assert lab.sessions()["per_device"].get("ams-eos-01", {}).get("open"), "the hung device was never connected"
    table = _processes()
    below = {(pid, table[pid][1]) for pid in _descendants(playbook[0]) if pid in table}  # its worker, fetches
    assert below, "ansible-playbook had no worker process"
    os.kill(playbook[0], signal.SIGKILL)
    lab.set_fault("ams-eos-01", "none")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _still_running(below):
        time.sleep(0.2)
    left = {pid: Path(f"/proc/{pid}/status").read_text(errors="replace")[:300] for pid, _ in _still_running(below)}
    assert not left, f"processes of the killed ansible-playbook are still running: {left}"
    return len(below)


def _runner_dirs(pids: set[int]) -> list[Path]:
    """The fetch's runner directories (``<tmp>/devicevault-runner-<pid>-<random>``) made by one of ``pids``."""
    import tempfile

    return [p for p in Path(tempfile.gettempdir()).glob("devicevault-runner-*-*") if int(p.name.split("-")[2]) in pids]


def test_a_killed_worker_is_retried_without_duplicate_versions_and_its_locks_go(ops):
    from lab.control import LabControl
    from jobs.queues import Queue

    lab = LabControl(ops.home / "lab")
    for host in AMS:
        lab.change(host)
    lab.set_fault("ams-eos-01", "hang")  # the job cannot finish before the kill, however fast the machine
    before = {d["name"]: d["versions"] for d in ops.json("devices")}
    redis = _redis(ops)
    started = json.loads(ops("backup", "--group", "site_ams", "--json").stdout)
    registry = Queue("collector.group.ams", connection=redis).started_job_registry
    deadline = time.monotonic() + 120
    while not (set(started["jobs"]) <= set(registry.get_job_ids())
               and len(list(redis.scan_iter("lock:device:*"))) == len(AMS)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(started["jobs"]) <= set(registry.get_job_ids()), "the collection job never started"
    job_ids = registry.get_job_ids()
    worker = ops.workers["ams"]
    runner_dirs = wait_for(lambda: _runner_dirs(set(_descendants(worker.popen.pid))), "the batch's runner directory")
    os.killpg(worker.popen.pid, signal.SIGKILL)  # the worker process group; its work horse dies with it
    worker.popen.wait(10)
    locks = [k for k in redis.scan_iter("lock:device:*")]
    assert len(locks) == len(AMS), "the dead job's locks should still be there"
    assert all(0 < redis.ttl(k) <= ops.settings.lock_ttl for k in locks)  # they would expire on their own
    assert registry.get_job_ids() == job_ids, "the killed worker's horse must not finish the job"
    lab.set_fault("ams-eos-01", "none")
    # a new name: RQ refuses to register a worker under the name the killed one still holds in Redis
    worker.args[worker.args.index("--name") + 1] = f"ams-{free_port()}"
    worker.start()
    hygiene = json.loads(ops("hygiene", "--json", "--grace", "0").stdout)
    assert any(f["kind"] == "abandoned" and f["action"] == "requeued" for f in hygiene["hygiene"]), hygiene
    # the dead horse's runner directory is gone after this one maintenance pass (the pass removes it, unless a
    # batch of another test on this host swept it first)
    assert not any(d.exists() for d in runner_dirs), runner_dirs
    rows = _wait_run(ops, started["run_id"])
    assert sorted(r["device"] for r in rows) == sorted(AMS)
    assert {r["status"] for r in rows} == {"changed"}, rows
    after = {d["name"]: d["versions"] for d in ops.json("devices")}
    assert all(after[h] == before[h] + 1 for h in AMS), (before, after)
    assert list(redis.scan_iter("lock:device:*")) == []


def test_a_job_removed_behind_rqs_back_is_found_and_its_devices_backed_up(ops):
    worker = ops.workers["nyc"]
    worker.stop()
    started = json.loads(ops("backup", "--group", "site_nyc", "--json").stdout)
    redis = _redis(ops)
    (job_id,) = started["jobs"]
    assert redis.lrem("rq:queue:collector.group.nyc", 0, job_id) == 1
    hygiene = json.loads(ops("hygiene", "--json", "--grace", "0").stdout)
    assert {(f["kind"], f["job_id"], f["action"]) for f in hygiene["hygiene"]} == {("lost", job_id, "requeued")}
    worker.start()
    rows = _wait_run(ops, started["run_id"])
    assert sorted(r["device"] for r in rows) == sorted(NYC)
    assert {r["status"] for r in rows} <= {"changed", "unchanged"}, rows


def test_a_run_over_another_inventory_is_indexed_against_that_inventory(ops):
    """``backup --inventory OTHER`` for a host that only OTHER has: the run's inventory travels with it, so the
    consumer checks the host against OTHER (not DEVICEVAULT_INVENTORY), nothing is dead-lettered, the version
    is in the index, and a second run finds it unchanged."""
    import shutil
    import sqlite3

    import yaml

    main = Path(ops.env["DEVICEVAULT_INVENTORY"])
    other = ops.home / "other-inventory"
    (other / "group_vars").mkdir(parents=True)
    for name in ("all.yml", "ios.yml"):  # credentials and platform; no collection group: queue "collector"
        shutil.copy(main / "group_vars" / name, other / "group_vars" / name)
    address = yaml.safe_load((main / "hosts.yml").read_text())["all"]["children"]["site_ams"]["hosts"]["ams-ios-01"]
    (other / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {
        "edge": {"hosts": {"edge-ios-01": address}}, "ios": {"hosts": {"edge-ios-01": None}}}}}))
    redis = _redis(ops)
    dead_before = sum(redis.xlen(f"{s}:dead") for s in ("device:results", "storage:results"))
    assert "edge-ios-01" not in {d["name"] for d in ops.json("devices")}

    first = json.loads(ops("backup", "--inventory", str(other), "--json").stdout)
    rows = _wait_run(ops, first["run_id"])
    assert [(r["device"], r["status"]) for r in rows] == [("edge-ios-01", "changed")], rows
    assert len(ops.json("versions", "edge-ios-01")) == 1
    second = json.loads(ops("backup", "--inventory", str(other), "--json").stdout)
    assert [(r["device"], r["status"]) for r in _wait_run(ops, second["run_id"])] == [("edge-ios-01", "unchanged")]
    assert len(ops.json("versions", "edge-ios-01")) == 1
    assert sum(redis.xlen(f"{s}:dead") for s in ("device:results", "storage:results")) == dead_before
    with sqlite3.connect(ops.home / "index.sqlite") as db:
        recorded = {run: inventory for run, inventory in db.execute("SELECT id, inventory FROM runs")}
    assert recorded[first["run_id"]] == recorded[second["run_id"]] == str(other.absolute())


def _age_last_success(ops, host: str, hours: float) -> None:
    """Moves the device's last success *hours* into the past in the index: time passing, without a sleep."""
    import sqlite3

    with sqlite3.connect(ops.home / "index.sqlite") as db:
        (last,) = db.execute("SELECT last_success_at FROM devices WHERE name = ?", (host,)).fetchone()
        old = datetime.fromisoformat(last) - timedelta(hours=hours)
        assert db.execute("UPDATE devices SET last_success_at = ? WHERE name = ?",
                          (old.isoformat(sep=" "), host)).rowcount == 1


def test_a_device_without_a_recent_success_is_stale_until_it_succeeds(ops):
    host = "nyc-nxos-01"  # allowed age 1 h in host_vars; the others have the default 24 h
    _results(ops, "--host", host)
    ops("hygiene")
    assert ops.json("status")["stale"] == []
    _age_last_success(ops, host, 2)
    ops("hygiene")
    status = ops.json("status")
    assert [s["device"] for s in status["stale"]] == [host]
    assert status["devices"]["stale"] == 1  # the portal's counts: one rule (storage.index.health)
    assert "1 stale" in ops("status").stdout
    assert _results(ops, "--host", host)[host]["status"] in ("changed", "unchanged")
    ops("hygiene")
    assert ops.json("status")["stale"] == []


def test_status_shows_queues_workers_streams_and_runs(ops):
    status = ops.json("status")
    queues = {q["queue"] for q in status["queues"]}
    assert {"collector.group.ams", "collector.group.nyc", "storage.git", "storage.fs"} <= queues
    names = {w["worker"] for w in status["workers"]}
    assert {_worker_name(p) for p in ops.workers.values()} <= names
    assert status["runs"] and status["runs"][0]["status"] in ("succeeded", "partial", "failed")
    text = ops("status").stdout
    assert "== queues" in text and "collector.group.ams" in text


def test_worker_logs_are_json_lines_without_credentials(ops):
    for name in ("worker-ams", "worker-nyc", "worker-store"):
        lines = [line for line in (ops.home / "logs" / f"{name}.log").read_text().splitlines() if line.strip()]
        assert lines, name
        records = [json.loads(line) for line in lines]  # every line is one JSON object
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
        text = "\n".join(lines)
        assert "lab-admin" not in text and "lab-enable" not in text


def test_up_runs_worker_scheduler_consumer_and_notifier_and_stops_on_ctrl_c(ops, tmp_path):
    from redis import Redis
    from jobs.queues import Worker

    url = ops.settings.redis_url.rsplit("/", 1)[0] + "/9"
    env = {**os.environ, "DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_REDIS_URL": url,
           "DEVICEVAULT_INVENTORY": ops.env["DEVICEVAULT_INVENTORY"], "LC_ALL": "C.UTF-8", "DEVICEVAULT_WORKERS": "2"}
    up = subprocess.Popen([sys.executable, "-m", "cli", "up", "--no-portal"], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    redis = Redis.from_url(url)
    try:
        wait_for(lambda: len(Worker.all(connection=redis)) == 2, "the two workers DEVICEVAULT_WORKERS asks for")
        for name in ("scheduler", "consumer", "notifier"):
            wait_for((tmp_path / "logs" / f"{name}.log").exists, f"the {name}'s log")
        up.send_signal(signal.SIGINT)
        output = up.communicate(timeout=60)[0].decode()
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
    assert up.returncode == 0, output
    assert "devicevault up: stopped" in output
    assert Worker.all(connection=redis) == []  # the worker unregistered: a clean shutdown
    assert _processes_with(f"DEVICEVAULT_HOME={tmp_path}") == []  # every child process is gone

    # `up` itself SIGKILLed (the OOM killer's choice): its children are told to stop and do, none is left
    up = subprocess.Popen([sys.executable, "-m", "cli", "up", "--no-portal"], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: len(_processes_with(f"DEVICEVAULT_HOME={tmp_path}")) >= 5 and Worker.all(connection=redis),
                 "up's children to start")
        os.kill(up.pid, signal.SIGKILL)
        up.wait(10)
        killed = time.monotonic()
        wait_for(lambda: not _processes_with(f"DEVICEVAULT_HOME={tmp_path}"), "up's children to end", timeout=60)
        print(f"\n`devicevault up` SIGKILLed: its children (worker, scheduler, consumer, notifier) all ended "
              f"{time.monotonic() - killed:.1f} s later, none left")
    finally:
        for pid in _processes_with(f"DEVICEVAULT_HOME={tmp_path}"):
            os.kill(pid, signal.SIGKILL)


def _processes_with(env_entry: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if env_entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found
