"""Dashboard: devices per status (the one vocabulary, ``storage.index.health``, the counts ``devicevault status``
prints), stale and unsaved devices as alerts linking to the filtered device list, backups / first backups /
changes per day beside failures per day, recent changes, failing devices."""

from __future__ import annotations

import altair as alt
import streamlit as st

from portal import queries, ui

#: the chart colours of each kind (the health colours where a kind is one)
KIND_COLOURS = {"backups": "#4c78a8", "first backups": "#9ecae9", "changes": "#f58518", "failures": "#a4161a"}


def _alerts(o: queries.Overview, max_age: float) -> None:
    """Stale, unsaved and never backed up devices: a count that opens the device list filtered on it."""
    shown = False
    for count, word, what in (
        (o.stale, "stale", "stale: " + queries.STALE_HELP.format(max_age=max_age)),
        (o.unsaved, "unsaved", "unsaved: the running configuration differed from the startup configuration at "
                               "the newest backup (not saved on the device)"),
        (o.never, "never backed up", "never backed up: no backup of these devices has succeeded yet"),
    ):
        if not count:
            continue
        shown = True
        box = st.warning if word != "never backed up" else st.info
        box(f"**{count} device(s) {word}** — {ui.md(what)}", icon=":material/warning:")
        st.page_link("views/devices.py", label=f"Show the {count} {word} device(s)", icon=":material/lan:",
                     query_params={"status": word})
    if not shown and o.total:
        st.success("No device is stale, unsaved or never backed up.")


def _chart(frame, kinds: tuple[str, ...], title: str):
    part = frame[frame["kind"].isin(kinds)]
    return (
        alt.Chart(part, title=title)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):T", title="day (UTC)"),
            y=alt.Y("count:Q", title="devices"),
            color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=list(kinds),
                                                                  range=[KIND_COLOURS[k] for k in kinds])),
            xOffset="kind:N",
            tooltip=["yearmonthdate(day):T", "kind:N", "count:Q"],
        )
        .properties(height=260)
    )


def render(user) -> None:
    s = ui.settings()
    st.title("Dashboard")
    c1, c2 = st.columns([5, 1])
    with c2:
        days = st.selectbox("Days in the charts", [7, 14, 30, 90], index=2, key="dash_days")
    with ui.sessions(s)() as session:
        o = queries.overview(session)
        activity = queries.activity_per_day(session, days=days)
        recent = queries.recently_changed(session, 10)
        failing = queries.failing_devices(session, 100)
    with c1:
        m = st.columns(7)
        m[0].metric("Devices", o.total)
        m[1].metric("OK", o.ok, help="ok: the last backup succeeded (changed or unchanged).")
        m[2].metric("Failed", o.failed, help="failed: the last backup failed.")
        m[3].metric("Stale", o.stale, help="stale: " + queries.STALE_HELP.format(max_age=s.max_age))
        m[4].metric("Unsaved", o.unsaved, help="unsaved: running configuration not saved on the device.")
        m[5].metric("Never", o.never, help="never backed up: no backup succeeded yet.")
        m[6].metric("Versions", o.versions)
    if o.total == 0:
        st.info("The index holds no device yet: start a backup on the Runs page (or `devicevault backup`).")
    _alerts(o, s.max_age)
    left, right = st.columns(2)
    with left:
        st.altair_chart(_chart(activity, ("backups", "first backups", "changes"), "Backups, first backups and "
                               "changes per day"), width="stretch", key="dash_chart")
        st.caption("backups: devices collected by the runs started that day (any outcome); first backups: a "
                   "device's first version; changes: every later new version")
    with right:
        st.altair_chart(_chart(activity, ("failures",), "Failures per day"), width="stretch", key="dash_failures")
        st.caption("failures: devices whose backup failed, by the day their run started")
    left, right = st.columns(2)
    with left:
        st.subheader("Recently changed")
        st.dataframe(recent, hide_index=True, width="stretch", key="dash_recent",
                     column_config={"last change": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")})
    with right:
        st.subheader(f"Failing devices ({len(failing)})")
        if failing.empty:
            st.success("No device's last backup failed.")
        else:
            st.dataframe(failing, hide_index=True, width="stretch", key="dash_failing",
                         height=ui.table_height(len(failing), most=20, row=60), row_height=60,
                         column_config={"failed at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
                                        "last success": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
                                        "error": st.column_config.TextColumn("error", width="large")})
            ui.errors_in_full(failing, key="dash_failing_errors")


ui.run_page(render)
