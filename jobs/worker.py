"""The RQ worker DeviceVault runs: RQ's forking worker whose work horse dies with it.

RQ runs each job in a *work horse*, a child process in a process group of its own. If the worker is
killed (SIGKILL, OOM killer, a crashed host agent), a plain RQ horse goes on and may finish the job after
queue hygiene has already handed it to another worker: two collections of the same hosts at once, and a
job that looks abandoned and finished at the same time. DeviceVault's rule is simpler: **a dead worker's
job is dead too**. The horse asks the kernel (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) to be killed the
moment its worker dies, so the job stays in RQ's started registry, its host locks stay until they expire
or are taken over, and queue hygiene (``jobs.ops.hygiene``) retries it under the same job id. Ansible's own
processes run on a pseudo-terminal owned by the horse and get SIGHUP when it goes.

**A worker outlives Redis restarts and outages.** RQ's own loop quits on the first error it does not expect
("found an unhandled exception, quitting"): a Redis restarted while the worker sent a heartbeat, cleaned its
registries or finished a job ended the process, and nothing outside ``devicevault up`` started it again.
Here the worker's connection retries each command for about a minute once it has worked
(``jobs.redisretry``, which the work horse and its job inherit), a failed heartbeat is logged and the next one
tried, and :meth:`DeviceVaultWorker.work` keeps its loop going through a longer outage: it logs the error,
waits with backoff (1 s doubling up to 30 s), registers the worker again if Redis lost it, and goes on. A job
whose end could not be recorded stays in RQ's started registry and queue hygiene retries it.

**RQ's scheduler child dies with its worker, and another worker takes its place at once.** The scheduler
(the process that moves ``enqueue_in`` jobs, such as a collection's retries, into their queue when due) is
a child the worker forks; a plain RQ scheduler outlived a SIGKILLed worker for good, keeping its process
group, and so the dead worker in ``status``, alive. Here it asks for ``PR_SET_PDEATHSIG`` as the horse does.
RQ gives each queue's scheduling to one worker through a lock (61 s) and lets the others try for it only in
their maintenance pass (every 10 minutes, once their 405-second wait for a job ends): a collection retry
waited up to a quarter of an hour after the worker that held the lock died. A DeviceVault worker whose
scheduler does not run looks every :data:`SCHEDULER_CHECK` seconds, releases a lock whose scheduler ran on
this host and is gone, and takes it.
"""

from __future__ import annotations

import logging
import os
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq.exceptions import StopRequested
from rq.scheduler import SCHEDULER_KEY_TEMPLATE, RQScheduler
from rq.scripts import release_lock

from jobs import processes
from jobs.queues import Worker

log = logging.getLogger(__name__)
#: what a lost or restarting Redis raises (``BusyLoadingError`` is a ``ConnectionError``)
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, ConnectionResetError, BrokenPipeError)
#: the worker loop's wait after an outage outlasted the connection's own retries: 1 s doubling up to this
MAX_OUTAGE_WAIT = 30.0
#: seconds between a worker's looks for a scheduler lock to take (when its own scheduler does not run); also
#: the longest a worker waits for a job before looking again
SCHEDULER_CHECK = 10


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux); if the parent is already gone
    (it died between the fork and this call), die now: the collection's ``batch_fetch.die_with_parent``."""
    from jobs.collect.platforms import collection_module

    collection_module("batch_fetch").die_with_parent(parent_pid)


def preload() -> None:
    """Import, once and in the worker, what every job imports (DeviceVault's jobs, Ansible's inventory and
    ansible-runner): each work horse is forked from the worker and starts with them instead of importing
    them again (about a CPU-second per collection batch)."""
    import ansible.inventory.manager  # noqa: F401
    import ansible.parsing.dataloader  # noqa: F401
    import ansible.vars.manager  # noqa: F401
    import ansible_runner  # noqa: F401

    import jobs.tasks  # noqa: F401
    from jobs.collect.platforms import collection_module

    collection_module("batch_fetch")  # die_with_parent, in every work horse


def warm_inventory(job) -> None:
    """Before a collection job's work horse is forked: parse its inventory here, in the worker, unless this
    worker still holds it unchanged (``jobs.collect.inventory.open_inventory`` reuses it), so every horse
    starts with it parsed instead of parsing it again per batch (2 CPU-s for 1,000 hosts). A failure is left
    for the job itself to report."""
    from jobs.tasks import collect_batch

    if job.func_name != f"{collect_batch.__module__}.{collect_batch.__name__}" or len(job.args) < 3:
        return
    from jobs.collect.inventory import open_inventory
    from jobs.settings import Settings

    try:
        open_inventory(job.args[2], Settings.load())
    except Exception:  # noqa: BLE001 - the job reports it, naming the inventory
        pass


class Scheduler(RQScheduler):
    """RQ's scheduler process, killed by the kernel when its worker dies (module docstring)."""

    parent_pid = 0

    def work(self):
        die_with_parent(self.parent_pid)
        return super().work()


def release_dead_scheduler_locks(connection, queue_names, own: str) -> list[str]:
    """Release the scheduler locks of ``queue_names`` held by a scheduler (not ``own``) that ran on this host
    and whose process is gone (its lock would otherwise hold for up to 61 s more); the queues released."""
    import socket

    released = []
    for queue in sorted(queue_names):
        key = Scheduler.get_locking_key(queue)
        holder = connection.get(key)
        if not holder or holder.decode() == own:
            continue
        holder = holder.decode()
        host, pid = connection.hmget(SCHEDULER_KEY_TEMPLATE % holder, "hostname", "pid")
        if host is None or host.decode() != socket.gethostname() or not (pid or b"").isdigit():
            continue
        if int(pid) and not processes.alive(int(pid)) and release_lock(connection, key, holder):
            log.warning("scheduler lock of queue %s released: its scheduler (pid %s on this host) is gone",
                        queue, pid.decode())
            released.append(queue)
    return released


class DeviceVaultWorker(Worker):
    """RQ's forking worker with JSON jobs (``jobs.queues``); its work horse is killed with it (see the module
    docstring), and starts with the jobs' imports done (:func:`preload`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        preload()

    def fork_work_horse(self, job, queue):
        self._devicevault_parent = os.getpid()
        warm_inventory(job)
        return super().fork_work_horse(job, queue)

    def main_work_horse(self, job, queue):
        die_with_parent(self._devicevault_parent)
        return super().main_work_horse(job, queue)

    # --- the scheduler (module docstring) ---------------------------------------------------------------
    def _start_scheduler(self, burst: bool = False, logging_level: str | None = "INFO", **formats):
        """RQ's ``Worker._start_scheduler`` with :class:`Scheduler` (same steps)."""
        self._scheduler_checked = time.monotonic()
        self.scheduler = Scheduler(self.queues, connection=self.connection,
                                   logging_level=logging_level if logging_level is not None else self.log.level,
                                   serializer=self.serializer, **formats)
        self.scheduler.parent_pid = os.getpid()
        self.scheduler.acquire_locks()
        if self.scheduler.acquired_locks:
            if burst:
                try:
                    self.scheduler.register_birth()
                    self.scheduler.enqueue_scheduled_jobs()
                finally:
                    self.scheduler.release_locks()
                    self.scheduler.register_death()
            else:
                self.scheduler.start()

    def _scheduler_idle(self) -> bool:
        """Whether this (non-burst) worker has a scheduler that does not run."""
        process = getattr(self.scheduler, "_process", False)
        return (not getattr(self, "_burst", True) and self.scheduler is not None
                and (process is None or not process.is_alive()))

    @property
    def should_run_maintenance_tasks(self):
        return super().should_run_maintenance_tasks or (
            self._scheduler_idle() and time.monotonic() - getattr(self, "_scheduler_checked", 0) >= SCHEDULER_CHECK)

    def run_maintenance_tasks(self):
        """RQ's maintenance when due (it starts the scheduler if a lock is free); in between, only the look
        for a scheduler lock to take. Either way a lock of a dead scheduler on this host is released first."""
        if self._scheduler_idle():
            self._scheduler_checked = time.monotonic()
            release_dead_scheduler_locks(self.connection, self.scheduler._queue_names, self.scheduler.name)
        if super().should_run_maintenance_tasks:
            super().run_maintenance_tasks()
        elif self._scheduler_idle():
            self.scheduler.acquire_locks(auto_start=True)

    @property
    def dequeue_timeout(self) -> int:
        return min(super().dequeue_timeout, SCHEDULER_CHECK)

    # --- Redis restarts and outages (module docstring) ------------------------------------------------
    def heartbeat(self, *args, **kwargs):
        try:
            return super().heartbeat(*args, **kwargs)
        except REDIS_DOWN as exc:  # the next heartbeat comes within the job monitoring interval
            self.log.warning("Worker %s: heartbeat not sent, Redis unavailable: %s", self.name, exc)

    def maintain_heartbeats(self, *args, **kwargs):
        try:
            return super().maintain_heartbeats(*args, **kwargs)
        except REDIS_DOWN as exc:  # the horse goes on; the monitor tries again
            self.log.warning("Worker %s: job heartbeat not sent, Redis unavailable: %s", self.name, exc)

    def _rejoin(self) -> None:
        """After an outage: register the worker again if Redis lost it (a Redis restarted without its data,
        or the worker's key expired while Redis was away)."""
        if not self.connection.exists(self.key):
            self.log.warning("Worker %s: Redis lost this worker's registration; registering again", self.name)
            self.register_birth()
            self.set_state("idle")

    def work(self, burst: bool = False, logging_level: str | None = None, max_jobs: int | None = None,
             with_scheduler: bool = False, **kwargs) -> bool:
        """RQ's work loop (rq 3.0's ``Worker.work``, same steps) that survives Redis going away: an error
        of a lost or restarting Redis is logged and waited out with backoff instead of ending the worker;
        a stop request (SIGTERM, SIGINT) still ends it, also during the wait."""
        self.bootstrap(logging_level or "INFO", **{k: v for k, v in kwargs.items() if k in ("date_format", "log_format")})
        self._dequeue_strategy = kwargs.get("dequeue_strategy") or "default"
        self._burst = burst
        max_idle_time = kwargs.get("max_idle_time")
        completed_jobs = 0
        if with_scheduler:
            self._start_scheduler(burst, logging_level or "INFO",
                                  **{k: v for k, v in kwargs.items() if k in ("date_format", "log_format")})
        self._install_signal_handlers()
        outage_wait = 0.0
        try:
            while True:
                try:
                    if outage_wait:
                        self._rejoin()
                    self.check_for_suspension(burst)
                    if self.should_run_maintenance_tasks:
                        self.run_maintenance_tasks()
                    if outage_wait:
                        self.log.info("Worker %s: Redis is back", self.name)
                        outage_wait = 0.0
                    if self._stop_requested:
                        self.log.info("Worker %s: stopping on request", self.name)
                        break
                    timeout = None if burst else self.dequeue_timeout
                    result = self.dequeue_job_and_maintain_ttl(timeout, max_idle_time)
                    if result is None:
                        if burst:
                            self.log.info("Worker %s: done, quitting", self.name)
                        elif max_idle_time is not None:
                            self.log.info("Worker %s: idle for %d seconds, quitting", self.name, max_idle_time)
                        break
                    job, queue = result
                    self.execute_job(job, queue)
                    self.heartbeat()
                    completed_jobs += 1
                    if max_jobs is not None and completed_jobs >= max_jobs:
                        self.log.info("Worker %s: finished executing %d jobs, quitting", self.name, completed_jobs)
                        break
                except StopRequested:
                    break
                except SystemExit:
                    raise
                except REDIS_DOWN as exc:
                    if burst:
                        raise
                    outage_wait = min(max(outage_wait * 2, 1.0), MAX_OUTAGE_WAIT)
                    self.log.warning("Worker %s: Redis unavailable (%s); trying again in %.0f s, not quitting",
                                     self.name, exc, outage_wait)
                    deadline = time.monotonic() + outage_wait
                    while not self._stop_requested and time.monotonic() < deadline:
                        time.sleep(0.2)
                    if self._stop_requested:
                        break
                except Exception:  # noqa: BLE001 - as RQ does: anything else ends the worker, logged
                    self.log.error("Worker %s: found an unhandled exception, quitting...", self.name, exc_info=True)
                    break
        finally:
            try:
                self.teardown()
            except REDIS_DOWN as exc:
                self.log.warning("Worker %s: could not unregister, Redis unavailable: %s", self.name, exc)
        return bool(completed_jobs)
