"""The state of a DeviceVault installation as plain data: ``devicevault status`` and the portal's Health page."""

from __future__ import annotations

from typing import Any

from jobs.settings import Settings


def gather_status(settings: Settings) -> dict[str, Any]:
    """Everything ``devicevault status`` shows, as plain data (the portal's Health page uses it too)."""
    from redis import Redis
    from rq import Worker
    from rq.job import Job
    from sqlalchemy import select

    from jobs.ops.freshness import is_stale
    from jobs.ops.hygiene import our_queues
    from jobs.deliver.locations import StorageLayout
    from jobs.deliver.outbox import waiting
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
        job_id = w.get_current_job_id()
        current = ""
        if job_id:
            try:
                current = Job.fetch(job_id, connection=redis).description or job_id
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
    except Exception as exc:  # noqa: BLE001
        streams = [{"error": str(exc)}]
    layout = StorageLayout.load(settings)
    outbox = waiting(redis, layout.all_targets())
    sessions = connect(settings.database_url)
    with sessions() as session:
        stale = [
            {"device": d.name, "group": d.group_name,
             "last_success": aware(d.last_success_at).isoformat() if d.last_success_at else "never",
             "stale_since": aware(d.stale_since).isoformat()}
            for d in session.scalars(select(Device).where(is_stale()).order_by(Device.name))
        ]
        unsaved = [
            {"device": d.name, "group": d.group_name, "platform": d.platform,
             "unsaved_since": aware(d.unsaved_since).isoformat() if d.unsaved_since else ""}
            for d in session.scalars(select(Device).where(Device.unsaved.is_(True)).order_by(Device.name))
        ]
        runs = list_runs(session, 5)
    return {"queues": queues, "workers": workers, "streams": streams, "outbox": outbox, "stale": stale,
            "unsaved": unsaved, "runs": runs}
