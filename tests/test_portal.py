"""The portal through Streamlit's AppTest: every page renders on a real index, and the interactions work
(log in, filter, pick two versions, search, trigger a run, roles, readable errors, no credentials shown).

The index is filled once per module through the real record functions (``storage.index.records``) in a
real SQLite file, with every version written through the real git and fs backends; the trigger test uses
the session's real redis-server (database 12, which no worker serves, so the job stays queued).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "portal" / "app.py"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
PASSWORDS = {"alice": ("admin", "alice-password"), "oscar": ("operator", "oscar-password"),
             "victor": ("viewer", "victor-password")}


def config_text(name: str, version: int) -> str:
    """A plausible device configuration; every version changes one ACL line and adds one route."""
    lines = [f"hostname {name}", "!", "interface Loopback0", f" ip address 10.255.0.{version} 255.255.255.255", "!"]
    lines += [f"ip route 10.{i}.0.0 255.255.0.0 192.0.2.1" for i in range(version)]
    lines += ["!", f"ip access-list extended MGMT-{version}", " permit tcp 192.0.2.0 0.0.0.255 any eq 22", "!", "end"]
    return "\n".join(lines) + "\n"


class Seeder:
    """Writes runs, device results and versions the way the workers and the consumer do."""

    def __init__(self, settings):
        from jobs.deliver.locations import StorageLayout
        from storage.index.db import connect

        self.settings = settings
        self.layout = StorageLayout.load(settings)
        self.sessions = connect(settings.database_url)
        self.n = 0

    def run(self, when: datetime, results: dict[str, tuple[str, str | None]], *, group_of, platform_of,
            requested_by: str = "cron", unsaved: dict[str, bool] | None = None,
            authors: dict[str, str] | None = None) -> str:
        """``results``: device -> (status, config text or error); ``unsaved``: device -> running != startup
        at this backup (absent: unknown); ``authors``: device -> who changed it, per the device."""
        unsaved, authors = unsaved or {}, authors or {}
        from jobs.streams.results import DeviceResult, DeviceStatus, StorageResult, StorageStatus
        from storage.base import StoreOptions
        from storage.index.records import apply_device_result, apply_storage_result, create_run, refresh_run
        from storage.paths import device_path

        self.n += 1
        run_id = f"run{self.n:03d}-" + hashlib.sha1(str(when).encode()).hexdigest()[:8]
        with self.sessions.begin() as session:
            run = create_run(session, run_id, total=len(results), selector="all", targets=["git", "fs"],
                             requested_by=requested_by)
            run.created_at = when
        for device, (status, payload) in results.items():
            group, platform = group_of(device), platform_of(device)
            task = f"{run_id}:{device}"
            if status == "changed":
                data = payload.encode()
                sha = hashlib.sha256(data).hexdigest()
                result = DeviceResult(task_id=task, run_id=run_id, device=device, status=DeviceStatus.CHANGED,
                                      timestamp=when, group=group, platform=platform, sha256=sha, size=len(data),
                                      duration=1.5, targets="git,fs", unsaved=unsaved.get(device),
                                      author=authors.get(device, ""), config=payload)
                stored = []
                for target in ("git", "fs"):
                    ref = self.layout.open(target).store(
                        data, device_path(group, device),
                        StoreOptions(device=device, run_id=run_id, timestamp=when, message=f"{device} changed"))
                    stored.append(StorageResult(task_id=f"{task}:{target}", run_id=run_id, device=device,
                                                backend=target, status=StorageStatus.STORED, timestamp=when,
                                                group=group, sha256=sha, size=len(data), ref=ref,
                                                author=authors.get(device, "")))
            else:
                result = DeviceResult(task_id=task, run_id=run_id, device=device, status=DeviceStatus(status),
                                      timestamp=when, group=group, platform=platform, duration=0.8,
                                      error=payload or "" if status == "failed" else "",
                                      error_kind="timeout" if status == "failed" else "",
                                      unsaved=unsaved.get(device))
                stored = []
            with self.sessions.begin() as session:
                apply_device_result(session, result)
                for s in stored:
                    apply_storage_result(session, s)
        with self.sessions.begin() as session:
            refresh_run(session, run_id, now=when + timedelta(seconds=30))
        return run_id

    def broken_version(self, device: str, group: str, platform: str, when: datetime) -> None:
        """A version whose only copy is gone (its ref names nothing): reading it must fail readably."""
        from jobs.streams.results import DeviceResult, DeviceStatus, StorageResult, StorageStatus
        from storage.index.records import apply_device_result, apply_storage_result, create_run, refresh_run

        run_id = "run-broken"
        sha = hashlib.sha256(b"lost").hexdigest()
        with self.sessions.begin() as session:
            create_run(session, run_id, total=1, selector=f"host={device}", targets=["fs"])
            apply_device_result(session, DeviceResult(
                task_id=f"{run_id}:{device}", run_id=run_id, device=device, status=DeviceStatus.CHANGED,
                timestamp=when, group=group, platform=platform, sha256=sha, size=4, targets="fs"))
            apply_storage_result(session, StorageResult(
                task_id=f"{run_id}:{device}:fs", run_id=run_id, device=device, backend="fs",
                status=StorageStatus.STORED, timestamp=when, group=group, sha256=sha, size=4,
                ref=f"{group}/{device}/20000101T000000.000000Z_{sha[:12]}.cfg"))
            refresh_run(session, run_id, now=when)


@pytest.fixture(scope="module")
def portal_env(tmp_path_factory, redis_server):
    """A home with an inventory of 6 devices, an index of 3 runs with real copies in git and fs, 3 users.

    The busy device has had unsaved changes since the second run (by alice, then jdoe); ``saved`` (names[4])
    was saved at its newest backup; every other device's unsaved state is unknown."""
    from cli.services import free_port
    from jobs.collect.inventory import load_inventory
    from jobs.ops.freshness import mark_stale
    from jobs.settings import Settings
    from lab.generate_inventory import generate_inventory
    from portal.users import UsersFile

    home = tmp_path_factory.mktemp("portal")
    inventory = home / "inventory"
    names = generate_inventory(count=6, out=inventory, port=free_port(), base="127.0.91.0")
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/12",
        "DEVICEVAULT_USERS_FILE": str(home / "users.yml"),
    }
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    mp.delenv("DEVICEVAULT_DATABASE_URL", raising=False)
    mp.delenv("DEVICEVAULT_STORAGE_CONFIG", raising=False)
    settings = Settings.load()
    hosts = load_inventory(inventory)
    seed = Seeder(settings)
    kw = dict(group_of=lambda d: hosts[d].group, platform_of=lambda d: hosts[d].network_os)
    busy, failing, stale, saved = names[0], names[1], names[2], names[4]
    seed.run(NOW - timedelta(days=5), {n: ("changed", config_text(n, 1)) for n in names}, **kw)
    seed.run(NOW - timedelta(days=2), {n: ("changed", config_text(n, 2)) if n == busy else ("unchanged", None)
                                       for n in names}, unsaved={busy: True, saved: True},
             authors={busy: "alice"}, **kw)
    third = {n: ("unchanged", None) for n in names if n != stale}
    third[busy] = ("changed", config_text(busy, 3))
    third[failing] = ("failed", f"{failing}: timeout after 8 s waiting for the prompt")
    seed.run(NOW - timedelta(hours=2), third, requested_by="oscar", unsaved={busy: True, saved: False},
             authors={busy: "jdoe"}, **kw)
    seed.broken_version(names[3], hosts[names[3]].group, hosts[names[3]].network_os, NOW - timedelta(hours=1))
    mark_stale(seed.sessions, settings, hosts, now=NOW)  # what the scheduler's maintenance pass does
    users = UsersFile(home / "users.yml")
    for name, (role, password) in PASSWORDS.items():
        users.add(name, role, password, rounds=4)
    yield {"home": home, "names": names, "busy": busy, "failing": failing, "stale": stale, "broken": names[3],
           "saved": saved,
           "settings": settings, "hosts": hosts, "env": env}
    mp.undo()


def app(user: str | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if user:
        at.session_state["portal_user"] = user
    return at


def page(user: str, path: str, **query) -> AppTest:
    at = app(user).run()
    assert not at.exception, at.exception
    at.query_params.update(query)
    return at.switch_page(path).run()


def texts(at: AppTest) -> str:
    """Everything a user can read on the page (for 'is X shown' checks)."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "code", "error", "warning", "info",
                 "success", "metric", "text"):
        for element in getattr(at, kind):
            parts.append(str(getattr(element, "value", "")) + " " + str(getattr(element, "label", "")))
    for frame in at.dataframe:
        parts.append(frame.value.to_string())
    return "\n".join(parts)


def click(at: AppTest, label: str) -> AppTest:
    """Click the button labelled ``label`` (form submit buttons included) and run the script."""
    (button,) = [b for b in at.button if b.label == label]
    return button.click().run()


def table(at: AppTest, *columns: str):
    """The first table showing all ``columns`` (read-only tables carry no key in AppTest)."""
    for frame in at.dataframe:
        if set(columns) <= set(frame.value.columns):
            return frame.value
    raise AssertionError(f"no table with columns {columns}: {[list(f.value.columns) for f in at.dataframe]}")


def ok(at: AppTest) -> AppTest:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


# --- login ------------------------------------------------------------------------------------------------
def test_nothing_but_the_login_form_before_login(portal_env):
    at = app().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["DeviceVault"]
    assert not at.dataframe and not at.metric and not at.code
    assert [w.key for w in at.text_input] == ["login_username", "login_password"]
    # a page file run on its own (someone guessing a URL) shows nothing either
    direct = AppTest.from_file(str(ROOT / "portal" / "views" / "devices.py"), default_timeout=30).run()
    assert not direct.dataframe and not direct.metric
    assert "log in" in texts(direct).lower()
    assert portal_env["busy"] not in texts(at) + texts(direct)


def test_without_users_the_login_page_says_how_to_create_one(portal_env, monkeypatch, tmp_path):
    monkeypatch.setenv("DEVICEVAULT_USERS_FILE", str(tmp_path / "none.yml"))
    at = app().run()
    assert not at.exception and not at.text_input
    assert any("devicevault users add NAME --role admin" in w.value for w in at.warning)


def test_login_with_the_right_password_only(portal_env):
    at = app().run()
    at.text_input(key="login_username").set_value("victor")
    at.text_input(key="login_password").set_value("wrong-password")
    click(at, "Log in")
    assert "Wrong user name or password." in [e.value for e in at.error]
    assert "portal_user" not in at.session_state and not at.metric
    at.text_input(key="login_username").set_value("victor")
    at.text_input(key="login_password").set_value("victor-password")
    click(at, "Log in")
    ok(at)
    assert at.session_state["portal_user"] == "victor"
    assert [t.value for t in at.title] == ["Dashboard"]
    assert any("victor" in c.value and "viewer" in c.value for c in at.sidebar.caption)
    at.button(key="logout").click().run()
    assert "portal_user" not in at.session_state and not at.metric


def test_a_removed_user_is_logged_out(portal_env):
    from portal.users import UsersFile

    users = UsersFile(portal_env["home"] / "users.yml")
    users.add("temp", "viewer", "temp-password", rounds=4)
    at = app("temp").run()
    assert [t.value for t in at.title] == ["Dashboard"]
    users.remove("temp")
    at.run()
    assert "portal_user" not in at.session_state and not at.metric


# --- pages ------------------------------------------------------------------------------------------------
def test_dashboard(portal_env):
    at = ok(app("victor").run())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Devices"] == "6"
    assert metrics["Failed"] == "1"
    assert metrics["OK"] == "5"
    assert metrics["Stale"] == "2"  # last success 2 days ago: the device the last run left out, the failing one
    assert metrics["Versions"] == str(6 + 2 + 1)
    recent = table(at, "device", "last change")
    assert recent["device"].iloc[0] == portal_env["broken"]
    assert portal_env["busy"] in set(recent["device"])
    failing = table(at, "device", "failed at", "error")
    assert list(failing["device"]) == [portal_env["failing"]]
    assert "timeout after 8 s" in failing["error"].iloc[0]
    # the whole error, not cut to the column: a detail panel below the table
    assert any("timeout after 8 s waiting for the prompt" in m.value for m in at.markdown)
    from portal.queries import activity_per_day
    from storage.index.db import connect

    with connect(portal_env["settings"].database_url)() as session:
        activity = activity_per_day(session, days=30)
    by_day = {(r.day.date(), r.kind): r.count for r in activity.itertuples()}
    # first backups are counted apart from changes; failures beside them
    assert by_day[((NOW - timedelta(days=5)).date(), "backups")] == 6
    assert by_day[((NOW - timedelta(days=5)).date(), "first backups")] == 6
    assert by_day[((NOW - timedelta(days=5)).date(), "changes")] == 0
    assert by_day[((NOW - timedelta(days=2)).date(), "backups")] == 6
    assert by_day[((NOW - timedelta(days=2)).date(), "changes")] == 1
    assert by_day[((NOW - timedelta(hours=2)).date(), "failures")] == 1
    assert len(activity) == 120 and len(at.get("vega_lite_chart")) == 2
    # stale and unsaved devices are alerts whose counts open the device list filtered on them
    assert metrics["Unsaved"] == "1" and metrics["Never"] == "0"
    alerts = [w.value for w in at.warning]
    assert any("2 device(s) stale" in a for a in alerts) and any("1 device(s) unsaved" in a for a in alerts)
    links = {link.label: link for link in at.get("page_link")}
    assert "Show the 2 stale device(s)" in links and "Show the 1 unsaved device(s)" in links
    devices = ok(page("victor", "views/devices.py", status="stale"))
    assert devices.multiselect(key="devices_status").value == ["stale"]
    assert sorted(devices.dataframe(key="devices_table").value["device"]) == sorted(
        [portal_env["stale"], portal_env["failing"]])


def test_stale_follows_the_freshness_check_and_each_hosts_allowed_age(portal_env):
    """One staleness rule: the portal shows what jobs.ops.freshness marked, with the host's own
    devicevault_max_age (a week for the stale device here), not an age of its own."""
    from dataclasses import replace

    from jobs.ops.freshness import mark_stale
    from storage.index.db import connect

    sessions = connect(portal_env["settings"].database_url)
    hosts, stale = portal_env["hosts"], portal_env["stale"]
    patient = {**hosts, stale: replace(hosts[stale], max_age=24.0 * 7)}
    try:
        assert sorted(s.device for s in mark_stale(sessions, portal_env["settings"], patient, now=NOW)) == \
            [portal_env["failing"]]
        at = ok(app("victor").run())
        assert {m.label: m.value for m in at.metric}["Stale"] == "1"
        at = ok(page("victor", "views/devices.py"))
        at.multiselect(key="devices_status").set_value(["stale"]).run()
        assert list(ok(at).dataframe(key="devices_table").value["device"]) == [portal_env["failing"]]
    finally:
        mark_stale(sessions, portal_env["settings"], hosts, now=NOW)
    assert {m.label: m.value for m in ok(app("victor").run()).metric}["Stale"] == "2"


def test_devices_filter_and_sort(portal_env):
    at = ok(page("victor", "views/devices.py"))
    table = at.dataframe(key="devices_table").value
    assert sorted(table["device"]) == sorted(portal_env["names"])
    # one vocabulary: the most urgent status of each device, and the age of its last backup
    status = dict(zip(table["device"], table["status"]))
    assert (status[portal_env["failing"]], status[portal_env["stale"]], status[portal_env["busy"]],
            status[portal_env["saved"]], status[portal_env["broken"]]) == ("failed", "stale", "unsaved", "ok", "changed")
    assert dict(zip(table["device"], table["last backup"]))[portal_env["busy"]] == "2 h ago"
    assert table.set_index("device").loc[portal_env["busy"], "versions"] == 3
    at.multiselect(key="devices_status").set_value(["failed"]).run()
    table = ok(at).dataframe(key="devices_table").value
    assert list(table["device"]) == [portal_env["failing"]]
    at.multiselect(key="devices_status").set_value(["stale"]).run()
    assert sorted(at.dataframe(key="devices_table").value["device"]) == sorted([portal_env["stale"], portal_env["failing"]])
    at.multiselect(key="devices_status").set_value([]).run()
    at.text_input(key="devices_name").set_value(portal_env["busy"][-6:]).run()
    assert portal_env["busy"] in list(at.dataframe(key="devices_table").value["device"])
    at.text_input(key="devices_name").set_value("").run()
    at.selectbox(key="devices_sort").set_value("versions").run()
    at.toggle(key="devices_desc").set_value(True).run()
    table = ok(at).dataframe(key="devices_table").value
    assert table["device"].iloc[0] == portal_env["busy"]
    assert list(table["versions"]) == sorted(table["versions"], reverse=True)
    group = portal_env["hosts"][portal_env["busy"]].group
    at.multiselect(key="devices_groups").set_value([group]).run()
    assert set(at.dataframe(key="devices_table").value["group"]) == {group}


def test_devices_show_the_unsaved_flag_and_filter_on_it(portal_env):
    busy, saved = portal_env["busy"], portal_env["saved"]
    at = ok(page("victor", "views/devices.py"))
    assert at.checkbox(key="devices_unsaved").label == "Only unsaved" and not at.checkbox(key="devices_unsaved").value
    table = at.dataframe(key="devices_table").value
    flags = dict(zip(table["device"], table["unsaved"]))
    assert flags == {n: "yes" if n == busy else "no" if n == saved else "—" for n in portal_env["names"]}
    at.checkbox(key="devices_unsaved").check().run()
    table = ok(at).dataframe(key="devices_table").value
    assert list(table["device"]) == [busy] and list(table["unsaved"]) == ["yes"]
    assert "1 device(s) match" in " ".join(c.value for c in at.caption)
    at.multiselect(key="devices_status").set_value(["failed"]).run()  # combined with another filter
    assert ok(at).dataframe(key="devices_table").value.empty
    at.multiselect(key="devices_status").set_value([]).run()
    at.checkbox(key="devices_unsaved").uncheck().run()
    assert len(ok(at).dataframe(key="devices_table").value) == len(portal_env["names"])


def test_device_page_warns_about_unsaved_changes_since_when_and_shows_who_changed_it(portal_env):
    from portal.ui import when

    busy = portal_env["busy"]
    at = ok(page("victor", "views/device.py", device=busy))
    (warning,) = [w.value for w in at.warning if "Unsaved" in w.value]
    assert "running configuration differed from the saved (startup) configuration" in warning
    assert f"unsaved since {when(NOW - timedelta(days=2))}" in warning  # the first backup that found it unsaved
    assert when(NOW - timedelta(hours=2)) in warning  # the newest backup
    # the status in the one vocabulary, a whole coloured word (not a metric cut to "cha…"), the age beside
    assert ":blue-background[:blue[**unsaved**]]" in [m.value for m in at.markdown]
    assert any(m.value.startswith("**2 h ago") for m in at.markdown)
    timeline = at.dataframe(key="device_timeline").value
    assert list(zip(timeline["version"], timeline["changed by"])) == [(3, "jdoe"), (2, "alice"), (1, "—")]
    assert any("changed by jdoe" in c.value for c in at.caption)  # the Version tab, newest version
    for other in (portal_env["saved"], portal_env["stale"]):  # saved / unknown: no warning
        at = ok(page("victor", "views/device.py", device=other))
        assert not [w.value for w in at.warning if "Unsaved" in w.value], other


def _select_row(at: AppTest, key: str, row: int) -> AppTest:
    """What the browser sends when a table row is clicked."""
    at.session_state[key] = {"selection": {"rows": [row], "columns": [], "cells": []}}
    return at.run()


def test_a_selected_device_row_opens_the_device(portal_env):
    at = ok(page("victor", "views/devices.py"))
    table = at.dataframe(key="devices_table").value
    row = list(table["device"]).index(portal_env["busy"])
    _select_row(at, "devices_table", row)
    assert [t.value for t in ok(at).title] == ["Device"]
    assert at.query_params["device"] == portal_env["busy"]
    assert at.selectbox(key="device_pick").value == portal_env["busy"]


def test_a_selected_timeline_row_is_compared_with_its_predecessor(portal_env):
    at = ok(page("victor", "views/device.py", device=portal_env["busy"]))
    _select_row(at, "device_timeline", 1)  # newest first: v2
    assert (at.selectbox(key="device_diff_a").value, at.selectbox(key="device_diff_b").value) == (1, 2)
    assert at.selectbox(key="device_show_version").value == 2
    assert "+ip access-list extended MGMT-2" in ok(at).code[0].value
    at.selectbox(key="device_diff_a").set_value(3).run()  # a later manual choice is kept
    assert at.selectbox(key="device_diff_a").value == 3


def test_device_page_diff_of_two_chosen_versions(portal_env):
    busy = portal_env["busy"]
    at = ok(page("victor", "views/device.py", device=busy))
    assert at.selectbox(key="device_pick").value == busy
    # default: the previous and the newest version, unified
    diff = at.code[0].value
    assert f"{busy} v2" in diff and f"{busy} v3" in diff
    assert "-ip access-list extended MGMT-2" in diff and "+ip access-list extended MGMT-3" in diff
    at.selectbox(key="device_diff_a").set_value(1)
    at.selectbox(key="device_diff_b").set_value(3)
    at.run()
    diff = ok(at).code[0].value
    assert "+ip route 10.1.0.0 255.255.0.0 192.0.2.1" in diff and "+ip route 10.2.0.0 255.255.0.0 192.0.2.1" in diff
    assert "-ip access-list extended MGMT-1" in diff
    at.radio(key="device_diff_mode").set_value("side by side").run()
    side = table(ok(at), "change")
    assert list(side.columns) == ["#", "v1", "# ", "v3", "change"]
    assert "ip access-list extended MGMT-3" in set(side["v3"]) and "added" in set(side["change"])
    # previous change: v1 -> v2
    at.button(key="device_prev_change").click().run()
    assert (at.selectbox(key="device_diff_a").value, at.selectbox(key="device_diff_b").value) == (1, 2)
    assert at.button(key="device_prev_change").disabled
    at.button(key="device_next_change").click().run()
    assert (at.selectbox(key="device_diff_a").value, at.selectbox(key="device_diff_b").value) == (2, 3)
    # timeline: newest first, with line counts
    timeline = at.dataframe(key="device_timeline").value
    assert list(timeline["version"]) == [3, 2, 1]
    assert list(timeline["added"]) == [3, 3, len(config_text(busy, 1).splitlines())]
    assert list(timeline["removed"]) == [2, 2, 0]
    assert set(timeline["copies"]) == {"git, fs"}
    # any version as text
    at.selectbox(key="device_show_version").set_value(1).run()
    shown = [c.value for c in ok(at).code]
    assert config_text(busy, 1).rstrip("\n") in [c.rstrip("\n") for c in shown]
    assert at.query_params["v"] == "1" and at.query_params["device"] == busy


def test_device_page_view_state_is_in_the_url(portal_env):
    """A link (or a reload) with a, b, mode and v shows exactly that view; choices made are written back."""
    busy = portal_env["busy"]
    at = ok(page("victor", "views/device.py", device=busy, a="1", b="3", mode="side", v="2", context="1"))
    assert (at.selectbox(key="device_diff_a").value, at.selectbox(key="device_diff_b").value) == (1, 3)
    assert at.radio(key="device_diff_mode").value == "side by side"
    assert at.selectbox(key="device_show_version").value == 2
    assert list(table(at, "change").columns) == ["#", "v1", "# ", "v3", "change"]
    at.radio(key="device_diff_mode").set_value("unified").run()
    assert at.query_params["mode"] == "unified" and at.query_params["a"] == "1" and at.query_params["b"] == "3"
    at.button(key="device_prev_change").click().run()
    assert (at.query_params["a"], at.query_params["b"]) == ("1", "2")
    # the Runs tab: the device's own results, newest first
    runs = table(at, "requested by")
    assert len(runs) >= 3 and list(runs["started"]) == sorted(runs["started"], reverse=True)


def test_device_picker_finds_names_as_you_type(portal_env):
    busy = portal_env["busy"]
    at = ok(page("victor", "views/device.py"))
    assert at.selectbox(key="device_pick").value is None
    at.text_input(key="device_find").set_value(busy[-4:].upper()).run()  # any part, any case
    assert busy in ok(at).selectbox(key="device_pick").options
    at.selectbox(key="device_pick").set_value(busy).run()
    assert at.query_params["device"] == busy and ok(at).code  # the device's diff
    from portal import queries
    from storage.index.db import connect

    with connect(portal_env["settings"].database_url)() as session:
        assert queries.find_devices(session, "", limit=2) == sorted(queries.device_names(session))[:2]
        assert queries.find_devices(session, "%", limit=5) == []  # LIKE's wildcards are plain characters


def test_device_page_reads_over_a_missing_copy_and_says_when_none_is_left(portal_env):
    settings = portal_env["settings"]
    busy = portal_env["busy"]
    # the fs copy of v1 is gone: the page reads git's
    from portal import content

    from storage.index.db import connect
    from storage.index.queries import device_versions

    content.CACHE.clear()
    with connect(settings.database_url)() as session:
        first = device_versions(session, busy)[0]
    (settings.fs_root / dict((b, r) for b, r, _ in first.copies)["fs"]).unlink()
    at = page("victor", "views/device.py", device=busy)
    at.selectbox(key="device_show_version").set_value(1).run()
    assert ok(at)
    broken = portal_env["broken"]
    at = page("victor", "views/device.py", device=broken)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "cannot be read" in errors and "Traceback" not in texts(at)


def test_search_text_regex_all_versions_and_csv(portal_env):
    busy = portal_env["busy"]
    at = ok(page("victor", "views/search.py"))
    at.text_input(key="search_query").set_value("access-list extended MGMT")
    click(at, "Search")
    frame = ok(at).session_state["search_result"]["frame"]
    assert len(frame) == 5  # one line in the newest configuration of each readable device (not the broken one)
    row = frame[frame["device"] == busy].iloc[0]
    assert row["text"] == "ip access-list extended MGMT-3" and row["version"] == 3
    assert row["line"] == config_text(busy, 3).splitlines().index("ip access-list extended MGMT-3") + 1
    assert "permit tcp" in row["context"] and ">" in row["context"]
    csv = frame.to_csv(index=False)
    assert csv.splitlines()[0] == "device,version,line,text,context,sha"
    # the broken device's newest version came without its text: named, never a storage path
    assert any("could not be searched" in w.value and "not in the search index" in w.value for w in at.warning)
    at.checkbox(key="search_regex").set_value(True)
    at.checkbox(key="search_all_versions").set_value(True)
    at.text_input(key="search_query").set_value(r"^ip route 10\.[12]\.")
    click(at, "Search")
    frame = ok(at).session_state["search_result"]["frame"]
    assert sorted(zip(frame["version"], frame["line"])) == [(2, 7), (3, 7), (3, 8)]
    assert set(frame["device"]) == {busy}
    at.text_input(key="search_query").set_value("ip route (")
    click(at, "Search")
    assert not at.exception
    assert any("invalid regular expression" in e.value for e in at.error)


def test_search_compares_a_line_across_devices(portal_env):
    busy = portal_env["busy"]
    at = ok(page("victor", "views/search.py"))
    at.text_input(key="compare_line").set_value("ip access-list extended MGMT-3")
    click(at, "Compare")
    found = ok(at).session_state["compare_result"]
    assert busy in found.have and busy not in found.lack and found.lack  # the others are at another version
    assert table(at, "have it")["have it"].tolist() == found.have
    assert any("not in the search index" in w.value for w in at.warning)  # the broken device is named


def test_runs_history_shows_each_device(portal_env):
    at = ok(page("victor", "views/runs.py"))
    history = at.dataframe(key="runs_history").value
    assert len(history) == 4
    third = history[history["requested by"] == "oscar"].iloc[0]
    assert (third["changed"], third["failed"], third["status"]) == (1, 1, "partial")


def test_a_viewer_cannot_trigger_a_run(portal_env):
    at = ok(page("victor", "views/runs.py"))
    assert "runs_start" not in [b.key for b in at.button]
    assert any("operator role" in i.value for i in at.info)
    # an operator's link to a prepared backup: the viewer is told so on the Runs page
    at = page("victor", "views/runs.py", scope="device", device=portal_env["names"][0])
    assert not at.exception and any("needs the operator role" in e.value for e in at.error), [e.value for e in at.error]
    assert "runs_start" not in [b.key for b in at.button]
    at = ok(page("victor", "views/device.py", device=portal_env["busy"]))
    assert "device_backup_now" not in [b.key for b in at.button]
    assert "device_backup_now" in [b.key for b in ok(page("oscar", "views/device.py", device=portal_env["busy"])).button]


def test_an_operator_triggers_a_backup_of_one_device(portal_env, redis_server):
    from redis import Redis
    from jobs.queues import Queue
    from sqlalchemy import select

    from jobs.streams.consumer import Consumer
    from jobs.streams.results import DEVICE_RESULTS_STREAM, RunStarted, parse
    from storage.index.db import connect
    from storage.index.models import Run

    device = portal_env["names"][4]
    redis = Redis.from_url(portal_env["env"]["DEVICEVAULT_REDIS_URL"])
    queue = Queue("collector", connection=redis)
    queue.empty()
    at = ok(page("oscar", "views/runs.py"))
    group = portal_env["hosts"][device].group
    at.radio(key="runs_scope").set_value("one group").run()
    at.selectbox(key="runs_group").set_value(group).run()
    members = sum(1 for h in portal_env["hosts"].values() if group in h.groups)
    assert f"{members} device(s) will be backed up." in [c.value for c in ok(at).caption]
    at.radio(key="runs_scope").set_value("every device").run()
    assert "6 device(s) will be backed up." in [c.value for c in at.caption]
    assert at.query_params["scope"] == "all"
    at.radio(key="runs_scope").set_value("one device").run()
    at.text_input(key="runs_device_find").set_value(device[-5:].upper()).run()  # part of the name
    assert device in at.selectbox(key="runs_device").options and len(at.selectbox(key="runs_device").options) <= 50
    at.selectbox(key="runs_device").set_value(device).run()
    assert (at.query_params["scope"], at.query_params["device"]) == ("device", device)
    linked = ok(page("oscar", "views/runs.py", scope="device", device=device))  # the same link, another session
    assert (linked.radio(key="runs_scope").value, linked.selectbox(key="runs_device").value) == ("one device", device)
    at.button(key="runs_start").click().run()
    ok(at)
    follow = at.session_state["runs_follow"]
    assert follow["hosts"] == [device]
    assert at.query_params["run"] == follow["run_id"]
    # the run is announced on device:results; the index consumer (its only writer) records it from there
    (_, fields), = redis.xrevrange(DEVICE_RESULTS_STREAM, count=1)
    started = parse(DEVICE_RESULTS_STREAM, fields)
    assert isinstance(started, RunStarted) and started.run_id == follow["run_id"]
    sessions = connect(portal_env["settings"].database_url)
    Consumer(redis, sessions, name="portal-test", inventory=None, releaser=None, block_ms=50,
             trim_interval=None).run(idle_exit=0.3, stop=lambda deadline=time.monotonic() + 60: time.monotonic() > deadline)
    with sessions() as session:
        run = session.scalar(select(Run).where(Run.id == follow["run_id"]))
        assert (run.requested_by, run.total, run.selector) == ("oscar", 1, f"host={device}")
    jobs = queue.get_jobs()
    assert [j.meta["hosts"] for j in jobs] == [[device]] and jobs[0].meta["run_id"] == follow["run_id"]
    waiting = table(at, "device", "status", "duration s")
    assert list(zip(waiting["device"], waiting["status"], waiting["group"])) == [(device, "waiting", group)]
    assert "0 of 1 device(s) done" in at.get("progress")[0].proto.text
    queue.empty()


def test_health(portal_env):
    at = ok(page("victor", "views/health.py"))
    targets = table(at, "target", "state")
    assert dict(zip(targets["target"], targets["state"])) == {"git": "healthy", "fs": "healthy"}
    assert any("Redis answers" in s.value for s in at.success)
    assert {m.label for m in at.metric} >= {"Workers", "Jobs queued", "Stale devices"}


def test_health_shows_notification_failures(portal_env):
    """A delivery that failed every try (``jobs.notify.queue``, in the portal's Redis) is an error on the page
    and a row of its failing deliveries."""
    from redis import Redis

    from jobs.notify import queue

    redis = Redis.from_url(portal_env["settings"].redis_url)
    key = queue.delivery_key("version:1", "changes", "hook")
    queue.enqueue(redis, key, "changes", "hook", [{"id": "version:1", "kind": "version", "title": "r1: new"}])
    queue.failed(redis, key, "channel hook: http://127.0.0.1:9 cannot be reached: refused", max_tries=1, base=1,
                 cap=1)
    try:
        at = page("victor", "views/health.py")
        assert not at.exception, at.exception
        assert any("Notification failures: 1 delivery(ies) dead" in e.value for e in at.error)
        failing = next(d.value for d in at.dataframe if "channel" in d.value.columns)
        assert list(zip(failing["rule"], failing["channel"], failing["status"])) == [("changes", "hook", "dead")]
    finally:
        redis.delete(queue.PREFIX + key, queue.DEAD, queue.DUE, queue.RETRYING)


def test_compliance_lists_the_failing_devices_and_their_lines(portal_env):
    """The rules checked on the index's newest versions (``jobs.compliance``), then the page: the devices that
    break a rule, one row per offending line, with its section; a broken rules file is one readable error."""
    from redis import Redis

    from jobs.compliance.checker import Checker
    from storage.index.db import connect

    settings, names, busy = portal_env["settings"], portal_env["names"], portal_env["busy"]
    rules = settings.compliance_rules
    rules.write_text("rules:\n"
                     "  - name: second-route\n    must_contain: ['ip route 10.1.0.0 255.255.0.0 192.0.2.1']\n"
                     "  - name: loopback-moved\n    section: '^interface Loopback'\n"
                     "    must_not_contain: [{regex: '^ip address 10\\.255\\.0\\.1 '}]\n")
    try:
        report = Checker(connect(settings.database_url), Redis.from_url(settings.redis_url), rules).check()
        assert report.unreadable == [f"{portal_env['broken']}: " + report.unreadable[0].split(": ", 1)[1]]
        at = ok(page("victor", "views/compliance.py"))
        frame = at.dataframe(key="compliance_table").value
        expected = sorted(n for n in names if n not in (busy, portal_env["broken"]))
        assert sorted(set(frame[frame["rule"] == "second-route"]["device"])) == expected
        moved = frame[frame["rule"] == "loopback-moved"]
        assert sorted(moved["device"]) == expected
        assert set(moved["section"]) == {"interface Loopback0"} and set(moved["problem"]) == {"forbidden"}
        assert set(moved["line"]) == {"ip address 10.255.0.1 255.255.255.255"}
        assert {m.label: m.value for m in at.metric}["Breaking a rule"] == str(len(expected))
        at.multiselect(key="compliance_rules").set_value(["second-route"]).run()
        assert set(ok(at).dataframe(key="compliance_table").value["rule"]) == {"second-route"}
        rules.write_text("rules: [\n")
        at = page("victor", "views/compliance.py")
        assert not at.exception
        assert any(str(rules) in e.value and "not valid YAML" in e.value for e in at.error)
    finally:
        rules.unlink()


def _download(url: str, cookie: str = "") -> tuple[int, bytes]:
    """GET ``url`` from the portal's streamed download route (``portal.downloads``, a route of the portal's
    ASGI app), as Starlette serves it: (status, body)."""
    import asyncio

    from starlette.requests import Request

    from portal.downloads import EXPORT_PATH, export_route

    assert url.startswith(EXPORT_PATH + "/")
    scope = {"type": "http", "method": "GET", "path": url, "query_string": b"", "scheme": "http",
             "headers": [(b"cookie", cookie.encode())] if cookie else [],
             "path_params": {"token": url.rsplit("/", 1)[1]}}

    async def get() -> tuple[int, bytes]:
        response = await export_route(Request(scope))
        if not hasattr(response, "body_iterator"):
            return response.status_code, response.body
        return response.status_code, b"".join([chunk async for chunk in response.body_iterator])

    return asyncio.run(get())


def test_export_downloads_the_network_as_it_was_at_a_time_or_a_run(portal_env, tmp_path):
    """The portal's Export page offers the archive of ``devicevault export`` for a time or a finished run, as a
    one-time link whose route streams it; it verifies."""
    from storage.snapshot import verify_snapshot

    names, busy, broken = portal_env["names"], portal_env["busy"], portal_env["broken"]
    at = ok(page("victor", "views/snapshot.py"))
    at.text_input(key="snapshot_at").input((NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")).run()
    at = ok(at.button(key="snapshot_prepare").click().run())
    offer = at.session_state["snapshot_offer"]
    assert offer["devices"] == len(names)
    assert any(f"{len(names)} device(s) as at" in m.value for m in at.success)
    status, body = _download(offer["url"])
    assert status == 200
    (tmp_path / "at.tar.gz").write_bytes(body)
    manifest = verify_snapshot(tmp_path / "at.tar.gz")
    assert {d["device"]: d["version"] for d in manifest["devices"]} == {n: 2 if n == busy else 1 for n in names}
    assert _download(offer["url"])[0] == 403  # once only
    # a finished run: as it left the network (the broken device's only copy is gone: named in the manifest)
    at.radio(key="snapshot_mode").set_value("as a run left it").run()
    (choice,) = [o for o in at.selectbox(key="snapshot_run").options if "run-broken" in o]
    at.selectbox(key="snapshot_run").set_value(choice).run()
    at = ok(at.button(key="snapshot_prepare").click().run())
    status, body = _download(at.session_state["snapshot_offer"]["url"])
    (tmp_path / "run.tar.gz").write_bytes(body)
    manifest = verify_snapshot(tmp_path / "run.tar.gz")
    assert manifest["run_id"] == "run-broken" and [u["device"] for u in manifest["unreadable"]] == [broken]
    assert {d["device"] for d in manifest["devices"]} == set(names) - {broken}
    at.radio(key="snapshot_mode").set_value("at a time").run()
    at.text_input(key="snapshot_at").input("yesterday").run()
    at = at.button(key="snapshot_prepare").click().run()
    assert any("not an ISO 8601 time" in e.value for e in at.error)
    assert "snapshot_offer" not in at.session_state


def test_a_download_offered_to_one_session_is_refused_to_another():
    from portal import downloads, sessions

    token = downloads.OFFERS.offer(downloads.ExportOffer(at=NOW.isoformat(), run_id="", groups=(),
                                                         file_name="x.tar.gz", user="victor", sid="session-a"))
    assert downloads.OFFERS.take(token, None) is None and downloads.OFFERS.take(token, "session-b") is None
    assert downloads.OFFERS.take(token, "session-a") is not None
    assert downloads.OFFERS.take(token, "session-a") is None  # once
    assert sessions.unsign("forged.value", b"k") is None


def test_health_hides_credentials_when_redis_is_down(portal_env, monkeypatch):
    from cli.services import free_port

    monkeypatch.setenv("DEVICEVAULT_REDIS_URL", f"redis://:Sup3rS3cret@127.0.0.1:{free_port()}/12")
    at = page("victor", "views/health.py")
    assert not at.exception
    assert any("Redis does not answer" in e.value for e in at.error), [e.value for e in at.error]
    assert table(at, "target", "state") is not None  # the storage targets are still checked
    assert "Sup3rS3cret" not in texts(at)
    assert "REDACTED" in texts(at)


def test_users_page_is_for_admins(portal_env):
    at = app("oscar").run()
    assert "Users" not in [link.label for link in at.sidebar.get("page_link")]  # not in an operator's menu
    at.switch_page("views/users.py").run()  # a link to it says it needs the admin role (not "Page not found")
    assert not at.exception and not at.dataframe
    assert any("needs the admin role" in e.value for e in at.error), [e.value for e in at.error]
    direct = AppTest.from_file(str(ROOT / "portal" / "views" / "users.py"), default_timeout=30)
    direct.session_state["portal_user"] = "oscar"
    direct.run()
    assert not direct.dataframe and any("admin role" in e.value for e in direct.error)
    at = ok(page("alice", "views/users.py"))
    assert set(table(at, "user", "role")["user"]) >= {"alice", "oscar", "victor"}
    assert "$2b$" not in texts(at)
    at.text_input(key="users_add_name").set_value("nora")
    at.selectbox(key="users_add_role").set_value("operator")
    at.text_input(key="users_add_password").set_value("nora-password")
    at.text_input(key="users_add_password2").set_value("nora-password")
    click(at, "Add user")
    assert not at.exception
    from portal.users import UsersFile

    users = UsersFile(portal_env["home"] / "users.yml")
    assert users.get("nora").role == "operator"
    assert users.authenticate("nora", "nora-password") is not None


def test_devices_filters_and_search_are_in_the_url(portal_env):
    busy = portal_env["busy"]
    at = ok(page("victor", "views/devices.py", name=busy, sort="name", desc="1", group="no-such-group"))
    assert at.text_input(key="devices_name").value == busy and at.toggle(key="devices_desc").value
    assert at.multiselect(key="devices_groups").value == []  # a value that is not a choice is dropped
    assert list(at.dataframe(key="devices_table").value["device"]) == [busy]
    at.text_input(key="devices_name").set_value("").run()
    assert "name" not in at.query_params and at.query_params["desc"] == "1"
    # a search link runs the search
    at = ok(page("victor", "views/search.py", q="access-list extended MGMT"))
    found = at.session_state["search_result"]
    assert found["query"] == "access-list extended MGMT" and len(found["frame"]) >= 1
    at.text_input(key="search_query").set_value("hostname")
    at.checkbox(key="search_regex").check()
    click(at, "Search")
    assert (at.query_params["q"], at.query_params["regex"]) == ("hostname", "1")


def test_a_version_no_target_has_stored_yet_is_read_from_the_storage_outbox(portal_env):
    """A new version whose copies are all still pending (its storage jobs not run yet, or every target down)
    is shown from the storage outbox, where its text waits for the targets: the real outbox in the session's
    Redis (database 12, which no worker serves). Last in the module: it adds a device."""
    from redis import Redis

    from jobs.deliver import outbox
    from jobs.deliver.outbox import StorageItem
    from jobs.streams.results import DeviceResult, DeviceStatus, device_task_id
    from portal import content
    from storage.index.db import connect
    from storage.index.records import apply_device_result, create_run

    settings = portal_env["settings"]
    device, run_id = "waiting-r1", "run-waiting"
    task = device_task_id(run_id, device)
    text = config_text(device, 7)
    sha = hashlib.sha256(text.encode()).hexdigest()
    redis = Redis.from_url(settings.redis_url)
    outbox.stage(redis, [StorageItem(task_id=task, run_id=run_id, device=device, group="core", sha256=sha,
                                     config=text, collected_at=time.time(), targets=("git", "fs"))])
    with connect(settings.database_url).begin() as session:
        create_run(session, run_id, total=1, selector=f"host={device}", targets=["git", "fs"])
        apply_device_result(session, DeviceResult(
            task_id=task, run_id=run_id, device=device, status=DeviceStatus.CHANGED, timestamp=NOW, group="core",
            platform="cisco.ios.ios", sha256=sha, size=len(text), targets="git,fs"))
    assert outbox.release(redis, task, ["git", "fs"]) >= 2  # what the consumer does after its commit
    content.CACHE.clear()
    try:
        at = ok(page("victor", "views/device.py", device=device))
        shown = " ".join(c.value for c in at.code)
        assert "ip access-list extended MGMT-7" in shown, shown[:300]
        assert "git (pending)" in texts(at) and "fs (pending)" in texts(at)
        shown = subprocess.run([sys.executable, "-m", "cli", "show", device], cwd=ROOT, capture_output=True,
                               text=True, env={**os.environ, **portal_env["env"]}, timeout=120)
        assert shown.returncode == 0 and "ip access-list extended MGMT-7" in shown.stdout, shown.stderr
    finally:
        outbox.discard(redis, task)
        redis.delete(*redis.keys("storage:outbox:*"))
