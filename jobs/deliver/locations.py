"""Storage targets and backup locations: where each device's versions are kept.

A *target* is one configured storage backend (a git repository, a directory, a bucket) with its at-rest
options (compression, encryption) and its retention. A *location* is a named list of targets; every new
version of a device is stored on every target of the device's location.

Where the layout comes from
---------------------------
Without a storage file, there is one target per registered backend type, named after it: ``git``, ``fs``
and ``s3`` (options from the settings, e.g. ``DEVICEVAULT_S3_BUCKET``) and one location, ``default``, made of ``settings.targets``
(``DEVICEVAULT_TARGETS``, default ``git,fs``).

With a storage file (``DEVICEVAULT_STORAGE_CONFIG``, or ``<home>/storage.yml``)::

    targets:                       # name -> type and options; a name may be anything, the type is git|fs|s3
      git: {type: git}             # (or any type in storage/registry.py); options default to the settings
                                   # (git_repo, fs_root, s3_*: each type's DEVICEVAULT_<TYPE>_* variables)
      fs:  {type: fs, compression: gzip, encrypt: true, keep_days: 30}
      s3:  {type: s3, bucket: net-configs, endpoint_url: "https://...", keep_last: 100}
    locations:
      default: [git, fs]           # used by every device whose group has no location
      offsite: [git, fs, s3]
    groups:                        # inventory group -> location
      amsterdam: offsite

An inventory variable ``devicevault_location`` (in ``group_vars/`` or on a host) names a location too and
wins over ``groups:``. Credentials never go in this file: S3 keys come from ``DEVICEVAULT_S3_*`` or boto3's
own chain (``AWS_ACCESS_KEY_ID``, profiles, instance roles); encryption keys from
``DEVICEVAULT_ENCRYPTION_KEYS``.

Retention (``keep_last``, ``keep_days``): a version's copy on a target is kept while it is one of the
device's newest ``keep_last`` versions on that target *or* younger than ``keep_days``. When a target sets
neither, the defaults of its type apply (``storage/registry.py``): fs 30 days, s3 365 days, git forever. ``keep_last: 0`` / ``keep_days: 0``
mean "no limit of that kind". See ``jobs/deliver/retention.py`` for what pruning never removes.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import yaml

from storage.base import Backend
from storage.registry import available, backend_type, get_backend

from jobs.errors import BackupError
from jobs.settings import Settings, parse_flag

DEFAULT_LOCATION = "default"
_TARGET_KEYS = {"type", "compression", "encrypt", "keep_last", "keep_days"}


class StorageConfigError(BackupError, ValueError):
    """The storage file or storage settings are invalid (the message names the file and the key)."""


@dataclass(frozen=True)
class TargetConfig:
    name: str
    type: str
    options: dict[str, Any] = field(default_factory=dict, compare=False)
    compression: str | None = None
    encrypt: bool = False
    keep_last: int | None = None
    keep_days: int | None = None

    @property
    def has_retention(self) -> bool:
        return bool(self.keep_last) or bool(self.keep_days)

    def __repr__(self) -> str:  # options may hold credentials
        return (f"TargetConfig(name={self.name!r}, type={self.type!r}, compression={self.compression!r}, "
                f"encrypt={self.encrypt!r}, keep_last={self.keep_last!r}, keep_days={self.keep_days!r})")


def parse_keys(spec: str | None) -> dict[str, bytes]:
    """``kid:base64key,kid2:base64key`` -> {kid: key}. Errors name the key id, never the key."""
    keys: dict[str, bytes] = {}
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        kid, sep, encoded = part.partition(":")
        if not sep or not kid.strip():
            raise StorageConfigError("DEVICEVAULT_ENCRYPTION_KEYS: each entry must be 'key-id:base64-key'")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise StorageConfigError(f"DEVICEVAULT_ENCRYPTION_KEYS: key {kid.strip()!r} is not valid base64") from None
        if len(key) != 32:
            raise StorageConfigError(
                f"DEVICEVAULT_ENCRYPTION_KEYS: key {kid.strip()!r} is {len(key)} bytes; AES-256 needs 32")
        keys[kid.strip()] = key
    return keys


class StorageLayout:
    """Targets and locations, and the backends to reach them (opened once per process, on first use)."""

    def __init__(self, settings: Settings, targets: dict[str, TargetConfig], locations: dict[str, list[str]],
                 groups: dict[str, str], source: str) -> None:
        self.settings = settings
        self.targets = targets
        self.locations = locations
        self.groups = groups
        self.source = source
        self._backends: dict[str, Backend] = {}

    # --- construction -------------------------------------------------------------------------------------
    @classmethod
    def load(cls, settings: Settings) -> "StorageLayout":
        if settings.storage_config is None:
            targets = {name: _target_config(settings, name, {}) for name in available()}
            layout = cls(settings, targets, {DEFAULT_LOCATION: list(settings.targets)}, {}, "settings")
        else:
            layout = cls._from_file(settings)
        layout._check()
        return layout

    @classmethod
    def _from_file(cls, settings: Settings) -> "StorageLayout":
        path = settings.storage_config
        assert path is not None
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise StorageConfigError(f"storage file {path}: cannot read: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            raise StorageConfigError(f"storage file {path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise StorageConfigError(f"storage file {path}: expected a mapping with 'targets' and 'locations'")
        raw_targets = data.get("targets") or {"git": {"type": "git"}, "fs": {"type": "fs"}}
        if not isinstance(raw_targets, dict):
            raise StorageConfigError(f"storage file {path}: 'targets' must map names to options")
        targets = {}
        for name, spec in raw_targets.items():
            spec = dict(spec or {})
            if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
                raise StorageConfigError(f"storage file {path}: target name {name!r}: use letters, digits, - and _")
            targets[name] = _target_config(settings, name, spec, where=f"storage file {path}: target {name!r}")
        locations = data.get("locations") or {DEFAULT_LOCATION: list(targets)}
        if not isinstance(locations, dict) or not all(isinstance(v, list) for v in locations.values()):
            raise StorageConfigError(f"storage file {path}: 'locations' must map names to lists of targets")
        groups = data.get("groups") or {}
        if not isinstance(groups, dict):
            raise StorageConfigError(f"storage file {path}: 'groups' must map inventory groups to locations")
        return cls(settings, targets, {k: [str(t) for t in v] for k, v in locations.items()},
                   {str(k): str(v) for k, v in groups.items()}, f"storage file {path}")

    def _check(self) -> None:
        if DEFAULT_LOCATION not in self.locations:
            raise StorageConfigError(f"{self.source}: no '{DEFAULT_LOCATION}' location")
        for location, names in self.locations.items():
            if not names:
                raise StorageConfigError(f"{self.source}: location {location!r} has no targets")
            for name in names:
                if name not in self.targets:
                    raise StorageConfigError(
                        f"{self.source}: location {location!r} names unknown target {name!r} "
                        f"(targets: {', '.join(sorted(self.targets))})")
        for group, location in self.groups.items():
            if location not in self.locations:
                raise StorageConfigError(f"{self.source}: group {group!r} uses unknown location {location!r}")
        if any(self.targets[n].encrypt for names in self.locations.values() for n in names) and not self.keys:
            raise StorageConfigError(f"{self.source}: a target has encrypt on but DEVICEVAULT_ENCRYPTION_KEYS is empty")

    # --- lookups -------------------------------------------------------------------------------------------
    @cached_property
    def keys(self) -> dict[str, bytes]:
        return parse_keys(self.settings.encryption_keys)

    @property
    def key_id(self) -> str:
        if self.settings.encryption_key_id:
            if self.settings.encryption_key_id not in self.keys:
                raise StorageConfigError(
                    f"DEVICEVAULT_ENCRYPTION_KEY_ID {self.settings.encryption_key_id!r} is not in DEVICEVAULT_ENCRYPTION_KEYS")
            return self.settings.encryption_key_id
        return next(iter(self.keys), "")

    def sealing_codec(self):
        """The codec that encrypts outbox items carrying secrets (kept secrets, raw output) while they wait
        in Redis for their targets; None without encryption keys."""
        if not self.keys:
            return None
        from storage.codec import Codec

        return Codec(keys=self.keys, key_id=self.key_id)

    def location_of(self, group: str, location: str = "") -> str:
        """The location of a device in ``group`` (``location``: the inventory's ``devicevault_location``)."""
        if location:
            if location not in self.locations:
                raise StorageConfigError(f"{self.source}: unknown location {location!r} (devicevault_location)")
            return location
        return self.groups.get(group, DEFAULT_LOCATION)

    def targets_for(self, group: str, location: str = "") -> list[str]:
        return list(self.locations[self.location_of(group, location)])

    def all_targets(self) -> list[str]:
        """Every target some location uses, in first-use order."""
        seen: dict[str, None] = {}
        for names in self.locations.values():
            seen.update(dict.fromkeys(names))
        return list(seen)

    def types(self) -> list[str]:
        return sorted({self.targets[name].type for name in self.all_targets()})

    def queue_for(self, target: str) -> str:
        return self.settings.storage_queue_for(self.targets[target].type)

    def key_id_for(self, target: str) -> str:
        return self.key_id if self.targets[target].encrypt else ""

    def open(self, target: str) -> Backend:
        """The backend of ``target``, wrapped for compression/encryption when configured. Reading understands
        plain, gzip and zstd copies whatever the current setting."""
        if target not in self._backends:
            config = self.targets.get(target)
            if config is None:
                raise StorageConfigError(f"{self.source}: unknown storage target {target!r}")
            from storage.codec import Codec
            from storage.encoded import EncodedBackend

            inner = get_backend(config.type, **config.options)
            codec = Codec(compression=config.compression, keys=self.keys if config.encrypt else None,
                          key_id=self.key_id if config.encrypt else None)
            self._backends[target] = EncodedBackend(inner, codec)
        return self._backends[target]


def _target_config(settings: Settings, name: str, spec: dict[str, Any], where: str = "") -> TargetConfig:
    where = where or f"target {name!r}"
    kind = str(spec.pop("type", name))
    if kind not in available():
        raise StorageConfigError(f"{where}: unknown type {kind!r} (available: {', '.join(available())})")
    at_rest = {k: spec.pop(k) for k in list(spec) if k in _TARGET_KEYS}
    env_prefix = f"DEVICEVAULT_{name.upper()}_"
    for key in ("compression", "encrypt", "keep_last", "keep_days"):
        if name in available() and env_prefix + key.upper() in settings.target_env:
            at_rest[key] = settings.target_env[env_prefix + key.upper()]
    spec_type = backend_type(kind)
    options = settings.backend_options(kind) | spec_type.rename(spec)
    compression = str(at_rest.get("compression") or "none").lower()
    if compression not in ("none", "gzip", "zstd"):
        raise StorageConfigError(f"{where}: compression {compression!r}: use gzip, zstd or none")
    keep_last, keep_days = spec_type.keep_last, spec_type.keep_days
    if "keep_last" in at_rest or "keep_days" in at_rest:
        keep_last = _count(at_rest.get("keep_last"), where, "keep_last")
        keep_days = _count(at_rest.get("keep_days"), where, "keep_days")
    return TargetConfig(
        name=name, type=kind, options=options,
        compression=None if compression == "none" else compression,
        encrypt=_flag(at_rest.get("encrypt", False), where),
        keep_last=keep_last or None, keep_days=keep_days or None,
    )


def _count(value: Any, where: str, key: str) -> int | None:
    if value in (None, "", "none"):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise StorageConfigError(f"{where}: {key} must be a whole number, not {value!r}") from None
    if number < 0:
        raise StorageConfigError(f"{where}: {key} must not be negative")
    return number


def _flag(value: Any, where: str) -> bool:
    flag = parse_flag(value)
    if flag is None:
        raise StorageConfigError(f"{where}: encrypt must be true or false, not {value!r}")
    return flag
