"""Runs: start a backup of one device, one group or every device (operator and admin), follow it device by
device until it ends, and look through the run history with each device's status, duration and error.

A run is started with ``jobs.collect.runs.start_backup(requested_by=<user>)``, exactly like ``devicevault backup``;
the workers collect and store, the consumer writes the results into the index, and this page reads them
back every second while the run is open: each device's row turns from ``waiting`` to its outcome as its
result arrives (group and whole-inventory runs too).

The URL says what is shown: ``?run=ID`` (the run followed or selected: a reload or a link shows it) and, for
a prepared backup, ``?scope=device&device=NAME`` or ``?scope=group&group=NAME`` or ``?scope=all`` (a viewer
opening such a link is told that starting a backup needs the operator role). The one-device picker finds
names as you type (the first 50 matches, never a 10,000-entry list).
"""

from __future__ import annotations

import math

import streamlit as st

from portal import links, queries, ui
from storage.index.statuses import DeviceStatus, RunStatus

SCOPES = ["one device", "one group", "every device"]
FOLLOW_KEY = "runs_follow"
REFRESH_SECONDS = 1.0
PICKER_LIMIT = 50
#: the URL's scope parameter -> the scope radio's choice
URL_SCOPES = {"device": "one device", "group": "one group", "all": "every device"}
HISTORY_PAGE = 20  # runs per history page (each run's results are counted per status)
TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z")


def render(user) -> None:
    s = ui.settings()
    st.title("Runs")
    params = st.query_params
    if user.can_trigger:
        _trigger(s, user)
    elif params.get("scope"):
        st.error(f"This link prepares a backup: starting a backup needs the operator role; you are {user.role}. "
                 "You can follow runs and read their history.")
    else:
        st.info(f"You are logged in as {user.role}: you can follow runs and read their history; starting a "
                "backup needs the operator role.")
    follow = st.session_state.get(FOLLOW_KEY)
    wanted = params.get("run")
    if wanted and (not follow or follow["run_id"] != wanted):
        follow = {"run_id": wanted, "hosts": []}
        st.session_state[FOLLOW_KEY] = follow
    if follow:
        st.query_params["run"] = follow["run_id"]
        _follow(s, follow["run_id"], follow.get("hosts", []))
    _history(s)


def _url_to_trigger(hosts: dict, groups: list[str]) -> None:
    """A link's prepared backup (?scope=..., device=..., group=...) into the form, once per link."""
    params = st.query_params
    link = (params.get("scope"), params.get("device"), params.get("group"))
    # only on arriving at the page (portal.links): the browser may still send the URL of the form's previous
    # state with the next click (seen under load: the Start button then backed up the old device)
    if not link[0] or not links.arriving() or link == st.session_state.get("_runs_link"):
        return
    st.session_state["_runs_link"] = link
    if link[0] in URL_SCOPES:
        st.session_state["runs_scope"] = URL_SCOPES[link[0]]
    if link[1] in hosts:
        st.session_state["runs_device_find"] = link[1]
        st.session_state["runs_device"] = link[1]
    if link[2] in groups:
        st.session_state["runs_group"] = link[2]


def _trigger_to_url(scope: str, device: str | None, group: str | None) -> None:
    short = next(k for k, v in URL_SCOPES.items() if v == scope)
    params = {"scope": short, "device": device if short == "device" else None,
              "group": group if short == "group" else None}
    for key, value in params.items():
        if value:
            st.query_params[key] = value
        else:
            st.query_params.pop(key, None)
    st.session_state["_runs_link"] = (params["scope"], params["device"], params["group"])


def _trigger(s, user) -> None:
    with st.container(border=True):
        st.subheader("Start a backup")
        try:
            hosts = ui.inventory(s)
        except Exception as exc:  # noqa: BLE001
            ui.show_error(exc, "The inventory cannot be read")
            return
        groups = sorted({g for h in hosts.values() for g in h.groups})
        _url_to_trigger(hosts, groups)
        c = st.columns([2, 3, 1])
        scope = c[0].radio("What", SCOPES, key="runs_scope")
        hosts_chosen: list[str] = []
        groups_chosen: list[str] = []
        device = group = None
        if scope == "one device":
            device = _device_picker(c[1], hosts)
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
        _trigger_to_url(scope, device, group)
        if c[2].button("Start backup", type="primary", key="runs_start", disabled=count == 0):
            from jobs.collect.runs import start_backup

            redis = ui.redis(s)
            redis.ping()  # Redis down: say so before a run is recorded that no worker would ever see
            started = start_backup(redis, s, hosts=hosts_chosen or None, groups=groups_chosen or None,
                                   inventory=s.inventory, requested_by=user.name)
            st.session_state[FOLLOW_KEY] = {"run_id": started.run_id, "hosts": list(started.hosts)}
            st.query_params["run"] = started.run_id
            ui.log.info("portal: %s started run %s (%d device(s))", user.name, started.run_id, len(started.hosts))
            st.toast(f"Run {started.run_id[:12]} started for {len(started.hosts)} device(s)")


def _device_picker(where, hosts: dict) -> str | None:
    """Type part of a name, choose among the first matches of the inventory (no 10,000-entry list)."""
    typed = where.text_input("Find a device", key="runs_device_find", placeholder="part of a name, then Enter")
    text = (typed or "").strip().lower()
    found = sorted((n for n in hosts if text in n.lower()), key=lambda n: (not n.lower().startswith(text), n))
    options = found[:PICKER_LIMIT]
    chosen = st.session_state.get("runs_device")
    if chosen in hosts and chosen not in options:
        options = [chosen] + options
    if len(found) > PICKER_LIMIT:
        where.caption(f"{len(found)} devices match: the first {PICKER_LIMIT} are offered; type more of the name.")
    return where.selectbox("Device", options, key="runs_device",
                           placeholder="choose a device" if options else "no device matches")


def _follow(s, run_id: str, hosts: list[str]) -> None:
    with ui.sessions(s)() as session:
        state = queries.run_state(session, run_id, hosts)

    @st.fragment(run_every=None if state.finished else REFRESH_SECONDS)
    def progress() -> None:
        with ui.sessions(s)() as session:
            now = queries.run_state(session, run_id, hosts)
            devices = queries.run_devices(session, run_id, hosts, groups=_groups(s, hosts))
        total = max(now.total, len(hosts), 1)
        st.subheader(f"Run {run_id[:12]}")
        label = f"{now.done} of {total} device(s) done · " + (
            f"{now.status} · finished {ui.when(now.finished_at)}" if now.finished else "running…")
        st.progress(min(now.done / total, 1.0), text=label)
        if now.finished:
            (st.success if now.status == RunStatus.SUCCEEDED else st.warning)(f"Run {run_id[:12]} {now.status}.")
        st.dataframe(devices.assign(error=devices["error"].map(ui.mask)), hide_index=True, width="stretch",
                     key="runs_follow_table", column_config={"error": st.column_config.TextColumn(width="large")})
        ui.errors_in_full(devices, key="runs_follow_errors")
        changed = devices[devices["status"] == DeviceStatus.CHANGED.value]["device"].tolist()
        cols = st.columns(min(len(changed), 4) + 1) if changed else []
        for i, name in enumerate(changed[:4]):
            if cols[i].button(f"Open diff of {name}", key=f"runs_open_{i}"):
                st.switch_page("views/device.py", query_params={"device": name})
        if cols and cols[-1].button("Stop following", key="runs_unfollow"):
            st.session_state.pop(FOLLOW_KEY, None)
            st.query_params.pop("run", None)
            st.rerun()
        if now.finished and not state.finished:
            st.rerun()  # the whole page: stop refreshing, refresh the history

    progress()


def _groups(s, hosts: list[str]) -> dict[str, str]:
    """The inventory group of each waiting host (the index knows it only once its result is in)."""
    if not hosts:
        return {}
    try:
        inv = ui.inventory(s)
    except Exception:  # noqa: BLE001 - the table then shows no group for waiting hosts
        return {}
    return {h: getattr(inv.get(h), "group", "") or "" for h in hosts}


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
        pruned = queries.pruned_results(session, run_id)
    st.markdown(f"**Run {run_id}**: {runs.iloc[rows[0]]['status']}, {len(devices)} device(s)")
    if pruned:
        st.caption(f"{pruned} older result(s) of this run that made no version were removed by index retention "
                   "(DEVICEVAULT_RESULT_RETENTION_DAYS); the counts above still include them.")
    st.dataframe(devices.assign(error=devices["error"].map(ui.mask)), hide_index=True, width="stretch",
                 key="runs_detail", column_config={"error": st.column_config.TextColumn(width="large")})
    ui.errors_in_full(devices, key="runs_detail_errors")
    if runs.iloc[rows[0]]["status"] == RunStatus.RUNNING and st.button("Follow this run", key="runs_follow_button"):
        st.session_state[FOLLOW_KEY] = {"run_id": run_id, "hosts": []}
        st.rerun()


ui.run_page(render)
