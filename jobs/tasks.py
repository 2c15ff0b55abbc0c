"""RQ entry points. Thin: they take the Redis connection from the running job and call plain functions.

Arguments are explicit and plain data (no credentials); settings come from the worker's own environment.
"""

from __future__ import annotations

from dataclasses import asdict

from rq import Queue, get_current_job

from .collect import StorageItem, collect
from .settings import Settings
from .store import store_items


def _connection():
    job = get_current_job()
    if job is None:
        raise RuntimeError("jobs.tasks functions run inside an RQ worker")
    return job.connection


def collect_batch(run_id: str, hosts: list[str], inventory: str, targets: list[str]) -> dict[str, str]:
    """Collect ``hosts``; new versions go to one storage job on the storage queue. Returns host -> status."""
    redis = _connection()
    settings = Settings.load()

    def enqueue_storage(items: list[StorageItem]) -> None:
        Queue(settings.storage_queue, connection=redis).enqueue(
            store_batch,
            [asdict(item) for item in items],
            list(targets),
            job_timeout=settings.job_timeout,
            description=f"store {len(items)} version(s) of run {run_id}",
            meta={"run_id": run_id},
        )

    results = collect(redis, settings, run_id, hosts, inventory=inventory, enqueue_storage=enqueue_storage)
    return {r.device: r.status.value for r in results}


def store_batch(items: list[dict], targets: list[str]) -> dict[str, str]:
    """Store new versions on every target. Returns ``device@target`` -> status."""
    redis = _connection()
    outcomes = store_items(redis, Settings.load(), [StorageItem(**item) for item in items], targets)
    return {f"{o.device}@{o.backend}": o.status.value for o in outcomes}
