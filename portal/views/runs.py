"""Runs: start a backup of one device, one group or every device (operator and admin), follow it device by
device until it ends, and look through the run history with each device's status, duration and error.

A run is started with ``jobs.collect.runs.start_backup(requested_by=<user>)``, exactly like ``devicevault backup``;
the workers collect and store, the consumer writes the results into the index, and this page reads them
back every two seconds while the run is open.
"""

from __future__ import annotations

import math

import streamlit as st

from portal import queries, ui
from storage.index.statuses import DeviceStatus, RunStatus

SCOPES = ["one device", "one group", "every device"]
FOLLOW_KEY = "runs_follow"
REFRESH_SECONDS = 2.0
HISTORY_PAGE = 20  # runs per history page (each run's results are counted per status)
TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z")


def render(user) -> None:
    s = ui.settings()
    st.title("Runs")
    if user.can_trigger:
        _trigger(s, user)
    else:
        st.info(f"You are logged in as {user.role}: you can follow runs and read their history; starting a "
                "backup needs the operator role.")
    follow = st.session_state.get(FOLLOW_KEY)
    if follow:
        _follow(s, follow["run_id"], follow.get("hosts", []))
    _history(s)


def _trigger(s, user) -> None:
    with st.container(border=True):
        st.subheader("Start a backup")
        try:
            hosts = ui.inventory(s)
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc, "The inventory cannot be read")
            return
        groups = sorted({g for h in hosts.values() for g in h.groups})
        c = st.columns([2, 3, 1])
        scope = c[0].radio("What", SCOPES, key="runs_scope")
        hosts_chosen: list[str] = []
        groups_chosen: list[str] = []
        if scope == "one device":
            device = c[1].selectbox("Device", sorted(hosts), key="runs_device")
            hosts_chosen = [device] if device else []
            count = len(hosts_chosen)
        elif scope == "one group":
            group = c[1].selectbox("Group", groups, key="runs_group")
            groups_chosen = [group] if group else []
            count = sum(1 for h in hosts.values() if group in h.groups)
        else:
            c[1].markdown(f"Every device of the inventory ({len(hosts)}).")
            count = len(hosts)
        c[1].caption(f"{count} device(s) will be backed up.")
        if c[2].button("Start backup", type="primary", key="runs_start", disabled=count == 0):
            from jobs.collect.runs import start_backup

            redis = ui.redis(s)
            redis.ping()  # Redis down: say so before a run is recorded that no worker would ever see
            started = start_backup(redis, s, hosts=hosts_chosen or None, groups=groups_chosen or None,
                                   inventory=s.inventory, requested_by=user.name)
            st.session_state[FOLLOW_KEY] = {"run_id": started.run_id, "hosts": list(started.hosts)}
            ui.log.info("portal: %s started run %s (%d device(s))", user.name, started.run_id, len(started.hosts))
            st.toast(f"Run {started.run_id[:12]} started for {len(started.hosts)} device(s)")


def _follow(s, run_id: str, hosts: list[str]) -> None:
    with ui.sessions(s)() as session:
        state = queries.run_state(session, run_id, hosts)

    @st.fragment(run_every=None if state.finished else REFRESH_SECONDS)
    def progress() -> None:
        with ui.sessions(s)() as session:
            now = queries.run_state(session, run_id, hosts)
            devices = queries.run_devices(session, run_id, hosts)
        total = max(now.total, len(hosts), 1)
        st.subheader(f"Run {run_id[:12]}")
        label = f"{now.done} of {total} device(s) done · " + (
            f"{now.status} · finished {ui.when(now.finished_at)}" if now.finished else "running…")
        st.progress(min(now.done / total, 1.0), text=label)
        if now.finished:
            (st.success if now.status == RunStatus.SUCCEEDED else st.warning)(f"Run {run_id[:12]} {now.status}.")
        st.dataframe(devices.assign(error=devices["error"].map(ui.mask)), hide_index=True, width="stretch",
                     key="runs_follow_table")
        changed = devices[devices["status"] == DeviceStatus.CHANGED.value]["device"].tolist()
        cols = st.columns(min(len(changed), 4) + 1) if changed else []
        for i, name in enumerate(changed[:4]):
            if cols[i].button(f"Open diff of {name}", key=f"runs_open_{i}"):
                st.switch_page("views/device.py", query_params={"device": name})
        if cols and cols[-1].button("Stop following", key="runs_unfollow"):
            st.session_state.pop(FOLLOW_KEY, None)
            st.rerun()
        if now.finished and not state.finished:
            st.rerun()  # the whole page: stop refreshing, refresh the history

    progress()


def _history(s) -> None:
    st.subheader("History")
    with ui.sessions(s)() as session:
        total = queries.count_runs(session)
        pages = max(1, math.ceil(total / HISTORY_PAGE))
        if int(st.session_state.get("runs_history_page", 1)) > pages:
            st.session_state["runs_history_page"] = pages
        page = int(st.session_state.get("runs_history_page", 1))
        runs = queries.runs_table(session, limit=HISTORY_PAGE, offset=(page - 1) * HISTORY_PAGE)
    if runs.empty:
        st.info("No run yet.")
        return
    if pages > 1:
        st.number_input(f"Page (of {pages}, newest first)", min_value=1, max_value=pages, step=1,
                        key="runs_history_page")
    picked = st.dataframe(runs, hide_index=True, width="stretch", key="runs_history", on_select="rerun",
                          selection_mode="single-row", column_config={"started": TIME, "finished": TIME})
    rows = picked.selection.rows if picked is not None else []
    if not rows or rows[0] >= len(runs):
        st.caption("Select a run to see each device's status, duration and error.")
        return
    run_id = runs.iloc[rows[0]]["run"]
    with ui.sessions(s)() as session:
        devices = queries.run_devices(session, run_id)
    st.markdown(f"**Run {run_id}**: {runs.iloc[rows[0]]['status']}, {len(devices)} device(s)")
    st.dataframe(devices.assign(error=devices["error"].map(ui.mask)), hide_index=True, width="stretch",
                 key="runs_detail", column_config={"error": st.column_config.TextColumn(width="large")})
    if runs.iloc[rows[0]]["status"] == RunStatus.RUNNING and st.button("Follow this run", key="runs_follow_button"):
        st.session_state[FOLLOW_KEY] = {"run_id": run_id, "hosts": []}
        st.rerun()


ui.run_page(render)
