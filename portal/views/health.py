"""Health: Redis, queues, workers, stream lag, dead letters, the storage outbox, storage targets, stale
devices and the last runs (``jobs.ops.status.gather_status``, the data behind ``devicevault status``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor, TimeoutError as FutureTimeout

import pandas as pd
import streamlit as st

from jobs.settings import redact_url
from portal import ui

TARGET_TIMEOUT = 10.0


def target_health(s) -> pd.DataFrame:
    """Each storage target with its type and whether it answers (``Backend.healthy()``, 10 s at most)."""
    layout = ui.layout(s)
    names = layout.all_targets()

    def check(name: str) -> tuple[str, str]:
        try:
            return ("healthy", "") if layout.open(name).healthy() else ("unhealthy", "healthy() said no")
        except Exception as exc:  # noqa: BLE001
            return "unreachable", ui.friendly(exc)

    rows = []
    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        futures = {name: pool.submit(check, name) for name in names}
        for name, future in futures.items():
            try:
                state, detail = future.result(timeout=TARGET_TIMEOUT)
            except FutureTimeout:
                state, detail = "unreachable", f"no answer within {TARGET_TIMEOUT:.0f} s"
            t = layout.targets[name]
            rows.append({"target": name, "type": t.type, "state": state, "compression": t.compression or "none",
                         "encrypted": t.encrypt, "detail": detail})
    return pd.DataFrame(rows, columns=["target", "type", "state", "compression", "encrypted", "detail"])


def render(user) -> None:
    from jobs.ops.status import gather_status

    s = ui.settings()
    st.title("Health")
    st.caption(f"Redis {redact_url(s.redis_url)} · index {redact_url(s.database_url)}")
    st.button("Refresh", key="health_refresh")  # a click reruns the page
    st.subheader("Storage targets")
    targets = target_health(s)
    bad = targets[targets["state"] != "healthy"]
    if not bad.empty:
        st.error(f"{len(bad)} storage target(s) not healthy: {', '.join(bad['target'])}. Copies wait in the outbox "
                 "and are retried until they land.")
    st.dataframe(targets, hide_index=True, width="stretch", key="health_targets")
    try:
        status = gather_status(s)
    except Exception as exc:  # noqa: BLE001
        ui.show_error(exc, "Queues, workers and streams cannot be read")
        return
    st.success("Redis answers.")
    for warning in status.get("warnings", []):  # no append-only file, no password (jobs.ops.status.redis_warnings)
        st.warning(warning)
    m = st.columns(4)
    workers = status.get("workers", [])
    queued = sum(q.get("queued", 0) for q in status.get("queues", []))
    failed_jobs = sum(q.get("failed", 0) for q in status.get("queues", []))
    m[0].metric("Workers", len(workers))
    m[1].metric("Jobs queued", queued)
    m[2].metric("Failed jobs", failed_jobs)
    m[3].metric("Stale devices", len(status.get("stale", [])))
    if not workers:
        st.warning("No worker is running: backups wait in the queue (start one with `devicevault worker`).")
    _table("Queues", status.get("queues", []), "health_queues")
    _table("Workers", workers, "health_workers")
    streams = [
        {**row, "consumers": ", ".join(f"{c.get('name')} (pending {c.get('pending', 0)}, idle "
                                       f"{c.get('idle_ms', 0) / 1000:.0f} s)" for c in row.get("consumers") or [])}
        for row in status.get("streams", [])
    ]
    _table("Result streams (lag per consumer group, dead letters)", streams, "health_streams")
    outbox = status.get("outbox", {})
    _table("Storage outbox (copies waiting per target)",
           [{"target": t, "waiting": n} for t, n in outbox.items()] if isinstance(outbox, dict) else outbox,
           "health_outbox")
    notes = status.get("notifications") or {}
    st.subheader("Notifications")
    if notes.get("dead") or notes.get("retrying"):
        st.error(f"Notification failures: {notes.get('dead', 0)} delivery(ies) dead (failed every try), "
                 f"{notes.get('retrying', 0)} failing and retried. `devicevault notify failures` lists them.")
    else:
        st.caption(f"{notes.get('queued', 0)} delivery(ies) queued, none failing.")
    _table("Failing notification deliveries", notes.get("failures", []), "health_notifications")
    _table("Stale devices", status.get("stale", []), "health_stale")
    _table("Last runs", status.get("runs", []), "health_runs")


def _table(title: str, rows, key: str) -> None:
    st.subheader(title)
    if not rows:
        st.caption("(none)")
        return
    frame = pd.DataFrame(rows)
    for column in frame.columns:  # nested values (lists, dicts) as text
        if frame[column].map(lambda v: isinstance(v, (list, dict))).any():
            frame[column] = frame[column].map(str)
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].map(lambda v: ui.mask(v) if isinstance(v, str) else v)
    st.dataframe(frame, hide_index=True, width="stretch", key=key)


ui.run_page(render)
