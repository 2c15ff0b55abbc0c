"""RQ entry points. Thin: they take the Redis connection from the running job and call plain functions.

Arguments are explicit and plain data (no credentials, no configuration text: storage jobs carry outbox
ids); settings come from the worker's own environment.
"""

from __future__ import annotations

from redis import Redis
from rq import Queue, get_current_job

from .collect import collect
from .locations import StorageLayout
from .outbox import StorageItem
from .settings import Settings
from .store import dispatch, store_to_target


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


def collect_batch(run_id: str, hosts: list[str], inventory: str, targets: list[str] | None = None) -> dict[str, str]:
    """Collect ``hosts``; new versions go to the outbox and one storage job per target. Returns host -> status.

    ``targets`` is accepted for jobs enqueued by older versions and ignored: each device's targets come
    from its storage location.
    """
    redis = _connection()
    settings = Settings.load()
    layout = StorageLayout.load(settings)

    def enqueue_storage(items: list[StorageItem]) -> None:
        dispatch(redis, settings, items, lambda target, ids: enqueue_store(redis, settings, layout, target, ids))

    results = collect(redis, settings, run_id, hosts, inventory=inventory, enqueue_storage=enqueue_storage, layout=layout)
    return {r.device: r.status.value for r in results}


def store_batch(target: str, item_ids: list[str]) -> dict[str, str]:
    """Store outbox items on one target. Returns ``device`` -> status."""
    redis = _connection()
    settings = Settings.load()
    outcomes = store_to_target(redis, settings, StorageLayout.load(settings), target, item_ids)
    return {o.device: o.status.value for o in outcomes}
