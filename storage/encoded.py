"""A backend that compresses and/or encrypts what another backend keeps.

>>> from storage import Codec, EncodedBackend, get_backend
>>> backend = EncodedBackend(get_backend("fs", root="/srv/dv"), Codec("zstd", keys={"k1": key}))  # doctest: +SKIP

Refs are the inner backend's refs.  Reading decodes whatever format the bytes
are in (see :mod:`storage.codec`), so versions written before compression or
encryption was turned on, or with an older key still in the codec, stay
readable.
"""

from __future__ import annotations

from .base import already_holds, Backend, StoreOptions, as_content
from .codec import Codec
from .errors import DecodeError


class EncodedBackend:
    """``inner`` storing ``codec.encode(content)`` and reading ``codec.decode(bytes)``.

    It does not read anything back before storing: whether a configuration is
    a new version is decided once, in the index, before it is stored.  Storing
    the *same version* again (same ``StoreOptions.timestamp``) is recognised by
    the inner backend without decoding: fs and s3 name a version by that
    timestamp.  (git compares bytes, and encryption is randomised, so an
    encrypted git target would commit a repeated store again.)
    """

    def __init__(self, inner: Backend, codec: Codec) -> None:
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must be a storage.codec.Codec, not {type(codec).__name__}")
        self.inner = inner
        self.codec = codec
        self.name = inner.name
        self.history_is_immutable = bool(getattr(inner, "history_is_immutable", False))
        if hasattr(inner, "maintain"):  # housekeeping of the inner store (git: packing) is the same encoded or not
            self.maintain = inner.maintain

    def __repr__(self) -> str:
        return f"EncodedBackend({self.inner!r}, {self.codec!r})"

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    # --- Backend ---------------------------------------------------------------------
    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        return self.store_many([(content, path, options)])[0]

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """Encode and store several versions; refs in input order.  Uses the
        inner backend's ``store_many`` (one lock, one git process...) when it has one.
        """
        encoded = [(self.codec.encode(as_content(content, path)), path, options) for content, path, options in items]
        if hasattr(self.inner, "store_many"):
            return list(self.inner.store_many(encoded))  # type: ignore[attr-defined]
        return [self.inner.store(data, path, options) for data, path, options in encoded]

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes:
        data = self.inner.read(ref, options)
        try:
            return self.codec.decode(data)
        except DecodeError as exc:
            raise DecodeError(f"{self.name}: cannot decode {ref!r}: {exc}") from None

    def restore(self, content: bytes, ref: str, options: StoreOptions | None = None) -> str:
        """Encode ``content`` and let the inner backend restore it as ``ref``.

        If ``ref`` already decodes to ``content`` nothing is written and ``ref``
        is returned.  Fresh encoding gives new bytes (new nonce), so backends that
        name versions by digest return a new ref (see their ``restore``).
        """
        content = as_content(content, ref)
        if already_holds(self, ref, content):
            return ref
        return self.inner.restore(self.codec.encode(content), ref, options)

    def delete(self, ref: str) -> None:
        self.inner.delete(ref)

    def latest(self, path: str) -> str | None:
        return self.inner.latest(path)

    def healthy(self) -> bool:
        return self.inner.healthy()
