"""The portal's and the CLI's reads of the index (``portal/queries.py``, ``storage/index/queries.py``) on
SQLite and on PostgreSQL (``index_url``, tests/conftest.py): the same index, written by the real record
functions, must read the same on both."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

NOW = datetime.now(timezone.utc).replace(microsecond=0)
DEVICES = {"a-ios": ("g1", "cisco.ios.ios"), "b-ios": ("g1", "cisco.ios.ios"), "c-eos": ("g2", "arista.eos.eos"),
           "d-eos": ("g2", "arista.eos.eos")}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run(sessions, run_id: str, when: datetime, outcomes: dict[str, str], unsaved: dict[str, bool] = {}) -> None:
    """One run as the consumer records it: outcome per device ``changed:<text>``, ``unchanged`` or ``failed``."""
    from jobs.streams.results import DeviceResult, DeviceStatus, StorageResult, StorageStatus
    from storage.index.records import apply_device_result, apply_storage_result, create_run, refresh_run

    with sessions.begin() as session:
        create_run(session, run_id, total=len(outcomes), selector="all", targets=["git", "fs"], requested_by="cron")
    for device, outcome in outcomes.items():
        group, platform = DEVICES[device]
        task = f"{run_id}:{device}"
        common = dict(task_id=task, run_id=run_id, device=device, timestamp=when, group=group, platform=platform,
                      unsaved=unsaved.get(device))
        copies = []
        if outcome.startswith("changed:"):
            text = outcome.partition(":")[2]
            sha = _sha(text)
            result = DeviceResult(status=DeviceStatus.CHANGED, sha256=sha, size=len(text), duration=1.0,
                                  targets="git,fs", author="alice", **common)
            copies = [StorageResult(task_id=f"{task}:{t}", run_id=run_id, device=device, backend=t,
                                    status=StorageStatus.STORED, timestamp=when, group=group, sha256=sha,
                                    size=len(text), ref=f"{t}-ref-{device}-{sha[:8]}") for t in ("git", "fs")]
        elif outcome == "failed":
            result = DeviceResult(status=DeviceStatus.FAILED, duration=0.5, error=f"{device}: timeout",
                                  error_kind="timeout", **common)
        else:
            result = DeviceResult(status=DeviceStatus.UNCHANGED, duration=0.5, **common)
        with sessions.begin() as session:
            apply_device_result(session, result)
            for copy in copies:
                apply_storage_result(session, copy)
    with sessions.begin() as session:
        refresh_run(session, run_id, now=when + timedelta(seconds=30))


@pytest.fixture()
def sessions(index_url):
    from storage.index.db import connect

    sessions = connect(index_url)
    _run(sessions, "run-1", NOW - timedelta(days=1), {d: f"changed:hostname {d}\n" for d in DEVICES})
    _run(sessions, "run-2", NOW - timedelta(hours=1),
         {"a-ios": "changed:hostname a-ios\nntp server 192.0.2.1\n", "b-ios": "failed", "c-eos": "unchanged",
          "d-eos": "changed:hostname d-eos\nvlan 10\n"}, unsaved={"d-eos": True, "a-ios": False})
    return sessions


def test_dashboard_and_device_queries(sessions):
    from portal import queries as q

    with sessions() as session:
        assert q.overview(session) == q.Overview(total=4, ok=3, failed=1, stale=0, versions=6, unsaved=1, never=0,
                                                 changed=2)
        activity = q.activity_per_day(session, days=3, now=NOW)
        totals = activity.groupby("kind")["count"].sum().to_dict()
        assert totals == {"backups": 8, "first backups": 4, "changes": 2, "failures": 1}
        page, _ = q.devices_table(session)
        assert dict(zip(page["device"], page["status"])) == {"a-ios": "changed", "b-ios": "failed", "c-eos": "ok",
                                                             "d-eos": "unsaved"}
        assert set(page["last backup"]) == {"1 h ago", "1 d ago"}
        page, _ = q.devices_table(session, sort="status")  # the most urgent first
        assert list(page["device"]) == ["b-ios", "d-eos", "a-ios", "c-eos"]
        assert set(q.recently_changed(session)["device"].head(2)) == {"a-ios", "d-eos"}
        assert list(q.failing_devices(session)["device"]) == ["b-ios"]
        assert q.filter_choices(session) == (["g1", "g2"], ["arista.eos.eos", "cisco.ios.ios"])
        assert q.device_names(session) == sorted(DEVICES)
        page, total = q.devices_table(session, statuses=["failed"])
        assert total == 1 and list(page["device"]) == ["b-ios"]
        page, total = q.devices_table(session, groups=["g2"], sort="last change", descending=True)
        assert total == 2 and list(page["device"]) == ["d-eos", "c-eos"]
        page, total = q.devices_table(session, unsaved_only=True)
        assert list(page["device"]) == ["d-eos"]
        page, total = q.devices_table(session, name="ios", offset=1, limit=1)
        assert total == 2 and list(page["device"]) == ["b-ios"]
        info = q.device_info(session, "a-ios")
        assert (info.group, info.platform, info.status, info.unsaved) == ("g1", "cisco.ios.ios", "changed", False)
        versions = q.versions_of(session, info.id)
        assert [v.number for v in versions] == [1, 2] and versions[-1].run_id == "run-2"
        assert versions[-1].author == "alice"
        assert q.version_counts(session, [info.id]) == {info.id: 2}
        copies = q.copies_of(session, [v.id for v in versions])
        assert {backend for c in copies.values() for backend, _, _ in c} == {"git", "fs"}
        assert all(status == "stored" for c in copies.values() for _, _, status in c)


def test_run_and_search_queries(sessions):
    from portal import queries as q

    with sessions() as session:
        assert q.count_runs(session) == 2
        runs = q.runs_table(session)
        assert list(runs["run"]) == ["run-2", "run-1"]
        state = q.run_state(session, "run-2")
        assert state.finished and state.done == state.total == 4 and state.status in ("partial", "failed")
        assert q.run_state(session, "run-1").status == "succeeded"
        devices = q.run_devices(session, "run-2")
        assert dict(zip(devices["device"], devices["status"])) == {
            "a-ios": "changed", "b-ios": "failed", "c-eos": "unchanged", "d-eos": "changed"}
        newest = q.search_targets(session)
        assert sorted(t.device for t in newest) == sorted(DEVICES)
        assert len(q.search_targets(session, all_versions=True)) == 6
        found = q.search_targets(session, all_versions=True, devices=["a-ios"])
        assert [(t.device, t.number) for t in found] == [("a-ios", 2), ("a-ios", 1)]  # newest first


def test_cli_listings(sessions):
    from storage.index.queries import copy_counts, device_versions, list_devices, list_runs, pending_copies, run_results

    with sessions() as session:
        devices = {d["name"]: d for d in list_devices(session)}
        assert devices["a-ios"]["versions"] == 2 and devices["b-ios"]["status"] == "failed"
        assert [r["run_id"] for r in list_runs(session, 5)] == ["run-2", "run-1"]
        assert [r["device"] for r in run_results(session, "run-2")] == sorted(DEVICES)
        assert [v.number for v in device_versions(session, "d-eos")] == [1, 2]
        assert pending_copies(session) == []
        assert copy_counts(session, "run-2") == {"fs": {"stored": 2}, "git": {"stored": 2}}


def test_one_health_rule_in_python_and_in_sql(index_url):
    """``storage.index.health``: the word a device shows is the same from the SQL column as from Python, for
    every combination of last status, success, stale mark and unsaved flag; the counts count each condition."""
    import itertools

    from sqlalchemy import select

    from storage.index import health
    from storage.index.db import connect
    from storage.index.models import Device

    sessions = connect(index_url)
    combos = list(itertools.product(["", "changed", "unchanged", "failed", "skipped_locked"], [None, NOW],
                                    [None, NOW], [None, True, False]))
    with sessions.begin() as session:
        for i, (status, success, stale, unsaved) in enumerate(combos):
            session.add(Device(name=f"d{i:03d}", last_status=status, last_success_at=success, stale_since=stale,
                               unsaved=unsaved))
    with sessions() as session:
        shown = dict(session.execute(select(Device.name, health.health_column())).all())
        counts = health.counts(session)
    for i, (status, success, stale, unsaved) in enumerate(combos):
        assert shown[f"d{i:03d}"] == health.health_of(status, success, stale, unsaved).value, combos[i]
    assert counts["total"] == len(combos)
    assert counts["stale"] == sum(1 for c in combos if c[2] is not None)
    assert counts["never backed up"] == sum(1 for c in combos if c[1] is None)
    assert health.ago(NOW - timedelta(hours=3, minutes=5), NOW) == "3 h ago" and health.ago(None) == "never"
