"""Where configuration versions are kept: a tiny protocol and its backends.

>>> from storage import get_backend, StoreOptions, device_path
>>> backend = get_backend("fs", root="/var/lib/devicevault")   # doctest: +SKIP
>>> ref = backend.store(b"hostname r1\\n", device_path("ams", "r1"))  # doctest: +SKIP
"""

from .base import Backend, StoreOptions
from .errors import (
    IntegrityError,
    RefNotFound,
    StorageError,
    TargetUnavailable,
    UnknownBackend,
    UnsafePath,
)
from .paths import decode_component, device_path, encode_component, resolve_inside
from .registry import available, get_backend, register

__all__ = [
    "Backend",
    "StoreOptions",
    "StorageError",
    "TargetUnavailable",
    "RefNotFound",
    "UnsafePath",
    "IntegrityError",
    "UnknownBackend",
    "encode_component",
    "decode_component",
    "device_path",
    "resolve_inside",
    "register",
    "get_backend",
    "available",
]
