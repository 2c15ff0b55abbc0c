"""``devicevault schedule ...`` (recurring backups) and ``devicevault scheduler`` (the process that fires them).

    devicevault schedule add --cron "*/5 * * * *" [--group G] [--name N] [--disabled] [--json]
    devicevault schedule list [--json]
    devicevault schedule enable ID|NAME
    devicevault schedule disable ID|NAME
    devicevault schedule remove ID|NAME
    devicevault scheduler [--interval 5] [--maintenance-interval 60]

Cron expressions have 5 fields (minute hour day-of-month month day-of-week) and are evaluated in the
scheduler host's local time zone. ``--group`` is an inventory group (default: every device); it is checked
against the inventory when the schedule is added, and again each time it fires (a group gone from the
inventory is recorded as the schedule's ``last_error``).

``devicevault scheduler`` runs rq-scheduler with a short polling interval. Before each pass it reconciles
rq-scheduler's cron jobs with the ``schedules`` table: one cron job per enabled schedule on the collector
queue, whose id names the schedule, its cron and its group (``jobs.ops.schedules.cron_job_id``), so a changed
schedule gets a new job; jobs of schedules removed, disabled or changed are cancelled. Schedules therefore
change at run time from the CLI (or the portal) without a restart; and since the job itself
(``jobs.ops.schedules.run_schedule``) reads its schedule again, a disable also stops a firing already queued.
Every ``--maintenance-interval`` seconds it also runs ``jobs.ops.maintenance.run_maintenance`` (0 = never).
Any number of schedulers may run: rq-scheduler's lock lets one at a time reconcile and enqueue.
SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import warnings

import click
from rq_scheduler import Scheduler

from .common import daemon_logging, emit, guard, index_sessions, load_settings, redis_client

log = logging.getLogger("devicevault.scheduler")
# crontab warns (on every rq-scheduler cron computation) that a future version changes a default; noise here
warnings.filterwarnings("ignore", category=FutureWarning, module="rq_scheduler.utils")

#: ids of the cron jobs schedulers created, so jobs of removed schedules can be cleaned up
KNOWN_JOBS_KEY = "devicevault:schedules:jobs"


def _describe(row: dict) -> str:
    label = f"schedule {row['id']}" + (f" ({row['name']})" if row["name"] else "")
    group = f"group {row['group']}" if row["group"] else "every device"
    state = "enabled" if row["enabled"] else "disabled"
    upcoming = f", next run {row['next_run']}" if row.get("next_run") else ""
    return f"{label}: {row['cron']!r}, {group}, {state}{upcoming}"


# --- devicevault schedule ---------------------------------------------------------------------------------------
@click.group()
def schedule() -> None:
    """Recurring backups of a group (or of every device) on a cron expression.

    Needs a running `devicevault scheduler` (and workers and the consumer) to fire.
    """


@schedule.command("add")
@click.option("--cron", required=True, help='5-field cron expression, e.g. "*/5 * * * *" (scheduler local time).')
@click.option("--group", default="", help="Inventory group to back up (default: every device).")
@click.option("--name", default="", help="Optional unique label (usable instead of the id).")
@click.option("--disabled", is_flag=True, help="Add it disabled.")
@click.option("--json", "as_json", is_flag=True)
@guard
def schedule_add(cron: str, group: str, name: str, disabled: bool, as_json: bool) -> None:
    """Add a schedule."""
    from jobs.ops.schedules import add_schedule, as_dict

    settings = load_settings()
    with index_sessions(settings).begin() as session:
        row = as_dict(add_schedule(session, cron, group=group, name=name, enabled=not disabled,
                                   inventory=settings.inventory))
    click.echo(json.dumps(row) if as_json else f"added {_describe(row)}")


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True)
@guard
def schedule_list(as_json: bool) -> None:
    """Every schedule with its last run, last error and next run."""
    from jobs.ops.schedules import list_schedules

    with index_sessions(load_settings())() as session:
        rows = list_schedules(session)
    if not as_json:
        rows = [dict(r, group=r["group"] or "(all)", enabled="yes" if r["enabled"] else "no") for r in rows]
    emit(rows, ["id", "name", "group", "cron", "enabled", "next_run", "last_run_at", "last_run_id", "last_error"],
          as_json)


def _set_enabled(id_or_name: str, enabled: bool) -> None:
    from jobs.ops.schedules import as_dict, set_enabled

    with index_sessions(load_settings()).begin() as session:
        row = as_dict(set_enabled(session, id_or_name, enabled))
    click.echo(_describe(row))


@schedule.command("enable")
@click.argument("id_or_name")
@guard
def schedule_enable(id_or_name: str) -> None:
    """Enable a schedule (by id or name)."""
    _set_enabled(id_or_name, True)


@schedule.command("disable")
@click.argument("id_or_name")
@guard
def schedule_disable(id_or_name: str) -> None:
    """Disable a schedule (by id or name): no further runs, not even from a firing already queued."""
    _set_enabled(id_or_name, False)


@schedule.command("remove")
@click.argument("id_or_name")
@guard
def schedule_remove(id_or_name: str) -> None:
    """Remove a schedule (by id or name)."""
    from jobs.ops.schedules import remove_schedule

    with index_sessions(load_settings()).begin() as session:
        row = remove_schedule(session, id_or_name)
    click.echo(f"removed {_describe(dict(row, next_run=None))}")


# --- devicevault scheduler --------------------------------------------------------------------------------------
class ScheduleScheduler(Scheduler):
    """rq-scheduler's Scheduler whose cron jobs follow the ``schedules`` table.

    :meth:`enqueue_jobs` (called under rq-scheduler's lock) first :meth:`reconcile`\\ s, then moves due jobs
    to their queues as usual.
    """

    def __init__(self, connection, settings, sessions, *, interval: float = 5, name: str | None = None):
        from jobs.queues import Job, Queue  # JSON jobs (rq-scheduler takes the classes, not a serializer)

        super().__init__(queue_name=settings.collector_queue, interval=interval, connection=connection, name=name,
                         job_class=Job, queue_class=Queue)
        self.settings = settings
        self.sessions = sessions
        self._stopping = threading.Event()

    def reconcile(self) -> tuple[list[str], list[str]]:
        """Make rq-scheduler's cron jobs match the enabled schedules. Returns (job ids added, cancelled).

        A wanted job missing from rq-scheduler's sorted set (or whose hash is gone) is created with
        ``Scheduler.cron``; a job of ours that no schedule wants any more is taken out of the set, and its
        hash deleted unless a worker has it queued or running (then on a later pass).
        """
        from rq.exceptions import NoSuchJobError
        from rq.job import JobStatus

        from jobs.ops.schedules import JOB_PREFIX, run_schedule, wanted_jobs

        with self.sessions() as session:
            wanted = {jid: (s.id, s.cron, s.group or "", s.name or "") for jid, s in wanted_jobs(session).items()}
        redis = self.connection
        prefix = JOB_PREFIX.encode()
        scheduled = {m.decode() for m in redis.zrange(self.scheduled_jobs_key, 0, -1) if m.startswith(prefix)}
        known = {m.decode() for m in redis.smembers(KNOWN_JOBS_KEY)} | scheduled
        added, cancelled = [], []
        for jid, (schedule_id, cron, group, name) in wanted.items():
            if jid in scheduled and redis.exists(self.job_class.key_for(jid)):
                continue
            redis.sadd(KNOWN_JOBS_KEY, jid)
            self.cron(cron, run_schedule, args=[schedule_id], id=jid, queue_name=self.settings.collector_queue,
                      description=f"schedule {name or schedule_id}: back up {group or 'every device'} at {cron!r}",
                      meta={"schedule_id": schedule_id})
            added.append(jid)
            log.info("schedule %s: cron job %s (%r, %s)", schedule_id, jid, cron, group or "every device")
        for jid in sorted(known - wanted.keys()):
            if jid in scheduled:
                self.cancel(jid)
                cancelled.append(jid)
                log.info("cancelled cron job %s (its schedule was removed, disabled or changed)", jid)
            try:
                job = self.job_class.fetch(jid, connection=redis)
            except NoSuchJobError:
                redis.srem(KNOWN_JOBS_KEY, jid)
                continue
            if job.get_status(refresh=False) in (JobStatus.QUEUED, JobStatus.STARTED):
                continue  # run_schedule re-reads the schedule; the hash goes on a later pass
            job.delete()
            redis.srem(KNOWN_JOBS_KEY, jid)
        return added, cancelled

    def enqueue_jobs(self):
        try:
            self.reconcile()
        except Exception as exc:  # noqa: BLE001 - keep firing the jobs we have; the index may be busy
            log.warning("could not reconcile the schedules (keeping the current cron jobs): %s", exc)
        return super().enqueue_jobs()

    def _install_signal_handlers(self) -> None:
        def stop(signum, _frame):
            log.info("%s: stopping", signal.Signals(signum).name)
            self._stopping.set()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)

    def stop(self) -> None:
        self._stopping.set()

    def run(self, burst: bool = False) -> None:
        """rq-scheduler's loop, stopping between passes (never halfway through one) on SIGTERM/SIGINT.

        A Redis that goes away (restart, outage longer than the connection's own retries,
        ``jobs.redisretry``) ends no scheduler: the pass is logged and tried again with backoff (1 s doubling
        up to 30 s); a lock it held expires by itself."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        self.register_birth()
        self._install_signal_handlers()
        outage = 0.0
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                try:
                    if outage and not self.connection.exists(self.key):
                        self.register_birth()  # Redis lost it while away
                    self.heartbeat()
                    if self.acquire_lock():
                        try:
                            self.enqueue_jobs()
                            self.heartbeat()
                        finally:
                            self.remove_lock()
                    else:
                        log.debug("another scheduler holds the lock; skipping this pass")
                    if outage:
                        log.info("scheduler %s: Redis is back", self.name)
                    outage = 0.0
                except (RedisConnectionError, RedisTimeoutError) as exc:
                    if burst:
                        raise
                    outage = min(max(outage * 2, 1.0), 30.0)
                    log.warning("scheduler %s: Redis unavailable (%s); trying again in %.0f s", self.name, exc, outage)
                    started = time.monotonic() - self._interval + outage
                if burst:
                    break
                deadline = started + self._interval
                while not self._stopping.is_set() and time.monotonic() < deadline:
                    time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        finally:
            try:
                self.remove_lock()
                self.register_death()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                log.warning("scheduler %s: could not unregister, Redis unavailable: %s", self.name, exc)


def _maintenance_loop(settings, interval: float, stopping: threading.Event) -> None:
    """Call ``jobs.ops.maintenance.run_maintenance(redis, settings)`` every ``interval`` seconds; errors are logged."""
    from jobs.ops.maintenance import run_maintenance

    redis = redis_client(settings)
    while not stopping.is_set():
        try:
            run_maintenance(redis, settings)
        except Exception:  # noqa: BLE001 - log and try again next interval
            log.exception("maintenance failed")
        stopping.wait(interval)


@click.command()
@click.option("--interval", default=5.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between passes (reconcile with the schedules table, fire due jobs).")
@click.option("--maintenance-interval", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="Seconds between calls of jobs.ops.maintenance.run_maintenance (0 = never).")
@click.option("--name", help="Scheduler name (default: random).")
def scheduler(interval: float, maintenance_interval: float, name: str | None) -> None:
    """Fire the schedules (devicevault schedule ...) and run periodic maintenance. Stop with SIGTERM/SIGINT."""
    settings = load_settings()
    redis_client(settings).ping()  # Redis down: one line (cli.common.operational_error) before anything starts
    daemon_logging(settings)
    for logger in (log, logging.getLogger("rq_scheduler"), logging.getLogger("devicevault")):
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
    instance = ScheduleScheduler(redis_client(settings, resilient=True), settings, index_sessions(settings), interval=interval,
                                 name=name)
    thread = None
    if maintenance_interval > 0:
        thread = threading.Thread(target=_maintenance_loop, args=(settings, maintenance_interval, instance._stopping),
                                  name="devicevault-maintenance", daemon=True)
        thread.start()
    log.info("scheduler %s: every %.1fs, collector queue %s", instance.name, interval, settings.collector_queue)
    instance.run()
    if thread is not None:
        thread.join(timeout=10)
    click.echo(f"scheduler {instance.name}: stopped", err=True)
