"""Typed records that travel on the Redis streams ``device:results`` and ``storage:results``.

``device:results`` carries, per run, first a :class:`RunStarted` (published by whoever starts the run,
``jobs.collect.runs.start_backup``, before any job is enqueued) and then one :class:`DeviceResult` per device;
``storage:results`` one :class:`StorageResult` per copy outcome. :func:`parse` turns a stream entry back into
its record. The index consumer is the only writer of the index: a run's row is written from its
:class:`RunStarted`, never by the process that started the run.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from storage.index.statuses import CopyStatus, DeviceStatus


def device_task_id(run_id: str, host: str) -> str:
    """The task id of ``host``'s result in run ``run_id``: its device result's, and its staged text's in the
    storage outbox."""
    return f"{run_id}:{host}"


DEVICE_RESULTS_STREAM = "device:results"
STORAGE_RESULTS_STREAM = "storage:results"


#: a storage job's outcome is the status its copy gets in the index (stored, or pending until it lands)
StorageStatus = CopyStatus


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


class _StreamRecord:
    """Serialise to/from a flat ``{field: str}`` stream entry (a single JSON ``data`` field)."""

    #: the entry's ``kind`` field: which record it is on a stream that carries several
    KIND = ""

    def to_message(self) -> dict[str, str]:
        payload = asdict(self)  # type: ignore[call-overload]
        for key, value in payload.items():
            if isinstance(value, datetime):
                payload[key] = _iso(value)
            elif isinstance(value, Enum):
                payload[key] = value.value
        message = {"task_id": payload["task_id"], "data": json.dumps(payload)}
        if self.KIND:
            message["kind"] = self.KIND
        return message

    @classmethod
    def from_message(cls, message: dict[Any, Any]):
        raw = message.get(b"data", message.get("data"))
        if raw is None:
            raise ValueError("stream message has no 'data' field")
        payload = json.loads(raw)
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        missing = {f.name for f in fields(cls) if f.default is MISSING} - payload.keys()  # type: ignore[arg-type]
        if missing:
            raise ValueError(f"stream message lacks {sorted(missing)}")
        kwargs = {k: v for k, v in payload.items() if k in names}
        kwargs["timestamp"] = datetime.fromisoformat(kwargs["timestamp"])
        return cls(**cls._coerce(kwargs))  # type: ignore[call-arg]

    @classmethod
    def _coerce(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        return kwargs



@dataclass
class DeviceResult(_StreamRecord):
    """One device in one run: the fields the issue names plus what the index needs."""

    task_id: str
    run_id: str
    device: str
    status: DeviceStatus
    timestamp: datetime
    group: str = ""
    platform: str = ""
    log: str = ""
    config: str = ""
    error: str = ""
    error_kind: str = ""
    sha256: str = ""  # of the text as stored (an unchanged result: of the newest version)
    #: sha256 of the masked view, on which "same or new" is decided (differs from ``sha256`` only when
    #: secrets are kept; "" from older producers: the decider then uses ``sha256``)
    view_sha256: str = ""
    size: int = 0
    duration: float = 0.0
    author: str = ""  # who last changed the configuration, when the device says so (``changed_by``)
    targets: str = ""  # changed devices: the storage targets of the device's location, comma separated
    unsaved: bool | None = None  # running differs from startup (None: unknown or no startup on the platform)
    #: the Ansible inventory the run was started with (the consumer checks the device against it; "" from
    #: older producers: the installation's DEVICEVAULT_INVENTORY)
    inventory: str = ""

    @classmethod
    def _coerce(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["status"] = DeviceStatus(kwargs["status"])
        return kwargs


def run_task_id(run_id: str) -> str:
    return f"run:{run_id}"


@dataclass
class RunStarted(_StreamRecord):
    """A backup run was started: what the index's run row holds. Published on ``device:results`` before the
    run's jobs are enqueued, so it comes before the run's device results."""

    KIND = "run"

    task_id: str
    run_id: str
    timestamp: datetime
    total: int = 0
    selector: str = "all"
    targets: str = ""  # every target of the chosen devices' locations, comma separated
    inventory: str = ""  # the Ansible inventory the run's devices are collected from (absolute path)
    requested_by: str = ""


@dataclass
class StorageResult(_StreamRecord):
    """One version of one device on one storage target."""

    task_id: str
    run_id: str
    device: str
    backend: str
    status: StorageStatus
    timestamp: datetime
    group: str = ""
    sha256: str = ""
    size: int = 0
    ref: str = ""
    error: str = ""
    author: str = ""
    attempt: int = 1  # 1 for the first try; a retry's outcome replaces an earlier attempt's in the index
    next_attempt_at: str = ""  # pending: when the copy is tried again (ISO 8601, UTC)
    key_id: str = ""  # encryption key the copy was written with ("" = not encrypted)
    raw_ref: str = ""  # the raw device output kept with this version on this target ("" = none)

    @classmethod
    def _coerce(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["status"] = StorageStatus(kwargs["status"])
        return kwargs


def parse(stream: str, message: dict[Any, Any]) -> RunStarted | DeviceResult | StorageResult:
    """The record a stream entry holds (raises ValueError/KeyError/TypeError on a malformed entry)."""
    if stream == STORAGE_RESULTS_STREAM:
        return StorageResult.from_message(message)
    kind = message.get(b"kind", message.get("kind", b""))
    kind = kind.decode() if isinstance(kind, bytes) else kind
    if kind == RunStarted.KIND:
        return RunStarted.from_message(message)
    if kind:
        raise ValueError(f"unknown record kind {kind!r} on {stream}")
    return DeviceResult.from_message(message)
