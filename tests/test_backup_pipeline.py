"""The backup spine end to end, through the CLI only: real redis-server, real RQ workers, real Ansible over
SSH against the simulated lab, real git repository, real SQLite index.

The tests in this module share one lab, one Redis and one index, and run in file order; each one reasons
about what *its* step added.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pytest

from cli.services import free_port
from jobs.collect.platforms import all_platforms, platform_key

DEVICE_TIMEOUT = 8
PLATFORMS = {"ios", "eos", "nxos", "junos", "routeros"}


@pytest.fixture(scope="module")
def dv(tmp_path_factory, redis_server):
    from lab.generate_inventory import generate_inventory
    from lab.testing import start_lab, stop_lab

    from tests.conftest import DeviceVault

    home = tmp_path_factory.mktemp("devicevault")
    inventory = home / "inventory"
    generate_inventory(count=20, out=inventory, port=free_port(), base="127.0.40.0")
    env = {
        "DEVICEVAULT_HOME": str(home),
        "DEVICEVAULT_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/15",  # this module's own database
        "DEVICEVAULT_INVENTORY": str(inventory),
        "DEVICEVAULT_DEVICE_TIMEOUT": str(DEVICE_TIMEOUT),
        "DEVICEVAULT_JOB_TIMEOUT": "180",
        "DEVICEVAULT_BATCH_SIZE": "10",
        "DEVICEVAULT_COLLECT_RETRIES": "0",  # the fault tests look at the first failure
        "DEVICEVAULT_RETRY_BASE": "1",  # storage copies: the target-down test waits for a few retries
        "DEVICEVAULT_RETRY_MAX": "2",
        "DEVICEVAULT_RETRY_POLL": "0.5",
    }
    tool = DeviceVault(env, home)
    _redis(tool).flushdb()  # what other modules of this test process left there is not this module's
    start_lab(inventory, home / "lab")
    procs = [tool.process("worker", "--name", f"w{i}-{free_port()}", name=f"worker{i}").start() for i in (1, 2)]
    tool.consumer = tool.process("consumer", "--name", "indexer-1", "--claim-idle", "2", name="consumer").start()
    yield tool
    for p in [*procs, tool.consumer]:
        p.stop()
    stop_lab(home / "lab")


def _git_commits(repo: Path) -> int:
    if not (repo / ".git").exists() and not (repo / "HEAD").exists():
        return 0
    out = subprocess.run(["git", "-C", str(repo), "rev-list", "--count", "HEAD"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0) if out.returncode == 0 else 0


def _total_versions(dv) -> dict[str, int]:
    return {d["name"]: d["versions"] for d in dv.json("devices")}


def _redis(dv):
    from redis import Redis

    return Redis.from_url(dv.settings.redis_url)


def _events(dv) -> list[dict[str, str]]:
    """The ``versions:created`` stream."""
    from jobs.streams.events import VERSIONS_CREATED_STREAM

    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in _redis(dv).xrange(VERSIONS_CREATED_STREAM)]


def _storage_job_ids(dv) -> set[str]:
    """Every storage job RQ still knows of (queued, running, finished or failed)."""
    from jobs.queues import Queue

    ids: set[str] = set()
    for name in ("storage.git", "storage.fs"):
        queue = Queue(name, connection=_redis(dv))
        ids |= set(queue.get_job_ids())
        for registry in (queue.started_job_registry, queue.finished_job_registry, queue.failed_job_registry):
            ids |= set(registry.get_job_ids())
    return ids


def _eventually(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


def _backup(dv, *args: str, check: bool = True) -> dict[str, dict]:
    proc = dv("backup", "--wait", "--json", *args, check=False)
    if check:
        assert proc.returncode in (0, 1), proc.stderr
    import json

    data = json.loads(proc.stdout)
    return {r["device"]: r for r in data["results"]}


def test_first_backup_stores_every_device_once_in_git_fs_and_index(dv):
    results = _backup(dv)
    assert len(results) == 20
    bad = [(r["device"], r["error"]) for r in results.values() if r["status"] != "changed"]
    assert not bad, "\n".join(map(str, bad))
    assert {platform_key(r["platform"]) for r in results.values()} == PLATFORMS
    settings = dv.settings
    assert _git_commits(settings.git_repo) == 20
    noise = {name: p.noise for name, p in all_platforms().items()}
    for device in dv.json("devices"):
        assert device["versions"] == 1, device
        (version,) = dv.json("versions", device["name"])
        assert {c["backend"] for c in version["copies"]} == {"git", "fs"}
        fs_ref = next(c["ref"] for c in version["copies"] if c["backend"] == "fs")
        stored = (settings.fs_root / fs_ref).read_bytes()
        assert hashlib.sha256(stored).hexdigest() == version["sha256"]
        text = stored.decode()
        for pattern in noise[platform_key(device["platform"])]:
            assert not any(pattern.search(line) for line in text.splitlines()), (device["name"], pattern.pattern)
        assert dv("show", device["name"]).stdout == text
    events = _events(dv)  # one "version created" event per version, naming it
    versions = {v["sha256"] for d in dv.json("devices") for v in dv.json("versions", d["name"])}
    assert len(events) == 20 and {e["sha256"] for e in events} == versions
    assert len({e["version_id"] for e in events}) == 20 and {e["targets"] for e in events} == {"git,fs"}


def test_second_backup_without_changes_adds_nothing(dv):
    before_commits = _git_commits(dv.settings.git_repo)
    before = _total_versions(dv)
    results = _backup(dv)
    assert {r["status"] for r in results.values()} == {"unchanged"}
    assert _total_versions(dv) == before
    assert _git_commits(dv.settings.git_repo) == before_commits


def test_with_the_cache_emptied_the_run_finishes_unchanged_without_storage_jobs(dv):
    """The collector's cache is lost: every device is staged as a candidate, and the index consumer decides
    them all unchanged against the index; no version, no storage job, no event, and the run finishes."""
    from jobs.collect import cache
    from jobs.deliver import outbox

    redis = _redis(dv)
    before, commits, events, jobs = _total_versions(dv), _git_commits(dv.settings.git_repo), len(_events(dv)), _storage_job_ids(dv)
    redis.delete(*cache.KEYS)
    results = _backup(dv)
    assert {r["status"] for r in results.values()} == {"unchanged"}, results
    run = dv.json("runs")[0]
    assert run["finished_at"] and run["status"] == "succeeded", run
    assert _total_versions(dv) == before and _git_commits(dv.settings.git_repo) == commits
    _eventually(lambda: redis.hlen(outbox.ITEMS) == 0, what="the staged candidates to be discarded")
    assert _eventually(lambda: redis.hlen(cache.LATEST_SHA_KEY) == 20, what="the decider to refill the cache")
    assert len(_events(dv)) == events and _storage_job_ids(dv) - jobs == set()
    assert all(r["sha256"] for r in results.values())  # each names the stored version


def test_three_changed_devices_make_exactly_three_versions_with_exact_diffs(dv):
    devices = sorted(dv.json("devices"), key=lambda d: d["name"])
    by_platform: dict[str, str] = {}
    for d in devices:
        by_platform.setdefault(platform_key(d["platform"]), d["name"])
    changed_hosts = [by_platform["ios"], by_platform["junos"], by_platform["routeros"]]
    from lab.control import LabControl

    control = LabControl(dv.home / "lab")
    before_configs = {h: dv("show", h).stdout for h in changed_hosts}
    for host in changed_hosts:
        dv("lab", "change", host)
    before = _total_versions(dv)
    before_commits = _git_commits(dv.settings.git_repo)
    results = _backup(dv)
    assert sorted(h for h, r in results.items() if r["status"] == "changed") == sorted(changed_hosts)
    after = _total_versions(dv)
    assert sum(after.values()) - sum(before.values()) == 3
    assert _git_commits(dv.settings.git_repo) - before_commits == 3
    assert sorted(e["device"] for e in _events(dv)[-3:]) == sorted(changed_hosts)
    for host in changed_hosts:
        diff = dv("diff", host).stdout
        changed_lines = [l for l in diff.splitlines() if re.match(r"^[+-](?![+-]{2} )", l)]
        assert changed_lines, diff
        new_text = dv("show", host).stdout
        old_lines, new_lines = set(before_configs[host].splitlines()), set(new_text.splitlines())
        expected = sorted(["-" + l for l in old_lines - new_lines] + ["+" + l for l in new_lines - old_lines])
        assert sorted(changed_lines) == expected
        assert control.state(host)  # the lab knows the device
        assert len(changed_lines) <= 4, diff  # one change: a line or two, never the volatile header


def test_broken_devices_fail_cleanly_and_the_rest_succeed(dv):
    devices = sorted(dv.json("devices"), key=lambda d: d["name"])
    names = [d["name"] for d in devices]
    auth, hang, drop = names[0], names[1], names[2]
    healthy = names[3:]
    dv("lab", "fault", auth, "auth_fail")
    dv("lab", "fault", hang, "hang")
    dv("lab", "fault", drop, "disconnect")
    for host in (auth, hang, drop):
        dv("lab", "change", host)  # a new config exists on the device, but none may be stored
    before = _total_versions(dv)
    try:
        results = _backup(dv)
    finally:
        for host in (auth, hang, drop):
            dv("lab", "fault", host, "none")
    for host, cause in ((auth, r"authentication"), (hang, r"timed out|timeout"), (drop, r"connection (lost|closed)")):
        r = results[host]
        assert r["status"] == "failed", r
        assert r["error"].startswith(f"{host}: "), r
        assert re.search(cause, r["error"], re.I), r
        assert "lab-admin" not in r["error"] and "lab-admin" not in r.get("log", "")  # the lab's password
    assert all(results[h]["status"] in ("changed", "unchanged") for h in healthy), results
    after = _total_versions(dv)
    for host in (auth, hang, drop):
        assert after[host] == before[host]


def test_two_backups_of_one_host_at_once_one_is_skipped_locked(dv):
    host = sorted(d["name"] for d in dv.json("devices"))[5]
    dv("lab", "fault", host, "slow", "--delay", "1")
    try:
        env_cmd = ["backup", "--host", host, "--wait", "--json"]
        import json
        import os
        import sys

        from tests.conftest import ROOT

        procs = [
            subprocess.Popen([sys.executable, "-m", "cli", *env_cmd], env={**os.environ, **dv.env}, cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outs = [json.loads(p.communicate(timeout=300)[0]) for p in procs]
    finally:
        dv("lab", "fault", host, "none")
    statuses = sorted(o["results"][0]["status"] for o in outs)
    assert statuses in (["changed", "skipped_locked"], ["skipped_locked", "unchanged"]), outs


def test_consumer_killed_before_ack_then_restarted_applies_everything_once(dv):
    dv.consumer.stop()
    crashing = dv.process("consumer", "--name", "indexer-1", "--crash-after-commit", "3", name="consumer-crash").start()
    for host in sorted(d["name"] for d in dv.json("devices"))[6:9]:
        dv("lab", "change", host)
    started = dv.json("backup")  # no wait: the consumer will die on the way
    assert crashing.popen.wait(timeout=300) == 17  # exited after a commit, before its ack
    dv.consumer = dv.process("consumer", "--name", "indexer-1", name="consumer").start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        run = next(r for r in dv.json("runs") if r["run_id"] == started["run_id"])
        if run["finished_at"]:
            break
        time.sleep(0.5)
    assert run["finished_at"], run
    results = dv.json("run", started["run_id"])
    assert len(results) == 20
    assert len({r["device"] for r in results}) == 20  # each device's result exactly once
    events = _events(dv)
    assert len({e["version_id"] for e in events}) == len(events)  # one event per version, the crash included
    assert sorted(e["device"] for e in events if e["run_id"] == started["run_id"]) == sorted(
        r["device"] for r in results if r["status"] == "changed")
    versions = {d["name"]: dv.json("versions", d["name"]) for d in dv.json("devices")}
    for host, found in versions.items():
        shas = [v["sha256"] for v in found]
        assert all(a != b for a, b in zip(shas, shas[1:])), (host, shas)  # no version recorded twice
        for v in found:
            assert sorted(c["backend"] for c in v["copies"]) == ["fs", "git"], (host, v)


def test_a_target_down_across_two_runs_catches_up_without_storing_anything_twice(dv):
    """The fs root is replaced by a plain file (root cannot write below a file either) for two runs that
    each change the same two devices; then it comes back. Every copy lands with its ref, the outbox empties,
    and each version is on fs once (the newer version of a device waits for the older one)."""
    from jobs.deliver import outbox

    settings = dv.settings
    hosts = sorted(d["name"] for d in dv.json("devices"))[10:12]
    before = {h: len(dv.json("versions", h)) for h in hosts}
    commits = _git_commits(settings.git_repo)
    root, aside = settings.fs_root, settings.fs_root.with_name(settings.fs_root.name + ".aside")
    root.rename(aside)
    root.write_text("the fs target is down\n")
    try:
        for _ in range(2):
            for host in hosts:
                dv("lab", "change", host)
            results = _backup(dv, *[a for h in hosts for a in ("--host", h)])
            assert {r["status"] for r in results.values()} == {"changed"}, results
            pending = dv.json("pending")
            assert {p["device"] for p in pending} == set(hosts) and {p["target"] for p in pending} == {"fs"}
    finally:
        root.unlink()
        aside.rename(root)
    _eventually(lambda: dv.json("pending") == [], timeout=120, what="the fs copies to land")
    for host in hosts:
        versions = dv.json("versions", host)
        assert len(versions) == before[host] + 2
        for version in versions[-2:]:
            copies = {c["backend"]: c for c in version["copies"]}
            assert {c["status"] for c in copies.values()} == {"stored"} and all(c["ref"] for c in copies.values())
            stored = (settings.fs_root / copies["fs"]["ref"]).read_bytes()
            assert hashlib.sha256(stored).hexdigest() == version["sha256"]
        folder = (settings.fs_root / next(c["ref"] for c in versions[-1]["copies"] if c["backend"] == "fs")).parent
        assert len(list(folder.glob("*.cfg"))) == len(versions)  # nothing stored twice
    assert _git_commits(settings.git_repo) - commits == 4
    redis = _redis(dv)
    assert redis.hlen(outbox.ITEMS) == 0 and outbox.waiting(redis, ["git", "fs"]) == {"git": 0, "fs": 0}


def test_plain_ansible_playbook_writes_one_file_per_device(dv, tmp_path):
    """Plain ansible-playbook on a copy of the inventory in which one device has a wrong password: every other
    device gets its file, that one fails alone (in the recap), and the run says so with its exit status."""
    import os
    import re
    import shutil
    import sys

    import yaml

    inventory = tmp_path / "inventory"
    shutil.copytree(dv.settings.inventory, inventory)
    names = sorted(re.findall(r"^\s+([\w.-]+-ios-[\w.-]+):\s*$", (inventory / "hosts.yml").read_text(), re.M))
    bad = names[0]
    (inventory / "host_vars").mkdir(exist_ok=True)
    (inventory / "host_vars" / f"{bad}.yml").write_text(yaml.safe_dump({"ansible_password": "not-the-password"}))
    out = tmp_path / "configs"
    out.mkdir()
    env = {**os.environ, "LC_ALL": "C.UTF-8", "ANSIBLE_CONFIG": str(Path(__file__).resolve().parent.parent / "ansible.cfg"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
         "playbooks/backup.yml", "-e", f"backup_dir={out}", "--limit", "*-ios-*:*-routeros-*"],
        env=env, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=300,
    )
    recap = dict(re.findall(r"^([\w.-]+)\s+: ok=\d+\s+changed=\d+\s+unreachable=\d+\s+failed=(\d+)", proc.stdout, re.M))
    assert proc.returncode == 2 and recap.get(bad) == "1", proc.stdout[-3000:]
    assert {host for host, failed in recap.items() if failed != "0"} == {bad}
    files = sorted(p.name for p in out.iterdir())
    assert sorted(files) == sorted(f"{host}.cfg" for host in recap if host != bad)
    assert any("-ios-" in f for f in files) and any("-routeros-" in f for f in files)
    assert all((out / f).stat().st_size > 1000 for f in files)


def test_no_credential_reaches_index_git_logs_or_job_metadata(dv, redis_server):
    from redis import Redis

    secrets = [b"lab-admin", b"lab-enable"]  # the lab inventory's login and enable passwords
    places = [dv.home / "index.sqlite", *sorted((dv.home / "logs").glob("*.log"))]
    for place in places:
        data = place.read_bytes()
        assert not any(s in data for s in secrets), place
    history = subprocess.run(["git", "-C", str(dv.settings.git_repo), "log", "-p", "--all"], capture_output=True).stdout
    assert history and not any(s in history for s in secrets)
    import zlib

    def values(client, key) -> list[bytes]:
        kind = client.type(key)
        if kind == b"string":
            return [client.get(key) or b""]
        if kind == b"hash":
            return [k + b"=" + v for k, v in client.hgetall(key).items()]
        if kind == b"stream":
            return [v for _, fields in client.xrange(key) for v in fields.values()]
        if kind == b"list":
            return client.lrange(key, 0, -1)
        if kind in (b"set", b"zset"):
            return list(client.smembers(key)) if kind == b"set" else client.zrange(key, 0, -1)
        return []

    client = Redis.from_url(dv.settings.redis_url)
    for key in client.scan_iter(count=1000):
        for blob in values(client, key):
            try:
                blob += zlib.decompress(blob.split(b"=", 1)[-1])  # RQ stores job payloads compressed
            except zlib.error:
                pass
            assert not any(s in blob for s in secrets), key


def test_export_at_a_moment_gives_each_devices_newest_version_then_and_verifies(dv, tmp_path):
    """``export --at`` a time between two runs: every device's version newest at that time, laid out
    <group>/<host>.cfg with the stored bytes; ``--verify`` passes, and fails once one byte is changed;
    ``export --run`` of the first run gives every device's first version."""
    import json
    import tarfile
    from datetime import datetime

    versions = {d["name"]: dv.json("versions", d["name"]) for d in dv.json("devices") if d["versions"]}
    moments = sorted({v["created_at"] for vs in versions.values() for v in vs})
    assert len(moments) >= 2
    at = moments[len(moments) // 2]  # a moment some devices changed after
    out = tmp_path / "snapshot.tar.gz"
    dv("export", "--at", at, "-o", str(out))
    with tarfile.open(out) as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive if m.isfile()}
    manifest = json.loads(files.pop("MANIFEST.json"))
    expected = {}
    for name, vs in versions.items():
        before = [v for v in vs if datetime.fromisoformat(v["created_at"]) <= datetime.fromisoformat(at)]
        if before:
            expected[name] = before[-1]
    assert {d["device"]: d["version"] for d in manifest["devices"]} == {n: v["number"] for n, v in expected.items()}
    assert any(v["number"] < versions[n][-1]["number"] for n, v in expected.items()), "no device changed after"
    for entry in manifest["devices"]:
        assert hashlib.sha256(files[entry["path"]]).hexdigest() == entry["sha256"] == expected[entry["device"]]["sha256"]
        assert entry["path"].endswith(f"/{entry['device']}.cfg")
    assert len(files) == len(manifest["devices"])
    assert "ok" in dv("export", "--verify", str(out)).stdout
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    bad = dv("export", "--verify", str(out), check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr, bad.stderr
    first_run = dv.json("runs")[-1]["run_id"]  # newest first: the module's first backup
    dv("export", "--run", first_run, "-o", str(tmp_path / "first.tar.gz"))
    with tarfile.open(tmp_path / "first.tar.gz") as archive:
        first = json.loads(archive.extractfile("MANIFEST.json").read())
    assert first["devices"] and {d["version"] for d in first["devices"]} == {1}


def test_a_20_mb_configuration_is_one_version_equal_to_the_normalised_device_output(dv):
    """A chassis-sized configuration (20 MB) with the default timeouts: one version, whose stored text is
    exactly what the platform makes of the device's output (fetched again here through ``fetch_configs``),
    one git commit, and the index's sha256 of it."""
    from jobs.collect.fetch import fetch_configs
    from jobs.collect.normalize import normalize
    from jobs.collect.platforms import get_platform
    from lab.control import LabControl

    control = LabControl(dv.home / "lab")
    host = next(d["name"] for d in sorted(dv.json("devices"), key=lambda d: d["name"])
                if platform_key(d["platform"]) == "ios" and d["status"] != "failed")
    assert control.grow(host, 20 * 1024 * 1024) >= 20 * 1024 * 1024
    before, commits = _total_versions(dv), _git_commits(dv.settings.git_repo)
    started = time.monotonic()
    results = _backup(dv, "--host", host)
    took = time.monotonic() - started
    assert results[host]["status"] == "changed", results[host]
    assert _total_versions(dv)[host] == before[host] + 1
    assert _git_commits(dv.settings.git_repo) == commits + 1
    stored = dv("show", host).stdout
    assert len(stored) > 20 * 1024 * 1024
    fetched = fetch_configs([host], inventory=dv.settings.inventory, settings=dv.settings)[host]
    assert fetched.error is None, fetched.error
    expected = normalize(host, get_platform("ios"), fetched.outputs).text
    assert hashlib.sha256(stored.encode()).hexdigest() == hashlib.sha256(expected.encode()).hexdigest()
    assert dv.json("versions", host)[-1]["sha256"] == hashlib.sha256(expected.encode()).hexdigest()
    control.reset(host)
    print(f"\n20 MB configuration ({len(stored) / 2**20:.1f} MiB stored, default timeouts): "
          f"{_total_versions(dv)[host] - before[host]} version, {_git_commits(dv.settings.git_repo) - commits} commit, "
          f"stored text == normalised device output (sha256 {hashlib.sha256(expected.encode()).hexdigest()[:12]}); "
          f"backup --wait took {took:.1f} s")


def test_a_300_character_host_name_fails_alone_and_the_other_19_are_backed_up(dv):
    """A host whose name breaks Ansible's per-host files (300 characters; the same device as an ios host)
    with the 19 other devices: it fails with the reason, permanently, and the 19 are backed up (its batch
    included). The host leaves the inventory afterwards."""
    import yaml

    inventory = Path(dv.env["DEVICEVAULT_INVENTORY"]) / "hosts.yml"
    original = inventory.read_text()
    doc = yaml.safe_load(original)
    names = sorted(d["name"] for d in dv.json("devices"))[:19]
    ios = next(d["name"] for d in dv.json("devices") if platform_key(d["platform"]) == "ios")
    long_name = "core-" + "x" * 295
    for group in doc["all"]["children"].values():
        if ios in (group.get("hosts") or {}):
            group["hosts"][long_name] = dict(group["hosts"][ios] or {})
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        args = [a for name in [long_name, *names] for a in ("--host", name)]
        from tests.conftest import DeviceVault

        one_batch = DeviceVault({**dv.env, "DEVICEVAULT_BATCH_SIZE": "20"}, dv.home)  # all 20 in one batch
        results = _backup(one_batch, *args)
    finally:
        inventory.write_text(original)
    from redis import Redis

    from jobs.queues import Job, Queue

    run_id = dv.json("runs", "--limit", "1")[0]["run_id"]
    queue = Queue(dv.settings.collector_queue, connection=Redis.from_url(dv.settings.redis_url))
    ids = queue.finished_job_registry.get_job_ids() + queue.failed_job_registry.get_job_ids()
    batches = [j.meta["hosts"] for j in Job.fetch_many(ids, connection=queue.connection)
               if j is not None and j.meta.get("run_id") == run_id]
    assert [len(b) for b in batches] == [20], batches  # one batch, the long name in it
    failed = results[long_name]
    assert failed["status"] == "failed" and "File name too long" in failed["error"], failed
    assert "permanent" in failed["error"], failed
    assert sorted(results) == sorted([long_name, *names])
    assert all(results[h]["status"] in ("changed", "unchanged") for h in names), results
    reason = failed["error"].replace(long_name, f"core-x…({len(long_name)} chars)")
    print(f"\n300-character host name in a batch of {len(results)}: {len(names)} backed up, 1 failed: {reason}")
