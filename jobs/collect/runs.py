"""Start a backup run: choose hosts, announce the run on ``device:results`` (the index consumer records it), enqueue
one collection job per batch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from redis import Redis
from rq import Retry

from jobs.collect.inventory import load_inventory, select_hosts
from jobs.deliver.locations import StorageConfigError, StorageLayout
from jobs.queues import Queue
from jobs.settings import Settings
from jobs import tasks
from jobs.streams.results import DEVICE_RESULTS_STREAM, RunStarted, run_task_id, utcnow


@dataclass(frozen=True)
class StartedRun:
    run_id: str
    hosts: list[str]
    job_ids: list[str]


def new_run_id() -> str:
    return uuid.uuid4().hex


def start_backup(
    redis: Redis,
    settings: Settings,
    *,
    groups: list[str] | None = None,
    hosts: list[str] | None = None,
    inventory: Path | str | None = None,
    requested_by: str = "",
    run_id: str | None = None,
) -> StartedRun:
    """Back up the chosen hosts (all by default). Raises :class:`~jobs.errors.InventoryError` on bad input."""
    inventory_path = Path(inventory or settings.inventory).absolute()
    inv = load_inventory(inventory_path, settings)
    chosen = [h.name for h in select_hosts(inv, groups=groups, hosts=hosts)]
    layout = StorageLayout.load(settings)
    targets: dict[str, None] = {}
    for name in chosen:
        try:
            targets.update(dict.fromkeys(layout.targets_for(inv[name].group, inv[name].location)))
        except StorageConfigError:  # reported per device by the collector
            pass
    run_id = run_id or new_run_id()
    selector = ",".join([f"group={g}" for g in groups or []] + [f"host={h}" for h in hosts or []]) or "all"
    # the run's start goes on device:results before any of its jobs can publish there: the index consumer
    # writes the run's row from it (the index has one writer), and checks the run's devices against its inventory
    started = RunStarted(task_id=run_task_id(run_id), run_id=run_id, timestamp=utcnow(), total=len(chosen),
                         selector=selector, targets=",".join(targets), inventory=str(inventory_path),
                         requested_by=requested_by)
    redis.xadd(DEVICE_RESULTS_STREAM, started.to_message())
    by_queue: dict[str, list[str]] = {}
    for name in chosen:  # devices bound to a collection group go to that group's queue
        by_queue.setdefault(settings.collector_queue_for(inv[name].collector_group), []).append(name)
    job_ids = []
    for queue_name, names in by_queue.items():
        queue = Queue(queue_name, connection=redis)
        for start in range(0, len(names), settings.batch_size):  # at least 1 (Settings)
            batch = names[start : start + settings.batch_size]
            job = queue.enqueue(
                tasks.collect_batch,
                run_id,
                batch,
                str(inventory_path),
                job_timeout=settings.job_timeout,
                retry=job_retry(settings),
                description=f"backup run {run_id}: {len(batch)} device(s)",
                meta={"run_id": run_id, "hosts": batch, "inventory": str(inventory_path)},
            )
            job_ids.append(job.id)
    return StartedRun(run_id=run_id, hosts=chosen, job_ids=job_ids)


def job_retry(settings: Settings) -> Retry | None:
    """RQ retries of a whole collection job (its worker died, or it raised): at once, with the same job id,
    so the retry takes over the host locks its dead attempt left (``jobs.collect.locks``). Devices that fail
    transiently inside a job are retried with backoff by the job itself (``jobs.collect.collector``)."""
    if settings.collect_retries <= 0:
        return None
    return Retry(max=settings.collect_retries)
