"""Devices: every device with its status (the one vocabulary, colour-coded: ``storage.index.health``), the age
of its last backup, group, platform, last success, last change, number of versions and whether its running
configuration was saved at the newest backup ("Unsaved": yes / no / — when unknown). The filters are in the
URL (``portal.links``): ``?status=stale`` is where the dashboard's alerts link.

Filtered and sorted in SQL and paged, so it stays fast with tens of thousands of devices; clicking a row
opens the device.
"""

from __future__ import annotations

import math

import streamlit as st

from portal import links, queries, ui

PAGE_SIZES = [50, 200, 1000]
SORTS = [*queries.SORTS, "versions"]
#: the filters and the sort in the URL (``portal.links``): a reload or a copied link shows the same list
URL_FIELDS = {"name": ("devices_name", str), "group": ("devices_groups", list), "platform": ("devices_platforms", list),
              "sort": ("devices_sort", str), "desc": ("devices_desc", bool), "unsaved": ("devices_unsaved", bool),
              "status": ("devices_status", list)}  # ?status=stale: the dashboard's alerts link here
TIME = st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm z")


def _reset_page() -> None:
    st.session_state["devices_page"] = 1


def render(user) -> None:
    s = ui.settings()
    st.title("Devices")
    sessions = ui.sessions(s)
    with sessions() as session:
        groups, platforms = queries.filter_choices(session)
    if links.load("devices", URL_FIELDS, {"group": groups, "platform": platforms, "sort": SORTS,
                                          "status": queries.STATUS_FILTERS}):
        _reset_page()
    f1, f2, f3, f4 = st.columns([2, 2, 2, 2])
    name = f1.text_input("Name contains", key="devices_name", on_change=_reset_page)
    chosen_groups = f2.multiselect("Group", groups, key="devices_groups", on_change=_reset_page)
    chosen_platforms = f3.multiselect("Platform", platforms, key="devices_platforms", on_change=_reset_page)
    statuses = f4.multiselect("Status", list(queries.STATUS_FILTERS), key="devices_status", on_change=_reset_page,
                              help="stale: " + queries.STALE_HELP.format(max_age=s.max_age))
    o1, o2, o3, o4, o5 = st.columns([2, 1, 1, 1, 1])
    sort = o1.selectbox("Sort by", SORTS, key="devices_sort", on_change=_reset_page)
    descending = o2.toggle("Descending", key="devices_desc", on_change=_reset_page)
    unsaved_only = o3.checkbox("Only unsaved", key="devices_unsaved", on_change=_reset_page,
                               help="Devices whose running configuration differed from the saved (startup) "
                                    "configuration at their newest backup")
    size = o4.selectbox("Rows per page", PAGE_SIZES, index=1, key="devices_page_size", on_change=_reset_page)
    links.save("devices", URL_FIELDS)
    page_number = int(st.session_state.get("devices_page", 1) or 1)

    def fetch(number: int):
        with sessions() as session:
            return queries.devices_table(
                session, name=name, groups=chosen_groups, platforms=chosen_platforms, statuses=statuses,
                unsaved_only=unsaved_only, sort=sort, descending=descending, offset=(number - 1) * size,
                limit=size,
            )

    frame, total = fetch(page_number)
    pages = max(1, math.ceil(total / size))
    if page_number > pages:  # the filters shrank the list: show its last page
        page_number = st.session_state["devices_page"] = pages
        frame, total = fetch(page_number)
    o5.number_input(f"Page (of {pages})", min_value=1, max_value=pages, step=1, key="devices_page")
    first = (page_number - 1) * size
    st.caption(f"{total} device(s) match; showing {first + 1 if total else 0}–{min(first + size, total)}. "
               "Select a row to open the device.")
    picked = st.dataframe(
        ui.health_styled(frame), hide_index=True, width="stretch", key="devices_table", on_select="rerun",
        selection_mode="single-row", height=ui.table_height(len(frame)),
        column_config={
            "status": st.column_config.TextColumn(
                "Status", width="small", help="The most urgent of: " + ", ".join(queries.STATUS_FILTERS)
                + " (a device may be several: the status filter matches each)"),
            "last backup": st.column_config.TextColumn(
                "Last backup", width="small", help="Age of the last successful backup (its time: Last success)"),
            "last error": st.column_config.TextColumn("Last error", width="large"),
            "last success": TIME, "last change": TIME,
            "stale": st.column_config.CheckboxColumn(help="No successful backup for too long"),
            "unsaved": st.column_config.TextColumn(
                "Unsaved", help="Running configuration not saved (differs from the startup configuration) at the "
                                "newest backup: yes / no / — unknown (the platform has no startup command)"),
            "versions": st.column_config.NumberColumn(format="%d"),
        },
    )
    rows = picked.selection.rows if picked is not None else []
    if rows and rows[0] < len(frame):
        st.switch_page("views/device.py", query_params={"device": frame.iloc[rows[0]]["device"]})


ui.run_page(render)
