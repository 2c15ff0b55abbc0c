"""Riding out a Redis restart: the retry policy of the long-running processes' Redis connections.

A Redis that is restarted (SIGKILL and start again, a failover, a 4-second outage) drops every connection;
its clients then see ``ConnectionError`` (and ``BusyLoadingError``, a kind of it, while it loads its
append-only file). redis-py can retry a command on a new connection; :class:`OnceConnectedRetry` does that
with exponential backoff (0.25 s doubling up to 5 s, :data:`RETRIES` times: about a minute in all), but only
after the connection has worked once, so a process started while Redis is down still fails at once with one
clear line. The workers, their jobs (the work horse inherits the worker's connection), their retry pumps, the
index consumer and the scheduler use it (``cli.common.redis_client``); each also keeps going when an error
outlasts the retries (``jobs.worker.DeviceVaultWorker.work``, ``jobs.streams.group.StreamConsumer.run``).

Retrying a command whose reply was lost may run it twice: DeviceVault's writes are idempotent where that
matters (results are applied once by task id, releases are guarded, stores of the same version create nothing).
"""

from __future__ import annotations

import logging
import threading
import time

from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

#: retries of one command after the connection has worked once (with the backoff: about a minute)
RETRIES = 16
BACKOFF_BASE = 0.25
BACKOFF_CAP = 5.0
_nesting = threading.local()
log = logging.getLogger(__name__)


class OnceConnectedRetry(Retry):
    """redis-py's :class:`~redis.retry.Retry`, active only once a command has succeeded (one shared flag for
    every connection of the client: redis-py copies the retry object into each connection)."""

    def __init__(self, backoff=None, retries: int = RETRIES, supported_errors=(RedisConnectionError, RedisTimeoutError,
                                                                                ConnectionResetError, TimeoutError),
                 connected: threading.Event | None = None):
        super().__init__(backoff or ExponentialBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries, supported_errors)
        self.connected = connected if connected is not None else threading.Event()

    def __deepcopy__(self, memo):
        return self  # shared by the client's connections: one "has worked" flag

    def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
        # redis-py nests retries (a command's retry reconnects, and connecting retries too): only the
        # outermost call of a thread retries, so one command waits about a minute, not a minute squared
        if self.connected.is_set() and not getattr(_nesting, "depth", 0):
            _nesting.depth = 1
            failures = []

            def failed(error, count=None):
                if not failures:
                    log.warning("Redis unavailable (%s): trying again with backoff for up to about a minute", error)
                failures.append(time.monotonic())
                fail(error, count) if with_failure_count else fail(error)

            try:
                result = super().call_with_retry(do, failed, is_retryable, True)
            finally:
                _nesting.depth = 0
            if failures:
                log.info("Redis answers again (after %.1f s)", time.monotonic() - failures[0])
            return result
        try:
            result = do()
        except self._supported_errors as error:
            fail(error, 1) if with_failure_count else fail(error)
            raise
        self.connected.set()
        return result


def resilient_options() -> dict:
    """Keyword arguments for ``Redis``/``Redis.from_url``: :class:`OnceConnectedRetry` on connection errors,
    timeouts and a loading Redis."""
    from redis.exceptions import BusyLoadingError

    return {"retry": OnceConnectedRetry(), "retry_on_error": [RedisConnectionError, RedisTimeoutError, BusyLoadingError]}
