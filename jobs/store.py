"""The storage job: put each new version on every storage target and report each outcome on ``storage:results``.

One target failing never blocks the others. Git gets one commit per changed device, with a message naming
the device and the run.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis

from storage.base import StoreOptions
from storage.errors import StorageError
from storage.paths import device_path
from storage.registry import get_backend

from .collect import LATEST_SHA_KEY, StorageItem
from .normalize import to_bytes
from .results import STORAGE_RESULTS_STREAM, StorageResult, StorageStatus, utcnow
from .settings import Settings

log = logging.getLogger(__name__)


def storage_task_id(item: StorageItem, backend: str) -> str:
    return f"{item.task_id}:{backend}"


def store_items(redis: Redis, settings: Settings, items: list[StorageItem], targets: list[str] | tuple[str, ...]) -> list[StorageResult]:
    """Store ``items`` on every target in ``targets``; publish and return one :class:`StorageResult` each."""
    outcomes: list[StorageResult] = []
    for target in targets:
        try:
            backend = get_backend(target, **settings.backend_options(target))
        except Exception as exc:  # noqa: BLE001 - a broken target is an outcome, not a crash
            outcomes += [_outcome(item, target, StorageStatus.FAILED, error=f"{target}: cannot open target: {exc}") for item in items]
            continue
        for item in items:
            outcomes.append(_store_one(backend, target, item))
    failed_devices = {o.device for o in outcomes if o.status is StorageStatus.FAILED}
    for item in items:
        if item.device in failed_devices:  # let the next run try again rather than call it unchanged
            _forget_sha(redis, item)
    pipe = redis.pipeline(transaction=False)
    for outcome in outcomes:
        pipe.xadd(STORAGE_RESULTS_STREAM, outcome.to_message())
    pipe.execute()
    return outcomes


def _store_one(backend: Any, target: str, item: StorageItem) -> StorageResult:
    content = to_bytes(item.config)
    path = device_path(item.group or "ungrouped", item.device)
    options = StoreOptions(
        message=f"{item.device}: configuration changed (run {item.run_id})",
        device=item.device,
        run_id=item.run_id,
        author=item.author or "DeviceVault",
    )
    previous = None
    try:
        previous = backend.latest(path)
        ref = backend.store(content, path, options)
    except (StorageError, OSError) as exc:
        log.warning("storing %s on %s failed: %s", item.device, target, exc)
        return _outcome(item, target, StorageStatus.FAILED, error=f"{item.device} on {target}: {exc}")
    status = StorageStatus.UNCHANGED if previous == ref else StorageStatus.STORED
    return _outcome(item, target, status, ref=ref)


def _outcome(item: StorageItem, target: str, status: StorageStatus, *, ref: str = "", error: str = "") -> StorageResult:
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
    )


def _forget_sha(redis: Redis, item: StorageItem) -> None:
    current = redis.hget(LATEST_SHA_KEY, item.device)
    if current is not None and current.decode() == item.sha256:
        redis.hdel(LATEST_SHA_KEY, item.device)
