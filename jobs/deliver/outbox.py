"""The storage outbox: every copy still to be written, kept in Redis until it has landed.

A new version is put here (once, with its text) together with the targets it must reach, *before* any
storage job runs. A copy leaves the outbox only when its target has stored it. So a target that is down,
or a worker that dies in the middle of a store, loses nothing: the copy stays, and is handed to a storage
job again when it is due.

Keys
----
``storage:outbox:items``            hash   item id -> the :class:`StorageItem` as JSON (text included)
``storage:outbox:left:<item id>``   set    targets the item has still to reach
``storage:outbox:due:<target>``     zset   item id -> when it is next due (epoch seconds)
``storage:outbox:order:<target>:<device>`` zset item id -> collection time (per-device order)
``storage:outbox:tries:<target>``   hash   item id -> failed attempts so far
``storage:outbox:error:<target>``   hash   item id -> the last error

Due times are *leases*: handing an item to a job pushes its due time ``lease`` seconds ahead, so if that
job is lost (worker killed, job deleted) the item becomes due again by itself. A failed attempt sets the
due time by exponential backoff (``retry_base * 2**(tries-1)``, at most ``retry_max``, +/-10 % jitter).

Per device and target, versions land in the order they were collected: a job that finds an older version
of the same device still waiting for this target puts the newer one back (git's tip must be the newest).
"""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import asdict, dataclass, replace

from redis import Redis

ITEMS = "storage:outbox:items"


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


def add(redis: Redis, items: list[StorageItem], lease: float, now: float | None = None) -> None:
    """Put ``items`` in the outbox for every one of their targets, leased for ``lease`` seconds (the job
    about to be enqueued holds them)."""
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


_CLAIM = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return ids
"""


def claim_due(redis: Redis, target: str, lease: float, *, limit: int = 100, now: float | None = None) -> list[str]:
    """Item ids due on ``target``, each leased for ``lease`` seconds to the caller (atomic: two workers
    never claim the same item at once)."""
    now = time.time() if now is None else now
    ids = redis.eval(_CLAIM, 1, _due(target), now, now + lease, limit)
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


def older_waiting(redis: Redis, target: str, item: StorageItem) -> str | None:
    """The id of an older version of the same device still waiting for ``target``, if any."""
    for member, score in redis.zrange(_order(target, item.device), 0, 0, withscores=True):
        member = member.decode() if isinstance(member, bytes) else member
        if member != item.task_id and (score, member) < (item.collected_at, item.task_id):
            return member
    return None


_DONE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('SREM', KEYS[5], ARGV[3])
if redis.call('SCARD', KEYS[5]) == 0 then
  redis.call('HDEL', KEYS[6], ARGV[1])
  return 1
end
return 0
"""


def done(redis: Redis, target: str, item: StorageItem) -> None:
    """``item`` has landed on ``target``; forget it there (and entirely once every target has it)."""
    redis.eval(_DONE, 6, _due(target), _order(target, item.device), _tries(target), _errors(target),
               _left(item.task_id), ITEMS, item.task_id, item.task_id, target)


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
    pipe.execute()
    return tries, due


def defer(redis: Redis, target: str, item: StorageItem, behind: str) -> float:
    """Put ``item`` back until the older version ``behind`` has landed (just after that one is due)."""
    score = redis.zscore(_due(target), behind)
    due = (score if score is not None else time.time()) + 0.001
    redis.zadd(_due(target), {item.task_id: due})
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
