"""Search from the index, not from storage (issue 15, item 5), on SQLite (FTS5 trigram) and on PostgreSQL
(pg_trgm) through ``index_url``: the index consumer writes each device's newest masked configuration with
the version; the portal's search narrows in the database and matches with RE2; a line is compared across
devices; an index from before migration 0007 is filled from storage by ``devicevault search-index``'s
backfill (real fs backend), naming unreadable devices without storage paths."""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from portal import content
from storage.index import search
from storage.index.db import connect
from storage.index.models import Device, SearchText

NOW = datetime.now(timezone.utc).replace(microsecond=0)
#: device -> (group, platform)
DEVICES = {"ams-ios-01": ("ams", "cisco.ios.ios"), "ams-ios-02": ("ams", "cisco.ios.ios"),
           "nyc-eos-01": ("nyc", "arista.eos.eos"), "nyc-junos-01": ("nyc", "junipernetworks.junos.junos")}


def _config(device: str, ntp: str = "10.0.0.123") -> str:
    body = [f"hostname {device}", "!", "interface Ethernet1", " description Uplink to CORE", "!"]
    if not device.endswith("02"):
        body.append(f"ntp server {ntp}")
    body += [f"ip route 10.{n}.0.0 255.255.0.0 192.0.2.1" for n in range(30)]
    return "\n".join(body) + "\n"


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record(sessions, device: str, text: str, *, when: datetime, config: bool = True) -> str:
    """A new version of ``device`` as the consumer records it (``config``: the result carries the masked view,
    as every collector since the search index; False: a result from before it)."""
    from jobs.streams.results import DeviceResult, DeviceStatus
    from storage.index.records import apply_device_result, create_run, refresh_run

    run_id = uuid.uuid4().hex
    group, platform = DEVICES.get(device, ("lab", "cisco.ios.ios"))
    with sessions.begin() as session:
        create_run(session, run_id, total=1, selector="all", targets=["fs"])
    with sessions.begin() as session:
        apply_device_result(session, DeviceResult(
            task_id=f"{run_id}:{device}", run_id=run_id, device=device, status=DeviceStatus.CHANGED, timestamp=when,
            group=group, platform=platform, sha256=_sha(text), view_sha256=_sha(text), size=len(text),
            targets="fs", config=text if config else ""))
        refresh_run(session, run_id, now=when)
    return run_id


@pytest.fixture()
def sessions(index_url):
    sessions = connect(index_url)
    for device in DEVICES:
        _record(sessions, device, _config(device, ntp="10.0.0.1"), when=NOW - timedelta(days=1))
        _record(sessions, device, _config(device), when=NOW)
    return sessions


def _search(sessions, query: str, *, regex: bool = False, case: bool = False, **scope) -> content.SearchResult:
    pattern = content.compile_pattern(query, regex=regex, case_sensitive=case)
    return content.search_index(sessions, pattern, query, regex=regex, context=1, time_budget=60, **scope)


def test_the_decider_writes_the_newest_masked_text(sessions):
    with sessions() as session:
        rows = {name: body for name, body in session.execute(
            select(Device.name, SearchText.body)
            .join(Device, Device.id == SearchText.device_id))}
    assert set(rows) == set(DEVICES)
    assert all("ntp server 10.0.0.1\n" not in body for body in rows.values())  # the newer version replaced it
    assert "ntp server 10.0.0.123" in rows["ams-ios-01"]


def test_literal_and_regex_search_with_scope(sessions):
    found = _search(sessions, "ntp server 10.0.0.123")
    assert sorted(r["device"] for r in found.rows) == ["ams-ios-01", "nyc-eos-01", "nyc-junos-01"]
    row = next(r for r in found.rows if r["device"] == "ams-ios-01")
    assert row["version"] == 2 and row["line"] == 6 and row["sha"] == _sha(_config("ams-ios-01"))[:12]
    assert "    6> ntp server 10.0.0.123" in row["context"]
    assert not found.unreadable and not found.truncated
    # case: the database narrows case-insensitively, RE2 decides
    assert len(_search(sessions, "uplink to core").rows) == 4
    assert _search(sessions, "uplink to core", case=True).rows == []
    # scope: groups and platforms
    assert {r["device"] for r in _search(sessions, "ntp server", groups=["nyc"]).rows} == {"nyc-eos-01", "nyc-junos-01"}
    assert {r["device"] for r in _search(sessions, "ntp server", platforms=["cisco.ios.ios"]).rows} == {"ams-ios-01"}
    # regular expressions: anchored, with and without a literal the database can narrow by
    assert len(_search(sessions, r"^ip route 10\.2[0-9]\.", regex=True, groups=["ams"]).rows) == 20
    assert {r["device"] for r in _search(sessions, r"^hostname [a-z-]+0[2]$", regex=True).rows} == {"ams-ios-02"}
    assert {r["device"] for r in _search(sessions, r"(ams|nyc)-eos", regex=True).rows} == {"nyc-eos-01"}
    # a literal under three characters cannot use the trigram index: every configuration is read
    assert len(_search(sessions, "!").rows) == 8
    # the line limit holds
    limited = content.search_index(sessions, content.compile_pattern("ip route", regex=False, case_sensitive=False),
                                   "ip route", regex=False, max_results=40, time_budget=60)
    assert len(limited.rows) == 40 and "40" in limited.truncated


def test_compare_a_line_across_devices(sessions):
    with sessions() as session:
        found = search.compare_line(session, "  ntp server 10.0.0.123 ")
        assert found.have == ["ams-ios-01", "nyc-eos-01", "nyc-junos-01"] and found.lack == ["ams-ios-02"]
        assert search.compare_line(session, "ntp server 10.0.0.12").have == []  # whole lines, not substrings
        assert search.compare_line(session, "ntp server 10.0.0.12.").have == []  # characters, not patterns
        assert len(search.compare_line(session, "description Uplink to CORE").have) == 4  # indented lines too
        scoped = search.compare_line(session, "ntp server 10.0.0.123", groups=["ams"])
        assert scoped.have == ["ams-ios-01"] and scoped.lack == ["ams-ios-02"] and scoped.not_indexed == []


def test_required_literal():
    assert search.required_literal(r"^ip route 10\.") == "ip route 10."
    assert search.required_literal(r"interfaces? Gi") == "interface"
    assert search.required_literal(r"(ab|cd)ef") == "" and search.required_literal("abc|def") == ""
    assert search.required_literal(r"\d+ vlan 100") == " vlan 100"
    assert search.required_literal(r"x{2}yz") == ""


def test_an_index_from_before_is_listed_then_filled_from_storage(index_url, tmp_path):
    """Versions recorded without a searchable text (an index from before 0007): the search names the
    devices; the backfill reads them from a real fs backend, masks them, and names an unreadable device
    without a storage path."""
    from storage.base import StoreOptions
    from storage.fs import FilesystemBackend
    from storage.index.models import Copy, Version
    from storage.paths import device_path

    from jobs.ops.search_index import backfill

    sessions = connect(index_url)
    backend = FilesystemBackend(tmp_path / "fs")
    secret = "hostname old-01\nusername admin secret 5 $1$abcd$SECRETHASH\nntp server 10.0.0.123\n"
    for device, text in (("old-01", secret), ("old-02", "hostname old-02\n")):
        _record(sessions, device, text, when=NOW, config=False)
        with sessions.begin() as session:
            version = session.scalars(select(Version).join(Device).where(Device.name == device)).one()
            ref = backend.store(text.encode(), device_path("lab", device), StoreOptions(device=device, timestamp=NOW))
            if device == "old-02":
                ref = ref + ".gone"  # a copy that cannot be read
            session.query(Copy).filter(Copy.version_id == version.id).update({"ref": ref, "status": "stored"})
    found = _search(sessions, "ntp server")
    assert found.rows == [] and [u.split(":")[0] for u in found.unreadable] == ["old-01", "old-02"]
    assert all("search-index" in u for u in found.unreadable)
    outcome = backfill(sessions, lambda target: backend)
    assert outcome.indexed == 1 and len(outcome.failed) == 1
    assert outcome.failed[0].startswith("old-02:") and str(tmp_path) not in outcome.failed[0]
    found = _search(sessions, "ntp server")
    assert [r["device"] for r in found.rows] == ["old-01"] and found.unreadable == ["old-02: not in the search index "
                                                                                    "yet (run `devicevault search-index`)"]
    assert _search(sessions, "SECRETHASH").rows == []  # masked with the platform's secret patterns
    assert backfill(sessions, lambda target: backend).indexed == 0  # idempotent: old-02 is still unreadable


def test_the_index_consumer_keeps_the_search_text(streams, index_url, tmp_path):
    """The real consumer (consumer group on the real Redis stream): a changed device's result carries its
    masked view, which becomes its searchable text in the commit that creates the version."""
    import time

    from jobs.deliver.release import Releaser
    from jobs.streams.consumer import Consumer
    from jobs.streams.results import DEVICE_RESULTS_STREAM, DeviceResult, DeviceStatus

    inventory = tmp_path / "hosts.ini"
    inventory.write_text("[lab]\nr1 ansible_host=127.0.0.1 ansible_network_os=cisco.ios.ios\n")
    sessions = connect(index_url)
    for n, ntp in enumerate(("10.0.0.1", "10.0.0.123")):
        text = f"hostname r1\nntp server {ntp}\n"
        streams.xadd(DEVICE_RESULTS_STREAM, DeviceResult(
            task_id=f"run-{n}:r1", run_id=f"run-{n}", device="r1", status=DeviceStatus.CHANGED, timestamp=NOW,
            group="lab", platform="cisco.ios.ios", sha256=_sha(text), view_sha256=_sha(text), size=len(text),
            targets="fs", config=text).to_message())
    deadline = time.monotonic() + 30
    consumer = Consumer(streams, sessions, name="search", block_ms=100, inventory=inventory,
                        releaser=Releaser(streams, lease=60, enqueue=lambda target, ids: None))
    consumer.run(idle_exit=0.3, stop=lambda: time.monotonic() > deadline)
    with sessions() as session:
        assert search.compare_line(session, "ntp server 10.0.0.123").have == ["r1"]
        assert search.compare_line(session, "ntp server 10.0.0.1").have == []


def test_the_line_finder_agrees_with_matching_every_line():
    """``content._line_finder`` only skips lines that cannot match: the same lines as matching each one."""
    text = ("hostname r1\ninterface Gi0/1\n description İstanbul uplink\n shutdown\n!\nbanner x\x0cy\n"
            "ntp server 10.0.0.123\nNTP SERVER 10.0.0.124\nend\n")
    for query, regex, case in [("ntp server", False, False), ("ntp server", False, True), ("istanbul", False, False),
                               (r"^ shutdown$", True, True), (r"\s+shutdown", True, True), (r"^", True, True),
                               (r"\Ahostname", True, True), (r"1\n", True, True), ("y", False, True)]:
        pattern = content.compile_pattern(query, regex=regex, case_sensitive=case)
        lines = text.splitlines()
        every = [i for i, line in enumerate(lines) if pattern.search(line)]
        only = content._line_finder(query, regex=regex, case_sensitive=case)(text, len(lines))
        assert only is None or [i for i in only if pattern.search(lines[i])] == every, (query, only, every)


def test_the_database_has_its_trigram_index(sessions):
    """SQLite: the FTS5 trigram table (kept by triggers); PostgreSQL: pg_trgm's GIN index on the text."""
    from sqlalchemy import text

    with sessions() as session:
        if session.get_bind().dialect.name == "sqlite":
            assert session.execute(text("SELECT count(*) FROM search_fts")).scalar() == len(DEVICES)
            plan = " ".join(str(r) for r in session.execute(text(
                "EXPLAIN QUERY PLAN SELECT rowid FROM search_fts WHERE search_fts MATCH '\"ntp server\"'")))
            assert "VIRTUAL TABLE INDEX" in plan
        else:
            assert session.execute(text("SELECT count(*) FROM pg_indexes WHERE indexname = "
                                        "'ix_search_texts_body_trgm'")).scalar() == 1
