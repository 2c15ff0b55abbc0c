"""Search: a text or regular expression across the newest configuration of every device (optionally every
version), within groups or platforms, with line numbers and context; results export as CSV. Compare a line
across devices: which have it, which lack it.

The newest configurations come from the index's search table (``storage.index.search``: written by the index
consumer with each version, narrowed by the database's trigram index), never from storage; "every version"
reads storage (parallel, cached by sha256). Patterns are RE2's (linear time: no pattern can pin the portal);
a search stops after 2,000 matching lines or at its time limit (``DEVICEVAULT_PORTAL_SEARCH_TIMEOUT``, "too
slow") and says so. What cannot be read is named by device, never by storage path. The CSV export
neutralises cells a spreadsheet would run as formulas (``content.csv_export``).
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from portal import content, links, queries, ui
from storage.index import search as index_search

MAX_RESULTS = 2000
COLUMNS = ["device", "version", "line", "text", "context", "sha"]
#: the search in the URL (``portal.links``): a reload or a copied link runs it again
URL_FIELDS = {"q": ("search_query", str), "regex": ("search_regex", bool), "case": ("search_case", bool),
              "all": ("search_all_versions", bool), "group": ("search_groups", list),
              "platform": ("search_platforms", list)}


def render(user) -> None:
    s = ui.settings()
    st.title("Search")
    with ui.sessions(s)() as session:
        groups, platforms = queries.filter_choices(session)
    linked = (links.load("search", URL_FIELDS, {"group": groups, "platform": platforms})
              and bool(st.session_state.get("search_query")))
    with st.form("search_form"):
        query = st.text_input("Text or regular expression", key="search_query",
                              placeholder="e.g. access-list 101 or ^ip route 10\\.")
        c = st.columns(4)
        regex = c[0].checkbox("Regular expression", key="search_regex")
        case = c[1].checkbox("Match case", key="search_case")
        every = c[2].checkbox("Every version (not only the newest)", key="search_all_versions")
        context = c[3].number_input("Context lines", min_value=0, max_value=20, value=2, key="search_context")
        g, p = st.columns(2)
        chosen_groups = g.multiselect("Only these groups", groups, key="search_groups")
        chosen_platforms = p.multiselect("Only these platforms", platforms, key="search_platforms")
        submitted = st.form_submit_button("Search", type="primary")
    if submitted or linked:
        links.save("search", URL_FIELDS)
        pattern = content.compile_pattern(query, regex=regex, case_sensitive=case)
        with st.spinner("Searching…"):
            if every:
                with ui.sessions(s)() as session:
                    targets = queries.search_targets(session, all_versions=True, groups=chosen_groups,
                                                     platforms=chosen_platforms)
                result = content.search(targets, pattern, ui.layout(s).open, context=int(context),
                                        max_results=MAX_RESULTS, time_budget=s.portal_search_timeout)
            else:
                result = content.search_index(ui.sessions(s), pattern, query, regex=regex, groups=chosen_groups,
                                              platforms=chosen_platforms, context=int(context),
                                              max_results=MAX_RESULTS, time_budget=s.portal_search_timeout)
        st.session_state["search_result"] = {
            "query": query, "regex": regex, "every": every,
            "frame": pd.DataFrame(result.rows, columns=COLUMNS), "searched": result.searched,
            "unreadable": result.unreadable, "truncated": result.truncated, "too_slow": result.too_slow,
        }
    found = st.session_state.get("search_result")
    if found:
        _results(found)
    _compare(s, groups, platforms)


def _results(found: dict) -> None:
    frame: pd.DataFrame = found["frame"]
    what = "every version" if found["every"] else "the newest configuration"
    devices = frame["device"].nunique() if not frame.empty else 0
    st.subheader(f"{len(frame)} matching line(s) in {devices} device(s)")
    st.caption(f"{'regex' if found['regex'] else 'text'} `{found['query'].replace('`', '')}` in {what} of each device; "
               f"{found['searched']} configuration(s) searched.")
    if found.get("too_slow"):
        st.error(f"Too slow: the search {found['truncated']}. Narrow it down (fewer groups, the newest "
                 "configurations only, a more specific pattern).")
    elif found["truncated"]:
        st.warning(f"The search {found['truncated']}; narrow it down to see everything.")
    if found["unreadable"]:
        more = f" (and {len(found['unreadable']) - 5} more)" if len(found["unreadable"]) > 5 else ""
        st.warning(f"{len(found['unreadable'])} configuration(s) could not be searched: "
                   + "; ".join(ui.md(ui.mask(u)) for u in found["unreadable"][:5]) + more)
    if frame.empty:
        return
    st.download_button("Export CSV", content.csv_export(frame), file_name="devicevault-search.csv",
                       mime="text/csv", key="search_csv")
    picked = st.dataframe(frame[["device", "version", "line", "text"]], hide_index=True, width="stretch",
                          key="search_table", on_select="rerun", selection_mode="single-row",
                          column_config={"text": st.column_config.TextColumn(width="large")})
    rows = picked.selection.rows if picked is not None else []
    row = frame.iloc[rows[0] if rows and rows[0] < len(frame) else 0]
    st.markdown(f"**{ui.md(row['device'])}** v{row['version']}, line {row['line']} (select a row to see another match)")
    st.code(row["context"], language=None)
    if st.button(f"Open {row['device']}", key="search_open_device"):
        st.switch_page("views/device.py", query_params={"device": row["device"]})


def _compare(s, groups: list[str], platforms: list[str]) -> None:
    """Which devices have a configuration line, which lack it (newest configurations, from the index)."""
    st.subheader("Compare a line across devices")
    with st.form("compare_form"):
        line = st.text_input("Configuration line", key="compare_line", placeholder="e.g. ntp server 10.0.0.123",
                             help="Compared with each line of the newest configuration of every device in scope, "
                                  "leading and trailing blanks ignored, case sensitive")
        g, p = st.columns(2)
        chosen_groups = g.multiselect("Only these groups", groups, key="compare_groups")
        chosen_platforms = p.multiselect("Only these platforms", platforms, key="compare_platforms")
        submitted = st.form_submit_button("Compare")
    if submitted:
        if not line.strip():
            st.error("Type the configuration line to compare.")
            return
        with ui.sessions(s)() as session:
            st.session_state["compare_result"] = index_search.compare_line(
                session, line, groups=chosen_groups, platforms=chosen_platforms)
    found = st.session_state.get("compare_result")
    if found is None:
        return
    st.caption(f"`{found.line.replace('`', '')}`: **{len(found.have)}** device(s) have it, "
               f"**{len(found.lack)}** lack it.")
    if found.not_indexed:
        st.warning(f"{len(found.not_indexed)} device(s) are not in the search index yet (run "
                   "`devicevault search-index`): " + ", ".join(ui.md(n) for n in found.not_indexed[:10]))
    have, lack = st.columns(2)
    have.dataframe(pd.DataFrame({"have it": found.have}), hide_index=True, width="stretch", key="compare_have")
    lack.dataframe(pd.DataFrame({"lack it": found.lack}), hide_index=True, width="stretch", key="compare_lack")


ui.run_page(render)
