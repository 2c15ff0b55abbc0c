"""``devicevault restore`` end to end (issue 16, item 2): real redis-server (database 2), a worker and the
index consumer as processes, real Ansible over SSH against a lab of IOS, EOS, Junos, RouterOS and NX-OS
devices, a storage file with a plain and an encrypted target, SQLite.

    ams-ios-01, ams-junos-01, ams-routeros-01   devicevault_keep_raw (mask)   location default = git + fs-enc
    ams-eos-01                                  devicevault_secrets: keep    location secure  = fs-enc
    ams-ios-02                                  mask, no raw copy            -> a restore is refused
    ams-nxos-01                                 no restore section           -> a restore is refused (never
                                                                                backed up: refused before that)

The lab's IOS, EOS, Junos and RouterOS personalities are the built-in ones with two interfaces of each kind
instead of a chassis (the restore sends every line, prompted: a smaller device keeps the module quick; the
vendor behaviour is the same data). The devices are backed up (v1), changed in the lab and backed up again
(v2); then version 1 is restored: IOS, EOS and RouterOS through the CLI, Junos through the portal. Tests
share the lab and the index and run in file order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from cli.services import free_port

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "portal" / "app.py"
ENC_KEY = base64.b64encode(hashlib.sha256(b"devicevault restore test key").digest()).decode()
REPLACE = ["ams-ios-01", "ams-eos-01"]
JUNOS = "ams-junos-01"
MERGE = "ams-routeros-01"
NO_RAW = "ams-ios-02"
NO_MECHANISM = "ams-nxos-01"
SMALL = ["ios", "eos", "junos", "routeros"]
HOST_VARS = {
    "ams-ios-01": {"devicevault_keep_raw": True},
    "ams-junos-01": {"devicevault_keep_raw": True},
    "ams-routeros-01": {"devicevault_keep_raw": True},
    "ams-eos-01": {"devicevault_secrets": "keep", "devicevault_location": "secure"},
}
STORAGE_YML = """
targets:
  git: {type: git}
  fs-enc: {type: fs, root: "%(home)s/fs-enc", encrypt: true}
locations:
  default: [git, fs-enc]
  secure: [fs-enc]
"""
USERS = {"oscar": "operator", "victor": "viewer"}
#: a RouterOS line of the generated export that the test removes from the device (a merge puts it back)
ROUTEROS_LINE = "add name=MGMT"


@pytest.fixture(scope="module")
def vault(tmp_path_factory, redis_server):
    from redis import Redis

    from lab.generate_inventory import generate_inventory
    from lab.personality import PERSONALITIES
    from portal.users import UsersFile

    from tests.conftest import DeviceVault, serving

    home = tmp_path_factory.mktemp("restore")
    (home / "logs").mkdir()
    small = home / "personalities"
    small.mkdir()
    for name in SMALL:
        data = yaml.safe_load((PERSONALITIES / f"{name}.yml").read_text())
        for interfaces in data["model"]["interfaces"]:
            interfaces["count"] = min(interfaces["count"], 2)
        (small / f"{name}.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    inventory = home / "inventory"
    hosts = generate_inventory(count=6, out=inventory, port=free_port(), base="127.0.80.0", sites=["ams"],
                               platforms=["ios", "eos", "junos", "routeros", "nxos"])
    assert set(hosts) == {*REPLACE, JUNOS, MERGE, NO_RAW, NO_MECHANISM}, hosts
    (inventory / "host_vars").mkdir()
    for host, variables in HOST_VARS.items():
        (inventory / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(variables))
    (home / "storage.yml").write_text(STORAGE_YML % {"home": home})
    users = UsersFile(home / "users.yml")
    for name, role in USERS.items():
        users.add(name, role, f"{name}-password", rounds=4)
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/2",
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_STORAGE_CONFIG": str(home / "storage.yml"),
        "DEVICEVAULT_DATABASE_URL": f"sqlite:///{home / 'index.sqlite'}",
        "DEVICEVAULT_ENCRYPTION_KEYS": f"k1:{ENC_KEY}",
        "DEVICEVAULT_USERS_FILE": str(home / "users.yml"),
        "DEVICEVAULT_DEVICE_TIMEOUT": "20",
        "DEVICEVAULT_JOB_TIMEOUT": "180",
        "DEVICEVAULT_LOCK_MARGIN": "10",
        "DEVICEVAULT_COLLECT_RETRIES": "0",
        "LAB_PERSONALITIES_DIR": str(small),
    }
    Redis.from_url(env["DEVICEVAULT_REDIS_URL"]).flushdb()
    mp = pytest.MonkeyPatch()  # the portal's AppTest and LabControl run in this process
    for key, value in env.items():
        mp.setenv(key, value)
    try:
        with serving(DeviceVault(env, home), inventory, "restore", personalities_dir=small) as tool:
            yield tool
    finally:
        mp.undo()


def _lab(vault):
    from lab.control import LabControl

    return LabControl(vault.home / "lab")


BACKED_UP = [*REPLACE, JUNOS, MERGE, NO_RAW]


def _backup(vault, hosts=BACKED_UP) -> dict[str, dict]:
    proc = vault("backup", "--wait", "--json", *(arg for host in hosts for arg in ("--host", host)), check=False)
    assert proc.stdout.startswith("{"), proc.stdout + proc.stderr
    return {r["device"]: r for r in json.loads(proc.stdout)["results"]}


def _versions(vault, host: str):
    from storage.index.db import connect
    from storage.index.queries import device_versions

    with connect(vault.settings.database_url)() as session:
        return device_versions(session, host)


def _runs(vault) -> int:
    from storage.index.db import connect
    from storage.index.queries import list_runs

    with connect(vault.settings.database_url)() as session:
        return len(list_runs(session, limit=1000))


def test_versions_to_restore(vault):
    """v1 of every device, then a change in the lab and v2. The RouterOS device also loses a line, which a
    merge of v1 puts back."""
    assert {r["status"] for r in _backup(vault).values()} == {"changed"}
    lab = _lab(vault)
    for host in [*REPLACE, JUNOS, MERGE]:
        lab.change(host)
    from lab import state as S

    with S.modify(vault.home / "lab", MERGE) as st:
        assert ROUTEROS_LINE in st["running"].split("\n")
        st["running"] = "\n".join(line for line in st["running"].split("\n") if line != ROUTEROS_LINE)
    results = _backup(vault, [*REPLACE, JUNOS, MERGE])
    assert {r["status"] for r in results.values()} == {"changed"}, results
    assert all(len(_versions(vault, h)) == 2 for h in [*REPLACE, JUNOS, MERGE])


def test_dry_run_shows_the_difference_and_changes_nothing(vault):
    host = "ams-eos-01"
    lab = _lab(vault)
    before = lab.state(host)["running"]
    (added,) = lab.state(host)["changes"][-1:]
    runs = _runs(vault)
    proc = vault("restore", host, "1", "--dry-run")
    assert f"-{added}" in proc.stdout.splitlines(), proc.stdout  # the device has it, v1 does not
    assert "dry run, nothing pushed" in proc.stdout
    assert "lab-admin" not in proc.stdout + proc.stderr  # the inventory's password never shows
    assert lab.state(host)["running"] == before
    assert _runs(vault) == runs


def test_restore_refuses_where_it_is_not_safe(vault):
    proc = vault("restore", NO_RAW, "1", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().splitlines()[-1].endswith("masked secrets and no raw copy (set devicevault_keep_raw: "
                                                         "true or devicevault_secrets: keep, with an encrypted "
                                                         "target); restore refused"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = vault("restore", NO_MECHANISM, "1", check=False)
    assert proc.returncode == 1
    assert "platform nxos has no restore mechanism in its platform file (restorable: eos (replace), ios (replace), " \
           "junos (replace), routeros (merge)); restore refused" in proc.stderr, proc.stderr


def test_host_locks_keep_backups_and_restores_apart(vault):
    """A device whose lock is held (here as a restore holds it) is skipped by a backup, and a restore of a
    device being backed up is refused."""
    from redis import Redis

    from jobs.collect.locks import host_locks

    host = "ams-ios-01"
    redis = Redis.from_url(vault.env["DEVICEVAULT_REDIS_URL"])
    with host_locks(redis, [host], 60, owner="restore-in-the-test") as (locked, _):
        assert locked == [host]
        proc = vault("backup", "--wait", "--json", "--host", host, check=False)
        (result,) = json.loads(proc.stdout)["results"]
        assert result["status"] == "skipped_locked"
        proc = vault("restore", host, "1", check=False)
        assert proc.returncode == 1
        assert "a backup or restore of this device is running; try again when it ends" in proc.stderr


def _page(user: str, device: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90)
    at.session_state["portal_user"] = user
    at.run()
    assert not at.exception, at.exception
    at.query_params.update(device=device)
    at = at.switch_page("views/device.py").run()
    assert not at.exception, at.exception
    return at


def test_a_viewer_cannot_restore_from_the_portal(vault):
    viewer = _page("victor", JUNOS)
    assert viewer.selectbox(key="device_show_version").options  # the Version tab is there, without the button
    assert "device_restore_prepare" not in [b.key for b in viewer.button]
    assert "device_restore_confirm" not in [b.key for b in viewer.button]
    assert "device_restore_prepare" in [b.key for b in _page("oscar", JUNOS).button]


def test_restore_puts_version_1_back(vault):
    """Version 1 goes back on every restorable platform at once. IOS (configure replace of a file typed in
    through tclsh), EOS (a configuration session), from the CLI, and Junos (load override + commit), from
    the portal, where an operator sees the device's difference from v1 first and confirms: each ends up
    matching v1, the restore's own backup records v3 = v1 and the next backup nothing new. RouterOS takes a
    merge: the removed line comes back, the line added since stays, and the restore says so."""
    from tests.conftest import wait_for

    lab = _lab(vault)
    (junos_added,) = lab.state(JUNOS)["changes"][-1:]
    at = _page("oscar", JUNOS)
    at.selectbox(key="device_show_version").set_value(1).run()
    at = at.button(key="device_restore_prepare").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Restore v1" in w.value and "full replace" in w.value for w in at.warning)
    assert any(f"-{junos_added}" in c.value.splitlines() for c in at.code), [c.value for c in at.code]
    at = at.button(key="device_restore_confirm").click().run()  # a job: it runs beside the CLI's restores
    assert at.session_state["device_restore"]["job_id"]

    def restore(host: str) -> subprocess.CompletedProcess:
        return vault("restore", host, "1", "--json", check=False)

    with ThreadPoolExecutor(3) as pool:
        done = dict(zip([*REPLACE, MERGE], pool.map(restore, [*REPLACE, MERGE])))
    for host in REPLACE:
        proc = done[host]
        assert proc.returncode == 0, proc.stdout + proc.stderr
        result = json.loads(proc.stdout)
        assert (result["status"], result["mode"], result["backup_status"]) == ("matches", "replace", "changed"), result
        assert "lab-admin" not in proc.stdout + proc.stderr
    proc = done[MERGE]
    assert proc.returncode == 1, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert (result["status"], result["mode"]) == ("differs", "merge"), result
    (added,) = lab.state(MERGE)["changes"][-1:]
    assert [line for line in result["remaining"].splitlines() if line.startswith(("-/", "+/"))] == [
        "-/ip route " + added]
    assert ROUTEROS_LINE in lab.state(MERGE)["running"].split("\n")
    wait_for(lambda: any("now matches v1" in s.value for s in at.run().success), "the portal's restore job",
             timeout=120, interval=1)
    assert not at.error, [e.value for e in at.error]
    # the page shows the version the restore's backup made, without a reload
    wait_for(lambda: at.run().selectbox(key="device_show_version").value == 3, "the portal to show v3",
             timeout=60, interval=1)
    for host in [*REPLACE, JUNOS]:
        assert lab.state(host)["changes"][-1] not in lab.running_config(host)
        versions = _versions(vault, host)
        assert len(versions) == 3 and versions[2].sha256 == versions[0].sha256, versions
    results = _backup(vault, [*REPLACE, JUNOS])
    assert {r["status"] for r in results.values()} == {"unchanged"}, results
    assert all(len(_versions(vault, h)) == 3 for h in [*REPLACE, JUNOS])


# --- the parts, without a lab ---------------------------------------------------------------------------
def test_the_pushed_text_has_no_header_and_its_secrets_back_from_the_raw_copy():
    from jobs.collect.platforms import get_platform
    from jobs.collect.restore import RestoreRefused, push_text

    ios = get_platform("ios")
    version = ("! Cisco IOS XE Software, Version 17.9.4a\n! Processor board ID FOC1\n!\nversion 17.9\n"
               "enable secret 9 <secret hidden>\nusername a privilege 15 secret 9 <secret hidden>\n"
               "ntp clock-period <volatile>\nend\n")
    raw = ("Cisco IOS XE Software, Version 17.9.4a\nProcessor board ID FOC1\nBuilding configuration...\n"
           "! Last configuration change at 10:00:00 UTC by admin\n!\nversion 17.9\nenable secret 9 $9$one\n"
           "username a privilege 15 secret 9 $9$two\nntp clock-period 17179001\nend\n"
           "!\nversion 17.9\nenable secret 9 $9$old-startup\nend\n")
    assert push_text("r1", 1, ios, version, raw) == (
        "!\nversion 17.9\nenable secret 9 $9$one\nusername a privilege 15 secret 9 $9$two\n"
        "ntp clock-period 17179001\nend\n")
    with pytest.raises(RestoreRefused, match=r"^r1: v1: a masked secret has no original in the raw copy"):
        push_text("r1", 1, ios, version, raw.replace("username a privilege 15 secret 9 $9$two\n", ""))
    kept = version.replace("enable secret 9 <secret hidden>", "enable secret 9 $9$kept").replace(
        "username a privilege 15 secret 9 <secret hidden>\n", "")
    assert "enable secret 9 $9$kept\n" in push_text("r1", 1, ios, kept, None)  # devicevault_secrets: keep


def test_the_lab_applies_a_replace_with_its_own_lines_and_a_routeros_merge():
    from lab.apply import apply_config
    from lab.personality import load_personalities

    personalities = load_personalities()
    state = {"running": "@@VOL:last_commit@@\nversion 1;\nsystem {\n    host-name a;\n}\n"}
    apply_config(state, personalities["junos"], "version 1;\nsystem {\n    host-name b;\n}\n", "replace", "oscar")
    assert state["running"] == "@@VOL:last_commit@@\nversion 1;\nsystem {\n    host-name b;\n}\n"
    assert state["changed_by"] == "oscar"
    ios = {"running": "!\n@@VOL:last_change@@\nhostname a\n!\n@@VOL:clock_period@@\nntp server 10.0.0.1\nend\n"}
    apply_config(ios, personalities["ios"], "!\nhostname b\n!\nntp server 10.0.0.1\nend\n", "replace", "oscar")
    assert ios["running"] == "!\n@@VOL:last_change@@\nhostname b\n!\n@@VOL:clock_period@@\nntp server 10.0.0.1\nend\n"
    ros = {"running": "/ip route\nadd dst-address=10.0.0.0/8 gateway=lo\n/ip service\nset telnet disabled=no\n"}
    pushed = ("# software id = X\n/ip route add dst-address=10.0.0.0/8 gateway=lo\n"
              "/ip route add dst-address=10.1.0.0/16 gateway=lo\n/ip service set telnet disabled=yes\n"
              "/system identity set name=r1\n")
    apply_config(ros, personalities["routeros"], pushed, "merge", "oscar")
    assert ros["running"] == ("/ip route\nadd dst-address=10.0.0.0/8 gateway=lo\nadd dst-address=10.1.0.0/16 gateway=lo\n"
                              "/ip service\nset telnet disabled=yes\n/system identity\nset name=r1\n")
