"""One maintenance pass, run periodically by ``devicevault scheduler`` (and on demand by
``devicevault hygiene``): queue hygiene, freshness, stream trimming, and at most once an hour (across
every scheduler, through a Redis key) storage retention.

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


def run_maintenance(redis: Redis, settings: Settings, *, grace: float = 60.0) -> dict[str, Any]:
    """Returns ``{"hygiene": [Finding...], "stale": [Staleness...], "trimmed": {stream: n}, "errors": [...]}``."""
    report: dict[str, Any] = {"hygiene": [], "stale": [], "trimmed": {}, "pruned": [], "errors": []}
    try:
        from jobs.ops.hygiene import check_queues

        report["hygiene"] = check_queues(redis, settings, grace=grace)
    except Exception as exc:  # noqa: BLE001
        log.exception("queue hygiene failed")
        report["errors"].append(f"queue hygiene: {exc}")
    try:
        from storage.index.db import connect

        from jobs.ops.freshness import mark_stale
        from jobs.collect.inventory import load_inventory

        try:
            inventory = load_inventory(settings.inventory)
        except Exception as exc:  # noqa: BLE001 - freshness of what the index knows still counts
            inventory = None
            report["errors"].append(f"freshness: inventory: {exc}")
        report["stale"] = mark_stale(connect(settings.database_url), settings, inventory)
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

            report["pruned"] = prune(connect(settings.database_url), StorageLayout.load(settings))
    except Exception as exc:  # noqa: BLE001
        log.exception("retention failed")
        report["errors"].append(f"retention: {exc}")
    return report
