"""RQ entry points. Thin: they take the Redis connection from the running job and call plain functions.

Arguments are explicit and plain data (no credentials, no configuration text: storage jobs carry outbox
ids); settings come from the worker's own environment.
"""

from __future__ import annotations

from datetime import timedelta

from redis import Redis
from rq import get_current_job

from jobs.collect.collector import collect
from jobs.deliver.locations import StorageLayout
from jobs.settings import Settings
from jobs.deliver.store import claim_more, store_to_target
from jobs.queues import Queue


def _connection():
    job = get_current_job()
    if job is None:
        raise RuntimeError("jobs.tasks functions run inside an RQ worker")
    return job.connection


def enqueue_store(redis: Redis, settings: Settings, layout: StorageLayout, target: str, item_ids: list[str]):
    """One storage job for ``item_ids`` on ``target``'s queue (``storage.<type>``)."""
    return Queue(layout.queue_for(target), connection=redis).enqueue(
        store_batch,
        target,
        list(item_ids),
        job_timeout=settings.job_timeout,
        description=f"store {len(item_ids)} version(s) on {target}",
        meta={"target": target, "items": len(item_ids)},
    )


def collect_batch(run_id: str, hosts: list[str], inventory: str, attempt: int = 1) -> dict[str, str]:
    """Collect ``hosts``; candidates are staged for the index consumer, which decides and enqueues the
    storage jobs (``jobs.deliver.release``). Returns host -> status as published (``changed`` = a candidate).

    Hosts that failed transiently come back as a new job on the same queue after a backoff (``attempt`` + 1).
    Each device's targets come from its storage location.
    """
    job = get_current_job()
    redis = _connection()
    settings = Settings.load()
    layout = StorageLayout.load(settings)

    def retry(again: list[str], next_attempt: int, delay: float) -> None:
        Queue(job.origin, connection=redis).enqueue_in(
            timedelta(seconds=delay), collect_batch, run_id, again, inventory, next_attempt,
            job_timeout=settings.job_timeout,
            description=f"backup run {run_id}: retry {next_attempt - 1} of {len(again)} device(s)",
            meta={"run_id": run_id, "hosts": again, "inventory": inventory, "attempt": next_attempt},
        )

    results = collect(redis, settings, run_id, hosts, inventory=inventory, layout=layout, attempt=attempt,
                      retry=retry, owner=job.id)
    return {str(r.device): str(r.status.value) for r in results}  # JSON: plain str keys and values


def restore_version(host: str, selector: str, inventory: str, requested_by: str = "") -> dict:
    """Restore version ``selector`` of ``host`` (``jobs.collect.restore``: push, then a backup in this job);
    returns the masked result (``RestoreResult.as_dict``, with a one-line ``summary``). A refusal or a failure
    is the job's failure, its message one line naming the device."""
    from jobs.collect.restore import restore

    result = restore(_connection(), Settings.load(), host, selector, inventory=inventory, requested_by=requested_by)
    return dict(result.as_dict(), summary=result.summary())


def store_batch(target: str, item_ids: list[str]) -> dict[str, str]:
    """Store outbox items on one target, with what became due on it while the job waited in its queue
    (``jobs.deliver.store.claim_more``). Returns ``device`` -> status."""
    redis = _connection()
    settings = Settings.load()
    job = get_current_job()
    item_ids = claim_more(redis, settings, target, item_ids, job.id if job is not None else None)
    outcomes = store_to_target(redis, settings, StorageLayout.load(settings), target, item_ids)
    return {str(o.device): str(o.status.value) for o in outcomes}
