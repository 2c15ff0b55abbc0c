"""The storage outbox (real Redis) and the storage layout file."""

from __future__ import annotations

import base64
import time

import pytest

from jobs.deliver import outbox
from jobs.deliver.locations import StorageConfigError, StorageLayout, TargetConfig
from jobs.deliver.outbox import StorageItem
from jobs.settings import Settings


@pytest.fixture()
def r(redis_server):
    from redis import Redis

    client = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/7")
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def item(device: str, n: int, targets=("git", "s3")) -> StorageItem:
    return StorageItem(task_id=f"run{n}:{device}", run_id=f"run{n}", device=device, group="g", sha256=f"{n:064x}",
                       config=f"hostname {device}\n! v{n}\n", collected_at=1000.0 + n, targets=tuple(targets))


def test_an_item_leaves_the_outbox_only_when_every_target_has_it(r):
    a = item("r1", 1)
    outbox.add(r, [a], lease=60)
    assert outbox.load(r, [a.task_id]) == [a]
    assert outbox.claim_due(r, "git", lease=60) == []  # leased to the job being enqueued
    outbox.done(r, "git", a)
    assert outbox.load(r, [a.task_id]) == [a]  # s3 still needs it
    assert outbox.waiting(r, ["git", "s3"]) == {"git": 0, "s3": 1}
    outbox.done(r, "s3", a)
    assert outbox.load(r, [a.task_id]) == []
    assert list(r.scan_iter()) == []  # nothing left behind


def test_a_lost_job_lease_expires_and_the_item_is_due_again(r):
    a = item("r1", 1)
    outbox.add(r, [a], lease=0.2)
    time.sleep(0.3)
    assert outbox.claim_due(r, "s3", lease=60) == [a.task_id]
    assert outbox.claim_due(r, "s3", lease=60) == []  # a second claimer gets nothing while leased


def test_failures_back_off_exponentially_and_keep_the_error(r):
    a = item("r1", 1)
    outbox.add(r, [a], lease=60)
    now = 10_000.0
    delays = []
    for _ in range(5):
        tries, due = outbox.failed(r, "s3", a, "s3 endpoint unreachable", base=2, cap=20, now=now)
        delays.append(due - now)
    assert [round(d / x) for d, x in zip(delays, [2, 4, 8, 16, 20])] == [1] * 5
    assert tries == 5 and outbox.tries(r, "s3", a.task_id) == 5
    assert r.hget("storage:outbox:error:s3", a.task_id) == b"s3 endpoint unreachable"
    outbox.done(r, "s3", a)
    assert outbox.tries(r, "s3", a.task_id) == 0


def test_a_newer_version_waits_for_an_older_one_of_the_same_device(r):
    old, new, other = item("r1", 1), item("r1", 2), item("r2", 3)
    outbox.add(r, [new, old, other], lease=60)
    assert outbox.older_waiting(r, "git", new) == old.task_id
    assert outbox.older_waiting(r, "git", old) is None
    assert outbox.older_waiting(r, "git", other) is None
    assert [i.task_id for i in outbox.load(r, [new.task_id, old.task_id])] == [old.task_id, new.task_id]
    outbox.done(r, "git", old)
    assert outbox.older_waiting(r, "git", new) is None


def test_a_newer_version_put_back_behind_a_leased_older_one_is_due_once_that_one_lands(r):
    """Two jobs hold a device's versions apart: the newer one is put back "just after the older one is due",
    which for a leased older one is its lease's end (960 s by default). Its landing makes the newer one due
    at once, unless a job holds it."""
    old, new, other = item("r1", 1), item("r1", 2), item("r1", 3)
    outbox.add(r, [old], lease=60)  # leased to a job storing it
    outbox.add(r, [new, other], lease=0)
    now = time.time()
    due = outbox.defer(r, "git", new, old.task_id)
    assert due > now + 50  # behind the older one's lease
    outbox.done(r, "git", old, now=now)
    assert r.zscore("storage:outbox:due:git", new.task_id) <= now  # next in the device's order: due now
    assert sorted(outbox.claim_due(r, "git", lease=60, now=now)) == [new.task_id, other.task_id]
    outbox.done(r, "git", new, now=now + 1)  # the next one ('other') is held by a job: left as it is
    assert r.zscore("storage:outbox:due:git", other.task_id) > now + 50


# --- the layout ------------------------------------------------------------------------------------------
KEY = base64.b64encode(b"k" * 32).decode()


def layout(tmp_path, text: str | None, **env) -> StorageLayout:
    environ = {"DEVICEVAULT_HOME": str(tmp_path), **env}
    if text is not None:
        (tmp_path / "storage.yml").write_text(text)
    return StorageLayout.load(Settings.load(env=environ))


def test_without_a_file_the_default_location_is_the_targets_setting(tmp_path):
    lay = layout(tmp_path, None, DEVICEVAULT_TARGETS="fs,s3", DEVICEVAULT_FS_KEEP_LAST="3")
    assert lay.targets_for("anything") == ["fs", "s3"]
    assert lay.targets["fs"] == TargetConfig(name="fs", type="fs", keep_last=3)
    assert (lay.targets["s3"].keep_last, lay.targets["s3"].keep_days) == (None, 365)
    assert lay.targets["git"].has_retention is False
    assert lay.queue_for("s3") == "storage.s3"


def test_groups_and_the_inventory_variable_choose_a_location(tmp_path):
    lay = layout(tmp_path, "targets: {git: {type: git}, vault: {type: fs, encrypt: true}}\n"
                           "locations: {default: [git], safe: [git, vault]}\ngroups: {dc1: safe}\n",
                 DEVICEVAULT_ENCRYPTION_KEYS=f"k1:{KEY}")
    assert lay.targets_for("dc1") == ["git", "vault"]
    assert lay.targets_for("dc2") == ["git"]
    assert lay.targets_for("dc2", "safe") == ["git", "vault"]
    assert lay.key_id_for("vault") == "k1" and lay.key_id_for("git") == ""
    assert lay.types() == ["fs", "git"]
    with pytest.raises(StorageConfigError, match="unknown location 'nowhere'"):
        lay.targets_for("dc1", "nowhere")


@pytest.mark.parametrize(
    "text, env, message",
    [
        ("targets: [", {}, "not valid YAML"),
        ("locations: {default: [nas]}\n", {}, "location 'default' names unknown target 'nas'"),
        ("targets: {x: {type: tape}}\n", {}, "unknown type 'tape'"),
        ("targets: {fs: {type: fs, compression: lzma}}\n", {}, "compression 'lzma'"),
        ("targets: {fs: {type: fs, keep_last: many}}\n", {}, "keep_last must be a whole number"),
        ("targets: {fs: {type: fs, encrypt: true}}\n", {}, "DEVICEVAULT_ENCRYPTION_KEYS is empty"),
        ("targets: {fs: {type: fs}}\ngroups: {dc1: offsite}\n", {}, "group 'dc1' uses unknown location 'offsite'"),
        ("", {"DEVICEVAULT_ENCRYPTION_KEYS": "k1:c2hvcnQ="}, "key 'k1' is 5 bytes"),
    ],
)
def test_a_bad_storage_file_names_the_file_and_the_cause(tmp_path, text, env, message):
    with pytest.raises(StorageConfigError, match=message) as info:
        lay = layout(tmp_path, text, **env)
        lay.keys  # keys are parsed on first use
    if "KEYS" not in str(env):
        assert str(tmp_path / "storage.yml") in str(info.value)
    assert "c2hvcnQ" not in str(info.value)


def test_secrets_print_as_redacted(tmp_path):
    settings = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_ENCRYPTION_KEYS": f"k1:{KEY}",
                                  "DEVICEVAULT_S3_SECRET_ACCESS_KEY": "topsecret-s3"})
    text = repr(settings)
    assert KEY not in text and "topsecret-s3" not in text and text.count("REDACTED") == 2
    lay = StorageLayout.load(settings)
    assert "topsecret-s3" not in repr(lay.targets["s3"])


# --- storage jobs against real targets (fs in a temp dir, an S3 endpoint nobody listens on) -------------
def test_a_down_target_keeps_its_copies_pending_while_the_others_store(tmp_path, r):
    from cli.services import free_port
    from jobs.streams.results import StorageStatus
    from jobs.deliver.store import lease_seconds, requeue_due, store_to_target

    dead = f"http://127.0.0.1:{free_port()}"
    lay = layout(tmp_path, "targets: {fs: {type: fs}, s3: {type: s3, bucket: nowhere}}\n"
                           "locations: {default: [fs, s3]}\n",
                 DEVICEVAULT_S3_ENDPOINT_URL=dead, DEVICEVAULT_S3_ACCESS_KEY_ID="x", DEVICEVAULT_S3_SECRET_ACCESS_KEY="y",
                 DEVICEVAULT_RETRY_BASE="0.1", DEVICEVAULT_RETRY_MAX="0.2")
    settings = lay.settings
    items = [item("r1", 1, ("fs", "s3")), item("r1", 2, ("fs", "s3")), item("r2", 3, ("fs", "s3"))]
    outbox.add(r, items, lease_seconds(settings))  # as the decider's release leaves them: leased to a job

    fs_out = store_to_target(r, settings, lay, "fs", [i.task_id for i in items])
    assert [o.status for o in fs_out] == [StorageStatus.STORED] * 3
    assert len(list((tmp_path / "fs").rglob("*.cfg"))) == 3
    s3_out = store_to_target(r, settings, lay, "s3", [i.task_id for i in items])
    assert [o.status for o in s3_out] == [StorageStatus.PENDING] * 3
    assert all("unreachable" in o.error or "cannot open" in o.error for o in s3_out), s3_out
    assert outbox.waiting(r, ["fs", "s3"]) == {"fs": 0, "s3": 3}
    assert outbox.load(r, [i.task_id for i in items]) == sorted(items, key=lambda i: i.collected_at)

    time.sleep(0.3)  # the backoff is over: a worker's pump hands them to a new job
    handed: list[tuple[str, list[str]]] = []
    assert requeue_due(r, settings, lay, lambda t, ids: handed.append((t, ids))) == {"s3": 3}
    assert [(t, sorted(ids)) for t, ids in handed] == [("s3", sorted(i.task_id for i in items))]
    assert requeue_due(r, settings, lay, lambda t, ids: handed.append((t, ids)), types=["s3"]) == {}  # leased


def test_items_carrying_secrets_wait_in_redis_encrypted(tmp_path):
    import hashlib

    from jobs.deliver.outbox import StorageItem, seal, unseal
    from storage.codec import Codec

    codec = Codec(keys={"k1": hashlib.sha256(b"outbox").digest()})
    item = StorageItem(task_id="r:h", run_id="r", device="h", group="g", sha256="x",
                       config="username admin secret 9 $9$topsecret\n", raw="raw $9$topsecret caf\udce9\n")
    sealed = seal(item, codec)
    assert sealed.sealed and "topsecret" not in sealed.to_json()
    back = unseal(StorageItem.from_json(sealed.to_json()), codec)
    assert back == item


# --- staged, then released or discarded by the decider -----------------------------------------------------
def test_a_staged_candidate_is_invisible_until_released_and_released_once(r):
    a, b = item("r1", 1), item("r2", 2)
    outbox.stage(r, [a, b])
    assert outbox.waiting(r, ["git", "s3"]) == {"git": 0, "s3": 0}  # no storage job sees a candidate
    assert outbox.claim_due(r, "git", lease=0, now=10**10) == []
    event = ("versions:created", {"version_id": "7", "device": "r1"})
    assert outbox.release(r, a.task_id, a.targets, event=event) == 2
    assert outbox.release(r, a.task_id, a.targets, event=event) == 0  # a redelivery: nothing again
    assert outbox.waiting(r, ["git", "s3"]) == {"git": 1, "s3": 1}
    assert [f for _, f in r.xrange("versions:created")] == [{b"version_id": b"7", b"device": b"r1"}]
    assert outbox.discard(r, a.task_id) is False  # a released item is never discarded
    assert outbox.discard(r, b.task_id) is True and outbox.load(r, [b.task_id]) == []
    for target in a.targets:
        outbox.done(r, target, a)
    assert outbox.release(r, a.task_id, a.targets, event=event) == 0  # landed: never again
    assert outbox.waiting(r, ["git", "s3"]) == {"git": 0, "s3": 0} and r.xlen("versions:created") == 1


def test_a_copy_deferred_behind_an_older_one_and_then_stored_ends_stored_in_the_index(tmp_path, r):
    """The defect of issue 11: a deferred copy's PENDING outcome and its later STORED outcome shared one task
    id, so the index dropped the STORED one and showed the copy pending forever. Here the fs root is a plain
    file (root hits that too) across two versions of one device, then a directory again."""
    from datetime import datetime, timezone

    from jobs.deliver.store import lease_seconds, store_to_target
    from jobs.streams.results import DeviceResult, DeviceStatus
    from storage.index.db import connect
    from storage.index.models import Copy
    from storage.index.records import apply_device_result, apply_storage_result

    root = tmp_path / "fs"
    root.write_text("not a directory\n")
    lay = layout(tmp_path, "targets: {fs: {type: fs}}\nlocations: {default: [fs]}\n",
                 DEVICEVAULT_RETRY_BASE="0", DEVICEVAULT_RETRY_MAX="0")
    settings = lay.settings
    sessions = connect(f"sqlite:///{tmp_path / 'index.sqlite'}")
    old, new = item("r1", 1, ("fs",)), item("r1", 2, ("fs",))
    outcomes = []
    for version in (old, new):
        with sessions.begin() as session:
            apply_device_result(session, DeviceResult(
                task_id=version.task_id, run_id=version.run_id, device="r1", status=DeviceStatus.CHANGED,
                timestamp=datetime.fromtimestamp(version.collected_at, timezone.utc), group="g",
                sha256=version.sha256, size=10, targets="fs"))
        outbox.add(r, [version], lease_seconds(settings))
        outcomes += store_to_target(r, settings, lay, "fs", [version.task_id])  # the job the release enqueues
    assert [o.status.value for o in outcomes] == ["pending", "pending"]
    assert "waiting for an older version" in outcomes[1].error and outcomes[1].attempt == 1  # deferred
    root.unlink()
    outcomes += store_to_target(r, settings, lay, "fs", [old.task_id, new.task_id])
    assert [o.status.value for o in outcomes[2:]] == ["stored", "stored"] and outcomes[3].attempt == 1
    assert len({o.task_id for o in outcomes}) == len(outcomes)  # no two outcomes share a task id
    with sessions.begin() as session:
        for outcome in outcomes:
            apply_storage_result(session, outcome)
    with sessions() as session:
        copies = session.query(Copy).order_by(Copy.id).all()
        assert [(c.status, c.ref) for c in copies] == [("stored", o.ref) for o in outcomes[2:]]
    assert outbox.waiting(r, ["fs"]) == {"fs": 0} and outbox.load(r, [old.task_id, new.task_id]) == []
    assert len(list(root.rglob("*.cfg"))) == 2
    # the same versions stored again (a job that died before outbox.done): nothing stored twice
    outbox.add(r, [old, new], lease_seconds(settings))
    again = store_to_target(r, settings, lay, "fs", [old.task_id, new.task_id])
    assert [o.ref for o in again] == [o.ref for o in outcomes[2:]] and len(list(root.rglob("*.cfg"))) == 2
