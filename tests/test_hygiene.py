"""Queue hygiene against a real redis-server and a real RQ worker: a collection job that failed for good gives
each of its devices a ``failed`` result, checked against the inventory its run was started with."""

from __future__ import annotations

from redis import Redis
from rq import SimpleWorker

from jobs.ops.hygiene import check_queues
from jobs.queues import SERIALIZER, Job, Queue
from jobs.settings import Settings
from jobs.streams.results import DEVICE_RESULTS_STREAM, DeviceResult, DeviceStatus, parse


def test_a_collection_job_failed_for_good_reports_its_devices_with_their_runs_inventory(redis_server, tmp_path):
    redis = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/11")
    redis.flushdb()
    settings = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path)})
    queue = Queue(settings.collector_queue, connection=redis)
    job = queue.enqueue("builtins.int", "not a number",  # fails for good: no retry left
                        meta={"run_id": "r1", "hosts": ["a", "b"], "inventory": "/srv/other-inventory"})
    SimpleWorker([queue], connection=redis, job_class=Job, queue_class=Queue, serializer=SERIALIZER).work(burst=True)
    assert job.id in queue.failed_job_registry.get_job_ids()

    findings = check_queues(redis, settings, grace=0)
    assert [(f.kind, f.job_id, f.action) for f in findings] == [("failed_collection", job.id, "reported")]
    results = [parse(DEVICE_RESULTS_STREAM, fields) for _, fields in redis.xrange(DEVICE_RESULTS_STREAM)]
    assert all(isinstance(r, DeviceResult) for r in results)
    assert [(r.device, r.status, r.inventory) for r in results] == [
        ("a", DeviceStatus.FAILED, "/srv/other-inventory"), ("b", DeviceStatus.FAILED, "/srv/other-inventory")]
    assert all(f"collection job {job.id} failed" in r.error for r in results)
    assert check_queues(redis, settings, grace=0) == []  # reported once
    redis.flushdb()


def test_copies_leased_to_a_storage_job_that_is_gone_are_due_again_at_once(redis_server, tmp_path):
    """A copy's lease lasts as long as the storage job holding it can run: kept while the job waits in its
    queue, released by queue hygiene (and by every storage worker's retry pump) once the job has ended
    without landing it, and a claim that never got a job is released after outbox.HOLD_GRACE."""
    import time

    from jobs.deliver import outbox
    from jobs.deliver.outbox import StorageItem

    redis = Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/11")
    redis.flushdb()
    settings = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path)})
    item = StorageItem(task_id="t1", run_id="r1", device="d1", group="g", sha256="0" * 64, config="x",
                       collected_at=1.0, targets=("git",))
    orphan = StorageItem(task_id="t2", run_id="r1", device="d2", group="g", sha256="1" * 64, config="y",
                         collected_at=1.0, targets=("git",))
    outbox.add(redis, [item, orphan], lease=0, now=time.time() - 120)
    lease = settings.job_timeout + settings.lock_margin
    assert outbox.claim_due(redis, "git", lease, limit=1) == ["t1"]
    assert outbox.claim_due(redis, "git", lease, limit=1, now=time.time() - outbox.HOLD_GRACE - 1) == ["t2"]
    queue = Queue(settings.storage_queue_for("git"), connection=redis)
    job = queue.enqueue("builtins.int", "not a number")  # the storage job holding t1; it fails without landing
    outbox.hold(redis, "git", ["t1"], job.id)

    findings = check_queues(redis, settings, grace=0)  # t1's job waits in its queue: kept; t2 never got a job
    assert [(f.kind, f.action) for f in findings] == [("lost_copies", "released")]
    assert outbox.claim_due(redis, "git", lease) == ["t2"]

    SimpleWorker([queue], connection=redis, job_class=Job, queue_class=Queue, serializer=SERIALIZER).work(burst=True)
    assert outbox.claim_due(redis, "git", lease) == []  # still leased: only hygiene or a pump frees it
    findings = [f for f in check_queues(redis, settings, grace=0) if f.kind == "lost_copies"]
    assert [(f.queue, f.action) for f in findings] == [(settings.storage_queue_for("git"), "released")]
    assert outbox.claim_due(redis, "git", lease) == ["t1"]
    redis.flushdb()
