"""The index consumer: reads ``device:results`` and ``storage:results`` in the consumer group ``indexer`` and
writes every outcome into the index.

Guarantees: a message is acknowledged only after its index rows are committed; applying a message is
idempotent on its task id, so a redelivered message changes nothing; messages left pending by a consumer
that died are taken over (own pending entries first, then XAUTOCLAIM of entries idle longer than
``claim_idle_ms``). A message that cannot be parsed goes, with its error, to ``<stream>:dead`` and is then
acknowledged: it is never acknowledged and dropped.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable

from redis import Redis
from redis.exceptions import ResponseError
from sqlalchemy.orm import Session, sessionmaker

from storage.index.records import apply_device_result, apply_storage_result, refresh_run

from .results import DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM, DeviceResult, StorageResult

log = logging.getLogger(__name__)

GROUP = "indexer"
STREAMS = (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM)


def dead_letter_stream(stream: str) -> str:
    return f"{stream}:dead"


def ensure_groups(redis: Redis, group: str = GROUP) -> None:
    for stream in STREAMS:
        try:
            redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Consumer:
    def __init__(
        self,
        redis: Redis,
        sessions: sessionmaker[Session],
        *,
        name: str | None = None,
        group: str = GROUP,
        block_ms: int = 1000,
        claim_idle_ms: int = 30_000,
        count: int = 100,
        crash_after_commit: int | None = None,
    ):
        """``crash_after_commit``: for failure tests only; the process exits right after committing that
        many messages and before acknowledging the last one, as a consumer killed at the worst moment would."""
        self.redis = redis
        self.sessions = sessions
        self.name = name or default_name()
        self.group = group
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.count = count
        self.crash_after_commit = crash_after_commit
        self.committed = 0
        self.applied = 0
        ensure_groups(redis, group)

    # --- one message -----------------------------------------------------------------------------------
    def handle(self, stream: str, message_id: bytes | str, fields: dict) -> None:
        parser: Callable = DeviceResult.from_message if stream == DEVICE_RESULTS_STREAM else StorageResult.from_message
        try:
            record = parser(fields)
        except (ValueError, KeyError, TypeError) as exc:
            self._dead_letter(stream, message_id, fields, f"malformed message: {exc}")
            return
        with self.sessions.begin() as session:
            apply = apply_device_result if stream == DEVICE_RESULTS_STREAM else apply_storage_result
            if apply(session, record):
                self.applied += 1
            refresh_run(session, record.run_id)
        self.committed += 1
        if self.crash_after_commit is not None and self.committed >= self.crash_after_commit:
            log.error("crash_after_commit reached: exiting before acknowledging %s", message_id)
            os._exit(17)
        self.redis.xack(stream, self.group, message_id)

    def _dead_letter(self, stream: str, message_id, fields: dict, error: str) -> None:
        entry = {k: v for k, v in fields.items()}
        entry.update({"error": error, "source_id": message_id, "source_stream": stream})
        self.redis.xadd(dead_letter_stream(stream), entry)
        self.redis.xack(stream, self.group, message_id)
        log.error("message %s of %s moved to %s: %s", message_id, stream, dead_letter_stream(stream), error)

    # --- reading ---------------------------------------------------------------------------------------
    def _process(self, entries) -> int:
        done = 0
        for stream, messages in sorted(entries, key=lambda e: _name(e[0]) != DEVICE_RESULTS_STREAM):
            for message_id, fields in messages:
                if fields is None:  # deleted from the stream while pending
                    self.redis.xack(_name(stream), self.group, message_id)
                    continue
                self.handle(_name(stream), message_id, fields)
                done += 1
        return done

    def recover(self) -> int:
        """Apply messages delivered to this consumer name earlier but never acknowledged, then take over
        messages other consumers left pending for longer than ``claim_idle_ms``."""
        done = 0
        while True:
            entries = self.redis.xreadgroup(self.group, self.name, {s: "0" for s in STREAMS}, count=self.count)
            n = self._process(entries or [])
            done += n
            if n == 0:
                break
        for stream in STREAMS:
            start = "0-0"
            while True:
                start, messages, *_ = self.redis.xautoclaim(
                    stream, self.group, self.name, self.claim_idle_ms, start_id=start, count=self.count
                )
                done += self._process([(stream, messages)])
                if _name(start) == "0-0":
                    break
        return done

    def poll(self) -> int:
        entries = self.redis.xreadgroup(
            self.group, self.name, {s: ">" for s in STREAMS}, count=self.count, block=self.block_ms
        )
        return self._process(entries or [])

    def run(self, *, stop: Callable[[], bool] = lambda: False, idle_exit: float | None = None) -> None:
        """Consume until ``stop()`` is true (or, with ``idle_exit``, after that many seconds without messages)."""
        self.recover()
        last_activity = time.monotonic()
        last_recover = time.monotonic()
        while not stop():
            if self.poll():
                last_activity = time.monotonic()
            elif idle_exit is not None and time.monotonic() - last_activity > idle_exit:
                return
            if time.monotonic() - last_recover > self.claim_idle_ms / 1000:
                self.recover()
                last_recover = time.monotonic()


def _name(stream) -> str:
    return stream.decode() if isinstance(stream, bytes) else stream
