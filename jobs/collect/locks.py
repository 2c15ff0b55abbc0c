"""One Redis lock per host, ``lock:device:<host>``, so a device is never collected twice at once."""

from __future__ import annotations

import contextlib
import logging
from typing import Iterable, Iterator

from redis import Redis
from redis.exceptions import LockError
from redis.lock import Lock

log = logging.getLogger(__name__)


def lock_key(host: str) -> str:
    return f"lock:device:{host}"


@contextlib.contextmanager
def host_locks(
    redis: Redis, hosts: Iterable[str], ttl: int, owner: str | None = None
) -> Iterator[tuple[list[str], list[str]]]:
    """Try to lock every host without waiting; yields ``(locked, busy)``. Releases every lock on the way out.

    The TTL is the job's timeout plus a margin, so a lock left behind by a killed worker expires by itself.
    ``owner`` (the RQ job id) is the lock's token: when a job is retried after its worker died, the retry
    (same job id) takes over the locks its dead attempt left instead of waiting for them to expire.
    """
    held: dict[str, Lock] = {}
    busy: list[str] = []
    try:
        for host in hosts:
            lock = redis.lock(lock_key(host), timeout=ttl, blocking=False)
            token = owner.encode() if owner else None
            if lock.acquire(blocking=False, token=token):
                held[host] = lock
            elif token is not None and redis.get(lock_key(host)) == token:
                lock.local.token = token  # our own lock from an attempt that died
                lock.reacquire()
                log.info("took over %s from an earlier attempt of job %s", lock_key(host), owner)
                held[host] = lock
            else:
                busy.append(host)
        yield list(held), busy
    finally:
        for host, lock in held.items():
            try:
                lock.release()
            except LockError:  # expired meanwhile (the job outlived its TTL): nothing left to release
                log.warning("lock %s had expired before release", lock_key(host))
