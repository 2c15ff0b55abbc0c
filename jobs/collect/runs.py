"""Start a backup run: choose hosts, announce the run on ``device:results`` (the index consumer records it), enqueue
one collection job per batch. Also where a restore is queued (the portal's), on the same queues.

Jobs are enqueued by their import path (``jobs.tasks.…``), so this module does not import the entry points
that call back into ``jobs.collect`` (``jobs.tasks.restore_version`` runs ``jobs.collect.restore``, which
announces its backup here)."""

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
from jobs.streams.results import DEVICE_RESULTS_STREAM, RunStarted, run_task_id, utcnow


#: the RQ entry points this module enqueues (``jobs/tasks.py``)
COLLECT_TASK = "jobs.tasks.collect_batch"
RESTORE_TASK = "jobs.tasks.restore_version"


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
    announce_run(redis, run_id, chosen, targets, inventory_path, selector=selector, requested_by=requested_by)
    by_queue: dict[str, list[str]] = {}
    for name in chosen:  # devices bound to a collection group go to that group's queue
        by_queue.setdefault(settings.collector_queue_for(inv[name].collector_group), []).append(name)
    job_ids = []
    for queue_name, names in by_queue.items():
        queue = Queue(queue_name, connection=redis)
        for start in range(0, len(names), settings.batch_size):  # at least 1 (Settings)
            batch = names[start : start + settings.batch_size]
            job = queue.enqueue(
                COLLECT_TASK,
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


def announce_run(redis: Redis, run_id: str, chosen: list[str], targets, inventory_path: Path, *,
                 selector: str, requested_by: str) -> RunStarted:
    """Put the run's start on device:results, before any of its devices can publish there: the index consumer
    writes the run's row from it (the index has one writer), and checks the run's devices against its
    inventory. Also how a restore announces the backup it takes afterwards (``jobs.collect.restore``)."""
    started = RunStarted(task_id=run_task_id(run_id), run_id=run_id, timestamp=utcnow(), total=len(chosen),
                         selector=selector, targets=",".join(targets), inventory=str(inventory_path),
                         requested_by=requested_by)
    redis.xadd(DEVICE_RESULTS_STREAM, started.to_message())
    return started


def enqueue_restore(redis: Redis, settings: Settings, host: str, selector: str, *, inventory: Path | str | None = None,
                    requested_by: str = ""):
    """Queue a restore of ``host`` (``jobs.collect.restore``) as a job, for the portal: on the collection queue
    of the device's collection group, where the workers that reach it run. Returns the RQ job; its result
    is the restore's masked outcome (``RestoreResult.as_dict`` and a ``summary`` line)."""
    inventory_path = Path(inventory or settings.inventory).absolute()
    inv = load_inventory(inventory_path, settings, only=[host])
    (entry,) = select_hosts(inv, hosts=[host])
    queue = Queue(settings.collector_queue_for(entry.collector_group), connection=redis)
    return queue.enqueue(RESTORE_TASK, host, str(selector), str(inventory_path), requested_by,
                         job_timeout=settings.job_timeout, description=f"restore v{selector} of {host}",
                         meta={"restore": host, "version": str(selector), "requested_by": requested_by})


def job_retry(settings: Settings) -> Retry | None:
    """RQ retries of a whole collection job (its worker died, or it raised): at once, with the same job id,
    so the retry takes over the host locks its dead attempt left (``jobs.collect.locks``). Devices that fail
    transiently inside a job are retried with backoff by the job itself (``jobs.collect.collector``)."""
    if settings.collect_retries <= 0:
        return None
    return Retry(max=settings.collect_retries)
