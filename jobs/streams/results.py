"""Typed results that travel on the Redis streams ``device:results`` and ``storage:results``."""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from enum import Enum
from typing import Any

DEVICE_RESULTS_STREAM = "device:results"
STORAGE_RESULTS_STREAM = "storage:results"


class DeviceStatus(str, Enum):
    """Outcome of collecting one device in one run."""

    #: on the wire: a *candidate* (differs from the collector's cache, its text is staged in the outbox); in
    #: the index: the decider (``storage.index.records.apply_device_result``) made a new version of it
    CHANGED = "changed"
    #: collected; same as the newest version once volatile lines are removed (on the wire: the collector's
    #: cache said so; in the index: the decider found it so, or confirmed the cache)
    UNCHANGED = "unchanged"
    FAILED = "failed"  # not collected; ``error`` says why
    SKIPPED_LOCKED = "skipped_locked"  # another job holds lock:device:<host>

    @property
    def ok(self) -> bool:
        return self in (DeviceStatus.CHANGED, DeviceStatus.UNCHANGED)


class StorageStatus(str, Enum):
    """Outcome of storing one version on one storage target."""

    STORED = "stored"  # the version is on the target (written now, or found there from an earlier attempt)
    UNCHANGED = "unchanged"  # older producers only: the target already held it (storage jobs no longer ask)
    PENDING = "pending"  # this attempt failed; the copy waits in the outbox and is retried with backoff

    @property
    def landed(self) -> bool:
        return self in (StorageStatus.STORED, StorageStatus.UNCHANGED)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _iso(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat()


class _StreamRecord:
    """Serialise to/from a flat ``{field: str}`` stream entry (a single JSON ``data`` field)."""

    def to_message(self) -> dict[str, str]:
        payload = asdict(self)  # type: ignore[call-overload]
        for key, value in payload.items():
            if isinstance(value, datetime):
                payload[key] = _iso(value)
            elif isinstance(value, Enum):
                payload[key] = value.value
        return {"task_id": payload["task_id"], "data": json.dumps(payload)}

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

    @classmethod
    def _coerce(cls, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs["status"] = DeviceStatus(kwargs["status"])
        return kwargs


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
