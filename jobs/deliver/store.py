"""Storage jobs: write versions waiting in the outbox to one target, and report each outcome.

There is one storage job per target per batch, on the queue of the target's type (``storage.git``,
``storage.fs``, ``storage.s3``), so a worker with access to a repository, a mount or a bucket serves
exactly those. A copy that fails stays in the outbox (``jobs/deliver/outbox.py``) and is reported ``pending`` with
its next attempt time; :func:`requeue_due` hands due copies to new jobs. One target failing never blocks
the others. Git gets one commit per changed device, with a message naming the device and the run.

Storage jobs do not ask whether a version is new: the decider did, before it released the version to the
outbox (``jobs.deliver.release``). They write what they are given. Writing the same version again (a job
that died after its store and before ``outbox.done``) creates nothing new: fs and s3 name a version by its
collection time (``StoreOptions.timestamp``), git makes no commit for identical content.

Every published outcome has its own task id (``<item>:<target>:<random>``), so a deferral, a retry and the
landing of one copy never share one; a redelivered outcome keeps its id and is applied once.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from redis import Redis

from storage.base import StoreOptions
from storage.errors import StorageError
from storage.paths import device_path, raw_path

from jobs import processes
from jobs.controls import one_line
from jobs.deliver import outbox
from jobs.deliver.locations import StorageLayout
from jobs.collect.normalize import to_bytes
from jobs.deliver.outbox import StorageItem
from jobs.streams.results import STORAGE_RESULTS_STREAM, StorageResult, StorageStatus, utcnow
from jobs.settings import Settings

log = logging.getLogger(__name__)

#: enqueue(target, item_ids) -> puts one storage job on the target's queue
Enqueue = Callable[[str, list[str]], Any]


def storage_task_id(item: StorageItem, target: str) -> str:
    """A new id for each outcome published (unique across attempts, deferrals and jobs)."""
    return f"{item.task_id}:{target}:{uuid.uuid4().hex[:16]}"


def lease_seconds(settings: Settings) -> float:
    """How long a storage job holds its items before they are due again (its hard limit plus a margin)."""
    return float(settings.job_timeout + settings.lock_margin)


def storage_job_alive(redis: Redis, job_id: str) -> bool:
    """Whether the storage job ``job_id`` can still store what it holds: it waits in a queue (or for its
    time), or it was started by a worker that is alive: its heartbeat key has not expired and, on this host,
    its process still runs (its work horse dies with it, ``jobs.worker``). A job that ended, vanished or
    whose worker is gone holds nothing any more (``outbox.free_lost``)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import JobStatus

    from jobs.queues import Job, Worker

    try:
        job = Job.fetch(job_id, connection=redis)
        status = job.get_status(refresh=False)
    except NoSuchJobError:
        return False
    if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, None):
        return True
    if status != JobStatus.STARTED:
        return False  # finished, failed, stopped, canceled: whatever it did not land is not held any more
    if not job.worker_name:
        return True
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + job.worker_name, connection=redis)
    return worker is not None and not processes.worker_process_dead(worker)


def job_waiting(redis: Redis, job_id: str) -> bool:
    """Whether the storage job ``job_id`` still waits in its queue (not started, not ended, not gone)."""
    from rq.exceptions import NoSuchJobError
    from rq.job import JobStatus

    from jobs.queues import Job

    try:
        return Job.fetch(job_id, connection=redis).get_status(refresh=False) == JobStatus.QUEUED
    except NoSuchJobError:
        return False


def claim_more(redis: Redis, settings: Settings, target: str, item_ids: list[str], job_id: str | None) -> list[str]:
    """What storage job ``job_id`` stores: ``item_ids``, plus what became due on ``target`` since it was
    enqueued, up to ``DEVICEVAULT_BATCH_SIZE`` items in all, leased to it like the rest (while a job waits
    in its queue the consumer enqueues no other for its target: ``jobs.deliver.release``)."""
    room = settings.batch_size - len(item_ids)
    if job_id is None or room <= 0:
        return list(item_ids)
    more = [i for i in outbox.claim_due(redis, target, lease_seconds(settings), limit=room) if i not in item_ids]
    if more:
        outbox.hold(redis, target, more, job_id)
    return list(item_ids) + more


def requeue_due(redis: Redis, settings: Settings, layout: StorageLayout, enqueue: Enqueue,
                types: list[str] | None = None) -> dict[str, int]:
    """Hand every due copy (a retry whose backoff is over, or a copy whose job was lost) to a new job.
    Only targets of ``types`` (default: all). Returns target -> number of copies handed out.

    First the copies held by a storage job that is gone (:func:`storage_job_alive`: its worker died, its
    heartbeat expired, the job vanished with a Redis that lost it) are made due at once
    (``outbox.free_lost``), so they do not wait for the whole lease (the job timeout plus margin)."""
    handed: dict[str, int] = {}
    for target in layout.all_targets():
        if types is not None and layout.targets[target].type not in types:
            continue
        freed = outbox.free_lost(redis, target, lambda job_id: storage_job_alive(redis, job_id))
        if freed:
            log.warning("%d copy(ies) for %s were held by a storage job that is gone (its worker died or it "
                        "vanished): handed out again now", len(freed), target)
        while True:
            ids = outbox.claim_due(redis, target, lease_seconds(settings), limit=settings.batch_size)
            if not ids:
                break
            hold(redis, target, ids, enqueue(target, ids))
            handed[target] = handed.get(target, 0) + len(ids)
    return handed


def hold(redis: Redis, target: str, ids: list[str], job: Any) -> None:
    """Record the enqueued ``job`` (an RQ job; anything without an ``id`` is left unrecorded) as the holder
    of the leases of ``ids``."""
    job_id = getattr(job, "id", None)
    if isinstance(job_id, str) and job_id:
        outbox.hold(redis, target, ids, job_id)


def store_to_target(redis: Redis, settings: Settings, layout: StorageLayout, target: str,
                    item_ids: list[str]) -> list[StorageResult]:
    """Store the outbox items ``item_ids`` on ``target``; publish and return one result each.

    The items go to the backend in one ``store_many`` call (one lock, one git process per chunk); if that
    fails, each item is tried on its own so one bad item cannot hold back the others.
    """
    codec = layout.sealing_codec()
    items = [outbox.unseal(i, codec) for i in outbox.load(redis, item_ids)]
    outcomes: list[StorageResult] = []
    ready: list[StorageItem] = []
    for item in items:
        behind = outbox.older_waiting(redis, target, item)
        if behind is not None and behind not in {i.task_id for i in ready}:
            due = outbox.defer(redis, target, item, behind)
            outcomes.append(_outcome(item, target, StorageStatus.PENDING, attempt=outbox.tries(redis, target, item.task_id) + 1,
                                     next_at=due, error=f"{item.device} on {target}: waiting for an older version to land first"))
            continue
        ready.append(item)
    try:
        backend = layout.open(target)
    except Exception as exc:  # noqa: BLE001 - a target that cannot be opened is an outcome, not a crash
        failures = {item.task_id: f"{item.device} on {target}: cannot open target: {exc}" for item in ready}
        stored: dict[str, str] = {}
    else:
        stored, failures = _store_all(backend, target, ready)
    key_id = layout.key_id_for(target)
    raw_refs: dict[str, str] = {}
    if key_id:  # raw device output (with its secrets) only ever goes to encrypted targets
        with_raw = [item for item in ready if item.raw and item.task_id in stored]
        raw_stored, raw_failures = _store_all(backend, target, with_raw, _raw_request, what="raw copy: ")
        raw_refs = dict(raw_stored)
        for task_id, error in raw_failures.items():  # the version is not landed without its raw copy
            del stored[task_id]
            failures[task_id] = error
    for item in ready:
        attempt = outbox.tries(redis, target, item.task_id) + 1
        if item.task_id in stored:
            ref = stored[item.task_id]
            outbox.done(redis, target, item)
            outcomes.append(_outcome(item, target, StorageStatus.STORED, attempt=attempt, ref=ref, key_id=key_id,
                                     raw_ref=raw_refs.get(item.task_id, "")))
            continue
        error = failures[item.task_id]
        log.warning("storing %s on %s failed (attempt %d): %s", item.device, target, attempt, error)
        tries, due = outbox.failed(redis, target, item, error, base=settings.retry_base, cap=settings.retry_max)
        outcomes.append(_outcome(item, target, StorageStatus.PENDING, attempt=tries, next_at=due, error=error))
    pipe = redis.pipeline(transaction=False)
    for outcome in outcomes:
        pipe.xadd(STORAGE_RESULTS_STREAM, outcome.to_message())
    pipe.execute()
    return outcomes


def _store_all(backend: Any, target: str, items: list[StorageItem],
               make_request: Callable[[StorageItem], tuple[bytes, str, StoreOptions]] | None = None,
               what: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """(task id -> ref for stored items, task id -> error for the others). ``make_request`` gives an item's
    (content, path, options): its configuration by default; ``what`` starts its error messages."""
    if not items:
        return {}, {}
    requests = [(make_request or _request)(item) for item in items]
    try:
        refs = backend.store_many(requests)
    except (StorageError, OSError):
        stored, failures = {}, {}
        for item, request in zip(items, requests):  # one at a time: find the item(s) at fault
            try:
                stored[item.task_id] = backend.store(*request)
            except (StorageError, OSError) as exc:
                failures[item.task_id] = f"{item.device} on {target}: {what}{exc}"
        return stored, failures
    return {item.task_id: ref for item, ref in zip(items, refs)}, {}


def _options(item: StorageItem) -> StoreOptions:
    """Commit message, author and time of one version (its raw copy gets the same)."""
    return StoreOptions(
        message=f"{one_line(item.device)}: configuration changed (run {item.run_id})",
        device=item.device,
        run_id=item.run_id,
        author=item.author or "DeviceVault",
        timestamp=datetime.fromtimestamp(item.collected_at, timezone.utc) if item.collected_at else None,
    )


def _request(item: StorageItem) -> tuple[bytes, str, StoreOptions]:
    return to_bytes(item.config), device_path(item.group or "ungrouped", item.device), _options(item)


def _raw_request(item: StorageItem) -> tuple[bytes, str, StoreOptions]:
    return to_bytes(item.raw), raw_path(item.group or "ungrouped", item.device), _options(item)


def _outcome(item: StorageItem, target: str, status: StorageStatus, *, attempt: int, ref: str = "",
             error: str = "", next_at: float | None = None, key_id: str = "", raw_ref: str = "") -> StorageResult:
    return StorageResult(
        task_id=storage_task_id(item, target),
        run_id=item.run_id,
        device=item.device,
        backend=target,
        status=status,
        timestamp=utcnow(),
        group=item.group,
        sha256=item.sha256,
        size=len(to_bytes(item.config)),
        ref=ref,
        error=error,
        author=item.author,
        attempt=attempt,
        next_attempt_at=datetime.fromtimestamp(next_at, timezone.utc).isoformat() if next_at else "",
        key_id=key_id,
        raw_ref=raw_ref,
    )
