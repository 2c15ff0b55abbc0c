"""``devicevault_secrets`` (mask | keep | drop, per host or group in the inventory) end to end, through the
CLI: real redis-server (database 14), an RQ worker and the consumer as processes, real Ansible over SSH
against a lab of IOS and FortiOS devices, a storage file with a plain and an encrypted location, SQLite.

    ams-ios-01, ams-fortios-01   keep (host_vars)   location secure = fs-enc (AES-256-GCM) -> secrets stored, encrypted
    ams-ios-03                   keep (host_vars)   location mixed = fs-enc + git (plain)  -> refused, nothing stored
    ams-ios-02, ams-fortios-02   drop (group_vars)  location default = git + fs (plain)    -> secret lines left out
    ams-fortios-03               mask (the default) location default

The ``-01`` hosts carry the golden files' host names, so ``tests/golden/<platform>/secrets.txt`` lists
their real secrets. Tests share the lab and the index and run in file order.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from cli.services import free_port

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
ENC_KEY = base64.b64encode(hashlib.sha256(b"devicevault secrets-modes test key").digest()).decode()
PLACEHOLDER = "<secret hidden>"
AUDIT_GROUP = "secrets-modes-audit"

KEEP = ["ams-ios-01", "ams-fortios-01"]
KEEP_PLAIN = "ams-ios-03"
DROP = ["ams-ios-02", "ams-fortios-02"]
MASK = "ams-fortios-03"
#: keep is set per host (host_vars/), drop per group (group_vars/ of a group made for it)
HOST_VARS = {
    "ams-ios-01": {"devicevault_secrets": "keep", "devicevault_location": "secure"},
    "ams-fortios-01": {"devicevault_secrets": "keep", "devicevault_location": "secure"},
    "ams-ios-03": {"devicevault_secrets": "keep", "devicevault_location": "mixed"},
}
DROP_GROUP = "with_secrets_dropped"  # sorts after site_ams, so the devices' storage group stays site_ams

STORAGE_YML = """
targets:
  git: {type: git}
  fs: {type: fs}
  fs-enc: {type: fs, root: "%(home)s/fs-enc", encrypt: true}
locations:
  default: [git, fs]
  secure: [fs-enc]
  mixed: [fs-enc, git]
"""


@pytest.fixture(scope="module")
def vault(tmp_path_factory, redis_server):
    from redis import Redis

    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("secrets-modes")
    (home / "logs").mkdir()
    inventory = home / "inventory"
    hosts = generate_inventory(count=6, out=inventory, port=free_port(), base="127.0.150.0",
                               platforms=["ios", "fortios"], sites=["ams"])
    assert set(hosts) == {*KEEP, KEEP_PLAIN, *DROP, MASK}, hosts
    (inventory / "host_vars").mkdir()
    for host, variables in HOST_VARS.items():
        (inventory / "host_vars" / f"{host}.yml").write_text(yaml.safe_dump(variables))
    doc = yaml.safe_load((inventory / "hosts.yml").read_text())
    doc["all"]["children"][DROP_GROUP] = {"hosts": {h: None for h in DROP}}
    (inventory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    (inventory / "group_vars" / f"{DROP_GROUP}.yml").write_text(yaml.safe_dump({"devicevault_secrets": "drop"}))
    (home / "storage.yml").write_text(STORAGE_YML % {"home": home})
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/14",
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_STORAGE_CONFIG": str(home / "storage.yml"),
        "DEVICEVAULT_DATABASE_URL": f"sqlite:///{home / 'index.sqlite'}",
        "DEVICEVAULT_ENCRYPTION_KEYS": f"k1:{ENC_KEY}",
        "DEVICEVAULT_DEVICE_TIMEOUT": "15",
        "DEVICEVAULT_JOB_TIMEOUT": "120",
        "DEVICEVAULT_LOCK_MARGIN": "10",
        "DEVICEVAULT_COLLECT_RETRIES": "0",
        "DEVICEVAULT_LOG_FORMAT": "json",
    }
    from jobs.streams.consumer import STREAMS

    client = Redis.from_url(env["DEVICEVAULT_REDIS_URL"])
    client.flushdb()
    for stream in STREAMS:  # a group that reads nothing: the consumer's trimming keeps every entry for the audit
        client.xgroup_create(stream, AUDIT_GROUP, id="0", mkstream=True)
    client.close()
    tool = DeviceVault(env, home)
    tool.inventory = inventory
    tool.hosts = hosts
    tool.platform_of = {h: h.split("-")[1] for h in hosts}
    start_lab(inventory, home / "lab")
    procs = []
    try:
        procs.append(tool.process("worker", "--name", f"secrets-{free_port()}", name="worker").start())
        procs.append(tool.process("consumer", "--name", "secrets-indexer", "--claim-idle", "2", name="consumer").start())
        yield tool
    finally:
        for proc in procs:
            proc.stop()
        stop_lab(home / "lab")


def _backup(vault, *args: str) -> dict[str, dict]:
    proc = vault("backup", "--wait", "--json", "--timeout", "120", *args, check=False)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return {r["device"]: r for r in json.loads(proc.stdout)["results"]}


@pytest.fixture(scope="module")
def raw(vault) -> dict[str, list[str]]:
    """One read of the keep and drop devices, outside DeviceVault (what they print, secrets included)."""
    return _raw(vault, [*KEEP, *DROP])


def _raw(vault, hosts: list[str]) -> dict[str, list[str]]:
    """What the devices print now (the platform's command outputs, in order)."""
    from jobs.collect.fetch import fetch_configs

    out = fetch_configs(hosts, inventory=vault.inventory, settings=vault.settings)
    failed = {h: str(o.error) for h, o in out.items() if o.error}
    assert not failed, failed
    return {h: o.outputs for h, o in out.items()}


def _platform_secrets(platform: str, outputs: list[str]) -> set[str]:
    """Every value the platform's ``secrets`` rules pick out of the raw outputs."""
    from jobs.collect.platforms import get_platform

    rules = get_platform(platform).secrets
    found = set()
    for line in "\n".join(outputs).replace("\r", "").split("\n"):
        for rule in rules:
            match = rule.search(line)
            if match:
                found.add(match.group("secret") if "secret" in rule.groupindex else match.group(1))
    return {s for s in found if len(s) >= 6}


def _golden_secrets(platform: str) -> set[str]:
    return {s.strip() for s in (GOLDEN / platform / "secrets.txt").read_text().splitlines() if s.strip()}


def _enc_values(text: str) -> set[str]:
    """FortiOS's reversible secrets (``ENC <base64>``), which it re-encrypts at every read; its password
    hashes (``ENC SH2...``) stay the same."""
    return {v for v in re.findall(r"\bENC (\S{20,})", text) if not v.startswith("SH2")}


def _index_logs_streams(vault) -> list[bytes]:
    """The index (SQLite files), every log file, and every Redis value: stream entries, hashes (the
    outbox, the changed-decision cache), strings, lists, sets and sorted sets (RQ's jobs and registries)."""
    from tests.conftest import redis_blobs

    settings = vault.settings
    db = Path(settings.database_url.removeprefix("sqlite:///"))
    blobs = [p.read_bytes() for p in db.parent.glob(db.name + "*")]
    blobs += [p.read_bytes() for p in (vault.home / "logs").glob("*.log")]
    return [*blobs, *redis_blobs(settings.redis_url)]


def _stream(vault, name: str) -> list[dict]:
    """The records on a result stream, as the consumer parses them (device results, storage results, run starts)."""
    from dataclasses import asdict

    from redis import Redis

    from jobs.streams.results import parse

    redis = Redis.from_url(vault.settings.redis_url)
    return [asdict(parse(name, f)) for _, f in redis.xrange(name)]


def test_keep_with_a_plain_target_fails_that_device_only_and_stores_nothing_for_it(vault):
    results = _backup(vault)
    assert set(results) == set(vault.hosts)
    failed = results[KEEP_PLAIN]
    assert failed["status"] == "failed"
    error = failed["error"]
    assert error.startswith(f"{KEEP_PLAIN}: ") and "devicevault_secrets: keep" in error, error
    assert "target(s) git " in error and "fs-enc" not in error, error  # names the plain target, only it
    assert "(permanent: not retried)" in error, error
    others = {h: (r["status"], r["error"]) for h, r in results.items() if h != KEEP_PLAIN}
    assert others == {h: ("changed", "") for h in others}, others
    # nothing stored for it: no version in the index, nothing on either target of its location
    devices = {d["name"]: d for d in vault.json("devices")}
    assert devices[KEEP_PLAIN]["versions"] == 0 and devices[KEEP_PLAIN]["status"] == "failed"
    assert all(devices[h]["versions"] == 1 for h in others)
    shown = vault("show", KEEP_PLAIN, check=False)
    assert shown.returncode != 0 and "no stored version" in shown.stderr and "Traceback" not in shown.stderr
    settings = vault.settings
    stored_names = [p.as_posix() for root in (vault.home / "fs-enc", settings.fs_root, settings.git_repo)
                    if root.exists() for p in root.rglob("*")]
    assert stored_names and not [p for p in stored_names if KEEP_PLAIN in p]
    committed = subprocess.run(["git", "-C", str(settings.git_repo), "log", "--all", "--name-only", "--format="],
                               capture_output=True, text=True, check=True).stdout
    assert "ams-ios-02" in committed and KEEP_PLAIN not in committed


def test_keep_with_encrypted_targets_stores_the_secrets_encrypted_and_nowhere_else(vault, raw):
    enc_on_disk = b"".join(p.read_bytes() for p in (vault.home / "fs-enc").rglob("*") if p.is_file())
    assert enc_on_disk
    blobs = _index_logs_streams(vault)
    texts = {}
    for host in KEEP:
        platform = vault.platform_of[host]
        text = texts[host] = vault("show", host).stdout
        (version,) = vault.json("versions", host)
        assert hashlib.sha256(text.encode()).hexdigest() == version["sha256"]
        assert {c["backend"] for c in version["copies"]} == {"fs-enc"}
        assert PLACEHOLDER not in text
        # the golden secrets of this host name that the device really prints (stable across reads) ...
        golden = {s for s in _golden_secrets(platform) if s in "\n".join(raw[host])}
        assert len(golden) >= 3, (host, golden)
        # ... plus, on FortiOS, the re-encrypted ENC values of the read that made the version
        secrets = golden | _enc_values(text)
        if platform == "fortios":
            assert len(_enc_values(text)) >= 5
        assert all(s in text for s in golden), (host, golden - {s for s in golden if s in text})
        assert _platform_secrets(platform, [text]) >= golden
        leaked = {s for s in secrets if s.encode() in enc_on_disk}
        assert not leaked, (host, "in the encrypted files", leaked)
        leaked = {s for s in secrets if any(s.encode() in b for b in blobs)}
        assert not leaked, (host, "in the index, Redis or the logs", leaked)
        # the result stream carries the masked view
        configs = [m["config"] for m in _stream(vault, "device:results") if m.get("device") == host and m["config"]]
        assert configs and all(PLACEHOLDER in c for c in configs)
    # the encrypted files hold no line of the configurations at all
    lines = {ln.strip() for text in texts.values() for ln in text.splitlines() if len(ln.strip()) >= 8}
    assert len(lines) > 20 and not [ln for ln in lines if ln.encode() in enc_on_disk]


def test_keep_on_fortios_a_second_read_with_new_enc_values_adds_no_version(vault, raw):
    host = "ams-fortios-01"
    first_text = vault("show", host).stdout
    stored_enc = _enc_values(first_text)
    reads = [raw[host], _raw(vault, [host])[host]]
    seen = [_enc_values("\n".join(r)) for r in reads]
    assert seen[0] and seen[1] and not (seen[0] & seen[1]) and not (seen[0] & stored_enc)  # re-encrypted each read
    results = _backup(vault, "--host", host)
    assert results[host]["status"] == "unchanged", results[host]
    versions = vault.json("versions", host)
    assert len(versions) == 1
    # the stored version is still the first read's, with its ENC values (expected in keep mode)
    assert vault("show", host).stdout == first_text
    enc_on_disk = b"".join(p.read_bytes() for p in (vault.home / "fs-enc").rglob("*") if p.is_file())
    blobs = _index_logs_streams(vault)
    leaked = {s for s in stored_enc if s.encode() in enc_on_disk or any(s.encode() in b for b in blobs)}
    assert not leaked, leaked


def test_drop_leaves_out_every_secret_line_and_keeps_the_others(vault, raw):
    from jobs.collect.normalize import normalize
    from jobs.collect.platforms import get_platform

    for host in DROP:
        platform = vault.platform_of[host]
        text = vault("show", host).stdout
        secrets = _platform_secrets(platform, raw[host])
        assert len(secrets) >= 3, (host, secrets)
        assert PLACEHOLDER not in text
        assert not [s for s in secrets if s in text], host
        assert not _platform_secrets(platform, [text]) and " ENC " not in text
        # every line without a secret is there, in order: the masked view minus its masked lines
        masked = normalize(host, get_platform(platform), raw[host], "mask").text
        expected = [ln for ln in masked.splitlines() if PLACEHOLDER not in ln]
        assert len(expected) < len(masked.splitlines())
        assert text.splitlines() == expected, host
        assert (f"hostname {host}" if platform == "ios" else f'set hostname "{host}"') in text
        (version,) = vault.json("versions", host)
        assert {c["backend"] for c in version["copies"]} == {"git", "fs"}
        assert all(c["ref"].split(":")[-1].startswith(f"site_ams/{host}") for c in version["copies"]), version
    # the default (mask) device next to them
    masked_text = vault("show", MASK).stdout
    assert PLACEHOLDER in masked_text and " ENC " in masked_text


def test_keep_an_unchanged_result_names_the_stored_version(vault):
    from sqlalchemy import select

    from storage.index.db import connect
    from storage.index.models import Device, DeviceResultRow

    host = "ams-fortios-01"
    (version,) = vault.json("versions", host)
    with connect(vault.settings.database_url)() as session:
        rows = session.execute(
            select(DeviceResultRow.status, DeviceResultRow.sha256).join(Device, Device.id == DeviceResultRow.device_id)
            .where(Device.name == host).order_by(DeviceResultRow.id)).all()
    assert [status for status, _ in rows] == ["changed", "unchanged"]
    assert [sha for _, sha in rows] == [version["sha256"]] * 2
