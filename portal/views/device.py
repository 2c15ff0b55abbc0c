"""Device: its version timeline (with who changed each version, per the device), any version as text (and its
download), the diff of any two versions (unified or side by side) and a jump to the previous / next change.
A warning says when the running configuration was not saved at the newest backup, and since when.

Everything shown is in the URL, so a reload or a copied link shows the same: ``?device=NAME`` (the Devices
and Runs pages link here with it), ``a`` and ``b`` (the two versions of the diff), ``mode`` (``unified`` or
``side``), ``context`` and ``v`` (the version shown). The device picker finds names as you type, from one
index query with LIMIT (10,000 devices are never one list). Operators back the device up from here ("Back up
now", the Runs page's ``start_backup``), follow it and see the new version or the error; the Runs tab lists
the device's own results. Contents are read through the storage layout with failover and cached by sha256.
Operators restore the version shown ("Restore this version…", ``jobs.collect.restore``): the device is read
now and the difference shown, and only "Confirm restore" queues the restore; viewers see no such button.
"""

from __future__ import annotations

import math
import re

import pandas as pd
import streamlit as st

from portal import content, queries, ui
from storage.index.statuses import CopyStatus, DeviceStatus

TIMELINE_PAGE = 50
PICKER_LIMIT = 50  # names the device picker offers for what is typed
BACKUP_KEY = "device_backup"  # the run "Back up now" started: {"run_id", "device"}
DONE_KEY = "device_done"  # what a backup or restore just did, shown once above the next page: (kind, text[, diff])
RESTORE_KEY = "device_restore"  # a restore being confirmed or followed: {"device", "number", "diff", "mode", "job_id"}
REFRESH_SECONDS = 1.0
MODES = {"unified": "unified", "side": "side by side"}
#: query parameter -> the widget's session key
URL_KEYS = {"a": "device_diff_a", "b": "device_diff_b", "v": "device_show_version", "context": "device_diff_context"}
PER_DEVICE_KEYS = ("device_diff_a", "device_diff_b", "device_show_version", "device_timeline_page", "device_timeline",
                   "_device_timeline_applied", "_device_timeline_numbers")
SIDE_COLOURS = {"removed": ("#fde2e1", ""), "added": ("", "#dcf5dc"), "changed": ("#fdf1d6", "#fdf1d6")}


def _pick() -> None:
    """A device chosen in the picker: the URL names it (the page then forgets the last device's choices)."""
    picked = st.session_state.get("device_pick")
    if picked:
        st.query_params.clear()
        st.query_params["device"] = picked


def _from_url(name: str) -> None:
    """The URL's view of this device (a link, a reload, back / forward) into the widgets' state."""
    params = st.query_params
    wanted = {key: params.get(param) for param, key in URL_KEYS.items()}
    wanted["device_diff_mode"] = MODES.get(params.get("mode") or "", None)
    if st.session_state.get("_device_url_seen") == (name, tuple(sorted(params.items()))):
        return  # the URL is what this page last wrote: the widgets already hold it
    for key, value in wanted.items():
        if value is None:
            continue
        if key == "device_diff_mode":
            st.session_state[key] = value
        elif str(value).isdigit():
            st.session_state[key] = int(value)


def _to_url(name: str) -> None:
    """The widgets' state into the URL (what a reload or a copied link shows)."""
    state = st.session_state
    params = {"device": name}
    for param, key in URL_KEYS.items():
        if state.get(key) is not None:
            params[param] = str(int(state[key]))
    mode = state.get("device_diff_mode")
    if mode:
        params["mode"] = next(k for k, v in MODES.items() if v == mode)
    if dict(st.query_params) != params:
        st.query_params.from_dict(params)
    state["_device_url_seen"] = (name, tuple(sorted(params.items())))


def _shift(delta: int) -> None:
    """Previous change (-1) / next change (+1): compare the version before/after with its predecessor."""
    b = int(st.session_state.get("device_diff_b", 2)) + delta
    st.session_state["device_diff_b"] = b
    st.session_state["device_diff_a"] = b - 1


def _pick_timeline() -> None:
    """A row newly selected in the timeline: compare that version with the one before, and show it.
    Runs before the diff's widgets exist (they come first on the page)."""
    rows = list(st.session_state.get("device_timeline", {}).get("selection", {}).get("rows", []))
    if rows == st.session_state.get("_device_timeline_applied"):
        return
    st.session_state["_device_timeline_applied"] = rows
    numbers = st.session_state.get("_device_timeline_numbers", [])
    if rows and rows[0] < len(numbers):
        number = numbers[rows[0]]
        st.session_state["device_show_version"] = number
        if number > 1:
            st.session_state["device_diff_b"] = number
            st.session_state["device_diff_a"] = number - 1


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "device"


def _read(s, session, chosen, device: str) -> dict[int, bytes | Exception]:
    """version number -> content (or why it cannot be read). A version no target has stored yet (a backup
    that just made it, or every target down) is read from the storage outbox, where it waits for them."""
    copies = queries.copies_of(session, [v.id for v in chosen])
    got = content.read_many(((v.sha256, copies[v.id]) for v in chosen), ui.layout(s).open)
    out: dict[int, bytes | Exception] = {}
    for v in chosen:
        data = got.get(v.sha256, LookupError("not read"))
        if isinstance(data, Exception):
            data = _not_stored_yet(s, v, copies[v.id], device) or data
        out[v.number] = data
    return out


def _not_stored_yet(s, v, copies, device: str) -> bytes | None:
    from redis.exceptions import RedisError

    from jobs.deliver.outbox import unstored_text

    try:
        return unstored_text(ui.redis(s), copies, run_id=v.run_id, device=device, sha256=v.sha256,
                             codec=ui.layout(s).sealing_codec())
    except (RedisError, OSError, ValueError) as exc:  # Redis down, a key that cannot unseal: the copies' error
        ui.log.warning("portal: version %s of %s is not stored yet and cannot be read from the outbox: %s",
                       v.number, device, exc)
        return None


def _copies_text(copies) -> str:
    return ", ".join(b if st_ in CopyStatus.LANDED else f"{b} ({st_})" for b, _, st_ in copies) or "none"


def render(user) -> None:
    s = ui.settings()
    sessions = ui.sessions(s)
    st.title("Device")
    name = _picker(sessions, st.query_params.get("device"))
    if name is None:
        return
    if st.session_state.get("_device_state_for") != name:  # another device: forget the last one's choices
        for key in PER_DEVICE_KEYS + ("device_diff_mode", "device_diff_context", "_device_url_seen"):
            st.session_state.pop(key, None)
        st.session_state["_device_state_for"] = name
    _from_url(name)
    _pick_timeline()

    with sessions() as session:
        info = queries.device_info(session, name)
        versions = queries.versions_of(session, info.id)
        _header(info, versions)
        _backup(s, user, info, versions)
        if not versions:
            st.info(f"{name} has no stored version yet.")
            _to_url(name)
            return
        by_number = {v.number: v for v in versions}
        diff_tab, timeline_tab, show_tab, runs_tab = st.tabs(["Diff", "Timeline", "Version", "Runs"])
        with diff_tab:
            _diff(s, session, info, versions, by_number)
        with timeline_tab:
            _timeline(s, session, info, versions)
        with show_tab:
            _show(s, session, info, versions, by_number, user)
        with runs_tab:
            _runs(session, info)
    _to_url(name)


def _picker(sessions, wanted: str | None) -> str | None:
    """The device of the URL, and a picker: type part of a name, choose among the first matches (one index
    query with LIMIT per search, however many devices there are)."""
    c = st.columns([2, 3])
    typed = c[0].text_input("Find a device", key="device_find", placeholder="part of a name, then Enter")
    with sessions() as session:
        found = queries.find_devices(session, typed, limit=PICKER_LIMIT + 1)
        known = bool(wanted) and queries.device_exists(session, wanted)
        anything = bool(found) or known or (bool(typed) and bool(queries.find_devices(session, "", limit=1)))
    if not anything:
        st.info("The index holds no device yet: start a backup on the Runs page (or `devicevault backup`).")
        return None
    more = len(found) > PICKER_LIMIT
    options = found[:PICKER_LIMIT]
    if known and wanted not in options:
        options = [wanted] + options
    if known:
        st.session_state["device_pick"] = wanted
    elif st.session_state.get("device_pick") not in options:
        st.session_state["device_pick"] = None
    c[1].selectbox("Device", options, key="device_pick", on_change=_pick,
                   placeholder="choose a device" if options else "no device matches",
                   help=f"The first {PICKER_LIMIT} names containing what you typed" if more else None)
    if more:
        c[1].caption(f"More than {PICKER_LIMIT} devices match: type more of the name.")
    if wanted and not known:
        st.warning(f"Device {ui.md(wanted)} is not in the index.")
    return wanted if known else None


def _backup(s, user, info, versions) -> None:
    """Operators: "Back up now" (``jobs.collect.runs.start_backup``, as on the Runs page), then the run's
    progress until this device has its result: the new version, "unchanged", or the error."""
    started = st.session_state.get(BACKUP_KEY)
    if started and started.get("device") != info.name:
        started = None
    if user.can_trigger:
        if st.button("Back up now", key="device_backup_now", type="primary", disabled=bool(started),
                     help="Back up this device now (a run of this one device)"):
            from jobs.collect.runs import start_backup

            redis = ui.redis(s)
            redis.ping()  # Redis down: say so before a run is recorded that no worker would ever see
            run = start_backup(redis, s, hosts=[info.name], inventory=s.inventory, requested_by=user.name)
            ui.log.info("portal: %s started run %s for %s (device page)", user.name, run.run_id, info.name)
            started = {"run_id": run.run_id, "device": info.name, "versions": len(versions)}
            st.session_state[BACKUP_KEY] = started
    if not started:
        return

    @st.fragment(run_every=REFRESH_SECONDS)
    def progress() -> None:
        run_id = started["run_id"]
        with ui.sessions(s)() as session:
            result = queries.device_result(session, run_id, info.name)
            state = queries.run_state(session, run_id, [info.name])
        if result is None:
            st.progress(0.0, text=f"Backing up {info.name} (run {run_id[:12]})… "
                        + ("queued" if state.created_at is None else "running"))
            return
        status, error = result
        st.session_state.pop(BACKUP_KEY, None)
        if status == DeviceStatus.CHANGED.value:
            st.session_state[DONE_KEY] = ("success", f"Backed up: a new version (run {run_id[:12]}).")
            _show_newest()
        elif status == DeviceStatus.FAILED.value:
            st.session_state[DONE_KEY] = ("error", f"The backup failed (run {run_id[:12]}): {ui.mask(error)}")
        else:
            st.session_state[DONE_KEY] = ("info", f"Backed up: {status}, no new version (run {run_id[:12]}).")
        st.rerun()  # the whole page: the new version in the header, the diff and the timeline

    progress()


def _show_newest() -> None:
    """The next run of the page shows the device's newest version (a backup or a restore just made one): the
    diff and version choices, and their URL fields, are dropped."""
    for key in ("device_diff_a", "device_diff_b", "device_show_version"):
        st.session_state.pop(key, None)
    for param in ("a", "b", "v"):
        st.query_params.pop(param, None)
    st.session_state.pop("_device_url_seen", None)


def _runs(session, info) -> None:
    runs = queries.device_runs(session, info.id, limit=20)
    if runs.empty:
        st.info(f"{info.name} has no run result yet.")
        return
    st.caption(f"The newest {len(runs)} result(s) of {info.name}, newest first.")
    st.dataframe(runs.assign(error=runs["error"].map(ui.mask)), hide_index=True, width="stretch", key="device_runs",
                 column_config={"started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z"),
                                "error": st.column_config.TextColumn(width="large")})


def _header(info, versions) -> None:
    done = st.session_state.pop(DONE_KEY, None)
    if done:
        getattr(st, done[0])(ui.md(done[1]))
        if len(done) > 2 and done[2]:
            st.code(done[2], language="diff")
    m = st.columns([2, 1, 2, 2, 2])
    m[0].caption("Status")  # the one vocabulary, colour-coded, never cut ("cha…" in a narrow metric)
    m[0].markdown(ui.health_badge(info.health), help="The most urgent of: failed, never backed up, stale, "
                  "unsaved, changed, ok")
    m[1].metric("Versions", len(versions))
    last = f"{ui.ago(info.last_success)} ({ui.when(info.last_success)})" if info.last_success else "never"
    for col, (label, value) in zip(m[2:], (("Last success", last),
                                           ("Last change", ui.when(info.last_change)),
                                           ("Group · platform", f"{info.group or '-'} · {info.platform or '-'}"))):
        col.caption(label)
        col.markdown(f"**{ui.md(value)}**")
    if info.status == DeviceStatus.FAILED and info.last_error:
        st.error(f"Last backup failed ({ui.when(info.last_attempt)}): {ui.md(ui.mask(info.last_error))}")
    if info.stale_since is not None:
        st.warning(f"Stale since {ui.when(info.stale_since)}: no successful backup for too long.")
    if info.unsaved:
        since = f" (unsaved since {ui.when(info.unsaved_since)})" if info.unsaved_since else ""
        st.warning(f"Unsaved configuration: at the newest backup ({ui.when(info.last_success)}) the running "
                   f"configuration differed from the saved (startup) configuration{since}. A reload of the "
                   "device would lose those changes.", icon="⚠️")


def _label(by_number):
    return lambda n: f"v{n} · {ui.when(by_number[n].created_at)} · {by_number[n].sha256[:12]}"


def _diff(s, session, info, versions, by_number) -> None:
    n = len(versions)
    if n < 2:
        st.info("Only one version so far: nothing to compare yet.")
        return
    numbers = list(range(n, 0, -1))
    for key, default in (("device_diff_b", n), ("device_diff_a", n - 1)):
        value = st.session_state.get(key, default)
        st.session_state[key] = min(max(int(value), 1), n)
    c = st.columns([3, 3, 1.4, 1.4])
    a = c[0].selectbox("From", numbers, key="device_diff_a", format_func=_label(by_number))
    b = c[1].selectbox("To", numbers, key="device_diff_b", format_func=_label(by_number))
    c[2].button("◀ Previous change", key="device_prev_change", on_click=_shift, args=(-1,), disabled=b <= 2,
                help="Compare the change before this one")
    c[3].button("Next change ▶", key="device_next_change", on_click=_shift, args=(1,), disabled=b >= n,
                help="Compare the change after this one")
    o = st.columns([2, 1, 3])
    mode = o[0].radio("View", list(MODES.values()), horizontal=True, key="device_diff_mode")
    if not 0 <= int(st.session_state.get("device_diff_context", 3)) <= 1000:
        st.session_state["device_diff_context"] = 3
    st.session_state.setdefault("device_diff_context", 3)
    context = o[1].number_input("Context lines", min_value=0, max_value=1000, key="device_diff_context")
    texts = _read(s, session, [by_number[a], by_number[b]], info.name)
    for number in (a, b):
        if isinstance(texts[number], Exception):
            st.error(f"Version {number} cannot be read: {ui.md(ui.friendly(texts[number]))}")
            return
    old, new = content.as_text(texts[a]), content.as_text(texts[b])
    if a == b:
        st.info("Pick two different versions.")
        return
    added, removed = content.line_stats(old, new, key=(by_number[a].sha256, by_number[b].sha256))
    st.caption(f"v{a} → v{b}: **+{added}** / **−{removed}** lines")
    if added == removed == 0:
        st.info("The two versions have the same lines.")
        return
    if mode == "unified":
        patch = content.unified_diff(old, new, f"{info.name} v{a} {by_number[a].sha256[:12]}",
                                     f"{info.name} v{b} {by_number[b].sha256[:12]}", context=int(context))
        st.code(patch, language="diff")
        st.download_button("Download diff", patch.encode(), file_name=f"{_safe_name(info.name)}_v{a}-v{b}.diff",
                           mime="text/x-diff", key="device_diff_download")
    else:
        rows = content.side_by_side(old, new, context=int(context))
        frame = pd.DataFrame(
            [{"#": _no(r.old_no), f"v{a}": r.old, "# ": _no(r.new_no), f"v{b}": r.new, "change": r.change}
             for r in rows], columns=["#", f"v{a}", "# ", f"v{b}", "change"],
        )
        old_col, new_col = f"v{a}", f"v{b}"

        def colour(row):
            left, right = SIDE_COLOURS.get(row["change"], ("", ""))
            bg = lambda c: f"background-color: {c}" if c else ""  # noqa: E731
            return [bg(left), bg(left), bg(right), bg(right), ""]

        styled = frame.style.apply(colour, axis=1)
        st.dataframe(styled, hide_index=True, width="stretch", key="device_diff_side", height=min(38 + 35 * len(frame), 700),
                     column_config={"#": st.column_config.TextColumn(width="small"),
                                    "# ": st.column_config.TextColumn(width="small"),
                                    old_col: st.column_config.TextColumn(width="large"),
                                    new_col: st.column_config.TextColumn(width="large"),
                                    "change": st.column_config.TextColumn(width="small")})


def _no(number: int | None) -> str:
    return "" if number is None else str(number)


def _timeline(s, session, info, versions) -> None:
    n = len(versions)
    pages = max(1, math.ceil(n / TIMELINE_PAGE))
    page = int(st.session_state.get("device_timeline_page", 1))
    page = min(max(page, 1), pages)
    hi = n - (page - 1) * TIMELINE_PAGE
    lo = max(0, hi - TIMELINE_PAGE)
    shown = list(reversed(versions[lo:hi]))  # newest first
    needed = shown + ([versions[lo - 1]] if lo > 0 else [])
    texts = _read(s, session, needed, info.name)
    copies = queries.copies_of(session, [v.id for v in shown])
    rows = []
    for v in shown:
        added = removed = None
        this, before = texts.get(v.number), texts.get(v.number - 1)
        if isinstance(this, bytes) and v.number == 1:
            added, removed = len(content.as_text(this).splitlines()), 0
        elif isinstance(this, bytes) and isinstance(before, bytes):
            prev = versions[v.number - 2]
            added, removed = content.line_stats(content.as_text(before), content.as_text(this), key=(prev.sha256, v.sha256))
        rows.append({"version": v.number, "time": v.created_at, "sha": v.sha256[:12], "size": v.size,
                     "added": added, "removed": removed, "copies": _copies_text(copies.get(v.id, ())),
                     "run": v.run_id, "changed by": v.author or "—"})
    st.session_state["_device_timeline_numbers"] = [v.number for v in shown]
    unreadable = [num for num, t in texts.items() if isinstance(t, Exception)]
    st.caption(f"Versions {lo + 1}–{hi} of {n}, newest first. Select a row to compare it with the version before "
               "it (Diff tab) and to show it (Version tab).")
    if unreadable:
        st.warning(f"{len(unreadable)} version(s) could not be read, so their line counts are missing: "
                   + ", ".join(f"v{x}" for x in sorted(unreadable)[:10]))
    frame = pd.DataFrame(rows, columns=["version", "time", "sha", "size", "added", "removed", "copies", "run",
                                       "changed by"])
    frame["time"] = pd.to_datetime(frame["time"], utc=True)
    st.dataframe(frame, hide_index=True, width="stretch", key="device_timeline", on_select="rerun",
                 selection_mode="single-row",
                 column_config={"time": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss z"),
                                "added": st.column_config.NumberColumn("+ lines", format="%d"),
                                "removed": st.column_config.NumberColumn("− lines", format="%d"),
                                "size": st.column_config.NumberColumn("bytes", format="%d"),
                                "changed by": st.column_config.TextColumn(
                                    help="Who changed the configuration, as the device reports it")})
    if pages > 1:
        st.session_state["device_timeline_page"] = page
        st.number_input(f"Timeline page (of {pages})", min_value=1, max_value=pages, step=1,
                        key="device_timeline_page")


def _show(s, session, info, versions, by_number, user) -> None:
    n = len(versions)
    numbers = list(range(n, 0, -1))
    if st.session_state.get("device_show_version") not in by_number:
        st.session_state["device_show_version"] = n
    number = st.selectbox("Version", numbers, key="device_show_version", format_func=_label(by_number))
    v = by_number[number]
    data = _read(s, session, [v], info.name)[number]
    if isinstance(data, Exception):
        st.error(f"Version {number} cannot be read: {ui.md(ui.friendly(data))}")
        return
    copies = queries.copies_of(session, [v.id])[v.id]
    changed_by = f" · changed by {ui.md(v.author)}" if v.author else ""
    st.caption(f"sha256 `{v.sha256}` · {v.size} bytes · {ui.when(v.created_at)} · run `{v.run_id}`{changed_by} · "
               f"copies: {_copies_text(copies)}")
    st.download_button("Download this version", data, file_name=f"{_safe_name(info.name)}_v{number}_{v.sha256[:12]}.cfg",
                       mime="text/plain", key="device_download")
    _restore(s, user, info, number)
    st.code(content.as_text(data), language=None, line_numbers=True)


def _restore(s, user, info, number: int) -> None:
    """Operators: "Restore this version…" reads the device now and shows what a restore of ``number`` would
    change (a dry run of ``jobs.collect.restore.restore``); "Confirm restore" queues it
    (``enqueue_restore``: push, backup, compare, in a job on the device's collection queue) and follows the
    job to its one-line outcome. A refusal (no restore mechanism, masked secrets without a raw copy) is shown
    instead of the confirmation. Viewers see none of it."""
    if not user.can_trigger:
        return
    from jobs.errors import BackupError
    from storage.errors import StorageError
    from storage.index.queries import NotFound

    pending = st.session_state.get(RESTORE_KEY)
    if pending and (pending["device"], pending["number"]) != (info.name, number):
        st.session_state.pop(RESTORE_KEY, None)
        pending = None
    if pending is None:
        if not st.button("Restore this version…", key="device_restore_prepare",
                         help="Read the device now and show what restoring this version would change"):
            return
        from jobs.collect.restore import restore

        with st.spinner(f"Reading {info.name}'s configuration now…"):
            try:
                result = restore(ui.redis(s), s, info.name, str(number), dry_run=True, inventory=s.inventory)
            except (BackupError, NotFound, StorageError, OSError) as exc:
                st.error(f"Restore of v{number}: {ui.md(ui.mask(str(exc)))}")
                return
        pending = {"device": info.name, "number": number, "diff": result.diff, "mode": result.mode}
        st.session_state[RESTORE_KEY] = pending
    if not pending.get("job_id"):
        how = "a full replace" if pending["mode"] == "replace" else "a merge: lines added since the version stay"
        st.warning(f"Restore v{number} to {ui.md(info.name)} ({how})? The device now, against v{number}:")
        st.code(ui.mask(pending["diff"]) or "(no difference: nothing would be pushed)", language="diff")
        c = st.columns(2)
        if c[0].button("Confirm restore", key="device_restore_confirm", type="primary"):
            from jobs.collect.runs import enqueue_restore

            try:
                job = enqueue_restore(ui.redis(s), s, info.name, str(number), inventory=s.inventory,
                                      requested_by=user.name)
            except BackupError as exc:
                st.error(ui.md(ui.mask(str(exc))))
                return
            ui.log.info("portal: %s queued a restore of %s v%d (job %s)", user.name, info.name, number, job.id)
            pending["job_id"] = job.id
        elif c[1].button("Cancel", key="device_restore_cancel"):
            st.session_state.pop(RESTORE_KEY, None)
            st.rerun()
        else:
            return

    @st.fragment(run_every=REFRESH_SECONDS)
    def follow() -> None:
        from jobs.queues import Job

        job = Job.fetch(pending["job_id"], connection=ui.redis(s))
        status = job.get_status(refresh=True)
        if status == "finished":
            outcome = job.return_value() or {}
            text = ui.md(ui.mask(str(outcome.get("summary", "restored"))))
            (st.success if outcome.get("status") in ("matches", "same") else st.warning)(text)
            if outcome.get("remaining"):
                st.code(ui.mask(outcome["remaining"]), language="diff")
            run_id = outcome.get("run_id")
            if run_id:  # once the restore's backup is in the index: the page again, with the version it made
                with ui.sessions(s)() as session:
                    landed = queries.device_result(session, run_id, info.name) is not None
                if landed:
                    kind = "success" if outcome.get("status") in ("matches", "same") else "warning"
                    st.session_state[DONE_KEY] = (kind, ui.mask(str(outcome.get("summary", "restored"))),
                                                  ui.mask(outcome.get("remaining") or ""))
                    st.session_state.pop(RESTORE_KEY, None)
                    if outcome.get("backup_status") == DeviceStatus.CHANGED.value:
                        _show_newest()
                    st.rerun()
        elif status in ("failed", "stopped", "canceled"):
            result = job.latest_result()
            lines = [ln for ln in (getattr(result, "exc_string", "") or "").splitlines() if ln.strip()]
            reason = lines[-1].split(": ", 1)[-1] if lines else status
            st.error(f"Restore of v{number} failed: {ui.md(ui.mask(reason))}")
        else:
            st.info(f"Restoring v{number} to {ui.md(info.name)} (job {job.id[:12]}: {status})…")

    follow()


ui.run_page(render)
