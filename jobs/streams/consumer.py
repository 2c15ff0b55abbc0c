"""The index consumer: reads ``device:results`` and ``storage:results`` in the consumer group ``indexer`` and
writes every outcome into the index. It is one :class:`jobs.streams.group.StreamConsumer` (see that module for
the delivery guarantees: ack after commit, take-over of a dead consumer's messages, retries, dead letters,
trimming); any number of them (processes, hosts) may run at once.

What is particular to the index:

- applying a message is idempotent on its task id, so a redelivered (or replayed) message changes nothing;
- a run's start (:class:`jobs.streams.results.RunStarted`) writes the run's row: the index consumer is the
  index's only writer;
- a device result must name a device of the inventory its run was started with (:class:`UnknownDevice`
  otherwise, a failure: retried, then dead-lettered; the inventory is read again when a name is missing, so
  fixing the inventory lets the next retry through);
- an index that cannot be reached (connection lost, database locked) is not the message's fault
  (:data:`TRANSIENT_ERRORS`), and neither is a storage result whose device result has not been applied yet
  (:class:`storage.index.records.NotDecided`, a :class:`~jobs.streams.group.Wait`);
- a device result is where "new version or not" is decided (``storage.index.records.apply_device_result``);
  after its commit :meth:`Consumer.after_apply` releases the candidate to storage and adds the one
  ``versions:created`` event, or discards it, and sets the collector's cache (``jobs.deliver.release``);
  these steps are idempotent and run again when the message is redelivered;
- the messages read together are applied in one transaction (:meth:`Consumer.apply_batch`), then the steps
  after the commit run for each of them in order, then they are acknowledged; a batch that fails as a whole
  (a race with another consumer, a message the index refuses) is rolled back and applied one message at a
  time, as by :meth:`Consumer.apply`, so a bad message never holds the others back.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterable, Iterator

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import event, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from storage.index.models import Device
from storage.index.records import (
    NotDecided, apply_device_result, apply_run_started, apply_storage_result, refresh_run,
)

from jobs.errors import InventoryError
from jobs.streams import group as stream_group
from jobs.streams.deadletters import dead_letter_stream
from jobs.streams.group import Malformed, StreamConsumer, Wait
from jobs.streams.results import (
    DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM, DeviceResult, RunStarted, StorageResult, parse,
)

log = logging.getLogger(__name__)

GROUP = "indexer"
STREAMS = (DEVICE_RESULTS_STREAM, STORAGE_RESULTS_STREAM)  # in this order: a batch's device results first

#: the index or Redis cannot be reached: not the message's fault, so never a reason to dead-letter it
TRANSIENT_ERRORS = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DisconnectionError,
                    RedisConnectionError, RedisTimeoutError)

#: how each record is applied in the index (the caller commits)
APPLY = {RunStarted: apply_run_started, DeviceResult: apply_device_result, StorageResult: apply_storage_result}

#: ``Consumer(inventory=...)`` default: the inventory of the settings (``DEVICEVAULT_INVENTORY``)
FROM_SETTINGS: Any = object()

__all__ = [
    "GROUP", "STREAMS", "Consumer", "InventoryCheck", "UnknownDevice", "dead_letter_stream", "stream_status",
    "trim_streams",
]


class UnknownDevice(InventoryError):
    """A result names a device that is not in the Ansible inventory."""


class InventoryCheck:
    """Whether a device is in the Ansible inventory at ``path`` (its host names, from
    :func:`jobs.collect.inventory.inventory_names`).

    A name that is missing makes the inventory be asked again: the inventory reader parses it again when its
    files changed, or when its last parse is older than ``min_reload`` seconds (dynamic inventories), so a
    device added to the inventory is known to the next retry. An inventory that cannot be read at all rejects
    nothing: the problem is logged and reading is tried again after ``min_reload`` seconds.
    """

    def __init__(self, path: Path | str, *, min_reload: float = 5.0):
        self.path = Path(path)
        self.min_reload = min_reload
        self.names: set[str] | None = None
        self.failed_at = float("-inf")

    def _load(self) -> None:
        from jobs.collect.inventory import inventory_names

        try:
            self.names = inventory_names(self.path, fresh_within=self.min_reload)
        except Exception as exc:  # noqa: BLE001 - InventoryError, or Ansible failing in any other way
            self.names, self.failed_at = None, time.monotonic()
            log.warning("cannot read the inventory %s, so results are not checked against it: %s", self.path, exc)

    def check(self, device: str) -> None:
        """Raise :class:`UnknownDevice` if ``device`` is not in the inventory (and the inventory can be read)."""
        if self.names is not None and device in self.names:
            return
        if self.names is None and time.monotonic() - self.failed_at < self.min_reload:
            return
        self._load()
        if self.names is None or device in self.names:
            return
        raise UnknownDevice(f"device {device!r} is not in the Ansible inventory {self.path}")


def _error_text(exc: BaseException) -> str:
    """One line naming the error, without SQL statements or their parameters (results may be large)."""
    if isinstance(exc, sa_exc.StatementError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    if isinstance(exc, UnknownDevice):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


class Consumer(StreamConsumer):
    """The index consumer (the ``indexer`` group over the result streams)."""

    streams = STREAMS
    group = GROUP
    transient_errors = TRANSIENT_ERRORS

    def __init__(
        self,
        redis: Redis,
        sessions: sessionmaker[Session],
        *,
        inventory: Path | str | None = FROM_SETTINGS,
        releaser: Any = FROM_SETTINGS,
        **options: Any,
    ):
        """``options``: those of :class:`~jobs.streams.group.StreamConsumer` (name, group, block_ms,
        claim_idle_ms, count, max_deliveries, trim_interval, crash_after_commit). ``inventory``: a device
        result is checked against the inventory its run was started with (``DeviceResult.inventory``, from
        ``backup --inventory``); this one is for results that name none (default: the settings' inventory,
        ``DEVICEVAULT_INVENTORY``; None: no check at all). ``releaser``: the after-commit steps of the decider
        (:class:`jobs.deliver.release.Releaser`; default: built from the settings on first use; None: none,
        for tests of the index alone)."""
        super().__init__(redis, **options)
        self.sessions = sessions
        if inventory is FROM_SETTINGS:
            from jobs.settings import Settings

            inventory = Settings.load().inventory
        self.inventory = InventoryCheck(inventory) if inventory is not None else None
        self._inventories: dict[str, InventoryCheck] = {}  # a run's own inventory -> its check
        self._releaser = releaser
        self.applied = 0  # messages that changed the index (not already recorded)

    def describe_error(self, exc: BaseException) -> str:
        return _error_text(exc)

    def apply(self, stream: str, message_id: str, fields: dict):
        try:
            record = parse(stream, fields)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise Malformed(str(exc)) from None
        self._check_inventory(record)
        try:
            return record, self._apply(record)
        except NotDecided as exc:  # its device result comes later: wait for it, never dead-letter
            raise Wait(str(exc)) from None

    def apply_batch(self, messages: list[tuple[str, str, dict]]) -> list:
        """Apply the messages read together in ONE transaction (see
        :meth:`jobs.streams.group.StreamConsumer.apply_batch`). A message that cannot be parsed, or names a
        device its inventory lacks, is left out of the batch (it is handled on its own after it: dead-lettered,
        or retried); a storage result whose device result is not in the index yet (nor earlier in this batch)
        is left out as a :class:`Wait`. Anything else failing (a race with another consumer creating the same
        row, a value the index refuses) rolls the whole batch back and raises: the group then applies its
        messages one at a time (:meth:`apply`)."""
        entries: list = []
        for stream, _, fields in messages:
            try:
                record = parse(stream, fields)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                entries.append(Malformed(str(exc)))
                continue
            try:
                if not isinstance(record, StorageResult):  # in the transaction: it may name a device of this batch
                    self._check_inventory(record)
            except UnknownDevice as exc:
                entries.append(exc)
                continue
            entries.append(record)
        with self.sessions.begin() as session:
            self._lock_devices(session, [e for e in entries if isinstance(e, DeviceResult)])
            for i, record in enumerate(entries):
                if isinstance(record, BaseException):
                    continue
                if not isinstance(record, StorageResult):
                    entries[i] = (record, APPLY[type(record)](session, record))
                    continue
                try:
                    self._check_inventory(record, session)
                    with _nothing_written_if_not_decided(session):
                        entries[i] = (record, apply_storage_result(session, record))
                except UnknownDevice as exc:
                    entries[i] = exc
                except NotDecided as exc:  # it wrote nothing: the rest of the batch stands
                    entries[i] = Wait(str(exc))
            for run_id in sorted({e[0].run_id for e in entries if isinstance(e, tuple)}):
                refresh_run(session, run_id)
        self.applied += sum(bool(getattr(e[1], "new", e[1])) for e in entries if isinstance(e, tuple))
        return entries

    @staticmethod
    def _lock_devices(session: Session, results: list) -> None:
        """Hold the rows of the devices of ``results`` (``SELECT ... FOR UPDATE`` where the database has it), in
        the order of their names: consumers applying batches at once then take device rows in the same order,
        and cannot deadlock on them (their runs are refreshed in one order too, after them)."""
        names = sorted({r.device for r in results})
        if names:
            query = select(Device.id).where(Device.name.in_(names)).order_by(Device.name)
            session.scalars(query.with_for_update()).all()

    def after_apply(self, stream: str, outcome) -> None:
        """The steps that follow a committed decision (release + event, or discard; the collector's cache):
        :class:`jobs.deliver.release.Releaser`. Idempotent, so a redelivered message runs them again safely."""
        record, decision = outcome
        if not isinstance(record, DeviceResult):
            return
        if self._releaser is FROM_SETTINGS:
            from jobs.deliver.release import Releaser

            self._releaser = Releaser.from_settings(self.redis)
        if self._releaser is not None:
            self._releaser.after_commit(decision)

    def after_batch(self) -> None:
        """Enqueue the storage jobs for the versions released since the last call (one per target)."""
        if self._releaser not in (None, FROM_SETTINGS):
            self._releaser.flush()

    def _check_inventory(self, record, session: Session | None = None) -> None:
        """A device result must name a device of its run's inventory (:class:`UnknownDevice` otherwise). A run's
        start names no device. A storage result exists only for a version its device result decided, so its
        device is in the index already; one whose device is neither there nor in the default inventory
        (a result published by hand, or whose device result was dead-lettered) is unknown too."""
        if self.inventory is None or isinstance(record, RunStarted):
            return
        if isinstance(record, StorageResult):  # ``session``: the batch's transaction, which sees its devices
            with nullcontext(session) if session is not None else self.sessions() as reader:
                if reader.scalar(select(Device.id).where(Device.name == record.device)) is not None:
                    return
            self.inventory.check(record.device)
            return
        check = self.inventory
        if record.inventory and Path(record.inventory) != self.inventory.path:
            check = self._inventories.setdefault(record.inventory, InventoryCheck(record.inventory))
        check.check(record.device)

    def _apply(self, record):
        """Apply and commit one record. Consumers running at once may race to create the same row (a new
        device, or a new version, seen in results handled at the same time): the loser's transaction is
        rolled back and applied again at once, which then finds the row (a race costs one retry per row it
        creates: device, then version), before it counts as a failure."""
        apply = APPLY[type(record)]
        for attempt in (1, 2, 3):
            try:
                with self.sessions.begin() as session:
                    outcome = apply(session, record)
                    refresh_run(session, record.run_id)
                self.applied += bool(getattr(outcome, "new", outcome))  # counted once committed
                return outcome
            except sa_exc.IntegrityError as exc:
                if attempt == 3:
                    raise
                log.info("task %s raced another consumer (%s): applying it again", record.task_id, _error_text(exc))


@contextmanager
def _nothing_written_if_not_decided(session: Session) -> Iterator[None]:
    """Around one storage result of a batch: a :class:`NotDecided` leaves it out of the batch, which is sound
    only if it wrote nothing (``apply_storage_result`` raises it before writing). Had it flushed anything
    first, the batch is given up as a whole (nothing durable: applied one message at a time)."""
    flushed = []

    def _flush(*_: Any) -> None:
        flushed.append(True)

    event.listen(session, "after_flush", _flush)
    try:
        yield
    except NotDecided:
        if flushed:
            raise RuntimeError("a record that must wait wrote to the index first: the batch is applied "
                               "one message at a time") from None
        raise
    finally:
        event.remove(session, "after_flush", _flush)


def stream_status(redis: Redis, streams: Iterable[str] = STREAMS) -> list[dict]:
    """:func:`jobs.streams.group.stream_status` of the result streams."""
    return stream_group.stream_status(redis, streams)


def trim_streams(redis: Redis, streams: Iterable[str] = STREAMS) -> dict[str, int]:
    """:func:`jobs.streams.group.trim_streams` of the result streams."""
    return stream_group.trim_streams(redis, streams)
