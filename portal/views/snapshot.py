"""Export: the whole network's configuration as it was at a moment, as one ``.tar.gz`` to download (what
``devicevault export`` writes: ``<group>/<host>.cfg`` and a ``MANIFEST.json`` that ``devicevault export
--verify`` checks). The moment is a time (UTC) or the end of a finished run; optionally only some groups.

The archive is written to a temporary file, one configuration in memory at a time (``storage.snapshot``),
then offered for download; the previous one of the session is removed when a new one is made."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from portal import content, queries, ui

MODES = ["at a time", "as a run left it"]
FILE_KEY = "snapshot_file"


#: an archive left by a session that ended (its page never made another) is removed after this long
LEFT_BEHIND = 6 * 3600


def _forget_previous() -> None:
    """Remove the session's previous archive, and archives other sessions left behind long ago."""
    import time

    previous = st.session_state.pop(FILE_KEY, None)
    if previous:
        Path(previous["path"]).unlink(missing_ok=True)
    for old in Path(tempfile.gettempdir()).glob("devicevault-snapshot-*.tar.gz"):
        try:
            if time.time() - old.stat().st_mtime > LEFT_BEHIND:
                old.unlink()
        except OSError:
            pass


def render(user) -> None:
    from storage.snapshot import SnapshotError, parse_moment

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
    at, run_id = None, ""
    if mode == MODES[0]:
        text = st.text_input("Time (ISO 8601, UTC unless it names a zone)", key="snapshot_at",
                             placeholder="2026-11-30T03:00")
    else:
        labels = {f"{r} · finished {ui.when(f)} · {sel}": r for r, f, sel in runs}
        chosen = st.selectbox("Run", list(labels), key="snapshot_run", index=None,
                              placeholder="a finished run" if labels else "no run has finished yet")
        run_id = labels.get(chosen, "") if chosen else ""
    chosen_groups = st.multiselect("Only these groups (none: every device)", groups, key="snapshot_groups")
    if st.button("Prepare the archive", key="snapshot_prepare", type="primary"):
        try:
            if mode == MODES[0]:
                if not text.strip():
                    raise SnapshotError("give a time, e.g. 2026-11-30T03:00")
                at = parse_moment(text)
            elif not run_id:
                raise SnapshotError("choose a finished run")
            _forget_previous()
            handle, path = tempfile.mkstemp(prefix="devicevault-snapshot-", suffix=".tar.gz")
            Path(path).chmod(0o600)
            import os

            os.close(handle)
            with st.spinner("Writing the archive…"):
                manifest = content.make_snapshot(sessions, ui.layout(s).open, Path(path), at=at, run_id=run_id,
                                                 groups=chosen_groups)
        except SnapshotError as exc:
            st.error(str(exc))
        except Exception as exc:  # noqa: BLE001 - the index or a target: a readable line, never a traceback
            ui.show_error(exc, "The archive could not be made")
        else:
            stamp = manifest["at"][:19].replace(":", "").replace("-", "")
            st.session_state[FILE_KEY] = {"path": path, "name": f"devicevault-{stamp}.tar.gz", "at": manifest["at"],
                                          "devices": len(manifest["devices"]), "unreadable": manifest["unreadable"]}
    prepared = st.session_state.get(FILE_KEY)
    if prepared and Path(prepared["path"]).exists():
        st.success(f"{prepared['devices']} device(s) as at {prepared['at']}")
        for item in prepared["unreadable"]:
            st.warning(f"{item['device']} v{item['version']}: not in the archive, no copy could be read: "
                       f"{ui.mask(item['error'])}")
        with open(prepared["path"], "rb") as handle:
            st.download_button("Download the archive", handle, file_name=prepared["name"], mime="application/gzip",
                               key="snapshot_download", on_click="ignore")


ui.run_page(render)
