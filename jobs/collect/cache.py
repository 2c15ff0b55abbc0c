"""The collector's cache of each device's newest version: a read-through cache in front of the index.

The index is the one source of truth for versions, and the index consumer (the decider,
``storage.index.records.apply_device_result``) is the only writer of this cache, after its commit. The
collector only reads it: a hit (the masked view's sha256 equals the newest version's) lets it report
``unchanged`` without staging anything; a miss or a different sha makes it stage a candidate for the decider.
So a lost cache costs a staged candidate (and a decision), never a wrong outcome; a cache that contradicts
the index is caught by the decider, which drops the entry (:func:`forget`).

Keys (hashes, field = host): ``devicevault:latest-sha256`` the masked view's sha256,
``devicevault:stored-sha256`` the stored text's sha256 (differs only when secrets are kept),
``devicevault:latest-version`` the index id of that version. A write only goes through when its version id
is not older than the cached one, so two consumers finishing out of order cannot leave an older version in
the cache.
"""

from __future__ import annotations

from redis import Redis

LATEST_SHA_KEY = "devicevault:latest-sha256"
STORED_SHA_KEY = "devicevault:stored-sha256"
VERSION_KEY = "devicevault:latest-version"
KEYS = (LATEST_SHA_KEY, STORED_SHA_KEY, VERSION_KEY)

_REMEMBER = """
local current = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if tonumber(ARGV[2]) < current then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1
"""


def lookup(redis: Redis, host: str) -> tuple[str, str] | None:
    """``(view sha256, stored sha256)`` of the host's newest version as cached, or None."""
    view, stored = redis.pipeline(transaction=False).hget(LATEST_SHA_KEY, host).hget(STORED_SHA_KEY, host).execute()
    if view is None:
        return None
    return view.decode(), (stored or view).decode()


def remember(redis: Redis, host: str, version_id: int, view_sha256: str, sha256: str) -> bool:
    """The decider: ``version_id`` is the host's newest version. False when a newer one is cached already."""
    return bool(redis.eval(_REMEMBER, 3, *KEYS, host, int(version_id), view_sha256, sha256 or view_sha256))


def forget(redis: Redis, host: str) -> None:
    """Drop the host's entry (the index contradicted it): the next backup stages a candidate."""
    pipe = redis.pipeline(transaction=True)
    for key in KEYS:
        pipe.hdel(key, host)
    pipe.execute()
