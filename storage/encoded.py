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
from .errors import DecodeError, IntegrityError, RefNotFound

_MISSING = object()


class EncodedBackend:
    """``inner`` storing ``codec.encode(content)`` and reading ``codec.decode(bytes)``.

    Idempotence compares *decoded* content (encryption is randomised, so equal
    configurations give different bytes): storing content equal to the current
    latest version at a path creates nothing and returns that version's ref.
    The check (read latest, then store) is not atomic across processes; a race
    can at worst add a duplicate version, never lose one.
    """

    def __init__(self, inner: Backend, codec: Codec) -> None:
        if not isinstance(codec, Codec):
            raise TypeError(f"codec must be a storage.codec.Codec, not {type(codec).__name__}")
        self.inner = inner
        self.codec = codec
        self.name = inner.name
        self.history_is_immutable = bool(getattr(inner, "history_is_immutable", False))

    def __repr__(self) -> str:
        return f"EncodedBackend({self.inner!r}, {self.codec!r})"

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()

    # --- helpers ---------------------------------------------------------------------
    def _decoded_latest(self, path: str) -> tuple[str | None, object]:
        """``(latest ref, its decoded content)``; content is ``_MISSING`` if unreadable."""
        ref = self.inner.latest(path)
        if ref is None:
            return None, _MISSING
        try:
            return ref, self.read(ref)
        except (RefNotFound, IntegrityError):  # DecodeError included: store a fresh, readable copy
            return ref, _MISSING

    # --- Backend ---------------------------------------------------------------------
    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        return self.store_many([(content, path, options)])[0]

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """Store several versions; refs in input order.

        Each item is compared with the latest version of its path (an earlier
        item of the same batch counts as latest).  Uses the inner backend's
        ``store_many`` (one lock, one git process...) when it has one.
        """
        prepared = [(as_content(content, path), path, options) for content, path, options in items]
        current: dict[str, tuple[object, object]] = {}  # path -> (("ref", str) | ("new", index), plain)
        for _content, path, _options in prepared:  # validates every path before anything is stored
            if path not in current:
                ref, plain = self._decoded_latest(path)
                current[path] = (("ref", ref), plain)
        pending: list[tuple[bytes, str, StoreOptions | None]] = []
        slots: list[tuple[str, object]] = []
        for content, path, options in prepared:
            where, plain = current[path]
            if plain is not _MISSING and plain == content:
                slots.append(where)  # type: ignore[arg-type]
                continue
            where = ("new", len(pending))
            pending.append((self.codec.encode(content), path, options))
            current[path] = (where, content)
            slots.append(where)
        if not pending:
            stored: list[str] = []
        elif hasattr(self.inner, "store_many"):
            stored = list(self.inner.store_many(pending))  # type: ignore[attr-defined]
        else:
            stored = [self.inner.store(data, path, options) for data, path, options in pending]
        return [stored[value] if kind == "new" else value for kind, value in slots]  # type: ignore[index,misc]

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
