"""The storage outbox: every copy still to be written, kept in Redis until it has landed.

A candidate is *staged* here by the collector (:func:`stage`: its text, sealed when it carries secrets) in
the same Redis transaction that publishes its device result. The decider (the index consumer) then either
*releases* it (:func:`release`, after committing the new version: the targets it must reach, its due times
and its place in the device's order, plus the ``versions:created`` event, all in one Lua script guarded so
that doing it again changes nothing) or *discards* it (:func:`discard`: the configuration was not new). Only
released items are seen by storage jobs. A copy leaves the outbox only when its target has stored it. So a
target that is down, or a worker that dies in the middle of a store, loses nothing: the copy stays, and is
handed to a storage job again when it is due.

Keys
----
``storage:outbox:items``            hash   item id -> the :class:`StorageItem` as JSON (text included)
``storage:outbox:left:<item id>``   set    targets the item has still to reach
``storage:outbox:due:<target>``     zset   item id -> when it is next due (epoch seconds)
``storage:outbox:order:<target>:<device>`` zset item id -> collection time (per-device order)
``storage:outbox:tries:<target>``   hash   item id -> failed attempts so far
``storage:outbox:error:<target>``   hash   item id -> the last error
``storage:outbox:released:<item id>`` string set once the item was released (guard; expires after
                                    :data:`RELEASE_GUARD_TTL`, by when the message that released it is long
                                    acknowledged)
``storage:outbox:lease:<target>``   hash   item id -> ``<claimed at>|<job id>``: who holds its lease (the job
                                    id is empty until the job is enqueued, :func:`hold`)
``storage:outbox:lost:<device>``    string a version the decider made whose text was not here to release (Redis
                                    lost it): the device's next candidate with the same text is stored as
                                    that version (:func:`mark_lost`, :func:`restore_lost`)
``storage:outbox:waiting:<target>`` string the id of the newest storage job enqueued for the target by the
                                    consumer (:func:`note_waiting`); while that job still waits in its queue,
                                    new versions are left due for it: it claims what is due when it starts

Due times are *leases*: handing an item to a job pushes its due time ``lease`` seconds ahead, so if that
job is lost (worker killed, job deleted) the item becomes due again by itself. A failed attempt sets the
due time by exponential backoff (``retry_base * 2**(tries-1)``, at most ``retry_max``, +/-10 % jitter).
The lease is the storage job's hard limit plus a margin (960 s by default), far too long to wait for a job
that died with its worker, so every claim also records its holder (``storage:outbox:lease:<target>``), and
:func:`free_lost` (run by every storage worker's retry pump before it claims, ``jobs.deliver.store``) makes
an item due at once when the job holding it is gone: its worker's heartbeat has expired or its process is
dead (the work horse dies with it), the job ended or vanished, or no job was enqueued for it within
:data:`HOLD_GRACE` seconds of the claim (the claimer died, or Redis went away, in between).

Per device and target, versions land in the order they were collected: a job that finds an older version
of the same device still waiting for this target puts the newer one back (git's tip must be the newest).
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, replace

from redis import Redis

ITEMS = "storage:outbox:items"
#: how long the guard of a release is kept (a redelivered device result within this time releases nothing
#: again and announces nothing again; the index's copy rows say the rest)
RELEASE_GUARD_TTL = 30 * 24 * 3600
#: the ``versions:created`` stream keeps about this many entries (MAXLEN ~)
EVENTS_MAXLEN = 100_000
#: seconds a claim may stay without a job recorded as its holder before :func:`free_lost` frees it
HOLD_GRACE = 60.0


def _released(item_id: str) -> str:
    return f"storage:outbox:released:{item_id}"


def _left(item_id: str) -> str:
    return f"storage:outbox:left:{item_id}"


def _due(target: str) -> str:
    return f"storage:outbox:due:{target}"


def _order(target: str, device: str) -> str:
    return f"storage:outbox:order:{target}:{device}"


def _tries(target: str) -> str:
    return f"storage:outbox:tries:{target}"


def _errors(target: str) -> str:
    return f"storage:outbox:error:{target}"


def _waiting(target: str) -> str:
    return f"storage:outbox:waiting:{target}"


def _leases(target: str) -> str:
    return f"storage:outbox:lease:{target}"


def _lost(device: str) -> str:
    return f"storage:outbox:lost:{device}"


@dataclass(frozen=True)
class StorageItem:
    """One new version of one device, to be stored on each target of its location (plain data)."""

    task_id: str
    run_id: str
    device: str
    group: str
    sha256: str
    config: str
    collected_at: float = 0.0  # epoch seconds; orders a device's versions on every target
    targets: tuple[str, ...] = ()
    author: str = ""
    #: the device output exactly as read (``devicevault_keep_raw``): stored next to the version on the
    #: encrypted targets only, so the version can be restored with its secrets and everything else
    raw: str = ""
    #: config and raw are encrypted (base64 of an AES-GCM envelope, :func:`seal`): they carry secrets
    sealed: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> "StorageItem":
        data = json.loads(raw)
        data["targets"] = tuple(data.get("targets") or ())
        return cls(**data)


def seal(item: StorageItem, codec) -> StorageItem:
    """``item`` with its texts encrypted, for as long as it waits in Redis (kept secrets, raw output)."""
    if item.sealed:
        return item

    def enc(text: str) -> str:
        return base64.b64encode(codec.encode(text.encode("utf-8", errors="surrogateescape"))).decode() if text else ""

    return replace(item, config=enc(item.config), raw=enc(item.raw), sealed=True)


def unseal(item: StorageItem, codec) -> StorageItem:
    """The readable item again (the storage job, just before it writes the copy)."""
    if not item.sealed:
        return item

    def dec(text: str) -> str:
        return codec.decode(base64.b64decode(text)).decode("utf-8", errors="surrogateescape") if text else ""

    return replace(item, config=dec(item.config), raw=dec(item.raw), sealed=False)


def stage(redis, items: list[StorageItem]) -> None:
    """Keep the candidates' texts until the decider releases or discards them. ``redis`` may be a pipeline
    (the collector stages and publishes the device results in one transaction). A candidate already staged
    under the same id (a collection job run again after it published) is kept: it is the one decided on."""
    for item in items:
        redis.hsetnx(ITEMS, item.task_id, item.to_json())


_DISCARD = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""


def discard(redis: Redis, item_id: str) -> bool:
    """Forget a staged candidate that was not a new version (never one that was released)."""
    return bool(redis.eval(_DISCARD, 2, ITEMS, _left(item_id), item_id))


_RELEASE = """
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local n = tonumber(ARGV[6])
local released = 0
if n > 0 and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  for i = 1, n do
    redis.call('SADD', KEYS[3], ARGV[6 + i])
    redis.call('ZADD', KEYS[3 + 2 * i], 'NX', ARGV[3], ARGV[2])
    redis.call('ZADD', KEYS[4 + 2 * i], 'NX', ARGV[4], ARGV[2])
  end
  released = 1
end
if ARGV[5] ~= '' then
  local fields = {}
  for i = 7 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(fields))
end
return 1 + released
"""


def release(redis: Redis, item_id: str, targets: list[str] | tuple[str, ...], *,
            event: tuple[str, dict[str, str]] | None = None, now: float | None = None) -> int:
    """Hand the staged item ``item_id`` to ``targets`` (due at once: whoever claims it first, the releasing
    consumer or a worker's retry pump, enqueues its job) and add ``event`` = ``(stream, fields)``, atomically
    and at most once per item.

    Returns 0 when the item was released before (nothing done: the guard key exists), 1 when only the event
    was added (the item's text is not in the outbox: lost with Redis, or no targets), 2 when both were done.
    """
    now = time.time() if now is None else now
    raw = redis.hget(ITEMS, item_id)
    item = StorageItem.from_json(raw) if raw is not None else None
    targets = list(targets) if item is not None else []
    keys = [_released(item_id), ITEMS, _left(item_id), event[0] if event else "-"]
    for target in targets:
        keys += [_due(target), _order(target, item.device)]
    fields = [str(x) for kv in (event[1].items() if event else ()) for x in kv]
    args = [RELEASE_GUARD_TTL, item_id, repr(now), repr(item.collected_at if item else 0.0),
            EVENTS_MAXLEN if event else "", len(targets), *targets, *fields]
    return int(redis.eval(_RELEASE, len(keys), *keys, *args))


def add(redis: Redis, items: list[StorageItem], lease: float, now: float | None = None) -> None:
    """Put ``items`` in the outbox for every one of their targets, leased for ``lease`` seconds (the job
    about to be enqueued holds them): staging and releasing in one step, without a decision (tests, tools)."""
    now = time.time() if now is None else now
    pipe = redis.pipeline(transaction=True)
    for item in items:
        pipe.hset(ITEMS, item.task_id, item.to_json())
        pipe.sadd(_left(item.task_id), *item.targets)
        for target in item.targets:
            pipe.zadd(_due(target), {item.task_id: now + lease}, nx=True)
            pipe.zadd(_order(target, item.device), {item.task_id: item.collected_at}, nx=True)
    pipe.execute()


def load(redis: Redis, item_ids: list[str]) -> list[StorageItem]:
    """The items still in the outbox, in collection order (items already finished are left out)."""
    if not item_ids:
        return []
    raws = redis.hmget(ITEMS, item_ids)
    items = [StorageItem.from_json(raw) for raw in raws if raw is not None]
    return sorted(items, key=lambda i: (i.collected_at, i.task_id))


def pending_text(redis: Redis, item_id: str, sha256: str, codec=None) -> bytes | None:
    """The text of a version no target has stored yet, from the outbox: what its storage jobs will write
    (unsealed with ``codec``), if the item is still here and is that version (``sha256`` of the text as
    stored). None otherwise (stored meanwhile, or not this version)."""
    from jobs.collect.normalize import to_bytes

    items = load(redis, [item_id])
    if not items:
        return None
    text = to_bytes(unseal(items[0], codec).config)
    return text if hashlib.sha256(text).hexdigest() == sha256 else None


def unstored_text(redis: Redis, copies, *, run_id: str, device: str, sha256: str, codec=None) -> bytes | None:
    """The text of version ``sha256`` of ``device`` (made by run ``run_id``) when none of its ``copies``
    (``(backend, ref, status)``) has landed yet: read from the outbox (:func:`pending_text`). None when a copy
    has landed (read that), or the outbox no longer has it. Where a version is shown (the portal, ``show``,
    ``diff``) this is the fallback for one a backup has just made: its storage jobs may not have run yet."""
    from jobs.streams.results import device_task_id
    from storage.index.statuses import CopyStatus

    if any(status in CopyStatus.LANDED for _, _, status in copies):
        return None
    return pending_text(redis, device_task_id(run_id, device), sha256, codec)


_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  redis.call('HSET', KEYS[2], id, ARGV[1] .. '|')
end
return ids
"""


def claim_due(redis: Redis, target: str, lease: float, *, limit: int = 100, now: float | None = None) -> list[str]:
    """Item ids due on ``target``, each leased for ``lease`` seconds to the caller (atomic: two workers
    never claim the same item at once). The claim is recorded without a holder; :func:`hold` names the job
    once it is enqueued."""
    now = time.time() if now is None else now
    ids = redis.eval(_CLAIM, 2, _due(target), _leases(target), repr(now), repr(now + lease), limit)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


_HOLD = """
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v and string.sub(v, -1) == '|' then redis.call('HSET', KEYS[1], ARGV[i], v .. ARGV[1]) end
end
"""


def hold(redis: Redis, target: str, item_ids: list[str], job_id: str) -> None:
    """Record that the storage job ``job_id`` holds the leases of ``item_ids`` on ``target`` (only claims
    still without a holder: a fast job may already have landed or failed an item, which ends its lease)."""
    if item_ids:
        redis.eval(_HOLD, 1, _leases(target), job_id, *item_ids)


def note_waiting(redis: Redis, target: str, job_id: str, ttl: float) -> None:
    """Record ``job_id`` as the storage job enqueued for ``target`` that has not started yet (see
    :func:`waiting_job`); forgotten after ``ttl`` seconds whatever happens to the job."""
    redis.set(_waiting(target), job_id, ex=max(1, int(ttl)))


def waiting_job(redis: Redis, target: str) -> str | None:
    """The id :func:`note_waiting` recorded for ``target``, if any (whether the job still waits in its queue
    is the caller's question: RQ knows)."""
    value = redis.get(_waiting(target))
    return value.decode() if isinstance(value, bytes) else value


def leases(redis: Redis, target: str) -> dict[str, tuple[float, str, str]]:
    """item id -> (claimed at, holding job id or "", the record as stored) of the items leased on ``target``."""
    held = {}
    for item_id, value in redis.hgetall(_leases(target)).items():
        item_id = item_id.decode() if isinstance(item_id, bytes) else item_id
        value = value.decode() if isinstance(value, bytes) else value
        claimed, _, job_id = value.partition("|")
        try:
            held[item_id] = (float(claimed), job_id, value)
        except ValueError:
            held[item_id] = (0.0, job_id, value)
    return held


_FREE = """
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if due and tonumber(due) > tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
  return 1
end
return 0
"""


def free_lost(redis: Redis, target: str, alive, *, grace: float = HOLD_GRACE,
              now: float | None = None) -> list[str]:
    """Make the items on ``target`` whose lease holder is gone due at once; returns their ids.

    ``alive(job_id)`` says whether a storage job still exists and can still run (queued, or started by a
    worker whose heartbeat and process are alive: ``jobs.deliver.store.storage_job_alive``). A claim without a
    holder counts as lost ``grace`` seconds after it was made. Atomic per item: a lease taken over meanwhile
    (claimed again, landed, failed) is left alone."""
    now = time.time() if now is None else now
    freed = []
    verdicts: dict[str, bool] = {}
    for item_id, (claimed, job_id, value) in leases(redis, target).items():
        if job_id:
            if job_id not in verdicts:
                verdicts[job_id] = bool(alive(job_id))
            if verdicts[job_id]:
                continue
        elif now - claimed < grace:
            continue
        if redis.eval(_FREE, 2, _due(target), _leases(target), item_id, value, repr(now)):
            freed.append(item_id)
    return freed


def older_waiting(redis: Redis, target: str, item: StorageItem) -> str | None:
    """The id of an older version of the same device still waiting for ``target``, if any."""
    for member, score in redis.zrange(_order(target, item.device), 0, 0, withscores=True):
        member = member.decode() if isinstance(member, bytes) else member
        if member != item.task_id and (score, member) < (item.collected_at, item.task_id):
            return member
    return None


_DONE = """
redis.call('HDEL', KEYS[7], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
if nxt and redis.call('HEXISTS', KEYS[7], nxt) == 0 then
  redis.call('ZADD', KEYS[1], 'XX', 'LT', ARGV[4], nxt)
end
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[3])
if redis.call('SCARD', KEYS[5]) == 0 then
  redis.call('HDEL', KEYS[6], ARGV[1])
  return 1
end
return 0
"""


def done(redis: Redis, target: str, item: StorageItem, now: float | None = None) -> None:
    """``item`` has landed on ``target``; forget it there (and entirely once every target has it). The
    device's next version waiting for ``target``, unless a job holds it, is due at once: it may have been put
    back behind this one (:func:`defer`) until a time that only meant "after this one's lease"."""
    now = time.time() if now is None else now
    redis.eval(_DONE, 7, _due(target), _order(target, item.device), _tries(target), _errors(target),
               _left(item.task_id), ITEMS, _leases(target), item.task_id, item.task_id, target, repr(now))


def backoff(tries: int, base: float, cap: float) -> float:
    delay = min(cap, base * (2 ** max(0, tries - 1)))
    return max(0.0, delay * random.uniform(0.9, 1.1))


def failed(redis: Redis, target: str, item: StorageItem, error: str, *, base: float, cap: float,
           now: float | None = None) -> tuple[int, float]:
    """A failed attempt: count it and make the item due again after the backoff. Returns (tries, due)."""
    now = time.time() if now is None else now
    tries = int(redis.hincrby(_tries(target), item.task_id, 1))
    due = now + backoff(tries, base, cap)
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(_due(target), {item.task_id: due})
    pipe.hset(_errors(target), item.task_id, error[:2000])
    pipe.hdel(_leases(target), item.task_id)
    pipe.execute()
    return tries, due


def defer(redis: Redis, target: str, item: StorageItem, behind: str) -> float:
    """Put ``item`` back until the older version ``behind`` has landed (just after that one is due)."""
    score = redis.zscore(_due(target), behind)
    due = (score if score is not None else time.time()) + 0.001
    pipe = redis.pipeline(transaction=True)
    pipe.zadd(_due(target), {item.task_id: due})
    pipe.hdel(_leases(target), item.task_id)
    pipe.execute()
    return due


def tries(redis: Redis, target: str, item_id: str) -> int:
    value = redis.hget(_tries(target), item_id)
    return int(value) if value else 0


def waiting(redis: Redis, targets: list[str]) -> dict[str, int]:
    """How many copies wait for each target."""
    pipe = redis.pipeline(transaction=False)
    for target in targets:
        pipe.zcard(_due(target))
    return dict(zip(targets, pipe.execute()))


def mark_lost(redis: Redis, item_id: str, run_id: str, device: str, sha256: str, targets: list[str] | tuple[str, ...]) -> None:
    """The decider made version ``sha256`` of ``device`` (staged as ``item_id`` by run ``run_id``) but its text
    is not here to release: Redis lost it. Remembered (for as long as a release guard) so that the device's next
    candidate with the very same text is stored as that version (:func:`restore_lost`)."""
    redis.set(_lost(device), json.dumps({"item_id": item_id, "run_id": run_id, "sha256": sha256,
                                         "targets": list(targets)}), ex=RELEASE_GUARD_TTL)


def restore_lost(redis: Redis, device: str, staged_id: str, now: float | None = None) -> StorageItem | None:
    """If ``device`` has a version whose text was lost (:func:`mark_lost`) and the candidate staged as
    ``staged_id`` (one the decider found unchanged) has the same text (sha256), put that text in the outbox as
    the lost version's item (its id, run and targets), due at once, and forget the loss. Returns that item."""
    raw, staged = redis.get(_lost(device)), redis.hget(ITEMS, staged_id)
    if raw is None or staged is None:
        return None
    lost, item = json.loads(raw), StorageItem.from_json(staged)
    if item.sha256 != lost["sha256"] or not lost["targets"]:
        return None
    item = replace(item, task_id=lost["item_id"], run_id=lost["run_id"], targets=tuple(lost["targets"]))
    add(redis, [item], 0.0, now)
    redis.delete(_lost(device))
    return item
