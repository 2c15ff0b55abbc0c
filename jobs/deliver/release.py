"""After the decision: what the index consumer does once a device result's decision is committed.

The decider (``storage.index.records.apply_device_result``) decides in one transaction; these steps follow
the commit, in this order, and are all idempotent, because a consumer can die between the commit and the
acknowledgement and the message is then handled again (and the decision returned again):

1. a new version: its staged candidate is released to the targets of its copy rows, due at once, and ONE
   ``versions:created`` event is added (one guarded Lua script, :func:`jobs.deliver.outbox.release`: a second
   time does nothing); after its batches of messages the consumer claims what is due on those targets and
   enqueues one storage job per target and chunk (:meth:`Releaser.flush`). A target's versions are gathered
   for up to :data:`GATHER_SECONDS` after the first of them (or until a chunk is full) before its job is
   enqueued: collectors publish each device as soon as it is fetched, so without the gathering a batch of 50
   devices would become a storage job (an RQ work horse, a ``git fast-import``) per few devices. And while
   the target's last job still waits in its queue (busy workers), no other is enqueued: the versions stay
   due, and that job claims them when it starts (``jobs.deliver.store.claim_more``). If the
   consumer dies after the release and before the enqueue, the items are due already and the workers'
   retry pump hands them to a job within ``DEVICEVAULT_RETRY_POLL``. A new version whose text is not in the
   outbox (Redis lost it) gets a ``pending`` outcome per copy naming the loss, and is stored from the
   device's next read of the same configuration (:meth:`Releaser._lost`);
2. not a new version: the staged candidate is discarded (after standing in for a lost one of the same text);
3. the collector's cache is set to the device's newest version (or dropped when the index contradicted it,
   or the version's text was lost).

Storage jobs therefore only ever see versions the index already has.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from redis import Redis

from jobs.collect import cache
from jobs.deliver import outbox
from jobs.streams.events import VERSIONS_CREATED_STREAM, version_created
from storage.index.statuses import DeviceStatus

log = logging.getLogger(__name__)

#: enqueue(target, item_ids) -> puts one storage job on the target's queue
Enqueue = Callable[[str, list[str]], Any]

#: seconds the consumer gathers a target's released versions, from the first, before enqueuing their storage
#: job (a full chunk goes at once). What it costs: a version reaches storage up to this much (plus the
#: consumer's block time, 1 s) later. What it saves: at 500 devices in batches of 50, 4-5 storage jobs per
#: target and batch became 1-2 (``bench.e2e``'s processes per batch).
GATHER_SECONDS = 2.0


class Releaser:
    """The after-commit steps of one consumer; storage jobs are enqueued per target, gathered for up to
    ``gather`` seconds (0: at every :meth:`flush`; the consumer's is :data:`GATHER_SECONDS`)."""

    def __init__(self, redis: Redis, lease: float, enqueue: Enqueue | None, *, chunk: int = 50,
                 gather: float = 0.0, clock: Callable[[], float] = time.monotonic,
                 waiting: Callable[[str], bool] | None = None):
        self.redis = redis
        self.lease = lease
        self.enqueue = enqueue
        self.chunk = max(1, chunk)
        self.gather = max(0.0, gather)
        self.clock = clock
        self.waiting = waiting  # job id -> does that storage job still wait in its queue (None: never asked)
        self._targets: dict[str, list] = {}  # target -> [when its first waiting version was released, how many]

    @classmethod
    def from_settings(cls, redis: Redis, settings: Any = None) -> "Releaser":
        """Storage jobs go to ``storage.<type>`` queues of the settings' storage layout, through
        ``jobs.tasks.enqueue_store``; the lease is the storage jobs' (``jobs.deliver.store.lease_seconds``)."""
        from jobs.deliver.locations import StorageLayout
        from jobs.deliver.store import job_waiting, lease_seconds
        from jobs.settings import Settings
        from jobs.tasks import enqueue_store

        settings = settings or Settings.load()
        layout = StorageLayout.load(settings)
        return cls(redis, lease_seconds(settings),
                   lambda target, ids: enqueue_store(redis, settings, layout, target, ids), chunk=settings.batch_size,
                   gather=GATHER_SECONDS, waiting=lambda job_id: job_waiting(redis, job_id))

    def after_commit(self, decision: Any) -> None:
        """The steps for one committed :class:`storage.index.records.Decision`."""
        lost = False
        if decision.created:
            state = outbox.release(self.redis, decision.task_id, decision.targets,
                                   event=(VERSIONS_CREATED_STREAM, version_created(decision)))
            if state == 2:
                for target in decision.targets:
                    self._targets.setdefault(target, [self.clock(), 0])[1] += 1
            elif state == 0:  # released before; a candidate staged again since (a rerun job) is not needed
                outbox.discard(self.redis, decision.task_id)
            elif state == 1 and decision.targets:
                self._lost(decision)
                lost = True
        elif decision.discard:
            restored = outbox.restore_lost(self.redis, decision.device, decision.task_id)
            if restored is not None:
                log.warning("%s: version %s of run %s, whose text Redis had lost, is stored from run %s's read of "
                            "the same configuration", decision.device, restored.sha256[:12], restored.run_id,
                            decision.run_id)
                for target in restored.targets:
                    self._targets.setdefault(target, [self.clock(), 0])[1] += 1
            outbox.discard(self.redis, decision.task_id)
        if decision.drop_cache or lost:
            cache.forget(self.redis, decision.device)
        elif decision.version_id is not None and decision.status in DeviceStatus.OK:
            cache.remember(self.redis, decision.device, decision.version_id, decision.view_sha256, decision.sha256)

    def _lost(self, decision: Any) -> None:
        """A new version whose text is not in the outbox (Redis lost it after the collector staged it): its
        copies get a ``pending`` outcome naming the loss (so its run finishes), the collector's cache is
        dropped (so the device's next backup reads and stages its configuration), and the loss is remembered:
        a next read with the same text is stored as this version (``outbox.restore_lost``), without a person."""
        from jobs.streams.results import STORAGE_RESULTS_STREAM, StorageResult, StorageStatus, utcnow

        outbox.mark_lost(self.redis, decision.task_id, decision.run_id, decision.device, decision.sha256,
                         decision.targets)
        error = ("its text was lost with Redis before it could be stored; it is stored from the device's next "
                 "backup that reads the same configuration")
        pipe = self.redis.pipeline(transaction=True)
        for target in decision.targets:
            pipe.xadd(STORAGE_RESULTS_STREAM, StorageResult(
                task_id=f"{decision.task_id}:{target}:lost", run_id=decision.run_id, device=decision.device,
                backend=target, status=StorageStatus.PENDING, timestamp=utcnow(), group=decision.group,
                sha256=decision.sha256, error=error).to_message())
        pipe.execute()
        log.error("%s: version %s of run %s is in the index but its text is not in the storage outbox (Redis lost "
                  "it): %s", decision.device, decision.sha256[:12], decision.run_id, error)

    def flush(self) -> None:
        """Claim what is due on the targets released to since the last flush (leased to the job) and enqueue
        one storage job per target and chunk, recorded as the holder of their leases; a target whose first
        waiting version is younger than ``gather`` seconds and whose versions fill no chunk waits for a later
        call (the consumer calls this after every read, at least once per block time). A failure to enqueue
        is logged, not raised: a claim that names no job is freed ``outbox.HOLD_GRACE`` seconds later by a
        worker's retry pump (``jobs.deliver.store.requeue_due``). Without ``enqueue`` nothing is claimed (the
        pump does it)."""
        now = self.clock()
        targets = [target for target, (since, count) in self._targets.items()
                   if now - since >= self.gather or count >= self.chunk]
        for target in targets:
            del self._targets[target]
        if self.enqueue is None:
            return
        for target in sorted(targets):
            if self.waiting is not None and (job_id := outbox.waiting_job(self.redis, target)) \
                    and self.waiting(job_id):  # it claims what is due when it starts; asked again next time
                self._targets.setdefault(target, [now - self.gather, 0])
                continue
            last = None
            while ids := outbox.claim_due(self.redis, target, self.lease, limit=self.chunk):
                try:
                    job = self.enqueue(target, ids)
                except Exception as exc:  # noqa: BLE001 - the workers' retry pumps hand them out again
                    log.warning("could not enqueue the storage job for %d version(s) on %s (a worker's retry "
                                "pump hands them out again within a minute): %s", len(ids), target, exc)
                    break
                job_id = getattr(job, "id", None)
                try:
                    if isinstance(job_id, str) and job_id:
                        outbox.hold(self.redis, target, ids, job_id)
                        last = job_id
                except Exception as exc:  # noqa: BLE001 - an unrecorded claim is freed after outbox.HOLD_GRACE
                    log.warning("could not record the storage job holding %d version(s) on %s: %s",
                                len(ids), target, exc)
            if last and self.waiting is not None:
                try:
                    outbox.note_waiting(self.redis, target, last, self.lease)
                except Exception as exc:  # noqa: BLE001 - without it the next flush just enqueues another job
                    log.warning("could not record the storage job waiting on %s: %s", target, exc)
