"""Index retention (``storage/index/retention.py``) on SQLite and PostgreSQL (``index_url``): an index written by
the consumer's own record functions, pruned, and read back by the portal's and the CLI's own queries: old
results that made no version go, everything a page, a command or the health rule reads stays the same."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.now(timezone.utc).replace(microsecond=0)
DAYS = 30  # the retention the tests prune with: runs up to 80 days old still show on the dashboard's 90-day chart
DEVICES = {"a-ios": ("g1", "cisco.ios.ios"), "b-ios": ("g1", "cisco.ios.ios"), "c-eos": ("g2", "arista.eos.eos"),
           "d-eos": ("g2", "arista.eos.eos"), "e-eos": ("g2", "arista.eos.eos")}


def _ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def _run(sessions, run_id: str, when: datetime, outcomes: dict[str, str], *, total: int | None = None,
         unsaved: dict[str, bool] = {}) -> None:
    """One run as the consumer records it (outcome per device: ``changed:<text>``, ``unchanged``, ``failed``,
    ``skipped``); ``total`` larger than the outcomes leaves it unfinished."""
    from jobs.streams.results import DeviceResult, DeviceStatus, StorageResult, StorageStatus
    from storage.index.records import apply_device_result, apply_storage_result, create_run, refresh_run

    with sessions.begin() as session:
        create_run(session, run_id, total=total or len(outcomes), selector="all", targets=["git"], created_at=when)
    results, stored = [], []
    for i, (device, outcome) in enumerate(outcomes.items()):
        group, platform = DEVICES[device]
        task, at = f"{run_id}:{device}", when + timedelta(seconds=i)
        common = dict(task_id=task, run_id=run_id, device=device, timestamp=at, group=group, platform=platform,
                      unsaved=unsaved.get(device))
        copies, kind = [], outcome.partition(":")[0]
        fields = {"failed": dict(error=f"{device}: timeout", error_kind="timeout"), "skipped": {}, "unchanged": {}}
        if kind == "changed":
            text = outcome.partition(":")[2]
            sha = hashlib.sha256(text.encode()).hexdigest()
            fields[kind] = dict(sha256=sha, size=len(text), targets="git")
            copies = [StorageResult(task_id=f"{task}:git", run_id=run_id, device=device, backend="git",
                                    status=StorageStatus.STORED, timestamp=at, group=group, sha256=sha,
                                    size=len(text), ref=f"git-{sha[:8]}")]
        status = DeviceStatus.SKIPPED_LOCKED if kind == "skipped" else DeviceStatus(kind)
        results.append(DeviceResult(status=status, **fields[kind], **common))
        stored += copies
    with sessions.begin() as session:  # one batch of messages, one transaction, as the consumer applies them
        for result in results:
            apply_device_result(session, result)
        for copy in stored:  # the storage results, which come after the device results on their own stream
            apply_storage_result(session, copy)
        refresh_run(session, run_id, now=when + timedelta(minutes=5))


def _build(url: str):
    """The index: see each run's comment for what retention must make of it (pruned with ``DAYS``)."""
    from storage.index.db import connect
    from storage.index.models import Schedule

    sessions = connect(url)
    # first backups: every result made a version -> all kept, the run too
    _run(sessions, "r1", _ago(80), {"a-ios": "changed:hostname a\n", "b-ios": "changed:hostname b\n",
                                   "c-eos": "changed:hostname c\n", "d-eos": "failed", "e-eos": "skipped"})
    # a: unchanged (goes), b: failed (goes), c: unchanged (goes), d: failed (goes), e: skipped, its only result
    # and no backup yet (kept: its latest)
    _run(sessions, "r2", _ago(70), {"a-ios": "unchanged", "b-ios": "failed", "c-eos": "unchanged", "d-eos": "failed",
                                   "e-eos": "skipped"})
    # every result goes, nothing names the run: the run goes
    _run(sessions, "r2b", _ago(65), {"a-ios": "unchanged", "d-eos": "failed"})
    # every result goes, but a schedule's last run: the run stays
    _run(sessions, "r-sched", _ago(60), {"a-ios": "unchanged"})
    # a changed (its version keeps it), b unchanged (b's latest success), c unchanged (c's latest: not backed up
    # since), d failed (d's latest, never backed up)
    _run(sessions, "r3", _ago(50), {"a-ios": "changed:hostname a\nvlan 10\n", "b-ios": "unchanged",
                                   "c-eos": "unchanged", "d-eos": "failed"})
    # not finished (a device never reported): all kept, whatever its age
    _run(sessions, "r-open", _ago(45), {"a-ios": "unchanged"}, total=2)
    # b failed: its latest result
    _run(sessions, "r4", _ago(40), {"b-ios": "failed"})
    # recent: kept (a unchanged, a's latest; unsaved)
    _run(sessions, "r5", _ago(1), {"a-ios": "unchanged"}, unsaved={"a-ios": True})
    with sessions.begin() as session:
        session.add(Schedule(name="nightly", cron="0 3 * * *", last_run_id="r-sched"))
    return sessions


def _state(sessions) -> dict:
    """Everything a reader of the index sees: devices with their health, counts, versions, the runs table, the
    dashboard's activity, each device's latest result and latest success."""
    from portal import queries as q
    from storage.index import health
    from storage.index.models import DeviceResultRow, Run
    from storage.index.queries import device_versions, list_devices
    from sqlalchemy import func, select

    with sessions() as session:
        devices = list_devices(session, include_retired=True)
        runs = q.runs_table(session, limit=100)
        runs = runs.astype(object).where(runs.notna(), None)  # NaN / NaT compare unequal to themselves
        activity = q.activity_per_day(session, days=90, now=NOW)
        latest = {}
        for device_id in {r.device_id for r in session.scalars(select(DeviceResultRow))}:
            rows = list(session.scalars(select(DeviceResultRow).where(DeviceResultRow.device_id == device_id)))
            newest = max(rows, key=lambda r: r.id)
            success = [r for r in rows if r.status in ("changed", "unchanged")]
            latest[device_id] = (newest.task_id, max(success, key=lambda r: r.timestamp).task_id if success else None)
        return {
            "devices": devices,
            "health": {d["name"]: d["health"] for d in devices},
            "counts": health.counts(session),
            "overview": q.overview(session),
            "versions": {d["name"]: device_versions(session, d["name"]) for d in devices},
            "runs": {r["run"]: r for r in runs.to_dict("records")},
            "activity": {(str(r["day"].date()), r["kind"]): r["count"] for r in activity.to_dict("records")},
            "latest": latest,
            "results": set(session.scalars(select(DeviceResultRow.task_id))),
            "run_ids": set(session.scalars(select(Run.id))),
            "progress": {rid: q.run_state(session, rid).done for rid in session.scalars(select(Run.id))},
            "total_results": session.scalar(select(func.count(DeviceResultRow.id))),
        }


def _foreign_keys_hold(sessions, url: str) -> None:
    from sqlalchemy import text

    with sessions() as session:
        if url.startswith("sqlite"):
            assert session.execute(text("PRAGMA foreign_key_check")).all() == []
        orphans = session.execute(text("SELECT count(*) FROM device_results r LEFT JOIN runs u ON u.id = r.run_id "
                                       "WHERE u.id IS NULL")).scalar()
        assert orphans == 0


def test_retention_keeps_what_every_reader_needs_and_nothing_else(index_url):
    from storage.index.retention import prune_index

    sessions = _build(index_url)
    before = _state(sessions)

    assert prune_index(sessions, 0).removed == 0  # 0: keep everything
    assert _state(sessions) == before

    preview = prune_index(sessions, DAYS, now=NOW, dry_run=True)
    assert _state(sessions) == before  # a dry run changes nothing
    # batches of 2 rows, at most 3 rows per call: several short transactions, cut short and taken up again
    first = prune_index(sessions, DAYS, now=NOW, batch=2, max_rows=3)
    assert not first.complete and first.removed == 3
    rest = prune_index(sessions, DAYS, now=NOW, batch=2)
    assert rest.complete
    after = _state(sessions)

    gone = before["results"] - after["results"]
    # a: unchanged x3 (r-open's stays: not finished); b: failed (its unchanged of r3 is its latest success, its
    # failure of r4 its latest result); c: unchanged (r3's is its latest); d: failed x3 (r3's is its latest);
    # e: nothing (skips only, never attempted: its latest results)
    assert gone == {"r2:a-ios", "r2b:a-ios", "r-sched:a-ios", "r2:b-ios", "r2:c-eos", "r1:d-eos", "r2:d-eos",
                    "r2b:d-eos"}, sorted(gone)
    assert after["results"] <= before["results"]
    removed = first.removed + rest.removed
    assert removed == len(gone) == preview.removed
    assert preview.results == {
        s: first.results.get(s, 0) + rest.results.get(s, 0) for s in set(first.results) | set(rest.results)}
    # runs: r2b had only pruned results and nothing names it; r-sched is a schedule's last run
    assert before["run_ids"] - after["run_ids"] == {"r2b"}
    assert first.runs + rest.runs == preview.runs == 1

    # every version and every result that made one; each device's latest result and latest success
    assert after["versions"] == before["versions"]
    for task in ("r1:a-ios", "r1:b-ios", "r1:c-eos", "r3:a-ios"):
        assert task in after["results"]
    assert after["latest"] == before["latest"]
    # health of every device, the counts and the dashboard's tiles: the same
    assert after["health"] == before["health"] == {"a-ios": "unsaved", "b-ios": "failed", "c-eos": "ok",
                                                   "d-eos": "failed", "e-eos": "never backed up"}
    assert after["devices"] == before["devices"]
    assert after["counts"] == before["counts"] and after["overview"] == before["overview"]
    # the Runs page's counts per outcome and a run's progress: the same for every run left
    assert after["runs"] == {k: v for k, v in before["runs"].items() if k != "r2b"}
    assert after["progress"] == {k: v for k, v in before["progress"].items() if k != "r2b"}
    # the dashboard's activity: the same but on the day of the run that went
    r2b_day = str(_ago(65).date())
    assert {k: v for k, v in after["activity"].items() if k[0] != r2b_day} == \
        {k: v for k, v in before["activity"].items() if k[0] != r2b_day}
    from portal.queries import pruned_results

    with sessions() as session:  # what the Runs page names under a run
        assert [pruned_results(session, r) for r in ("r1", "r2", "r3", "r2b")] == [1, 4, 0, 0]
    # an unfinished run keeps everything
    assert "r-open:a-ios" in after["results"]
    _foreign_keys_hold(sessions, index_url)

    again = prune_index(sessions, DAYS, now=NOW)
    assert (again.removed, again.runs, again.complete) == (0, 0, True)  # a second prune removes nothing
    assert _state(sessions) == after


def test_prune_index_command_and_the_maintenance_pass(tmp_path, redis_server):
    """``devicevault prune-index`` (dry run, then for real) and the scheduler's maintenance pass, on SQLite."""
    from redis import Redis

    from jobs.ops.maintenance import INDEX_PRUNE_KEY, run_maintenance
    from jobs.settings import Settings

    url = f"sqlite:///{tmp_path / 'index.sqlite'}"
    sessions = _build(url)
    env = {**os.environ, "DEVICEVAULT_HOME": str(tmp_path / "home"), "DEVICEVAULT_DATABASE_URL": url,
           "DEVICEVAULT_RESULT_RETENTION_DAYS": str(DAYS), "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    dry = cli("prune-index", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["results"] == 8 and json.loads(dry.stdout)["runs"] == 1
    done = cli("prune-index")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("removed 8 device result(s) of runs started before "), done.stdout
    assert "and 1 run(s)" in done.stdout
    env["DEVICEVAULT_RESULT_RETENTION_DAYS"] = "soon"
    bad = cli("prune-index")
    assert bad.returncode == 1 and "DEVICEVAULT_RESULT_RETENTION_DAYS='soon'" in bad.stderr + bad.stdout
    assert "Traceback" not in bad.stderr

    # the maintenance pass: an index whose old results are still there; its own Redis database (the keys of the
    # session's other tests stay untouched)
    url2 = f"sqlite:///{tmp_path / 'index2.sqlite'}"
    _build(url2)
    redis = Redis.from_url(redis_server.url, db=7)
    redis.delete(INDEX_PRUNE_KEY)
    try:
        settings = Settings.load(home=tmp_path / "home2", database_url=url2, result_retention_days=DAYS,
                                 inventory=tmp_path / "no-inventory")
        report = run_maintenance(redis, settings)
        assert not [e for e in report["errors"] if e.startswith("index retention")], report["errors"]
        assert report["index_pruned"].removed > 0 and report["index_pruned"].complete
        assert redis.exists(INDEX_PRUNE_KEY)  # done for the hour
        assert run_maintenance(redis, settings)["index_pruned"] is None
    finally:
        redis.delete(INDEX_PRUNE_KEY)
        redis.close()
