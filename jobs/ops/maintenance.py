"""One maintenance pass, run periodically by ``devicevault scheduler`` (and on demand by
``devicevault hygiene``): queue hygiene, the runner directories of processes that are gone (a work horse
killed with its worker, or by the OOM killer, never reached its clean-up: ``jobs.collect.fetch.sweep_runner_dirs``),
retired devices (``jobs.ops.retire``), freshness, stream trimming, and at most once an hour (across every
scheduler, through a Redis key each) storage retention, index retention and storage maintenance: every target
whose backend has a ``maintain()`` (git: pack loose objects and small packs, see storage/git.py) gets it; a
target whose store lock is busy is skipped and the key dropped, so the next pass tries again.

Index retention (``storage.index.retention``: old device results and runs, ``DEVICEVAULT_RESULT_RETENTION_DAYS``)
removes at most :data:`INDEX_PRUNE_ROWS` rows per pass, in short transactions; when more is left the key is
dropped, so the next pass (a minute later) goes on: a first prune of a year of results catches up over a few
passes without holding up the others.

Each part runs on its own: one failing (say, the index is locked) does not stop the others; its error is
logged and returned.
"""

from __future__ import annotations

import logging
from typing import Any

from redis import Redis

from jobs.settings import Settings

log = logging.getLogger(__name__)

PRUNE_KEY = "devicevault:maintenance:pruned"
PRUNE_EVERY = 3600  # seconds between two automatic retention passes
INDEX_PRUNE_KEY = "devicevault:maintenance:index-pruned"
INDEX_PRUNE_EVERY = 3600  # seconds between two index retention passes (sooner while one left work over)
INDEX_PRUNE_ROWS = 100_000  # rows one pass removes at most (50 transactions of 2,000)
MAINTAIN_KEY = "devicevault:maintenance:storage"
MAINTAIN_EVERY = 3600  # seconds between two storage maintenance passes (git repack)


def maintain_storage(layout: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``maintain()`` every target of ``layout`` whose backend has one; (results by target, errors)."""
    results: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    for name in layout.all_targets():
        try:
            backend = layout.open(name)
            maintain = getattr(backend, "maintain", None)
            if maintain is not None:
                results[name] = dict(maintain())
        except Exception as exc:  # noqa: BLE001 - one target's failure does not stop the others
            log.exception("storage maintenance of target %s failed", name)
            errors.append(f"storage maintenance: {name}: {exc}")
    return results, errors


def run_maintenance(redis: Redis, settings: Settings, *, grace: float = 60.0) -> dict[str, Any]:
    """Returns ``{"hygiene": [Finding...], "swept": [runner directories removed], "retired": Retirement | None,
    "stale": [Staleness...], "trimmed": {stream: n}, "pruned": [...], "index_pruned": IndexPruning | None,
    "maintained": {target: what its maintain() did}, "errors": [...]}``."""
    report: dict[str, Any] = {"hygiene": [], "swept": [], "retired": None, "stale": [], "trimmed": {}, "pruned": [],
                              "index_pruned": None, "maintained": {}, "errors": []}
    try:
        from jobs.ops.hygiene import check_queues

        report["hygiene"] = check_queues(redis, settings, grace=grace)
    except Exception as exc:  # noqa: BLE001
        log.exception("queue hygiene failed")
        report["errors"].append(f"queue hygiene: {exc}")
    try:
        from jobs.collect.fetch import sweep_runner_dirs

        report["swept"] = [str(p) for p in sweep_runner_dirs()]
        if report["swept"]:
            log.warning("removed %d runner directory(ies) of processes that are gone: %s", len(report["swept"]),
                        ", ".join(report["swept"]))
    except Exception as exc:  # noqa: BLE001
        log.exception("runner directory sweep failed")
        report["errors"].append(f"runner directories: {exc}")
    try:
        from storage.index.db import connect

        from jobs.ops.freshness import mark_stale
        from jobs.collect.inventory import load_inventory

        try:
            inventory = load_inventory(settings.inventory, settings)
        except Exception as exc:  # noqa: BLE001 - freshness of what the index knows still counts
            inventory = None
            report["errors"].append(f"freshness: inventory: {exc}")
        sessions = connect(settings.database_url, settings.index_wait)
        if inventory is not None:  # an inventory that cannot be read retires nothing
            from jobs.ops.retire import mark_retired

            report["retired"] = mark_retired(sessions, inventory, settings.retire_after)
        report["stale"] = mark_stale(sessions, settings, inventory)
    except Exception as exc:  # noqa: BLE001
        log.exception("freshness check failed")
        report["errors"].append(f"freshness: {exc}")
    try:
        from jobs.streams import consumer

        trim = getattr(consumer, "trim_streams", None)
        if trim is not None:
            report["trimmed"] = trim(redis)
    except Exception as exc:  # noqa: BLE001
        log.exception("stream trimming failed")
        report["errors"].append(f"trimming: {exc}")
    try:
        if redis.set(PRUNE_KEY, "1", nx=True, ex=PRUNE_EVERY):
            from storage.index.db import connect

            from jobs.deliver.locations import StorageLayout
            from jobs.deliver.retention import prune

            report["pruned"] = prune(connect(settings.database_url, settings.index_wait), StorageLayout.load(settings))
    except Exception as exc:  # noqa: BLE001
        log.exception("retention failed")
        report["errors"].append(f"retention: {exc}")
    try:
        if settings.result_retention_days > 0 and redis.set(INDEX_PRUNE_KEY, "1", nx=True, ex=INDEX_PRUNE_EVERY):
            from storage.index.db import connect
            from storage.index.retention import prune_index

            done = prune_index(connect(settings.database_url, settings.index_wait), settings.result_retention_days,
                               max_rows=INDEX_PRUNE_ROWS)
            report["index_pruned"] = done
            if done.removed or done.runs:
                log.info("index retention (%g days): %d device result(s) and %d run(s) removed%s", done.days,
                         done.removed, done.runs, "" if done.complete else "; more next pass")
            if not done.complete:
                redis.delete(INDEX_PRUNE_KEY)  # more is left: the next pass goes on
    except Exception as exc:  # noqa: BLE001
        log.exception("index retention failed")
        report["errors"].append(f"index retention: {exc}")
    try:
        if redis.set(MAINTAIN_KEY, "1", nx=True, ex=MAINTAIN_EVERY):
            from jobs.deliver.locations import StorageLayout

            report["maintained"], errors = maintain_storage(StorageLayout.load(settings))
            report["errors"] += errors
            if any(r.get("skipped") == "busy" for r in report["maintained"].values()):
                redis.delete(MAINTAIN_KEY)  # the next pass tries again (targets already packed cost no git process)
    except Exception as exc:  # noqa: BLE001
        log.exception("storage maintenance failed")
        report["errors"].append(f"storage maintenance: {exc}")
    return report
