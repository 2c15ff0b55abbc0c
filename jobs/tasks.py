"""RQ entry points. Thin: they take the Redis connection from the running job and call plain functions.

Arguments are explicit and plain data (no credentials, no configuration text: storage jobs carry outbox
ids); settings come from the worker's own environment.
"""

from __future__ import annotations

from datetime import timedelta

from redis import Redis
from rq import Queue, get_current_job

from jobs.collect.collector import collect
from jobs.deliver.locations import StorageLayout
from jobs.deliver.outbox import StorageItem
from jobs.settings import Settings
from jobs.deliver.store import dispatch, store_to_target


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


def collect_batch(run_id: str, hosts: list[str], inventory: str, targets: list[str] | None = None,
                  attempt: int = 1) -> dict[str, str]:
    """Collect ``hosts``; new versions go to the outbox and one storage job per target. Returns host -> status.

    Hosts that failed transiently come back as a new job on the same queue after a backoff (``attempt`` + 1).
    ``targets`` is accepted for jobs enqueued by older versions and ignored: each device's targets come
    from its storage location.
    """
    job = get_current_job()
    redis = _connection()
    settings = Settings.load()
    layout = StorageLayout.load(settings)

    def enqueue_storage(items: list[StorageItem]) -> None:
        dispatch(redis, settings, items, lambda target, ids: enqueue_store(redis, settings, layout, target, ids))

    def retry(again: list[str], next_attempt: int, delay: float) -> None:
        Queue(job.origin, connection=redis).enqueue_in(
            timedelta(seconds=delay), collect_batch, run_id, again, inventory, None, next_attempt,
            job_timeout=settings.job_timeout,
            description=f"backup run {run_id}: retry {next_attempt - 1} of {len(again)} device(s)",
            meta={"run_id": run_id, "hosts": again, "attempt": next_attempt},
        )

    results = collect(redis, settings, run_id, hosts, inventory=inventory, enqueue_storage=enqueue_storage,
                      layout=layout, attempt=attempt, retry=retry, owner=job.id)
    return {r.device: r.status.value for r in results}


def store_batch(target: str, item_ids: list[str]) -> dict[str, str]:
    """Store outbox items on one target. Returns ``device`` -> status."""
    redis = _connection()
    settings = Settings.load()
    outcomes = store_to_target(redis, settings, StorageLayout.load(settings), target, item_ids)
    return {o.device: o.status.value for o in outcomes}
