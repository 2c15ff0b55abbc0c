"""Diffs that say where (issue 15, item 6): every hunk header names the configuration section of its change,
in ``jobs.diffs`` (the one implementation), in the CLI's ``devicevault diff`` (a real process on a real index
with copies written by the real fs backend) and in the portal's side by side view."""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from jobs.diffs import section_label, section_of, unified_diff
from portal import content

ROOT = Path(__file__).resolve().parent.parent

IOS_OLD = """hostname r1
!
interface GigabitEthernet0/1
 description uplink
 ip address 10.0.0.1 255.255.255.0
!
interface GigabitEthernet0/2
 shutdown
!
router bgp 65000
 neighbor 192.0.2.1 remote-as 65001
 !
 address-family ipv4
  network 10.0.0.0 mask 255.255.255.0
  network 10.1.0.0 mask 255.255.255.0
 exit-address-family
!
ntp server 10.0.0.123
end
"""
IOS_NEW = (IOS_OLD.replace(" description uplink", " description uplink to core")
           .replace("  network 10.1.0.0 mask 255.255.255.0", "  network 10.2.0.0 mask 255.255.255.0"))
JUNOS = """system {
    host-name r2;
}
protocols {
    bgp {
        group ext {
            neighbor 192.0.2.1;
        }
    }
}
"""


def _headers(patch: str) -> list[str]:
    return [line for line in patch.splitlines() if line.startswith("@@")]


def test_hunks_name_their_section_ios_and_junos():
    patch = unified_diff(IOS_OLD, IOS_NEW, "r1 v1", "r1 v2", context=1)
    assert _headers(patch) == ["@@ -3,3 +3,3 @@ interface GigabitEthernet0/1",
                               "@@ -14,3 +14,3 @@ router bgp 65000 > address-family ipv4"]
    junos = unified_diff(JUNOS, JUNOS.replace("192.0.2.1", "192.0.2.9"), "a", "b", context=1)
    assert _headers(junos) == ["@@ -6,3 +6,3 @@ protocols { bgp { group ext {"]


def test_same_lines_as_difflib_apart_from_the_section():
    ours = unified_diff(IOS_OLD, IOS_NEW, "a", "b")
    theirs = "".join(difflib.unified_diff(IOS_OLD.splitlines(True), IOS_NEW.splitlines(True), "a", "b"))
    assert re.sub(r"^(@@ .* @@).*$", r"\1", ours, flags=re.M) == theirs
    assert unified_diff(IOS_OLD, IOS_OLD, "a", "b") == ""


def test_top_level_change_and_separators_have_no_section():
    lines = IOS_OLD.splitlines()
    assert section_of(lines, lines.index("ntp server 10.0.0.123")) == []
    assert section_of(lines, lines.index(" shutdown")) == ["interface GigabitEthernet0/2"]
    # "!" between sections is never a parent, even for a line indented under it
    assert section_of(lines, lines.index(" address-family ipv4")) == ["router bgp 65000"]
    assert section_label(["x" * 300]).endswith("…") and len(section_label(["x" * 300])) <= 160
    patch = unified_diff(IOS_OLD, IOS_OLD.replace("ntp server 10.0.0.123", "ntp server 10.0.0.124"), "a", "b")
    assert _headers(patch) == ["@@ -15,5 +15,5 @@"]


def test_side_by_side_names_the_section_of_each_change():
    rows = content.side_by_side(IOS_OLD, IOS_NEW, context=1)
    separators = [r.old for r in rows if r.change == "..."]
    assert separators == ["… interface GigabitEthernet0/1", "… router bgp 65000 > address-family ipv4"]


def test_cli_diff_names_sections(tmp_path):
    """``devicevault diff`` on a real index (records applied as the consumer does, copies in fs)."""
    from jobs.deliver.locations import StorageLayout
    from jobs.settings import Settings
    from jobs.streams.results import DeviceResult, DeviceStatus, StorageResult, StorageStatus
    from storage.base import StoreOptions
    from storage.index.db import connect
    from storage.index.records import apply_device_result, apply_storage_result, create_run, refresh_run
    from storage.paths import device_path

    env = {"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_INVENTORY": str(tmp_path / "inventory"),
           "GIT_CONFIG_GLOBAL": "/dev/null"}
    settings = Settings.load(env={**os.environ, **env})
    layout = StorageLayout.load(settings)
    sessions = connect(settings.database_url)
    when = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(hours=1)
    for n, text in enumerate([IOS_OLD, IOS_NEW], 1):
        run_id, stamp, data = f"run-{n}", when + timedelta(minutes=n), text.encode()
        sha = hashlib.sha256(data).hexdigest()
        with sessions.begin() as session:
            create_run(session, run_id, total=1, selector="all", targets=["fs"])
        ref = layout.open("fs").store(data, device_path("lab", "r1"),
                                      StoreOptions(device="r1", run_id=run_id, timestamp=stamp))
        with sessions.begin() as session:
            apply_device_result(session, DeviceResult(
                task_id=f"{run_id}:r1", run_id=run_id, device="r1", status=DeviceStatus.CHANGED, timestamp=stamp,
                group="lab", platform="ios", sha256=sha, size=len(data), targets="fs", config=text))
            apply_storage_result(session, StorageResult(
                task_id=f"{run_id}:r1:fs", run_id=run_id, device="r1", backend="fs", status=StorageStatus.STORED,
                timestamp=stamp, group="lab", sha256=sha, size=len(data), ref=ref))
            refresh_run(session, run_id, now=stamp)
    proc = subprocess.run([sys.executable, "-m", "cli", "diff", "r1", "-U", "1"], capture_output=True, cwd=ROOT,
                          env={**os.environ, **env}, timeout=120, text=True)
    assert proc.returncode == 0, proc.stderr
    assert _headers(proc.stdout) == ["@@ -3,3 +3,3 @@ interface GigabitEthernet0/1",
                                     "@@ -14,3 +14,3 @@ router bgp 65000 > address-family ipv4"]
    assert "+ description uplink to core" in proc.stdout.splitlines()
    # devicevault devices shows the portal's status word beside the last run's outcome (storage.index.health)
    listing = subprocess.run([sys.executable, "-m", "cli", "devices", "--json"], capture_output=True, cwd=ROOT,
                             env={**os.environ, **env}, timeout=120, text=True)
    assert listing.returncode == 0, listing.stderr
    import json

    (device,) = json.loads(listing.stdout)
    assert (device["health"], device["status"]) == ("changed", "changed")
