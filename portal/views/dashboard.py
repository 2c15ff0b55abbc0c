"""Dashboard: devices total / OK / failed / stale, backups and changes per day, recent changes, failures."""

from __future__ import annotations

import altair as alt
import streamlit as st

from portal import queries, ui


def render(user) -> None:
    s = ui.settings()
    st.title("Dashboard")
    c1, c2 = st.columns([3, 1])
    with c2:
        days = st.selectbox("Days in the chart", [7, 14, 30, 90], index=2, key="dash_days")
    with ui.sessions(s)() as session:
        o = queries.overview(session)
        activity = queries.activity_per_day(session, days=days)
        recent = queries.recently_changed(session, 10)
        failing = queries.failing_devices(session, 100)
    with c1:
        m = st.columns(5)
        m[0].metric("Devices", o.total)
        m[1].metric("OK", o.ok, help="The last backup succeeded.")
        m[2].metric("Failed", o.failed, help="The last backup failed.")
        m[3].metric("Stale", o.stale, help="Stale: " + queries.STALE_HELP.format(max_age=s.max_age))
        m[4].metric("Versions", o.versions)
    if o.total == 0:
        st.info("The index holds no device yet: start a backup on the Runs page (or `devicevault backup`).")
    st.subheader("Backups and changes per day")
    st.caption("backups: devices collected by the runs started that day (any outcome); changes: new versions")
    chart = (
        alt.Chart(activity)
        .mark_bar()
        .encode(
            x=alt.X("yearmonthdate(day):T", title="day (UTC)"),
            y=alt.Y("count:Q", title="devices"),
            color=alt.Color("kind:N", title=None, scale=alt.Scale(domain=list(queries.KINDS),
                                                                  range=["#4c78a8", "#f58518"])),
            xOffset="kind:N",
            tooltip=["yearmonthdate(day):T", "kind:N", "count:Q"],
        )
        .properties(height=260)
    )
    st.altair_chart(chart, width="stretch", key="dash_chart")
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
                         column_config={"failed at": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z"),
                                        "last success": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")})


ui.run_page(render)
