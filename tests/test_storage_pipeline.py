"""Issue 3 end to end, through the CLI: several copies of every version, verified, retried, pruned.

Real redis-server, real RQ workers (one for collection + git + fs, one for S3 only), real Ansible against
the lab, a real git repository, real directories, and moto's standalone S3 server as a separate process
(so it can really be stopped and started again). Storage file::

    targets:  git, fs (keep_last 2), s3 (bucket dv-plain), fs-enc + s3-enc (AES-256-GCM + gzip)
    locations: default = git + fs + s3;  secure = fs-enc + s3-enc (group site_nyc)

Tests share the lab and run in file order; the S3 outage test is last because moto keeps objects in memory
and loses them when stopped.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cli.services import free_port
from storage.paths import decode_component

DUMMY_KEY = "AKIADVTESTKEY0000000"
DUMMY_SECRET = "dv-test-secret-never-printed-0123456789"
ENC_KEY = base64.b64encode(hashlib.sha256(b"devicevault test key").digest()).decode()
WEIRD = {"ams-ios-01": "../../etc/x", "ams-eos-01": "core sw/1 zürich"}

STORAGE_YML = """
targets:
  git: {type: git}
  fs: {type: fs, keep_last: 2}
  s3: {type: s3, bucket: dv-plain}
  fs-enc: {type: fs, root: "%(home)s/fs-enc", compression: gzip, encrypt: true}
  s3-enc: {type: s3, bucket: dv-secure, prefix: configs, compression: zstd, encrypt: true}
locations:
  default: [git, fs, s3]
  secure: [fs-enc, s3-enc]
groups:
  site_nyc: secure
"""


class MotoServer:
    """moto's standalone S3 server as its own process, on a fixed port so it can come back."""

    def __init__(self, port: int, log: Path):
        self.port, self.log, self.proc = port, log, None
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> "MotoServer":
        exe = Path(sys.executable).parent / "moto_server"
        self.proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).read()
                return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


def s3_client(url: str):
    import boto3

    return boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                        aws_access_key_id=DUMMY_KEY, aws_secret_access_key=DUMMY_SECRET)


def s3_objects(url: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(url)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


@pytest.fixture(scope="module")
def vault(tmp_path_factory, redis_server):
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("vault")
    (home / "logs").mkdir()
    inventory = home / "inventory"
    generate_inventory(count=8, out=inventory, port=free_port(), base="127.0.50.0")
    hosts_yml = inventory / "hosts.yml"
    text = hosts_yml.read_text()
    for old, new in WEIRD.items():
        text = text.replace(f"{old}:", f"{json.dumps(new)}:")
    hosts_yml.write_text(text)
    (home / "storage.yml").write_text(STORAGE_YML % {"home": home})
    moto = MotoServer(free_port(), home / "logs" / "moto.log").start()
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/3",  # its own database
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_DEVICE_TIMEOUT": "8",
        "DEVICEVAULT_JOB_TIMEOUT": "120",
        "DEVICEVAULT_LOCK_MARGIN": "10",
        "DEVICEVAULT_S3_ENDPOINT_URL": moto.url,
        "DEVICEVAULT_S3_REGION": "us-east-1",
        "DEVICEVAULT_S3_ACCESS_KEY_ID": DUMMY_KEY,
        "DEVICEVAULT_S3_SECRET_ACCESS_KEY": DUMMY_SECRET,
        "DEVICEVAULT_ENCRYPTION_KEYS": f"k2026:{ENC_KEY}",
        "DEVICEVAULT_RETRY_BASE": "1",
        "DEVICEVAULT_RETRY_MAX": "3",
        "DEVICEVAULT_RETRY_POLL": "0.5",
    }
    tool = DeviceVault(env, home)
    tool.moto = moto
    tool.inventory = inventory
    start_lab(inventory, home / "lab")
    tool.main_worker = f"main-{free_port()}"
    tool.s3_worker = f"s3only-{free_port()}"
    procs = [
        tool.process("worker", "--name", tool.main_worker, "--queue", "collector", "--queue", "storage.git",
                     "--queue", "storage.fs", name="worker-main").start(),
        tool.process("worker", "--name", tool.s3_worker, "--queue", "storage.s3", name="worker-s3").start(),
        tool.process("consumer", "--name", "indexer-s", "--claim-idle", "2", name="consumer").start(),
    ]
    yield tool
    for p in procs:
        p.stop()
    moto.stop()
    stop_lab(home / "lab")


def _backup(vault, *args: str) -> dict:
    proc = vault("backup", "--wait", "--json", *args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _versions(vault, host: str) -> list[dict]:
    return vault.json("versions", host)


def _s3_key(ref: str) -> str:
    """``s3://bucket/<quoted key>[?versionId=...]`` -> the object key."""
    from urllib.parse import unquote

    return unquote(ref.split("://", 1)[1].split("/", 1)[1].split("?")[0])


def _copies(version: dict) -> dict[str, dict]:
    return {c["backend"]: c for c in version["copies"]}


def test_every_version_lands_on_every_target_of_its_location(vault):
    data = _backup(vault)
    results = {r["device"]: r for r in data["results"]}
    assert len(results) == 8 and {r["status"] for r in results.values()} == {"changed"}, results
    devices = {d["name"]: d for d in vault.json("devices")}
    settings = vault.settings
    plain = s3_objects(vault.moto.url, "dv-plain")
    git_log = subprocess.run(["git", "-C", str(settings.git_repo), "log", "-p"], capture_output=True,
                             text=True, check=True).stdout
    for name, device in devices.items():
        (version,) = _versions(vault, name)
        copies = _copies(version)
        expected = {"fs-enc", "s3-enc"} if device["group"] == "site_nyc" else {"git", "fs", "s3"}
        assert set(copies) == expected, (name, copies)
        assert {c["status"] for c in copies.values()} == {"stored"}, copies
        text = vault("show", name).stdout
        assert hashlib.sha256(text.encode()).hexdigest() == version["sha256"]
        if device["group"] != "site_nyc":
            # plain tools read them: git log -p, the fs file, and a generic S3 client
            body = [line for line in text.splitlines() if len(line.strip()) > 10]
            assert all(f"+{line}" in git_log for line in body), name
            assert (settings.fs_root / copies["fs"]["ref"]).read_text() == text
            key = _s3_key(copies["s3"]["ref"])
            assert plain[key].decode() == text
    # the per-backend queues: every S3 copy was written by the S3-only worker, none of git/fs by it
    from redis import Redis
    from jobs.queues import Job, Queue

    redis = Redis.from_url(settings.redis_url)
    for queue, worker in (("storage.s3", vault.s3_worker), ("storage.git", vault.main_worker), ("storage.fs", vault.main_worker)):
        ids = Queue(queue, connection=redis).finished_job_registry.get_job_ids()
        assert ids, queue
        assert {Job.fetch(i, connection=redis).worker_name for i in ids} == {worker}, queue


def test_hostile_device_names_stay_inside_each_target_under_reversible_names(vault):
    settings = vault.settings
    for name in WEIRD.values():
        (version,) = _versions(vault, name)
        copies = _copies(version)
        fs_file = (settings.fs_root / copies["fs"]["ref"]).resolve()
        assert fs_file.is_relative_to(settings.fs_root.resolve())
        assert decode_component(fs_file.parent.name) == name
        key = _s3_key(copies["s3"]["ref"])
        assert ".." not in key.split("/") and decode_component(key.split("/")[-2]) == name
        git_path = copies["git"]["ref"].split(":", 1)[1].rsplit("@", 1)[0]
        assert ".." not in git_path.split("/") and decode_component(git_path.split("/")[-1].removesuffix(".cfg")) == name
    assert not Path("/etc/x").exists() and not (settings.home.parent / "etc").exists()


def test_encrypted_targets_hold_no_line_of_the_configuration(vault):
    nyc = [d["name"] for d in vault.json("devices") if d["group"] == "site_nyc"]
    assert len(nyc) == 3
    on_disk = b"".join(p.read_bytes() for p in (vault.home / "fs-enc").rglob("*") if p.is_file())
    in_s3 = b"".join(s3_objects(vault.moto.url, "dv-secure").values())
    assert on_disk and in_s3
    for name in nyc:
        text = vault("show", name).stdout
        lines = {line.strip() for line in text.splitlines() if len(line.strip()) >= 6}
        assert len(lines) > 5
        for line in lines:
            assert line.encode() not in on_disk and line.encode() not in in_s3, (name, line)
        (version,) = _versions(vault, name)
        assert hashlib.sha256(text.encode()).hexdigest() == version["sha256"]
    # the key id is recorded with each copy, so keys can rotate
    from storage.index.db import connect
    from storage.index.models import Copy

    with connect(vault.settings.database_url)() as session:
        kids = {c.backend: c.key_id for c in session.query(Copy).all()}
    assert kids["fs-enc"] == kids["s3-enc"] == "k2026" and kids["fs"] == kids["git"] == ""


def test_verify_finds_exactly_the_corrupt_and_the_missing_copy_and_repairs_them(vault):
    settings = vault.settings
    clean = vault("verify", check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    fs_victim, s3_victim = "ams-junos-01", "ams-routeros-01"
    fs_ref = _copies(_versions(vault, fs_victim)[0])["fs"]["ref"]
    (settings.fs_root / fs_ref).write_text("hostname tampered\n")
    s3_ref = _copies(_versions(vault, s3_victim)[0])["s3"]["ref"]
    s3_client(vault.moto.url).delete_object(Bucket="dv-plain", Key=_s3_key(s3_ref))

    found = vault("verify", "--json", check=False)
    assert found.returncode == 1
    problems = {(p["device"], p["target"], p["problem"]) for p in json.loads(found.stdout)["problems"]}
    assert problems == {(fs_victim, "fs", "corrupt"), (s3_victim, "s3", "missing")}

    repaired = vault("verify", "--repair", "--json", check=False)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert all(p["repaired"] for p in json.loads(repaired.stdout)["problems"])
    again = vault.json("verify")
    assert again["problems"] == [] and again["checked"] == 8 * 3 - 3  # nyc devices have two copies each
    assert (settings.fs_root / _copies(_versions(vault, fs_victim)[0])["fs"]["ref"]).read_text() == vault("show", fs_victim).stdout


def test_retention_keeps_the_newest_two_on_fs_and_everything_elsewhere(vault):
    from lab.control import LabControl

    host = "ams-nxos-01"
    for _ in range(4):
        LabControl(vault.home / "lab").change(host)
        _backup(vault, "--host", host)
    versions = _versions(vault, host)
    assert len(versions) == 5
    pruned = vault.json("prune")
    assert [(p["device"], p["target"]) for p in pruned] == [(host, "fs")] * 3
    fs_dir = vault.settings.fs_root / Path(_copies(versions[-1])["fs"]["ref"]).parent
    assert len(list(fs_dir.glob("*.cfg"))) == 2
    versions = _versions(vault, host)
    assert [_copies(v)["fs"]["status"] for v in versions] == ["pruned"] * 3 + ["stored"] * 2
    git_path = _copies(versions[0])["git"]["ref"].split(":", 1)[1].rsplit("@", 1)[0]
    commits = subprocess.run(["git", "-C", str(vault.settings.git_repo), "log", "--format=%H", "--", git_path],
                             capture_output=True, text=True, check=True).stdout.split()
    assert len(commits) == 5
    key_dir = _s3_key(_copies(versions[0])["s3"]["ref"]).rsplit("/", 1)[0]
    assert len([k for k in s3_objects(vault.moto.url, "dv-plain") if k.startswith(key_dir + "/")]) == 5
    for number, version in enumerate(versions, start=1):
        text = vault("show", host, str(number)).stdout
        assert hashlib.sha256(text.encode()).hexdigest() == version["sha256"]
    assert vault.json("prune") == []  # nothing more to do; the newest two stay


def test_copies_wait_while_s3_is_down_and_land_when_it_returns(vault):
    from lab.control import LabControl

    hosts = ["ams-junos-01", "ams-routeros-01"]
    vault.moto.stop()
    try:
        for host in hosts:
            LabControl(vault.home / "lab").change(host)
        data = _backup(vault, *[a for h in hosts for a in ("--host", h)])
        assert {r["status"] for r in data["results"]} == {"changed"}
        assert data["copies"]["git"] == {"stored": 2} and data["copies"]["fs"] == {"stored": 2}
        assert data["copies"]["s3"] == {"pending": 2}
        pending = vault.json("pending")
        assert {p["device"] for p in pending} == set(hosts) and {p["target"] for p in pending} == {"s3"}
        assert all("s3" in p["error"] and p["next_attempt"] for p in pending)
        time.sleep(3)  # a few retries fail while the endpoint is down
    finally:
        vault.moto.start()
    deadline = time.monotonic() + 60
    while vault.json("pending") and time.monotonic() < deadline:
        time.sleep(1)
    assert vault.json("pending") == []
    objects = s3_objects(vault.moto.url, "dv-plain")
    for host in hosts:
        newest = _versions(vault, host)[-1]
        s3 = _copies(newest)["s3"]
        assert s3["status"] == "stored"
        key = _s3_key(s3["ref"])
        assert hashlib.sha256(objects[key]).hexdigest() == newest["sha256"]
    runs = vault.json("runs")
    assert runs[0]["status"] == "succeeded"


def test_no_credential_reaches_logs_index_or_job_data(vault):
    from tests.conftest import redis_blobs

    secrets = [DUMMY_SECRET, ENC_KEY, base64.b64decode(ENC_KEY).hex()]
    blobs = [p.read_bytes() for p in (vault.home / "logs").glob("*.log")]
    blobs.append(Path(vault.settings.database_url.removeprefix("sqlite:///")).read_bytes())
    expanded = [*blobs, *redis_blobs(vault.settings.redis_url)]
    for secret in secrets:
        assert not any(secret.encode() in blob for blob in expanded), secret
    assert os.environ.get("DEVICEVAULT_S3_SECRET_ACCESS_KEY") is None
