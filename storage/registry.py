"""Backend registry: names (``fs``, ``git``, ``s3``) to factories.

Factories import their backend module lazily, so using ``fs`` does not
import boto3.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Backend
from .errors import UnknownBackend

Factory = Callable[..., Backend]
_FACTORIES: dict[str, Factory] = {}


def register(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Register ``factory(**options) -> Backend`` under ``name``."""
    if not name or not isinstance(name, str):
        raise ValueError(f"invalid backend name {name!r}")
    if name in _FACTORIES and not replace:
        raise ValueError(f"storage backend {name!r} is already registered")
    _FACTORIES[name] = factory


def get_backend(name: str, **options: Any) -> Backend:
    """Instantiate the backend registered as ``name`` with ``options``."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise UnknownBackend(f"unknown storage backend {name!r}; available: {', '.join(available())}") from None
    return factory(**options)


def available() -> list[str]:
    return sorted(_FACTORIES)


def _fs(**options: Any) -> Backend:
    from .fs import FilesystemBackend

    return FilesystemBackend(**options)


def _git(**options: Any) -> Backend:
    from .git import GitBackend

    return GitBackend(**options)


def _s3(**options: Any) -> Backend:
    from .s3 import S3Backend

    return S3Backend(**options)


register("fs", _fs)
register("git", _git)
register("s3", _s3)
