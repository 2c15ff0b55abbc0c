"""Collect a batch of hosts: lock, fetch, normalise, check the version cache, stage candidates, publish.

The collector does not decide whether a configuration is a new version: the index consumer does
(``storage.index.records.apply_device_result``), against the index. The collector reads the cache in front
of it (``jobs.collect.cache``): on a hit it reports ``unchanged`` and hands nothing on; otherwise it stages
the configuration in the storage outbox as a *candidate* and publishes the device result with status
``changed`` (on the wire: "a candidate"; the index records what the decider made of it). Staging and
publishing happen in one Redis transaction, so the decider never sees a candidate without its text. Storage
jobs are enqueued by the decider, after its commit, never here.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from redis import Redis

from jobs import errors
from jobs.collect.fetch import FetchOutcome, fetch_configs
from jobs.collect.inventory import InventoryHost, load_inventory
from jobs.deliver.locations import StorageLayout, StorageConfigError
from jobs.collect.locks import host_locks
from jobs.collect.answers import check_answers
from jobs.collect.normalize import normalize, sha256_text, to_bytes
from jobs.collect import cache
from jobs.deliver import outbox
from jobs.deliver.outbox import StorageItem, seal
from jobs.collect.platforms import Platform, get_platform
from jobs.redact import Redactor
from jobs.streams.results import DEVICE_RESULTS_STREAM, DeviceResult, DeviceStatus, device_task_id, utcnow
from jobs.settings import Settings

log = logging.getLogger(__name__)


def _result(run_id: str, host: str, inv: InventoryHost | None, status: DeviceStatus, **fields) -> DeviceResult:
    return DeviceResult(
        task_id=device_task_id(run_id, host),
        run_id=run_id,
        device=host,
        status=status,
        timestamp=utcnow(),
        group=inv.group if inv else "",
        platform=inv.platform if inv else "",
        **fields,
    )


def _failed(run_id: str, host: str, inv: InventoryHost | None, error: errors.DeviceError, **fields) -> DeviceResult:
    return _result(run_id, host, inv, DeviceStatus.FAILED, error=str(error), error_kind=error.kind, **fields)


def collect(
    redis: Redis,
    settings: Settings,
    run_id: str,
    hosts: list[str],
    *,
    inventory: Path | str | None = None,
    layout: StorageLayout | None = None,
    attempt: int = 1,
    retry: Callable[[list[str], int, float], None] | None = None,
    owner: str | None = None,
) -> list[DeviceResult]:
    """Back up ``hosts`` (one ansible-runner call) and publish one result per host on ``device:results``.

    Hosts locked by another job are reported ``skipped_locked`` and not touched. A configuration the cache
    does not know is staged in the outbox as a candidate for the decider; a cache hit only produces a result.

    A host that fails transiently (timeout, connection refused/reset/lost, output cut short) is handed to
    ``retry(hosts, next_attempt, delay)`` while ``attempt <= settings.collect_retries``, with exponential
    backoff; its result is published by the attempt that ends it. Permanent failures (authentication,
    unknown platform, command rejected) are never retried and say so. ``owner`` is the lock token
    (``jobs.collect.locks.host_locks``).
    """
    inventory_path = Path(inventory or settings.inventory)
    inv = load_inventory(inventory_path, settings, only=hosts)  # this batch's hosts (their credentials are masked)
    with host_locks(redis, hosts, settings.lock_ttl, owner=owner) as (locked, busy):
        batch = plan_batch(settings, run_id, inventory_path, inv, locked, busy, layout)
        progress = _Progress(redis, settings, batch, attempt=attempt, can_retry=retry is not None)
        outcomes = fetch_configs(list(batch.runnable), inventory=inventory_path, settings=settings,
                                 redactor=batch.redactor, on_results=progress)
        rest = {host: outcome for host, outcome in outcomes.items() if host not in progress.finished}
        results, again = finish_batch(redis, settings, batch, rest, attempt=attempt, can_retry=retry is not None)
        results, again = progress.results + results, progress.again + again
    if again and retry is not None:
        delay = settings.collect_retry_base * 2 ** (attempt - 1)
        log.info("retrying %d host(s) in %.0fs (attempt %d): %s", len(again), delay, attempt + 1, ", ".join(again))
        retry(again, attempt + 1, delay)
    return results


@dataclass
class Batch:
    """A batch of a run as the collector knows it before the fetch (:func:`plan_batch`)."""

    run_id: str
    inventory_path: Path
    inv: dict[str, InventoryHost]
    redactor: Redactor
    layout: StorageLayout
    #: results decided without a fetch: ``skipped_locked`` (another backup holds the lock), and failures
    #: (not in the inventory, unknown platform, a storage location that cannot take the device)
    results: list[DeviceResult] = field(default_factory=list)
    #: the hosts to fetch, with their platform
    runnable: dict[str, Platform] = field(default_factory=dict)


def plan_batch(settings: Settings, run_id: str, inventory_path: Path, inv: dict[str, InventoryHost],
               locked: list[str], busy: list[str], layout: StorageLayout | None = None) -> Batch:
    """What happens to each host of a batch before the fetch: ``busy`` hosts (locked by another backup) are
    ``skipped_locked``, ``locked`` ones are fetched unless the inventory or the storage layout rules them
    out (each such host's failure names it and the cause). Used by :func:`collect` and by the
    ``devicevault.network.devicevault`` callback of DeviceVault's collection (``jobs.collect.playbook``)."""
    layout = layout or StorageLayout.load(settings)
    redactor = Redactor(secret for h in inv.values() for secret in h.secrets)
    batch = Batch(run_id=run_id, inventory_path=inventory_path, inv=inv, redactor=redactor, layout=layout)
    results = batch.results
    for host in busy:
        results.append(
            _result(run_id, host, inv.get(host), DeviceStatus.SKIPPED_LOCKED,
                    error=f"{host}: skipped, another backup of this device is running")
        )
    for host in locked:
        entry = inv.get(host)
        platform = get_platform(entry.platform) if entry is not None else None
        if entry is None:
            results.append(_failed(run_id, host, None, errors.CollectionFailed(host, f"not in inventory {inventory_path}")))
        elif platform is None:
            results.append(
                _failed(run_id, host, entry, errors.UnknownPlatform(
                    host, f"unknown platform {entry.platform or '(no ansible_network_os)'}: "
                          f"no {entry.platform or '<platform>'}.yml in playbooks/platforms/ or $DEVICEVAULT_PLATFORMS_DIR"))
            )
        else:
            try:
                targets = layout.targets_for(entry.group, entry.location)
            except StorageConfigError as exc:
                results.append(_failed(run_id, host, entry, errors.CollectionFailed(host, str(exc))))
                continue
            plain = [t for t in targets if not layout.key_id_for(t)]
            if entry.secrets_mode == "keep" and plain:
                results.append(_failed(run_id, host, entry, errors.CollectionFailed(
                    host, "devicevault_secrets: keep stores secrets, so every copy must be encrypted at rest; "
                          f"target(s) {', '.join(plain)} of this device are not (mask or drop them, or "
                          "encrypt those targets in storage.yml)")))
                continue
            if entry.keep_raw and len(plain) == len(targets):
                results.append(_failed(run_id, host, entry, errors.CollectionFailed(
                    host, "devicevault_keep_raw keeps the device output with its secrets, so it needs an "
                          f"encrypted target; none of {', '.join(targets)} is encrypted (see storage.yml)")))
                continue
            batch.runnable[host] = platform
    return batch


class _Progress:
    """What :func:`collect` hands :func:`~jobs.collect.fetch.fetch_configs` as ``on_results``: the devices of
    a batch are finished (evaluated, staged, published) as their results arrive, so a run's progress shows
    device by device. A publish that fails (Redis gone) leaves its devices, and every later one, to the
    batch's end, where :func:`finish_batch` publishes them as it always did."""

    def __init__(self, redis: Redis, settings: Settings, batch: Batch, *, attempt: int, can_retry: bool):
        self.redis, self.settings, self.batch = redis, settings, batch
        self.attempt, self.can_retry = attempt, can_retry
        self.finished: set[str] = set()
        self.results: list[DeviceResult] = []
        self.again: list[str] = []

    def __call__(self, outcomes: dict[str, FetchOutcome]) -> None:
        results, again = finish_batch(self.redis, self.settings, self.batch, outcomes, attempt=self.attempt,
                                      can_retry=self.can_retry, decided=False)
        self.finished.update(outcomes)
        self.results += results
        self.again += again


def finish_batch(redis: Redis, settings: Settings, batch: Batch, outcomes: dict[str, FetchOutcome], *,
                 attempt: int = 1, can_retry: bool = False, decided: bool = True) -> tuple[list[DeviceResult], list[str]]:
    """Everything after the fetch, the one way for every producer of device results (:func:`collect`, and
    the ``devicevault.network.devicevault`` callback of a plain ansible-playbook / ansible-runner / AWX
    run): normalise and mask each fetched host's outputs (those of ``outcomes``: all of the batch, or the
    ones that just arrived), look the masked view up in the version cache, stage candidates in the outbox
    and publish every host's result (with the batch's decided ones unless ``decided`` is false: they go
    once, with the batch's last call) in one transaction. Returns ``(published results, hosts to retry)``:
    with ``can_retry``, transient failures of an ``attempt`` below ``1 + settings.collect_retries`` are not
    published but returned to retry."""
    results = list(batch.results) if decided else []
    candidates: dict[str, StorageItem] = {}
    for host, platform in batch.runnable.items():
        if host not in outcomes:
            continue
        result, item = _evaluate(redis, batch.run_id, batch.inv[host], platform, outcomes[host], batch.redactor,
                                 batch.layout)
        results.append(result)
        if item is not None:
            candidates[host] = item
    results, again = _retry_or_final(results, attempt, settings, can_retry)
    for result in results:  # the consumer checks each device against the run's own inventory
        result.inventory = str(batch.inventory_path.absolute())
    publish(redis, results, (candidates[r.device] for r in results if r.device in candidates))
    return results, again


def _retry_or_final(results: list[DeviceResult], attempt: int, settings: Settings, can_retry: bool):
    """Split off transient failures that get another attempt; say on every final failure whether and how
    often it was retried."""
    final: list[DeviceResult] = []
    again: list[str] = []
    attempts = 1 + max(0, settings.collect_retries) if can_retry else attempt  # no retrying: this one was the last
    for result in results:
        if result.status is not DeviceStatus.FAILED or not result.error_kind:
            final.append(result)
            continue
        transient = errors.kind_is_transient(result.error_kind)
        if transient and can_retry and attempt < attempts:
            again.append(result.device)
            continue
        if transient:
            result.error += f" (transient; attempt {attempt} of {attempts}, no retries left)"
        else:
            result.error += " (permanent: not retried)"
        final.append(result)
    return final, again


def _evaluate(
    redis: Redis, run_id: str, entry: InventoryHost, platform: Platform, outcome: FetchOutcome, redactor: Redactor,
    layout: StorageLayout,
) -> tuple[DeviceResult, StorageItem | None]:
    """The host's result, and the candidate to stage (None on a cache hit or a failure)."""
    host = entry.name
    if outcome.error is not None or outcome.outputs is None:
        error = outcome.error or errors.CollectionFailed(host, "the fetch returned neither output nor an error")
        return _failed(run_id, host, entry, error, log=outcome.log, duration=outcome.duration), None
    try:
        answers = check_answers(host, platform, outcome.outputs)  # judged by content: rejected, empty, unknown
        version = normalize(host, platform, answers.outputs, entry.secrets_mode)
    except errors.DeviceError as exc:
        exc = type(exc)(host, redactor.redact(exc.cause))
        log.warning("%s", exc)
        return _failed(run_id, host, entry, exc, log=outcome.log, duration=outcome.duration), None
    warning = redactor.redact("; ".join(answers.warnings))
    if warning:
        log.warning("%s: %s", host, warning)
    sha = sha256_text(version.text)
    # "changed" is decided on the masked view, so re-encrypted or kept secrets never make a version alone.
    # With kept secrets the stored text's sha differs from the masked view's: both are remembered.
    compare = sha if version.compare == version.text else sha256_text(version.compare)
    cached = cache.lookup(redis, host)
    # the result travels through Redis and the index: it carries the masked view, never kept secrets
    fields = dict(log=outcome.log, config=version.compare, sha256=sha, view_sha256=compare,
                  size=len(to_bytes(version.text)), duration=outcome.duration, author=version.changed_by,
                  unsaved=version.unsaved, error=f"{host}: {warning}" if warning else "")
    if cached is not None and cached[0] == compare:  # a cache hit names the version that is stored
        fields["sha256"] = cached[1]
        return _result(run_id, host, entry, DeviceStatus.UNCHANGED, **fields), None
    targets = tuple(layout.targets_for(entry.group, entry.location))
    result = _result(run_id, host, entry, DeviceStatus.CHANGED, targets=",".join(targets), **fields)
    item = StorageItem(task_id=result.task_id, run_id=run_id, device=host, group=entry.group, sha256=sha,
                       config=version.text, collected_at=time.time(), targets=targets,
                       author=version.changed_by, raw="\n".join(outcome.outputs) if entry.keep_raw else "")
    if entry.secrets_mode == "keep" or entry.keep_raw:  # secrets wait in Redis encrypted, never in the clear
        item = seal(item, layout.sealing_codec())
    return result, item


def publish(redis: Redis, results: list[DeviceResult], candidates: Iterable[StorageItem] = ()) -> None:
    """Stage ``candidates`` in the outbox and add ``results`` to ``device:results``, in one transaction."""
    pipe = redis.pipeline(transaction=True)
    outbox.stage(pipe, list(candidates))
    for result in results:
        pipe.xadd(DEVICE_RESULTS_STREAM, result.to_message())
    pipe.execute()
