"""Compliance: the devices that break a compliance rule and the offending lines (``portal.queries
.compliance_table``; the rules file and the checks: ``jobs/compliance``). Each new version is checked by the
index consumer, so this page shows the newest versions' standing; ``devicevault compliance --check`` checks
every device again."""

from __future__ import annotations

import streamlit as st

from portal import queries, ui


def render(user) -> None:
    from jobs.compliance.rules import RulesFileError, load_rules

    s = ui.settings()
    st.title("Compliance")
    try:
        ruleset = load_rules(s.compliance_rules)
    except RulesFileError as exc:
        st.error(str(exc))
        ruleset = None
    if ruleset is not None and not ruleset.rules:
        st.info(f"No compliance rules: {s.compliance_rules} does not exist or has none "
                "(the format: jobs/compliance/rules.py).")
    sessions = ui.sessions(s)
    with sessions() as session:
        groups, _ = queries.filter_choices(session)
        summary = queries.compliance_summary(session)
    c1, c2 = st.columns(2)
    c1.metric("Devices checked", summary["checked"])
    c2.metric("Breaking a rule", summary["violating"])
    f1, f2 = st.columns(2)
    chosen_groups = f1.multiselect("Group", groups, key="compliance_groups")
    rule_names = list(ruleset.names) if ruleset is not None else []
    chosen_rules = f2.multiselect("Rule", rule_names, key="compliance_rules")
    with sessions() as session:
        frame = queries.compliance_table(session, groups=chosen_groups, rules=chosen_rules)
    if frame.empty:
        st.success("No device breaks a rule." if summary["checked"] else "No device has been checked yet.")
        return
    st.caption(f"{frame['device'].nunique()} device(s) break a rule; one row per offending line "
               "(missing: a line the rule asks for; forbidden: a line it forbids). Select a row to open the device.")
    picked = st.dataframe(
        frame, hide_index=True, width="stretch", key="compliance_table", on_select="rerun",
        selection_mode="single-row", height=ui.table_height(len(frame)),
        column_config={"since": st.column_config.DatetimeColumn("Since", format="YYYY-MM-DD HH:mm z"),
                       "line": st.column_config.TextColumn("Line", width="large")},
    )
    rows = picked.selection.rows if picked is not None else []
    if rows and rows[0] < len(frame):
        st.switch_page("views/device.py", query_params={"device": frame.iloc[rows[0]]["device"]})


ui.run_page(render)
