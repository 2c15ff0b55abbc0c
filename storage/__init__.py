"""Where configuration versions are kept: a tiny protocol and its backends.

>>> from storage import Codec, EncodedBackend, StoreOptions, device_path, get_backend
>>> backend = get_backend("fs", root="/var/lib/devicevault")   # doctest: +SKIP
>>> ref = backend.store(b"hostname r1\\n", device_path("ams", "r1"))  # doctest: +SKIP
>>> private = EncodedBackend(backend, Codec("zstd", keys={"k1": key}))  # doctest: +SKIP
"""

from .base import Backend, StoreOptions
from .codec import Codec
from .encoded import EncodedBackend
from .errors import (
    DecodeError,
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
    "DecodeError",
    "Codec",
    "EncodedBackend",
    "UnknownBackend",
    "encode_component",
    "decode_component",
    "device_path",
    "resolve_inside",
    "register",
    "get_backend",
    "available",
]
