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
