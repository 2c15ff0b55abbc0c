"""Queue hygiene: find jobs RQ lost track of, so backups never stop silently.

One pass (:func:`check_queues`, run by the scheduler's maintenance loop and by ``devicevault hygiene``):

- **abandoned**: a job started by a worker that died (its heartbeat expired). RQ's own cleanup is run on
  every DeviceVault queue: a job with retries left is enqueued again (same job id, so it takes over its
  host locks), the others go to the failed registry.
- **lost**: a job whose status is ``queued`` but which is in no queue (removed behind RQ's back, or a
  Redis failover lost the list entry) for longer than ``grace`` seconds: enqueued again.
- **orphaned**: a job deferred behind a parent that failed, was stopped, cancelled or deleted: it would
  wait forever; it is failed with the reason.
- **failed collection**: a collection job that failed for good: each of its devices without a result in
  its run gets a ``failed`` result naming the job and the reason, so the run finishes and says why.
- **lost copies**: copies in the storage outbox leased to a storage job that is gone (its worker died or its
  heartbeat expired, the job ended or vanished; ``jobs.deliver.store.storage_job_alive``) are made due at
  once instead of waiting for the lease (job timeout + margin); the storage workers' retry pumps do the same
  before each claim, this pass covers the time no pump runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass

from redis import Redis
from rq.exceptions import NoSuchJobError
from rq.job import JobStatus

from jobs import processes
from jobs.collect.collector import publish
from jobs.streams.results import device_task_id
from jobs.errors import CollectionFailed
from jobs.queues import Job, Queue, Worker
from jobs.redact import Redactor
from jobs.streams.results import DeviceResult, DeviceStatus, utcnow
from jobs.settings import Settings

log = logging.getLogger(__name__)

DEAD_PARENT = (JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED)


@dataclass(frozen=True)
class Finding:
    kind: str  # abandoned | lost | orphaned | failed_collection | lost_copies
    queue: str
    job_id: str
    action: str  # requeued | failed | reported
    reason: str

    def as_dict(self) -> dict:
        return asdict(self)


def our_queues(redis: Redis, settings: Settings) -> list[Queue]:
    prefixes = (settings.collector_queue, settings.storage_queue)
    return [q for q in Queue.all(connection=redis)
            if q.name in prefixes or q.name.startswith(tuple(f"{p}." for p in prefixes))]


def check_queues(redis: Redis, settings: Settings, *, grace: float = 60.0) -> list[Finding]:
    findings: list[Finding] = []
    queues = our_queues(redis, settings)
    for queue in queues:
        findings += _abandoned(queue)
        findings += _orphaned(queue)
    findings += _lost(redis, queues, grace)
    for queue in queues:
        if queue.name == settings.collector_queue or queue.name.startswith(f"{settings.collector_queue}."):
            findings += _failed_collections(redis, queue, settings)
    findings += _lost_copies(redis, settings)
    for finding in findings:
        log.warning("queue hygiene: %s job %s on %s: %s (%s)", finding.kind, finding.job_id, finding.queue,
                    finding.action, finding.reason)
    return findings


def _abandoned(queue: Queue) -> list[Finding]:
    started = queue.started_job_registry
    _expire_jobs_of_dead_local_workers(queue)
    expired = started.get_expired_job_ids()
    if not expired:
        return []
    failed_before = set(queue.failed_job_registry.get_job_ids())
    started.cleanup()
    failed_now = set(queue.failed_job_registry.get_job_ids())
    findings = []
    for entry in expired:
        job_id = entry.split(":", 1)[0]
        action = "failed" if job_id in failed_now - failed_before else "requeued"
        findings.append(Finding("abandoned", queue.name, job_id, action, "its worker stopped sending heartbeats"))
    return findings


def _expire_jobs_of_dead_local_workers(queue: Queue) -> None:
    """A started job whose worker ran on this host and whose processes (worker, work horse, Ansible: one
    process group) are all gone is abandoned now, not only when its heartbeat expires (about a minute and
    a half later). Workers on other hosts are left to the heartbeat."""
    started = queue.started_job_registry
    for entry in queue.connection.zrange(started.key, 0, -1):
        entry = entry.decode()
        job_id = entry.split(":", 1)[0]
        try:
            job = Job.fetch(job_id, connection=queue.connection)
        except NoSuchJobError:
            continue
        worker_name = job.worker_name
        if not worker_name:
            continue
        worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + worker_name, connection=queue.connection)
        if worker is None or processes.worker_gone(worker):
            queue.connection.zadd(started.key, {entry: 1}, xx=True)  # RQ's cleanup now treats it as abandoned
            if worker is not None:
                worker.register_death()


def _orphaned(queue: Queue) -> list[Finding]:
    findings = []
    registry = queue.deferred_job_registry
    for job_id in registry.get_job_ids():
        try:
            job = Job.fetch(job_id, connection=queue.connection)
        except NoSuchJobError:
            registry.remove(job_id)
            continue
        reason = ""
        for parent_id in job._dependency_ids:
            try:
                parent = Job.fetch(parent_id, connection=queue.connection)
            except NoSuchJobError:
                reason = f"its parent job {parent_id} no longer exists"
                break
            if parent.get_status() in DEAD_PARENT and not job.allow_dependency_failures:
                reason = f"its parent job {parent_id} is {parent.get_status().value}"
                break
        if reason:
            registry.remove(job)
            job.set_status(JobStatus.FAILED)
            queue.failed_job_registry.add(job, exc_string=f"queue hygiene: {reason}")
            findings.append(Finding("orphaned", queue.name, job.id, "failed", reason))
    return findings


def _lost(redis: Redis, queues: list[Queue], grace: float) -> list[Finding]:
    by_name = {q.name: q for q in queues}
    present: dict[str, set[str]] = {}
    for q in queues:
        ids = set(q.get_job_ids())
        ids |= {i.decode() for i in redis.lrange(f"{q.key}:intermediate", 0, -1)}
        present[q.name] = ids
    findings = []
    now = time.time()
    for key in redis.scan_iter(match="rq:job:*", count=500):
        job_id = key.decode().split(":", 2)[2]
        if ":" in job_id:  # rq:job:<id>:dependents and similar
            continue
        status, origin, enqueued_at = redis.hmget(key, "status", "origin", "enqueued_at")
        if status != b"queued" or origin is None or origin.decode() not in by_name:
            continue
        queue = by_name[origin.decode()]
        if job_id in present[queue.name]:
            continue
        try:
            job = Job.fetch(job_id, connection=redis)
        except NoSuchJobError:
            continue
        if job.enqueued_at is not None and now - job.enqueued_at.timestamp() < grace:
            continue
        if job_id in set(queue.get_job_ids()):  # enqueued meanwhile
            continue
        queue.enqueue_job(job)
        findings.append(Finding("lost", queue.name, job_id, "requeued", "status queued but in no queue"))
    return findings


def _lost_copies(redis: Redis, settings: Settings) -> list[Finding]:
    from jobs.deliver import outbox
    from jobs.deliver.locations import StorageLayout
    from jobs.deliver.store import storage_job_alive

    try:
        layout = StorageLayout.load(settings)
    except Exception as exc:  # noqa: BLE001 - a storage file that does not load is reported by the workers
        log.warning("queue hygiene: storage layout not loaded, lost copies not checked: %s", exc)
        return []
    findings = []
    for target in layout.all_targets():
        freed = outbox.free_lost(redis, target, lambda job_id: storage_job_alive(redis, job_id))
        if freed:
            findings.append(Finding("lost_copies", settings.storage_queue_for(layout.targets[target].type), "-",
                                    "released", f"{len(freed)} copy(ies) for {target} were held by a storage job "
                                    "that is gone"))
    return findings


def _failed_collections(redis: Redis, queue: Queue, settings: Settings) -> list[Finding]:
    findings = []
    masker = Redactor(settings.secrets())
    for job_id in queue.failed_job_registry.get_job_ids():
        try:
            job = Job.fetch(job_id, connection=redis)
        except NoSuchJobError:
            continue
        run_id, hosts = job.meta.get("run_id"), job.meta.get("hosts")
        if not run_id or not hosts or job.meta.get("reported"):
            continue
        result = job.latest_result()
        last_line = ((result.exc_string if result is not None else "") or job._exc_info or "").strip()
        reason = masker.redact(last_line.splitlines()[-1] if last_line else "the job failed")
        inventory = job.meta.get("inventory", "")  # the run's own inventory, as the collector would have said
        results = [
            DeviceResult(task_id=device_task_id(run_id, host), run_id=run_id, device=host, status=DeviceStatus.FAILED,
                         timestamp=utcnow(),
                         error=str(CollectionFailed(host, f"collection job {job.id} failed: {reason}")),
                         error_kind=CollectionFailed.kind, inventory=inventory)
            for host in hosts
        ]
        publish(redis, results)  # the index ignores hosts that already have a result in this run
        job.meta["reported"] = True
        job.save_meta()
        findings.append(Finding("failed_collection", queue.name, job.id, "reported", reason))
    return findings
