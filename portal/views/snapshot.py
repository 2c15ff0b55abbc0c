"""Export: the whole network's configuration as it was at a moment, as one ``.tar.gz`` to download (what
``devicevault export`` writes: ``<group>/<host>.cfg`` and a ``MANIFEST.json`` that ``devicevault export
--verify`` checks; devices whose copies cannot be read are listed in it). The moment is a time (UTC) or the
end of a finished run; optionally only some groups.

The archive is streamed: the page offers a one-time download link (``portal.downloads``, five minutes, bound
to the user's session) and the portal's ASGI route makes the archive while the browser reads it, one
configuration in memory at a time, no file (``storage.snapshot.stream_snapshot``)."""

from __future__ import annotations

import streamlit as st

from portal import downloads, queries, ui

MODES = ["at a time", "as a run left it"]
OFFER_KEY = "snapshot_offer"


def render(user) -> None:
    from storage.snapshot import SnapshotError, parse_moment, run_moment

    s = ui.settings()
    st.title("Export")
    st.caption("Every device's configuration as it was at a moment (its newest version at or before it), as a "
               ".tar.gz laid out <group>/<host>.cfg with a MANIFEST.json (`devicevault export --verify FILE` "
               "checks it).")
    sessions = ui.sessions(s)
    with sessions() as session:
        groups, _ = queries.filter_choices(session)
        runs = queries.finished_runs(session)
    mode = st.radio("Moment", MODES, horizontal=True, key="snapshot_mode")
    text, run_id = "", ""
    if mode == MODES[0]:
        text = st.text_input("Time (ISO 8601, UTC unless it names a zone)", key="snapshot_at",
                             placeholder="2026-11-30T03:00")
    else:
        labels = {f"{r} · finished {ui.when(f)} · {sel}": r for r, f, sel in runs}
        chosen = st.selectbox("Run", list(labels), key="snapshot_run", index=None,
                              placeholder="a finished run" if labels else "no run has finished yet")
        run_id = labels.get(chosen, "") if chosen else ""
    chosen_groups = st.multiselect("Only these groups (none: every device)", groups, key="snapshot_groups")
    if st.button("Prepare the download", key="snapshot_prepare", type="primary"):
        st.session_state.pop(OFFER_KEY, None)
        try:
            with sessions() as session:
                if mode == MODES[0]:
                    if not text.strip():
                        raise SnapshotError("give a time, e.g. 2026-11-30T03:00")
                    at = parse_moment(text)
                elif not run_id:
                    raise SnapshotError("choose a finished run")
                else:
                    at = run_moment(session, run_id)
                count = queries.snapshot_size(session, at, chosen_groups)
        except SnapshotError as exc:
            st.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - the index: a readable line, never a traceback
            ui.show_error(exc, "The archive cannot be prepared")
        else:
            stamp = at.strftime("%Y%m%dT%H%M%SZ")
            token = downloads.OFFERS.offer(downloads.ExportOffer(
                at=at.isoformat(), run_id=run_id, groups=tuple(chosen_groups), file_name=f"devicevault-{stamp}.tar.gz",
                user=user.name, sid=st.session_state.get(ui.SID_KEY)))
            st.session_state[OFFER_KEY] = {"url": downloads.url_of(token), "at": at.isoformat(), "devices": count}
    offer = st.session_state.get(OFFER_KEY)
    if offer:
        st.success(f"{offer['devices']} device(s) as at {offer['at']}: the archive is made while you download it "
                   f"(the link works once, for {downloads.OFFER_TTL / 60:.0f} minutes).")
        st.link_button("Download the archive", offer["url"], type="primary")


ui.run_page(render)
