"""Storage jobs: write versions waiting in the outbox to one target, and report each outcome.

There is one storage job per target per batch, on the queue of the target's type (``storage.git``,
``storage.fs``, ``storage.s3``), so a worker with access to a repository, a mount or a bucket serves
exactly those. A copy that fails stays in the outbox (``jobs/outbox.py``) and is reported ``pending`` with
its next attempt time; :func:`requeue_due` hands due copies to new jobs. One target failing never blocks
the others. Git gets one commit per changed device, with a message naming the device and the run.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable

from redis import Redis

from storage.base import StoreOptions
from storage.errors import StorageError
from storage.paths import device_path

from . import outbox
from .locations import StorageLayout
from .normalize import to_bytes
from .outbox import StorageItem
from .results import STORAGE_RESULTS_STREAM, StorageResult, StorageStatus, utcnow
from .settings import Settings

log = logging.getLogger(__name__)

#: enqueue(target, item_ids) -> puts one storage job on the target's queue
Enqueue = Callable[[str, list[str]], Any]


def storage_task_id(item: StorageItem, target: str, attempt: int) -> str:
    return f"{item.task_id}:{target}:{attempt}"


def lease_seconds(settings: Settings) -> float:
    """How long a storage job holds its items before they are due again (its hard limit plus a margin)."""
    return float(settings.job_timeout + settings.lock_margin)


def dispatch(redis: Redis, settings: Settings, items: list[StorageItem], enqueue: Enqueue) -> None:
    """Put new versions in the outbox, then one job per target for them."""
    if not items:
        return
    outbox.add(redis, items, lease_seconds(settings))
    per_target: dict[str, list[str]] = {}
    for item in items:
        for target in item.targets:
            per_target.setdefault(target, []).append(item.task_id)
    for target, ids in per_target.items():
        enqueue(target, ids)


def requeue_due(redis: Redis, settings: Settings, layout: StorageLayout, enqueue: Enqueue,
                types: list[str] | None = None) -> dict[str, int]:
    """Hand every due copy (a retry whose backoff is over, or a lease whose job was lost) to a new job.
    Only targets of ``types`` (default: all). Returns target -> number of copies handed out."""
    handed: dict[str, int] = {}
    for target in layout.all_targets():
        if types is not None and layout.targets[target].type not in types:
            continue
        while True:
            ids = outbox.claim_due(redis, target, lease_seconds(settings), limit=max(1, settings.batch_size))
            if not ids:
                break
            enqueue(target, ids)
            handed[target] = handed.get(target, 0) + len(ids)
    return handed


def store_to_target(redis: Redis, settings: Settings, layout: StorageLayout, target: str,
                    item_ids: list[str]) -> list[StorageResult]:
    """Store the outbox items ``item_ids`` on ``target``; publish and return one result each."""
    items = outbox.load(redis, item_ids)
    outcomes: list[StorageResult] = []
    backend = None
    try:
        backend = layout.open(target)
    except Exception as exc:  # noqa: BLE001 - a target that cannot be opened is an outcome, not a crash
        opening_error = f"{target}: cannot open target: {exc}"
    key_id = layout.key_id_for(target)
    for item in items:
        attempt = outbox.tries(redis, target, item.task_id) + 1
        behind = outbox.older_waiting(redis, target, item)
        if behind is not None:
            due = outbox.defer(redis, target, item, behind)
            outcomes.append(_outcome(item, target, StorageStatus.PENDING, attempt=attempt, next_at=due,
                                     error=f"{item.device} on {target}: waiting for an older version to land first"))
            continue
        if backend is None:
            error = f"{item.device} on {target}: {opening_error}"
        else:
            try:
                ref, status = _store_one(backend, item)
            except (StorageError, OSError) as exc:
                error = f"{item.device} on {target}: {exc}"
            else:
                outbox.done(redis, target, item)
                outcomes.append(_outcome(item, target, status, attempt=attempt, ref=ref, key_id=key_id))
                continue
        log.warning("storing %s on %s failed (attempt %d): %s", item.device, target, attempt, error)
        tries, due = outbox.failed(redis, target, item, error, base=settings.retry_base, cap=settings.retry_max)
        outcomes.append(_outcome(item, target, StorageStatus.PENDING, attempt=tries, next_at=due, error=error))
    pipe = redis.pipeline(transaction=False)
    for outcome in outcomes:
        pipe.xadd(STORAGE_RESULTS_STREAM, outcome.to_message())
    pipe.execute()
    return outcomes


def _store_one(backend: Any, item: StorageItem) -> tuple[str, StorageStatus]:
    path = device_path(item.group or "ungrouped", item.device)
    options = StoreOptions(
        message=f"{item.device}: configuration changed (run {item.run_id})",
        device=item.device,
        run_id=item.run_id,
        author=item.author or "DeviceVault",
        timestamp=datetime.fromtimestamp(item.collected_at, timezone.utc) if item.collected_at else None,
    )
    previous = backend.latest(path)
    ref = backend.store(to_bytes(item.config), path, options)
    return ref, StorageStatus.UNCHANGED if previous == ref else StorageStatus.STORED


def _outcome(item: StorageItem, target: str, status: StorageStatus, *, attempt: int, ref: str = "",
             error: str = "", next_at: float | None = None, key_id: str = "") -> StorageResult:
    return StorageResult(
        task_id=storage_task_id(item, target, attempt),
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
    )
