"""Schedules: CRUD and cron validation against real SQLite, the scheduler's reconciliation against a real
Redis, ``run_schedule`` in a real RQ worker, the CLI, and the acceptance of issue 4's schedule part:

    A schedule of every minute on a group backs that group up at least twice within three minutes;
    disabling it stops further runs without a restart.

Each part uses its own Redis database (``/5`` .. ``/7``) so rq-scheduler's keys are not shared with other
modules.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from redis import Redis
from sqlalchemy import select

from cli.services import free_port
from jobs.errors import BackupError, InventoryError
from jobs.ops.schedules import (
    JOB_PREFIX,
    InvalidCron,
    InvalidScheduleName,
    ScheduleNotFound,
    add_schedule,
    cron_job_id,
    get_schedule,
    list_schedules,
    remove_schedule,
    set_enabled,
    validate_cron,
)
from storage.index.db import connect
from storage.index.models import DeviceResultRow, Device, Run, Schedule, aware, utcnow


def _db(redis_server, number: int) -> str:
    return redis_server.url.rsplit("/", 1)[0] + f"/{number}"


@pytest.fixture()
def sessions(tmp_path):
    return connect(f"sqlite:///{tmp_path / 'index.sqlite'}")


# --- cron validation and the schedules table -------------------------------------------------------------------
@pytest.mark.parametrize("expression, normal", [
    ("* * * * *", "* * * * *"),
    ("  */5   *  * * * ", "*/5 * * * *"),
    ("0 2 * * mon-fri", "0 2 * * mon-fri"),
    ("15,45 8-18 1 */2 0", "15,45 8-18 1 */2 0"),
])
def test_valid_cron_is_normalised(expression, normal):
    assert validate_cron(expression) == normal


@pytest.mark.parametrize("expression, reason", [
    ("61 * * * *", "out of range"),
    ("* * * *", "4 field"),
    ("0 0 * * * *", "6 field"),
    ("@daily", "1 field"),
    ("", "0 field"),
    ("a b c d e", "invalid"),
    ("*/0 * * * *", "positive"),
    ("0 0 30 2 *", "never matches"),
])
def test_invalid_cron_names_the_expression(expression, reason):
    with pytest.raises(InvalidCron) as err:
        validate_cron(expression)
    message = str(err.value)
    assert repr(" ".join(expression.split())) in message and reason in message, message
    assert "5 fields" in message and isinstance(err.value, BackupError)


def test_add_list_enable_disable_remove(sessions):
    with sessions.begin() as s:
        a = add_schedule(s, "*/5 * * * *", group="site_ams", name="ams")
        b = add_schedule(s, "0 2 * * *", enabled=False)
        c = add_schedule(s, " 30  1 * * * ")  # a second unnamed one: names are optional
        ids = a.id, b.id, c.id
    with sessions() as s:
        rows = list_schedules(s)
    assert [r["id"] for r in rows] == list(ids)
    assert rows[0] | {"created_at": None, "updated_at": None, "next_run": None} == {
        "id": ids[0], "name": "ams", "group": "site_ams", "cron": "*/5 * * * *", "enabled": True,
        "created_at": None, "updated_at": None, "last_run_at": None, "last_run_id": "", "last_error": "",
        "next_run": None}
    assert rows[0]["next_run"] and rows[1]["next_run"] is None and rows[2]["cron"] == "30 1 * * *"
    assert rows[1]["name"] == rows[2]["name"] == "" and rows[1]["group"] == ""

    with sessions.begin() as s:
        assert set_enabled(s, "ams", False).enabled is False
        assert set_enabled(s, str(ids[1]), True).enabled is True
        assert set_enabled(s, ids[1], True).enabled is True  # idempotent
    with sessions() as s:
        assert [r["enabled"] for r in list_schedules(s)] == [False, True, True]
        assert get_schedule(s, "ams").id == ids[0]

    with sessions.begin() as s:
        assert remove_schedule(s, "ams")["name"] == "ams"
        assert remove_schedule(s, ids[2])["id"] == ids[2]
    with sessions() as s:
        assert [r["id"] for r in list_schedules(s)] == [ids[1]]


def test_schedule_errors_are_clear(sessions, tmp_path):
    from lab.generate_inventory import generate_inventory

    generate_inventory(count=4, out=tmp_path / "inv", port=2222, base="127.0.61.0")
    with sessions.begin() as s:
        add_schedule(s, "* * * * *", name="nightly")
    with sessions.begin() as s:
        with pytest.raises(InvalidScheduleName, match="a schedule named 'nightly' already exists"):
            add_schedule(s, "* * * * *", name="nightly")
        with pytest.raises(InvalidScheduleName, match="is a number"):
            add_schedule(s, "* * * * *", name="42")
        with pytest.raises(InventoryError, match="group 'site_nowhere' is not in the inventory"):
            add_schedule(s, "* * * * *", group="site_nowhere", inventory=tmp_path / "inv")
        assert add_schedule(s, "* * * * *", group="site_ams", inventory=tmp_path / "inv").group == "site_ams"
    for action in (lambda s: set_enabled(s, "nope", True), lambda s: remove_schedule(s, 999),
                   lambda s: get_schedule(s, "")):
        with sessions.begin() as s, pytest.raises(ScheduleNotFound, match=r"schedule '.*' not found"):
            action(s)


def test_migration_0003_downgrades_and_upgrades(tmp_path):
    from alembic import command
    from sqlalchemy import inspect

    from storage.index.db import _alembic_config, _engine, upgrade

    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    upgrade(url)
    command.downgrade(_alembic_config(url), "0002")
    engine = _engine(url)
    assert "schedules" not in inspect(engine).get_table_names()
    assert "stale_since" not in {c["name"] for c in inspect(engine).get_columns("devices")}
    upgrade(url)
    engine = _engine(url)
    assert "schedules" in inspect(engine).get_table_names()
    assert "stale_since" in {c["name"] for c in inspect(engine).get_columns("devices")}


# --- the scheduler's reconciliation ------------------------------------------------------------------------------
def test_reconcile_follows_the_table_and_fires_due_jobs(redis_server, tmp_path, sessions):
    from jobs.queues import Job, Queue

    from cli.schedule import KNOWN_JOBS_KEY, ScheduleScheduler
    from jobs.settings import Settings

    url = _db(redis_server, 6)
    redis = Redis.from_url(url)
    redis.flushdb()
    settings = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_REDIS_URL": url,
                                  "DEVICEVAULT_DATABASE_URL": f"sqlite:///{tmp_path / 'index.sqlite'}"})
    sched = ScheduleScheduler(redis, settings, sessions, interval=1)

    def ours() -> set[str]:
        return {m.decode() for m in redis.zrange(sched.scheduled_jobs_key, 0, -1) if m.decode().startswith(JOB_PREFIX)}

    with sessions.begin() as s:
        a = add_schedule(s, "*/5 * * * *", group="site_ams", name="a")
        b = add_schedule(s, "0 3 * * *", name="b")
        add_schedule(s, "0 4 * * *", enabled=False)
        job_a, job_b = cron_job_id(a.id, a.cron, "site_ams"), cron_job_id(b.id, b.cron, "")
    added, cancelled = sched.reconcile()
    assert sorted(added) == sorted([job_a, job_b]) and cancelled == []
    assert ours() == {job_a, job_b}
    job = Job.fetch(job_a, connection=redis)
    assert job.func_name == "jobs.ops.schedules.run_schedule" and list(job.args) == [a.id]
    assert job.origin == settings.collector_queue and job.meta["cron_string"] == "*/5 * * * *"
    assert sched.reconcile() == ([], [])  # nothing changed: nothing to do

    # the job is due: enqueue_jobs (what each pass runs) puts it on the collector queue and schedules it again
    sched.change_execution_time(job, (utcnow() - timedelta(seconds=5)).replace(tzinfo=None))
    list(sched.enqueue_jobs())
    assert Queue(settings.collector_queue, connection=redis).job_ids == [job_a]
    assert redis.zscore(sched.scheduled_jobs_key, job_a) > time.time()

    with sessions.begin() as s:  # changed (as the portal might), disabled, removed
        s.get(Schedule, a.id).cron = "*/10 * * * *"
        set_enabled(s, "b", False)
    added, cancelled = sched.reconcile()
    new_a = cron_job_id(a.id, "*/10 * * * *", "site_ams")
    assert added == [new_a] and sorted(cancelled) == sorted([job_a, job_b])
    assert ours() == {new_a}
    assert redis.exists(Job.key_for(job_b)) == 0  # never ran: deleted at once
    assert redis.exists(Job.key_for(job_a)) == 1  # still queued for a worker: kept until it has run
    Queue(settings.collector_queue, connection=redis).empty()
    with sessions.begin() as s:
        remove_schedule(s, a.id)
    added, cancelled = sched.reconcile()
    assert added == [] and cancelled == [new_a] and ours() == set()
    assert not any(redis.exists(Job.key_for(j)) for j in (job_a, job_b, new_a))
    assert redis.smembers(KNOWN_JOBS_KEY) == set()


# --- run_schedule in a real worker, and the CLI ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def offline(tmp_path_factory, redis_server):
    """DeviceVault with an inventory but no lab: for what never reaches a device."""
    from lab.generate_inventory import generate_inventory

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("schedules-offline")
    generate_inventory(count=4, out=home / "inventory", port=free_port(), base="127.0.62.0")
    url = _db(redis_server, 7)
    Redis.from_url(url).flushdb()
    return DeviceVault({"DEVICEVAULT_HOME": str(home), "DEVICEVAULT_REDIS_URL": url,
                        "DEVICEVAULT_INVENTORY": str(home / "inventory")}, home)


def test_run_schedule_starts_nothing_when_disabled_gone_already_ran_or_group_vanished(offline):
    from jobs.queues import Job, Queue

    from jobs.ops.schedules import run_schedule

    settings = offline.settings
    Session = connect(settings.database_url)
    with Session.begin() as s:
        disabled = add_schedule(s, "* * * * *", enabled=False).id
        vanished = add_schedule(s, "* * * * *", group="site_gone", name="gone").id
        ran = add_schedule(s, "* * * * *", group="site_ams").id
        s.get(Schedule, ran).last_run_at = utcnow() + timedelta(hours=1)  # this firing has already run
    queue = Queue("schedules-test", connection=Redis.from_url(settings.redis_url))
    jobs = [queue.enqueue(run_schedule, sid) for sid in (disabled, vanished, ran, 999)]
    offline("worker", "--burst", "--queue", "schedules-test", timeout=120)
    for job in jobs:
        job = Job.fetch(job.id, connection=queue.connection)
        assert job.get_status() == "finished" and job.return_value() is None, (job.id, job.get_status())
    with Session() as s:
        assert s.scalars(select(Run)).all() == []
        gone = s.get(Schedule, vanished)
        assert "group 'site_gone' is not in the inventory" in gone.last_error and gone.last_run_at is not None
        assert s.get(Schedule, disabled).last_run_at is None and s.get(Schedule, ran).last_error == ""


def test_cli_schedule_commands_and_their_errors(offline):
    def fails(*args: str) -> str:
        proc = offline(*args, check=False)
        assert proc.returncode != 0, proc.stdout
        lines = [l for l in proc.stderr.splitlines() if l.strip()]
        assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
        return lines[0]

    assert "invalid cron expression '61 * * * *'" in fails("schedule", "add", "--cron", "61 * * * *")
    assert "group 'site_mars' is not in the inventory" in fails("schedule", "add", "--cron", "* * * * *",
                                                                 "--group", "site_mars")
    assert "schedule 'nope' not found" in fails("schedule", "disable", "nope")
    added = offline.json("schedule", "add", "--cron", "*/15 * * * *", "--group", "site_ams", "--name", "ams")
    assert added["group"] == "site_ams" and added["enabled"] and added["next_run"]
    assert "'*/15 * * * *', group site_ams, disabled" in offline("schedule", "disable", "ams").stdout
    rows = {r["name"]: r for r in offline.json("schedule", "list")}
    assert rows["ams"]["enabled"] is False
    table = offline("schedule", "list").stdout
    assert "site_ams" in table and "*/15 * * * *" in table
    assert "enabled" in offline("schedule", "enable", str(added["id"])).stdout
    assert "removed schedule" in offline("schedule", "remove", "ams").stdout
    assert "ams" not in {r["name"] for r in offline.json("schedule", "list")}


# --- acceptance --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scheduled(tmp_path_factory, redis_server):
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("schedules")
    inventory = home / "inventory"
    # 4 devices: site_ams gets ams-ios-01 and ams-junos-01, site_nyc the other two
    hosts = generate_inventory(count=4, out=inventory, port=free_port(), base="127.0.60.0", platforms=["ios", "junos"])
    url = _db(redis_server, 5)
    Redis.from_url(url).flushdb()
    tool = DeviceVault({"DEVICEVAULT_HOME": str(home), "DEVICEVAULT_REDIS_URL": url,
                        "DEVICEVAULT_INVENTORY": str(inventory), "DEVICEVAULT_DEVICE_TIMEOUT": "8",
                        "DEVICEVAULT_JOB_TIMEOUT": "120"}, home)
    tool.hosts = hosts
    start_lab(inventory, home / "lab")
    procs = [tool.process("worker", "--name", f"sched-w-{free_port()}", name="worker"),
             tool.process("consumer", "--name", "sched-indexer", name="consumer"),
             tool.process("scheduler", "--interval", "1", name="scheduler")]
    for p in procs:
        p.start()
    tool.scheduler = procs[2]
    yield tool
    for p in procs:
        p.stop()
    stop_lab(home / "lab")


def _schedule_runs(Session, requested_by: str) -> list[tuple[Run, set[str]]]:
    with Session() as s:
        runs = s.scalars(select(Run).where(Run.requested_by == requested_by).order_by(Run.created_at)).all()
        return [(r, set(s.scalars(select(Device.name).join(DeviceResultRow, DeviceResultRow.device_id == Device.id)
                                  .where(DeviceResultRow.run_id == r.id)).all())) for r in runs]


def _finished(Session, name: str) -> list[tuple[Run, set[str]]]:
    return [(r, devices) for r, devices in _schedule_runs(Session, f"schedule:{name}") if r.finished_at is not None]


def test_every_minute_schedule_backs_up_its_group_twice_then_disable_stops_it(scheduled):
    # Two every-minute schedules fire at the same minute boundaries: nyc's runs twice; ams's is disabled
    # right after its first run, and the next boundary (nyc's second run) must not run it again.
    groups = {site: {h for h in scheduled.hosts if h.startswith(f"{site}-")} for site in ("nyc", "ams")}
    assert all(len(hosts) == 2 for hosts in groups.values())
    Session = connect(scheduled.settings.database_url)
    for site in groups:
        scheduled("schedule", "add", "--cron", "* * * * *", "--group", f"site_{site}", "--name", f"{site}-every-minute")
    added = time.monotonic()

    def wait_for(what: str, found, since: float) -> list[tuple[Run, set[str]]]:
        while time.monotonic() - since < 240:  # minute boundaries, and a busy machine
            done = found()
            if done:
                return done
            time.sleep(1)
        raise AssertionError(f"no {what} within 240 s; see {scheduled.home / 'logs'}")

    first_ams = wait_for("finished run of ams-every-minute", lambda: _finished(Session, "ams-every-minute"), added)[0]
    scheduled("schedule", "disable", "ams-every-minute")
    disabled = datetime.now(timezone.utc)
    # the first minute boundary after the disable: nyc fires there, ams must not (however late the disable came)
    next_boundary = (disabled.timestamp() // 60 + 1) * 60
    disabled_at = time.monotonic()
    wait_for("finished run of nyc-every-minute after the disable",
             lambda: [r for r, _ in _finished(Session, "nyc-every-minute")
                      if aware(r.created_at).timestamp() >= next_boundary], disabled_at)
    done = _finished(Session, "nyc-every-minute")
    assert len(done) >= 2
    for run, devices in done:
        assert run.selector == "group=site_nyc" and devices == groups["nyc"], (run.id, run.selector, devices)
        assert run.status == "succeeded", (run.id, run.status)
    assert done[1][0].created_at - done[0][0].created_at >= timedelta(seconds=50)  # two firings, not one twice
    assert first_ams[0].selector == "group=site_ams" and first_ams[1] == groups["ams"]

    time.sleep(5)  # a disabled firing would have been queued together with nyc's run after the boundary
    late = {r.id for r, _ in _schedule_runs(Session, "schedule:ams-every-minute") if aware(r.created_at) > disabled}
    assert late == set(), f"runs after the schedule was disabled: {late}"
    assert scheduled.scheduler.popen.poll() is None  # the same scheduler process, never restarted
    redis = Redis.from_url(scheduled.settings.redis_url)

    def registered() -> set[str]:
        return {m.decode() for m in redis.zrange("rq:scheduler:scheduled_jobs", 0, -1) if m.startswith(JOB_PREFIX.encode())}

    assert len(registered()) == 1  # nyc's; the disabled ams schedule is no longer registered with rq-scheduler
    scheduled("schedule", "disable", "nyc-every-minute")
    deadline = time.monotonic() + 15
    while registered() and time.monotonic() < deadline:  # the scheduler reconciles every second
        time.sleep(0.5)
    assert registered() == set()
    rows = {r["name"]: r for r in scheduled.json("schedule", "list")}
    row = rows["ams-every-minute"]
    newest_ams = _schedule_runs(Session, "schedule:ams-every-minute")[-1][0]  # the first, unless a busy machine let two fire
    assert row["enabled"] is False and row["last_run_id"] == newest_ams.id and row["last_error"] == ""
