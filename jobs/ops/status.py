"""The state of a DeviceVault installation as plain data: ``devicevault status`` and the portal's Health page."""

from __future__ import annotations

from typing import Any

from jobs.settings import Settings


def gather_status(settings: Settings) -> dict[str, Any]:
    """Everything ``devicevault status`` shows, as plain data (the portal's Health page uses it too)."""
    from redis import Redis
    from jobs.queues import Worker, fetch_job
    from sqlalchemy import select

    from jobs.ops.freshness import is_stale
    from jobs.ops.hygiene import our_queues
    from jobs.processes import worker_gone
    from jobs.deliver.locations import StorageLayout
    from jobs.deliver.outbox import waiting
    from storage.index import health
    from storage.index.compliance import standing_counts
    from storage.index.db import connect
    from storage.index.models import Device, aware
    from storage.index.queries import list_runs

    redis = Redis.from_url(settings.redis_url, socket_timeout=10)
    queues = [
        {
            "queue": q.name,
            "queued": q.count,
            "started": q.started_job_registry.count,
            "scheduled": q.scheduled_job_registry.count,
            "deferred": q.deferred_job_registry.count,
            "failed": q.failed_job_registry.count,
        }
        for q in sorted(our_queues(redis, settings), key=lambda q: q.name)
    ]
    workers = []
    for w in Worker.all(connection=redis):
        if worker_gone(w):
            continue  # killed without saying so; its key expires later
        job_id = w.get_current_job_id()
        current = ""
        if job_id:
            try:
                current = fetch_job(job_id, redis).description or job_id
            except Exception:  # noqa: BLE001 - finished meanwhile
                current = job_id
        workers.append({"worker": w.name, "state": str(getattr(w.state, "value", w.state)),
                        "queues": ",".join(w.queue_names()), "job": current,
                        "heartbeat": w.last_heartbeat.isoformat() if w.last_heartbeat else ""})
    streams: list[dict] = []
    try:
        from jobs.streams import consumer

        if hasattr(consumer, "stream_status"):
            streams = consumer.stream_status(redis)
        for row in streams:  # Redis keeps a consumer's entry after it died
            row["consumers"] = [c for c in row.get("consumers", []) if not consumer_gone(c)]
    except Exception as exc:  # noqa: BLE001
        streams = [{"error": str(exc)}]
    layout = StorageLayout.load(settings)
    outbox = waiting(redis, layout.all_targets())
    sessions = connect(settings.database_url, settings.index_wait)
    with sessions() as session:
        stale = [
            {"device": d.name, "group": d.group_name,
             "last_success": aware(d.last_success_at).isoformat() if d.last_success_at else "never",
             "stale_since": aware(d.stale_since).isoformat()}
            for d in session.scalars(select(Device).where(is_stale(), health.active()).order_by(Device.name))
        ]
        unsaved = [
            {"device": d.name, "group": d.group_name, "platform": d.platform,
             "unsaved_since": aware(d.unsaved_since).isoformat() if d.unsaved_since else ""}
            for d in session.scalars(select(Device).where(Device.unsaved.is_(True), health.active()).order_by(Device.name))
        ]
        runs = list_runs(session, 5)
        devices = health.counts(session)  # the portal's dashboard counts the same way
        compliance = standing_counts(session)
    from jobs.notify.queue import summary as notification_summary

    notifications = notification_summary(redis)
    return {"devices": devices, "compliance": compliance, "notifications": notifications, "queues": queues,
            "workers": workers, "streams": streams, "outbox": outbox, "stale": stale, "unsaved": unsaved, "runs": runs,
            "warnings": redis_warnings(settings.redis_url)}


#: a stream consumer that has not read for this long is gone (a live one blocks for a second at a time)
CONSUMER_GONE_MS = 120_000


def consumer_gone(row: dict) -> bool:
    """Whether a stream consumer (a row of ``stream_status``) is dead: named ``<this host>-<pid>`` (the
    default name) with that process gone, or silent for :data:`CONSUMER_GONE_MS`."""
    import socket

    from jobs.processes import process_gone

    host, _, pid = str(row.get("name", "")).rpartition("-")
    if host == socket.gethostname() and pid.isdigit() and process_gone(int(pid)):
        return True
    return int(row.get("idle_ms") or 0) > CONSUMER_GONE_MS


def redis_warnings(url: str) -> list[str]:
    """What is unsafe about the Redis at ``url``: no append-only file (the storage outbox holds the only copy
    of versions not yet stored), or connections accepted without a password. Nothing when it cannot tell
    (unreachable, CONFIG not allowed)."""
    from redis import Redis
    from redis.exceptions import RedisError

    from jobs.settings import redact_url

    shown = redact_url(url)
    warnings = []
    try:
        client = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, decode_responses=True)
        config = {**client.config_get("appendonly"), **client.config_get("save")}
    except (RedisError, OSError):
        config = {}
    if config.get("appendonly") == "no":
        snapshots = f"only snapshots (save {config['save']})" if config.get("save") else "no snapshots either"
        warnings.append(f"Redis at {shown} keeps no append-only file (appendonly no, {snapshots}): copies waiting "
                        "in the storage outbox are lost if it restarts; set appendonly yes")
    try:
        anonymous = Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        anonymous.connection_pool.connection_kwargs.pop("password", None)
        anonymous.connection_pool.connection_kwargs.pop("username", None)
        open_door = bool(anonymous.ping())
    except (RedisError, OSError):
        open_door = False
    if open_door:
        warnings.append(f"Redis at {shown} accepts connections without a password: whoever reaches it can read "
                        "the outbox and queue jobs; set requirepass (or ACL users) and put the password in "
                        "DEVICEVAULT_REDIS_URL")
    return warnings
