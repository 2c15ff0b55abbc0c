"""Issue 16, compliance rules and retired devices, through the CLI against the lab.

One module-scoped DeviceVault: a lab of three IOS devices and one EOS device (127.0.92.x), the session's
real redis-server (database 4, emptied first), one worker, one index consumer (whose compliance thread
checks every new version). Tests share it and run in file order.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import wait_for

IOS = ["ams-ios-01", "ams-ios-02", "nyc-ios-01"]
EOS = "ams-eos-01"
RULES = """\
rules:
  - name: password-encryption
    groups: [ios]
    must_contain:
      - service password-encryption
  - name: no-plain-enable
    platforms: [ios]
    must_not_contain:
      - regex: '^enable (secret|password)'
"""


@pytest.fixture(scope="module")
def cv(tmp_path_factory, redis_server):
    from redis import Redis

    from cli.services import free_port
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("compliance")
    inventory = home / "inventory"
    hosts = generate_inventory(count=4, out=inventory, port=free_port(), base="127.0.92.0",
                               platforms=["ios", "ios", "eos"])
    assert sorted(hosts) == sorted(IOS + [EOS]), hosts
    url = redis_server.url.rsplit("/", 1)[0] + "/4"
    Redis.from_url(url).flushdb()
    env = {"DEVICEVAULT_HOME": str(home), "DEVICEVAULT_REDIS_URL": url, "DEVICEVAULT_INVENTORY": str(inventory),
           "DEVICEVAULT_DEVICE_TIMEOUT": "10", "DEVICEVAULT_COLLECT_RETRIES": "0"}
    tool = DeviceVault(env, home)
    tool.redis = Redis.from_url(url)
    start_lab(inventory, home / "lab")
    (home / "compliance.yml").write_text(RULES)
    processes = [tool.process("worker", "--name", f"cv-{free_port()}", name="worker").start(),
                 tool.process("consumer", "--name", "cv-indexer", "--claim-idle", "2", name="consumer").start()]
    yield tool
    for proc in processes:
        proc.stop()
    stop_lab(home / "lab")


def _backup(cv, *hosts: str) -> dict[str, dict]:
    args = [a for h in hosts for a in ("--host", h)]
    proc = cv("backup", "--wait", "--json", *args, check=False)
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return {r["device"]: r for r in json.loads(proc.stdout)["results"]}


def _events(cv) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in cv.redis.xrange("compliance:changed")]


def _violators(cv, *args: str) -> dict[str, list[dict]]:
    proc = cv("compliance", "--json", *args, check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    found: dict[str, list[dict]] = {}
    for row in json.loads(proc.stdout):
        found.setdefault(row["rule"], []).append(row)
    return found


def test_a_rule_lists_exactly_the_ios_devices_without_the_line(cv):
    from lab.control import LabControl

    lab = LabControl(cv.home / "lab")
    assert lab.remove_lines("ams-ios-02", r"^service password-encryption$") == ["service password-encryption"]
    results = _backup(cv)
    assert {r["status"] for r in results.values()} == {"changed"}, results
    # checked by the consumer on each new version: nothing to run by hand
    wait_for(lambda: any(e["device"] == "ams-ios-02" for e in _events(cv)), "the violation event")
    broken = _violators(cv, "--group", "ios")
    assert [r["device"] for r in broken["password-encryption"]] == ["ams-ios-02"]
    (row,) = broken["password-encryption"]
    assert row["lines"] == [{"line": "service password-encryption", "problem": "missing", "section": ""}]
    # the same on demand, and an EOS device (which has no such line) is outside the rule's group
    checked = _violators(cv, "--check")
    assert [r["device"] for r in checked["password-encryption"]] == ["ams-ios-02"]
    listing = cv("compliance", "--group", "ios", check=False)
    assert listing.returncode == 1 and "ams-ios-02" in listing.stdout and "missing: service" in listing.stdout
    assert _violators(cv, "--group", "eos") == {}
    # status counts the devices breaking any rule, as the compliance listing has them
    breaking = {r["device"] for rows in _violators(cv).values() for r in rows}
    counts = cv.json("status")["compliance"]
    assert counts["violating"] == len(breaking) and counts["checked"] >= len(breaking) >= 1, (counts, breaking)
    assert f"== compliance: {len(breaking)} of {counts['checked']} device(s) checked break a rule" in cv("status").stdout


def test_rules_see_the_masked_view_only(cv):
    from lab.control import LabControl

    lab = LabControl(cv.home / "lab")
    secret_lines = [line for line in lab.running_config("ams-ios-01").splitlines() if line.startswith("enable secret")]
    assert secret_lines
    rows = _violators(cv)["no-plain-enable"]
    assert sorted(r["device"] for r in rows) == IOS
    shown = [item["line"] for r in rows for item in r["lines"]]
    assert shown and all(item.startswith("enable secret") for item in shown), shown
    assert not set(shown) & set(secret_lines), shown  # the secret is masked
    events = json.dumps(_events(cv))
    assert not any(line.split()[-1] in events for line in secret_lines)


def test_removing_the_line_from_a_compliant_device_is_a_violation_event_and_adding_it_resolves_it(cv):
    host = "nyc-ios-01"
    before = len(_events(cv))
    out = cv("lab", "change", host, "--remove", "^service password-encryption$").stdout
    assert "- service password-encryption" in out
    assert _backup(cv, host)[host]["status"] == "changed"
    wait_for(lambda: len(_events(cv)) > before, "an event on compliance:changed")
    (event,) = _events(cv)[before:]
    assert event["device"] == host and event["rule"] == "password-encryption" and event["state"] == "violated"
    assert json.loads(event["lines"]) == ["service password-encryption"]
    assert event["group"] == "site_nyc" and event["platform"] == "ios"
    assert {"version_id", "checked_at"} <= event.keys()
    assert sorted(r["device"] for r in _violators(cv)["password-encryption"]) == ["ams-ios-02", host]
    # checking again announces nothing new
    cv("compliance", "--check", check=False)
    assert len(_events(cv)) == before + 1
    cv("lab", "change", host, "--add", "service password-encryption", "--state-dir", str(cv.home / "lab"))
    assert _backup(cv, host)[host]["status"] == "changed"
    wait_for(lambda: len(_events(cv)) > before + 1, "the resolution event")
    assert [(e["device"], e["state"]) for e in _events(cv)[before + 1:]] == [(host, "resolved")]
    assert [r["device"] for r in _violators(cv)["password-encryption"]] == ["ams-ios-02"]


def test_a_malformed_rules_file_is_one_line_naming_it(cv):
    rules = cv.home / "compliance.yml"
    good = rules.read_text()
    try:
        rules.write_text(good.replace("must_contain:", "must_contian:", 1))
        proc = cv("compliance", check=False)
        assert proc.returncode == 1
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(rules) in lines[0] and "must_contian" in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        rules.write_text("rules: [\n")
        proc = cv("compliance", "--check", check=False)
        assert proc.returncode == 1 and "not valid YAML" in proc.stderr and str(rules) in proc.stderr
    finally:
        rules.write_text(good)


# --- retired devices --------------------------------------------------------------------------------------
def _set_inventory_without(cv, host: str | None) -> None:
    """Rewrite the inventory's hosts file with ``host`` left out (None: the original file)."""
    import yaml

    path = Path(cv.env["DEVICEVAULT_INVENTORY"]) / "hosts.yml"
    original = path.with_suffix(".orig")
    if not original.exists():
        original.write_text(path.read_text())
    document = yaml.safe_load(original.read_text())
    if host is not None:
        for group in document["all"]["children"].values():
            (group.get("hosts") or {}).pop(host, None)
    path.write_text(yaml.safe_dump(document))


def _age_absence(cv, host: str, hours: float) -> None:
    """Moves the device's absence *hours* into the past in the index: time passing, without a sleep."""
    import sqlite3
    from datetime import datetime, timedelta

    with sqlite3.connect(cv.home / "index.sqlite") as db:
        (since,) = db.execute("SELECT absent_since FROM devices WHERE name = ?", (host,)).fetchone()
        assert since is not None, f"{host} is not marked absent"
        old = datetime.fromisoformat(since) - timedelta(hours=hours)
        db.execute("UPDATE devices SET absent_since = ? WHERE name = ?", (old.isoformat(sep=" "), host))


def test_a_device_removed_from_the_inventory_is_retired_after_the_grace_period_and_comes_back(cv):
    names = lambda *args: {d["name"]: d for d in cv.json("devices", *args)}  # noqa: E731
    versions = names()[EOS]["versions"]
    assert versions >= 1
    _set_inventory_without(cv, EOS)
    try:
        cv("hygiene")
        assert EOS in names() and names()[EOS]["health"] != "retired"  # missing, within the grace period (168 h)
        _age_absence(cv, EOS, 169)
        assert f"retired (missing from the inventory for 168 h or more): {EOS}" in cv("hygiene").stdout
        assert EOS not in names()
        retired = names("--all")[EOS]
        assert retired["health"] == "retired" and retired["versions"] == versions and retired["retired_at"]
        assert len(cv.json("versions", EOS)) == versions  # its history is kept
        status = cv.json("status")
        assert status["devices"]["total"] == 3 and status["devices"]["retired"] == 1
        assert EOS not in [s["device"] for s in status["stale"]]
    finally:
        _set_inventory_without(cv, None)
    assert f"back in the inventory, no longer retired: {EOS}" in cv("hygiene").stdout
    back = names()[EOS]
    assert back["health"] != "retired" and back["versions"] == versions and back["retired_at"] is None
