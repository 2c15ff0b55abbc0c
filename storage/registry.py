"""Backend registry: each backend type (``fs``, ``git``, ``s3``) and everything the rest of DeviceVault needs
to know about it, in one place.

A :class:`BackendType` carries

- its **factory** ``factory(**options) -> Backend`` (built-in factories import their module lazily, so using
  ``fs`` does not import boto3);
- its **settings**: the constructor options that come from the environment when no storage file sets them,
  each as a :class:`Setting` naming its ``DEVICEVAULT_<TYPE>_<VARIABLE>`` variable, its default (a value or a
  function of ``DEVICEVAULT_HOME``) and whether it is a secret (printed as ``REDACTED``, masked in logs).
  ``jobs.settings.Settings`` reads them (explicit argument, then the variable, then the default) and offers
  each as an attribute ``<type>_<variable>`` (``settings.git_repo``, ``settings.s3_bucket``);
- its **aliases**: friendlier storage-file names for constructor options (``repo`` for ``repo_path``);
- its **default retention** (``keep_last``, ``keep_days``; None = no limit) for targets that set none.

A new backend is a module with a class that fulfils :class:`storage.base.Backend` (inheriting
:class:`storage.base.BackendBase` gives ``store_many``, ``close`` and ``history_is_immutable``), one
:func:`register` call, and a run of the contract suite (:mod:`storage.contract`) with its harness; nothing in
``jobs/`` names a backend type. Register before ``Settings.load`` so its variables are read.

The built-in types and their variables (the README's "Storage" and "Settings" sections):

============  ====================================  =====================================================
type          variable -> constructor option        default
============  ====================================  =====================================================
git           DEVICEVAULT_GIT_REPO -> repo_path     ``<home>/git``
              DEVICEVAULT_GIT_BRANCH -> branch      ``main``
fs            DEVICEVAULT_FS_ROOT -> root           ``<home>/fs``
s3            DEVICEVAULT_S3_BUCKET -> bucket       ``devicevault``
              DEVICEVAULT_S3_PREFIX                 empty
              DEVICEVAULT_S3_ENDPOINT_URL           none (AWS); set it for R2, B2, MinIO, moto
              DEVICEVAULT_S3_REGION -> region_name  none (boto3's default chain)
              DEVICEVAULT_S3_ACCESS_KEY_ID          none (boto3's chain: ``AWS_ACCESS_KEY_ID``, profile...)
              DEVICEVAULT_S3_SECRET_ACCESS_KEY      none (secret; prints as REDACTED)
============  ====================================  =====================================================

Retention defaults: fs 30 days, s3 365 days, git forever.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .base import Backend
from .errors import UnknownBackend

Factory = Callable[..., Backend]


@dataclass(frozen=True)
class Setting:
    """One constructor option of a backend type that has a ``DEVICEVAULT_<TYPE>_<VARIABLE>`` variable."""

    option: str  #: the constructor keyword, e.g. ``repo_path``
    variable: str  #: e.g. ``REPO``: the variable is ``DEVICEVAULT_GIT_REPO``, the settings attribute ``git_repo``
    default: Any = None  #: a value, or ``default(home: Path)`` for values relative to DEVICEVAULT_HOME
    path: bool = False  #: a filesystem path (made absolute; passed to the constructor as a string)
    secret: bool = False  #: printed as REDACTED and masked in logs

    def default_for(self, home: Path) -> Any:
        return self.default(home) if callable(self.default) else self.default


@dataclass(frozen=True)
class BackendType:
    """What DeviceVault knows about one backend type (see the module's docstring)."""

    name: str
    factory: Factory
    settings: tuple[Setting, ...] = ()
    #: constructor options always given unless the storage file sets them (s3: ``create_bucket``)
    fixed: Mapping[str, Any] = field(default_factory=dict)
    #: storage-file name -> constructor option (``repo`` -> ``repo_path``)
    aliases: Mapping[str, str] = field(default_factory=dict)
    keep_last: int | None = None
    keep_days: int | None = None

    def attribute(self, setting: Setting) -> str:
        """The settings attribute (and explicit ``Settings.load`` argument) of ``setting``: ``git_repo``."""
        return f"{self.name}_{setting.variable.lower()}"

    def variable(self, setting: Setting) -> str:
        return f"DEVICEVAULT_{self.name.upper()}_{setting.variable.upper()}"

    def options(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor options from resolved setting values (by :meth:`attribute`); unset ones are left out."""
        options = dict(self.fixed)
        for setting in self.settings:
            value = values.get(self.attribute(setting))
            if value in (None, ""):
                continue
            options[setting.option] = str(value) if setting.path else value
        return options

    def rename(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """Storage-file names -> constructor names."""
        return {self.aliases.get(k, k): v for k, v in spec.items()}


_TYPES: dict[str, BackendType] = {}


def register(name: str, factory: Factory, *, replace: bool = False, settings: Iterable[Setting] = (),
             fixed: Mapping[str, Any] | None = None, aliases: Mapping[str, str] | None = None,
             keep_last: int | None = None, keep_days: int | None = None) -> BackendType:
    """Register ``factory(**options) -> Backend`` under ``name`` with what the rest needs to know about it."""
    if not name or not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"invalid backend name {name!r}")
    if name in _TYPES and not replace:
        raise ValueError(f"storage backend {name!r} is already registered")
    kind = BackendType(name, factory, tuple(settings), dict(fixed or {}), dict(aliases or {}), keep_last, keep_days)
    _TYPES[name] = kind
    return kind


def unregister(name: str) -> None:
    """Forget the backend type ``name`` (a test's throwaway backend)."""
    _TYPES.pop(name, None)


def backend_type(name: str) -> BackendType:
    try:
        return _TYPES[name]
    except KeyError:
        raise UnknownBackend(f"unknown storage backend {name!r}; available: {', '.join(available())}") from None


def backend_types() -> list[BackendType]:
    return [_TYPES[name] for name in available()]


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend registered as ``name`` with ``options``."""
    return backend_type(name).factory(**options)


def available() -> list[str]:
    return sorted(_TYPES)


def _fs(**options: Any) -> Backend:
    from .fs import FilesystemBackend

    return FilesystemBackend(**options)


def _git(**options: Any) -> Backend:
    from .git import GitBackend

    return GitBackend(**options)


def _s3(**options: Any) -> Backend:
    from .s3 import S3Backend

    return S3Backend(**options)


register("fs", _fs, settings=[Setting("root", "ROOT", lambda home: home / "fs", path=True)],
         aliases={"path": "root"}, keep_days=30)
register("git", _git, settings=[Setting("repo_path", "REPO", lambda home: home / "git", path=True),
                                Setting("branch", "BRANCH", "main")],
         aliases={"repo": "repo_path"})
register("s3", _s3, settings=[
    Setting("bucket", "BUCKET", "devicevault"),
    Setting("prefix", "PREFIX", ""),
    Setting("endpoint_url", "ENDPOINT_URL"),
    Setting("region_name", "REGION"),
    Setting("access_key_id", "ACCESS_KEY_ID"),
    Setting("secret_access_key", "SECRET_ACCESS_KEY", secret=True),
], fixed={"create_bucket": True}, aliases={"region": "region_name"}, keep_days=365)
