"""The durable delivery queue in Redis: every notification is one *delivery* (an event for one rule and one
channel), kept until it is sent or dead.

Keys (this module owns them; nothing else writes them):

- ``notify:delivery:<key>``: a hash (rule, channel, events JSON, tries, status, last error, times). The
  delivery key is ``<event id>|<rule>|<channel>``: :func:`enqueue` of a key that exists does nothing, so an
  event handled twice (a stream redelivery) is sent once. Sent and dead deliveries expire after
  :data:`KEEP` seconds (the window in which a repeat is recognised);
- ``notify:due``: a sorted set, key -> when it is due (epoch seconds). :func:`claim_due` takes due ones and
  pushes them :data:`LEASE` seconds ahead, so a pump that dies mid-send leaves them to be tried again;
- ``notify:retrying``: deliveries whose last try failed and that will be tried again (key -> when it failed);
- ``notify:dead``: deliveries that failed ``max_tries`` times (key -> when), shown by ``devicevault status``
  and the portal's Health page until they expire or ``devicevault notify retry`` queues them again.

A receiver that is down gets every delivery once it is back (retried with doubling backoff, ``retry_base``
to ``retry_max``), none twice (a delivery is marked sent in the step that removes it from the queue).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

PREFIX = "notify:delivery:"
DUE = "notify:due"
RETRYING = "notify:retrying"
DEAD = "notify:dead"
#: seconds a sent or dead delivery is remembered
KEEP = 14 * 86400
#: seconds a claimed delivery is held by its pump before another may try it
LEASE = 120.0


class Status:
    QUEUED = "queued"
    SENT = "sent"
    DEAD = "dead"


_ENQUEUE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

_CLAIM = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, key in ipairs(keys) do redis.call('ZADD', KEYS[1], ARGV[2], key) end
return keys
"""


# a run's digest: an event joins it while the digest has not been sent (else it goes on its own: 0); one
# that joined it before (a redelivered message) is in it already (1)
_HOLD = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 1 end
if redis.call('HGET', KEYS[1], 'frozen') == '1' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
"""

# the first try of a digest takes the events held so far into the delivery, at once with closing it
_FREEZE = """
if redis.call('HGET', KEYS[1], 'frozen') ~= '1' then
  local events = cjson.decode(redis.call('HGET', KEYS[1], 'events'))
  local merged = {}
  for _, e in ipairs(events) do table.insert(merged, e) end
  for _, v in ipairs(redis.call('HVALS', KEYS[2])) do table.insert(merged, cjson.decode(v)) end
  redis.call('HSET', KEYS[1], 'events', cjson.encode(merged), 'frozen', '1')
  local ids = redis.call('HKEYS', KEYS[2])  -- from now on only which events it holds (repeats are known)
  redis.call('DEL', KEYS[2])
  for _, id in ipairs(ids) do redis.call('HSET', KEYS[2], id, '1') end
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return redis.call('HGET', KEYS[1], 'events')
"""


@dataclass(frozen=True)
class Delivery:
    key: str
    rule: str
    channel: str
    events: list[dict]
    tries: int = 0
    status: str = Status.QUEUED
    error: str = ""
    digest: str = ""  # a run's digest: the Redis hash holding its events (read when it is sent)


def delivery_key(event_id: str, rule: str, channel: str) -> str:
    return f"{event_id}|{rule}|{channel}"


def channel_of(key: str) -> str:
    """The channel a delivery key (:func:`delivery_key`) goes to."""
    return key.rsplit("|", 1)[-1]


def enqueue(redis: Redis, key: str, rule: str, channel: str, events: list[dict], *, due: float | None = None,
            digest: str = "") -> bool:
    """Queue a delivery, due at ``due`` (epoch seconds; default now). False when ``key`` was queued before
    (whatever became of it): a repeat."""
    now = time.time()
    fields: dict[str, Any] = {"rule": rule, "channel": channel, "events": json.dumps(events), "tries": 0,
                              "status": Status.QUEUED, "error": "", "created": now, "digest": digest}
    args: list[Any] = [due if due is not None else now, key]
    for name, value in fields.items():
        args += [name, value]
    return bool(redis.eval(_ENQUEUE, 2, PREFIX + key, DUE, *args))


def hold_for_digest(redis: Redis, digest_key: str, digest: str, event: dict) -> bool:
    """Put ``event`` into the run digest ``digest`` (a hash, kept after the digest went so that a repeat is
    known), unless the digest delivery ``digest_key`` has been sent (or is being sent) without it: then False,
    and the event needs a delivery of its own."""
    return bool(redis.eval(_HOLD, 2, PREFIX + digest_key, digest, event["id"], json.dumps(event), KEEP))


def freeze_digest(redis: Redis, key: str, digest: str) -> list[dict]:
    """The events of the digest delivery ``key``: on its first try those held in ``digest`` join it, and later
    events go on their own (:func:`hold_for_digest`); every retry sends the same mail."""
    events = json.loads(redis.eval(_FREEZE, 2, PREFIX + key, digest, KEEP) or "[]")
    return events if isinstance(events, list) else []  # Lua's cjson writes an empty list as {}


def claim_due(redis: Redis, *, limit: int = 50, lease: float = LEASE, now: float | None = None) -> list[str]:
    now = time.time() if now is None else now
    return [k.decode() if isinstance(k, bytes) else k for k in redis.eval(_CLAIM, 1, DUE, now, now + lease, limit)]


def load(redis: Redis, key: str) -> Delivery | None:
    raw = redis.hgetall(PREFIX + key)
    if not raw:
        return None
    d = {k.decode(): v.decode() for k, v in raw.items()}
    return Delivery(key=key, rule=d.get("rule", ""), channel=d.get("channel", ""),
                    events=json.loads(d.get("events") or "[]"), tries=int(d.get("tries") or 0),
                    status=d.get("status", Status.QUEUED), error=d.get("error", ""), digest=d.get("digest", ""))


def sent(redis: Redis, key: str) -> None:
    pipe = redis.pipeline()
    pipe.hset(PREFIX + key, mapping={"status": Status.SENT, "sent": time.time(), "error": ""})
    pipe.expire(PREFIX + key, KEEP)
    pipe.zrem(DUE, key)
    pipe.zrem(RETRYING, key)
    pipe.execute()


def drop(redis: Redis, key: str) -> None:
    """Forget a delivery nobody will send (its channel or rule left the file)."""
    pipe = redis.pipeline()
    pipe.zrem(DUE, key)
    pipe.zrem(RETRYING, key)
    pipe.hset(PREFIX + key, mapping={"status": Status.DEAD, "error": "its rule or channel is no longer in the file"})
    pipe.expire(PREFIX + key, KEEP)
    pipe.execute()


def backoff(tries: int, base: float, cap: float) -> float:
    return min(cap, base * (2 ** max(0, tries - 1)))


def failed(redis: Redis, key: str, error: str, *, max_tries: int, base: float, cap: float) -> str:
    """Record a failed try: queued again after a backoff, or dead after ``max_tries``. Returns the status."""
    now = time.time()
    tries = int(redis.hincrby(PREFIX + key, "tries", 1))
    pipe = redis.pipeline()
    pipe.hset(PREFIX + key, mapping={"error": error, "failed": now})
    if tries >= max_tries:
        pipe.hset(PREFIX + key, "status", Status.DEAD)
        pipe.expire(PREFIX + key, KEEP)
        pipe.zrem(DUE, key)
        pipe.zrem(RETRYING, key)
        pipe.zadd(DEAD, {key: now})
        status = Status.DEAD
    else:
        pipe.zadd(DUE, {key: now + backoff(tries, base, cap)})
        pipe.zadd(RETRYING, {key: now})
        status = Status.QUEUED
    pipe.execute()
    return status


def retry(redis: Redis, key: str) -> bool:
    """Queue a dead delivery again, due now, its tries counted from 0 (its receiver is fixed). False when
    ``key`` is not a dead delivery."""
    found = load(redis, key)
    if found is None or found.status != Status.DEAD:
        return False
    pipe = redis.pipeline()
    pipe.hset(PREFIX + key, mapping={"status": Status.QUEUED, "tries": 0, "error": ""})
    pipe.persist(PREFIX + key)
    pipe.zrem(DEAD, key)
    pipe.zadd(DUE, {key: time.time()})
    pipe.execute()
    return True


def dead_keys(redis: Redis) -> list[str]:
    return [k.decode() for k in redis.zrange(DEAD, 0, -1)]


def summary(redis: Redis, *, limit: int = 20) -> dict[str, Any]:
    """For ``devicevault status`` and the portal: deliveries queued, retrying and dead, and the newest failures
    (``key``, ``rule``, ``channel``, ``status``, ``tries``, ``error``: masked when it was recorded)."""
    redis.zremrangebyscore(DEAD, "-inf", time.time() - KEEP)
    failing = []
    for name, zset in (("dead", DEAD), ("retrying", RETRYING)):
        for raw in redis.zrevrange(zset, 0, limit - 1):
            key = raw.decode()
            found = load(redis, key)
            if found is not None:
                failing.append({"key": key, "rule": found.rule, "channel": found.channel, "status": name,
                                "tries": found.tries, "error": found.error})
    return {"queued": int(redis.zcard(DUE)), "retrying": int(redis.zcard(RETRYING)), "dead": int(redis.zcard(DEAD)),
            "failures": failing}
