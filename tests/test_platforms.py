"""Every platform end to end, through the CLI: real redis-server, an RQ worker, the consumer, real Ansible
over SSH against a lab with one device of every personality, git and fs storage, SQLite index.

Also a platform that exists only as data written by this test (a platform file and a lab personality in
temporary directories, served by DeviceVault's own ``devicevault.network.cli`` plugin): nothing in the
repository knows it.

The tests share one lab and one index and run in file order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from cli.services import free_port

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
#: platforms whose output has nothing that changes between two reads seconds apart: VyOS prints no
#: timestamp or uptime at all, the ASA's uptime counts hours (its Cryptochecksum follows the config),
#: IOS-XR's counts minutes (cisco.iosxr turns the per-command timestamp off)
NO_FAST_VOLATILE = {"vyos", "asa", "iosxr"}

ENC_KEY = base64.b64encode(hashlib.sha256(b"devicevault platforms test key").digest()).decode()
#: git and fs for everything; the routeros device also keeps its raw output, on an encrypted fs target
#: that keeps only the newest version (``prune``)
STORAGE_YML = """
targets:
  git: {type: git}
  fs: {type: fs}
  fs-enc: {type: fs, root: "%(home)s/fs-enc", encrypt: true, keep_last: 1}
locations:
  default: [git, fs]
  vault: [git, fs, fs-enc]
"""

ACME_PLATFORM = r"""
name: acmeos
network_os: devicevault.network.cli
description: ACME RouterOS-NG (a platform added as data only, by tests/test_platforms.py)
commands:
  - command: show system
    comment: true
    keep: ['^Model: ', '^Firmware: ']
  - show config
comment_prefix: '# '
noise:
  - '^# generated at '
secrets:
  - '^set user \S+ hash (?P<secret>\S+)'
  - '^set snmp community (?P<secret>\S+)'
changed_by:
  - '^# last change by (?P<user>\S+)$'
complete:
  - '^# end of config$'
errors:
  - '^ERR: '
terminal:
  prompts: ['[\r\n][\w.\-]+:acme> $']
  errors: ['^ERR: ']
  paging: ['set cli pager off']
"""

ACME_PERSONALITY = r"""
name: acmeos
config_template: |
  {{ vol('generated') }}
  {{ vol('last_change') }}
  set system hostname {{ m.hostname }}
  {% for u in m.users %}
  set user {{ u.name }} hash {{ u.sha512 }}
  {% endfor %}
  set snmp community {{ m.snmp.ro }}
  {% for r in m.static_routes %}
  set route {{ r.net }}/{{ r.prefix }} via {{ r.nh }}
  {% endfor %}
  # end of config
facts: {}
model:
  interfaces:
    - {fmt: "port{}", start: 1, count: 4}
banner: "ACME RouterOS-NG"
login_level: enable
prompts:
  enable: "{{ hostname }}:acme> "
volatile:
  generated: "# generated at {{ now.strftime('%Y-%m-%dT%H:%M:%S.%f') }}"
  last_change: "# last change by {{ changed_by }}"
change:
  after: '^set route '
  line: "set route 10.250.{{ a }}.{{ b }}/32 via 10.0.0.1"
error: "ERR: unknown command '{{ command }}'"
commands:
  - match: 'set cli pager off'
  - match: 'show system'
    output: "Model: ACME-9000\nFirmware: 4.2.1\nUptime: {{ now.strftime('%H:%M:%S') }}"
  - match: 'show config'
    config: running
  - match: '(exit|quit)'
    action: exit
"""


@pytest.fixture(scope="module")
def vault(tmp_path_factory, redis_server):
    import os

    from lab.control import LabControl
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("platforms")
    site_platforms = home / "site-platforms"
    site_platforms.mkdir()
    (site_platforms / "acmeos.yml").write_text(ACME_PLATFORM)
    personalities = home / "site-personalities"
    personalities.mkdir()
    (personalities / "acmeos.yml").write_text(ACME_PERSONALITY)
    inventory = home / "inventory"
    from lab.generate_inventory import all_platforms

    # the lab's inventory takes ansible_network_os / devicevault_platform from the platform file; fetch_configs
    # in this process reads it too
    os.environ["DEVICEVAULT_PLATFORMS_DIR"] = str(site_platforms)
    platforms = all_platforms(str(personalities))
    hosts = generate_inventory(count=len(platforms), out=inventory, port=free_port(), base="127.0.140.0",
                               platforms=platforms, personalities_dir=str(personalities), sites=["ams"])
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "ams-routeros-01.yml").write_text("devicevault_location: vault\ndevicevault_keep_raw: true\n")
    (home / "storage.yml").write_text(STORAGE_YML % {"home": home})
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/13",
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_PLATFORMS_DIR": str(site_platforms),
        "DEVICEVAULT_DEVICE_TIMEOUT": "15",
        "DEVICEVAULT_JOB_TIMEOUT": "240",
        "DEVICEVAULT_BATCH_SIZE": "50",
        "DEVICEVAULT_COLLECT_RETRIES": "1",
        "DEVICEVAULT_COLLECT_RETRY_BASE": "2",
        "DEVICEVAULT_ENCRYPTION_KEYS": f"k1:{ENC_KEY}",
        "DEVICEVAULT_LOG_FORMAT": "json",
    }
    tool = DeviceVault(env, home)
    start_lab(inventory, home / "lab", personalities_dir=personalities)
    tool.lab = LabControl(home / "lab")
    tool.inventory = inventory
    tool.hosts = hosts
    tool.platform_of = {h: h.split("-")[1] for h in hosts}
    worker = tool.process("worker", "--name", f"pw-{free_port()}", name="worker").start()
    consumer = tool.process("consumer", "--name", "platforms-indexer", "--claim-idle", "2", name="consumer").start()
    yield tool
    worker.stop()
    consumer.stop()
    stop_lab(home / "lab")
    os.environ.pop("DEVICEVAULT_PLATFORMS_DIR", None)


def _backup(vault, *args) -> dict[str, dict]:
    proc = vault("backup", "--wait", "--json", *args, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return {r["device"]: r for r in json.loads(proc.stdout)["results"]}


def _versions(vault) -> dict[str, int]:
    return {d["name"]: d["versions"] for d in vault.json("devices")}


def _raw(vault) -> dict[str, list[str]]:
    from jobs.collect.fetch import fetch_configs

    out = fetch_configs(vault.hosts, inventory=vault.inventory, settings=vault.settings)
    failed = {h: str(o.error) for h, o in out.items() if o.error}
    assert not failed, failed
    return {h: o.outputs for h, o in out.items()}


def test_lab_has_every_platform_and_the_data_only_one(vault):
    from jobs.collect.platforms import BUILTIN_DIR, all_platforms

    platforms = set(vault.platform_of.values())
    assert set(all_platforms()) <= platforms and "acmeos" in platforms
    assert len(platforms) >= 13
    assert not (BUILTIN_DIR / "acmeos.yml").exists()
    assert not (ROOT / "lab" / "personalities" / "acmeos.yml").exists()


def test_every_platform_backs_up_and_a_second_read_adds_no_version(vault):
    first = _backup(vault)
    bad = {h: r["error"] for h, r in first.items() if r["status"] != "changed"}
    assert not bad, bad
    assert set(first) == set(vault.hosts)
    before = _raw(vault)
    time.sleep(1.2)
    after = _raw(vault)
    vault.reads = [before, after]  # the secrets and raw-copy tests below reuse these two reads
    moved = {vault.platform_of[h] for h in vault.hosts if before[h] != after[h]}
    assert moved >= set(vault.platform_of.values()) - NO_FAST_VOLATILE, (
        f"no volatile line changed on {set(vault.platform_of.values()) - NO_FAST_VOLATILE - moved}")
    versions = _versions(vault)
    second = _backup(vault)
    assert {h: r["status"] for h, r in second.items()} == {h: "unchanged" for h in vault.hosts}
    assert _versions(vault) == versions
    assert all(n == 1 for n in versions.values()), versions


def test_the_data_only_platform_is_stored_masked_with_who_changed_it(vault):
    host = next(h for h, p in vault.platform_of.items() if p == "acmeos")
    text = vault("show", host).stdout
    assert text.startswith("# Model: ACME-9000\n# Firmware: 4.2.1\n")
    assert "set user admin hash <secret hidden>" in text and "# end of config" in text
    assert "generated at" not in text and "Uptime" not in text
    history = vault.json("versions", host)
    assert history[-1]["author"] == "admin"


def _secrets(vault, raws: list[dict[str, list[str]]]) -> dict[str, set[str]]:
    """Per host: the golden secrets of its platform that its raw output really contains, plus every
    re-encrypted value (FortiOS ENC, BIG-IP $M$) seen in the raw reads."""
    found: dict[str, set[str]] = {}
    for host in vault.hosts:
        raw = "\n".join(o for r in raws for o in r[host])
        listed = GOLDEN / vault.platform_of[host] / "secrets.txt"
        values = {s for s in listed.read_text().splitlines() if s.strip()} if listed.exists() else set()
        values |= set(re.findall(r"\bENC (\S{20,})", raw)) | set(re.findall(r"(\$M\$[^\s\"]+)", raw))
        found[host] = {s for s in values if s in raw}
    return found


def _everything_stored(vault) -> list[bytes]:
    from tests.conftest import redis_blobs

    settings = vault.settings
    blobs = [p.read_bytes() for p in Path(settings.fs_root).rglob("*") if p.is_file()]
    blobs.append(subprocess.run(["git", "-C", str(settings.git_repo), "log", "-p", "--all"], capture_output=True).stdout)
    blobs.append(Path(settings.database_url.removeprefix("sqlite:///")).read_bytes())
    blobs += [p.read_bytes() for p in (vault.home / "logs").glob("*.log")]
    return [*blobs, *redis_blobs(settings.redis_url)]


def test_no_platform_secret_reaches_storage_index_jobs_or_logs(vault):
    secrets = _secrets(vault, vault.reads)
    missing = sorted(vault.platform_of[h] for h, s in secrets.items() if not s and vault.platform_of[h] != "acmeos")
    assert not missing, f"no known secret found in the raw output of {missing}"
    blobs = _everything_stored(vault)
    leaked = {(h, s) for h, values in secrets.items() for s in values if any(s.encode() in b for b in blobs)}
    assert not leaked, leaked
    assert any(b"<secret hidden>" in b for b in blobs)


def test_the_raw_output_is_kept_encrypted_and_never_decides_a_version(vault):
    host = "ams-routeros-01"
    versions = vault.json("versions", host)
    assert len(versions) == 1  # two backups, one version: the raw output never made one
    raw = vault("show", host, "--raw").stdout
    stored = vault("show", host).stdout
    assert "by RouterOS" in raw and "/export terse show-sensitive" not in stored
    secrets = _secrets(vault, vault.reads[-1:])[host]
    assert secrets and all(s in raw for s in secrets)  # the raw copy is restorable: secrets included
    assert not any(s in stored for s in secrets)
    assert re.search(r"^# \d{4}-\d\d-\d\d \d\d:\d\d:\d\d by RouterOS", raw, re.M)  # noise kept too
    encrypted = [f.read_bytes() for f in (vault.home / "fs-enc").rglob("*") if f.is_file()]
    assert encrypted and not any(s.encode() in b for s in secrets for b in encrypted)
    assert not list(Path(vault.settings.fs_root).rglob("@raw"))  # plain targets get no raw copy
    other = next(h for h in vault.hosts if h != host)
    proc = vault("show", other, "--raw", check=False)
    assert proc.returncode != 0 and "no raw copy kept" in proc.stderr


def test_unsaved_changes_are_flagged_and_saving_clears_them(vault):
    from jobs.collect.platforms import get_platform

    with_startup = sorted(h for h, p in vault.platform_of.items() if get_platform(p) and get_platform(p).startup)
    assert {vault.platform_of[h] for h in with_startup} >= {"ios", "eos", "nxos"}
    rows = {d["name"]: d for d in vault.json("devices")}
    assert all(rows[h]["unsaved"] is False for h in with_startup), {h: rows[h]["unsaved"] for h in with_startup}
    assert all(rows[h]["unsaved"] is None for h in vault.hosts if h not in with_startup)
    for host in with_startup:
        vault.lab.change(host, 1, user="jdoe")
    results = _backup(vault, *[a for h in with_startup for a in ("--host", h)])
    assert {results[h]["status"] for h in with_startup} == {"changed"}
    listed = vault("devices", "--unsaved").stdout
    assert all(h in listed for h in with_startup), listed
    status = vault("status").stdout
    assert "unsaved devices" in status and all(h in status for h in with_startup)
    ios = next(h for h in with_startup if vault.platform_of[h] == "ios")
    assert vault.json("versions", ios)[-1]["author"] == "jdoe"  # from "! Last configuration change ... by jdoe"
    for host in with_startup:
        vault.lab.save(host)
    _backup(vault, *[a for h in with_startup for a in ("--host", h)])
    rows = {d["name"]: d for d in vault.json("devices")}
    assert all(rows[h]["unsaved"] is False for h in with_startup), {h: rows[h]["unsaved"] for h in with_startup}
    assert vault("devices", "--unsaved").stdout.count("\n") <= 2  # header (and rule) only


def test_who_changed_the_configuration_becomes_the_versions_author(vault):
    # every platform whose golden files name an author: the change made by "mallory" on the device is
    # read back through real Ansible (ASA from show version, the others from the configuration)
    authored = sorted(h for h, p in vault.platform_of.items() if (GOLDEN / p / "changed_by.txt").exists())
    assert {vault.platform_of[h] for h in authored} >= {"asa", "fortios", "ios", "iosxr", "junos", "vyos"}
    for host in authored:
        vault.lab.change(host, 1, user="mallory")
    results = _backup(vault, *[a for h in authored for a in ("--host", h)])
    assert {h: results[h]["status"] for h in authored} == {h: "changed" for h in authored}
    authors = {h: vault.json("versions", h)[-1]["author"] for h in authored}
    assert authors == {h: "mallory" for h in authored}


def test_retention_removes_the_raw_copy_with_its_version(vault):
    host = "ams-routeros-01"
    raw_dir = vault.home / "fs-enc" / "@raw"
    assert len([f for f in raw_dir.rglob("*") if f.is_file()]) == 1
    vault.lab.change(host, 1)
    assert _backup(vault, "--host", host)[host]["status"] == "changed"
    raws = sorted(f for f in raw_dir.rglob("*") if f.is_file())
    assert len(raws) == 2  # one raw copy per version
    newest_raw = vault("show", host, "--raw").stdout
    pruned = vault.json("prune")
    assert [(p["device"], p["target"]) for p in pruned] == [(host, "fs-enc")]
    assert [f for f in raw_dir.rglob("*") if f.is_file()] == raws[1:]  # the old version's raw copy went with it
    assert vault("show", host, "--raw").stdout == newest_raw
    versions = vault.json("versions", host)
    assert len(versions) == 2 and vault("show", host, "1").stdout  # version 1 is still on git and fs
