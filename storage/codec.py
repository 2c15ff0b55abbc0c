"""At-rest compression and encryption of stored versions.

A :class:`Codec` turns a configuration into the bytes a backend keeps
(:meth:`Codec.encode`) and back (:meth:`Codec.decode`).

Formats
-------
* compression only: a standard gzip stream or a standard zstd frame, so plain
  tools (``zcat``, ``zstdcat``) read the stored file.
* encryption (AES-256-GCM): a small self-describing envelope::

      DVENC1\\n
      {"alg":"AES-256-GCM","comp":"zstd","kid":"k2","nonce":"<base64 of 12 bytes>"}\\n
      <ciphertext + 16-byte GCM tag of the (optionally compressed) plaintext>

  The header is one line of compact JSON (keys sorted).  Everything before the
  ciphertext -- the magic line and the header line, both newlines included --
  is the AEAD associated data, so the header cannot be altered either.  The
  nonce is 12 random bytes, fresh for every encode.

:meth:`Codec.decode` detects the format from the first bytes (envelope magic,
gzip ``1f 8b``, zstd ``28 b5 2f fd``; anything else is plain and returned
unchanged), so a target whose settings change still reads its older
versions, and a codec holding several keys reads versions written with any of
them (key rotation; new writes use the active ``key_id``).

Plain content that itself starts with one of those magic numbers could not be
told apart, so a codec that neither compresses nor encrypts writes such
content as a gzip stream instead (still readable with ``zcat``).

Key bytes never appear in ``repr``, in error messages or in the envelope; errors
name the key id.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import json
import os
import zlib
from typing import Any, Mapping

from .errors import DecodeError, StorageError

ENVELOPE_MAGIC = b"DVENC1\n"
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
_MAX_HEADER = 4096
_COMPRESSIONS = ("gzip", "zstd")


def _zstandard() -> Any:
    """The ``zstandard`` module, imported on first use."""
    try:
        import zstandard
    except ImportError:
        raise ModuleNotFoundError(
            "zstd compression needs the 'zstandard' package (pip install zstandard)", name="zstandard"
        ) from None
    return zstandard


def _compress(kind: str | None, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if kind == "zstd":
        return _zstandard().ZstdCompressor(level=3).compress(data)
    return data


def _decompress(kind: str | None, data: bytes, what: str) -> bytes:
    if kind == "gzip":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DecodeError(f"{what}: gzip data is corrupt or truncated ({exc or type(exc).__name__})") from None
    if kind == "zstd":
        try:
            zstandard = _zstandard()
        except ModuleNotFoundError as exc:
            raise StorageError(f"{what}: cannot read zstd data: {exc}") from None
        try:
            reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
            with reader:
                out = reader.read()
        except zstandard.ZstdError as exc:
            raise DecodeError(f"{what}: zstd data is corrupt or truncated ({exc})") from None
        return out
    return data


def _normalise_compression(compression: object) -> str | None:
    if compression is None:
        return None
    if isinstance(compression, str):
        value = compression.strip().lower()
        if value in ("", "none"):
            return None
        if value in _COMPRESSIONS:
            return value
    raise ValueError(f"unknown compression {compression!r}; expected one of: none, gzip, zstd")


class Codec:
    """Compression and/or AES-256-GCM encryption of stored versions.

    ``compression``: ``None`` / ``"none"``, ``"gzip"`` or ``"zstd"``.
    ``keys``: key id -> 32-byte key; encryption is on iff it is non-empty.
    ``key_id``: the key used for new writes (default: the first of ``keys``).
    """

    def __init__(
        self,
        compression: str | None = None,
        keys: Mapping[str, bytes] | None = None,
        key_id: str | None = None,
    ) -> None:
        self.compression = _normalise_compression(compression)
        if self.compression == "zstd":
            _zstandard()  # fail now, with a clear message, rather than on the first write
        self._ciphers: dict[str, Any] = {}
        if keys:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            for kid, key in keys.items():
                if not isinstance(kid, str) or not kid:
                    raise ValueError(f"encryption key id must be a non-empty string, not {kid!r}")
                if not isinstance(key, (bytes, bytearray, memoryview)):
                    raise TypeError(f"encryption key {kid!r} must be bytes, not {type(key).__name__}")
                if len(key) != KEY_BYTES:
                    raise ValueError(f"encryption key {kid!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}")
                self._ciphers[kid] = AESGCM(bytes(key))
        if key_id is not None and key_id != "":
            if not self._ciphers:
                raise ValueError(f"encryption key id {key_id!r} given but no encryption keys")
            if key_id not in self._ciphers:
                raise ValueError(
                    f"encryption key id {key_id!r} is not among the keys ({', '.join(map(repr, self._ciphers))})"
                )
            self._key_id = key_id
        else:
            self._key_id = next(iter(self._ciphers), "")

    # --- description ---------------------------------------------------------------
    @property
    def key_id(self) -> str:
        """The key id new writes use; ``""`` when not encrypting."""
        return self._key_id

    @property
    def encrypts(self) -> bool:
        return bool(self._ciphers)

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def __repr__(self) -> str:
        keys = ", ".join(f"{kid!r}: REDACTED" for kid in self._ciphers)
        return f"Codec(compression={self.compression!r}, key_id={self._key_id!r}, keys={{{keys}}})"

    # --- encode / decode -----------------------------------------------------------
    def encode(self, plain: bytes) -> bytes:
        """``plain`` as it should be stored."""
        if not isinstance(plain, (bytes, bytearray, memoryview)):
            raise TypeError(f"content must be bytes, not {type(plain).__name__}")
        plain = bytes(plain)
        body = _compress(self.compression, plain)
        if not self._ciphers:
            if self.compression is None and _sniff(plain) is not None:
                return _compress("gzip", plain)  # would be mistaken for encoded data
            return body
        nonce = os.urandom(NONCE_BYTES)
        header = {
            "alg": ALGORITHM,
            "comp": self.compression,
            "kid": self._key_id,
            "nonce": base64.b64encode(nonce).decode("ascii"),
        }
        prefix = ENVELOPE_MAGIC + json.dumps(header, sort_keys=True, separators=(",", ":")).encode("ascii") + b"\n"
        return prefix + self._ciphers[self._key_id].encrypt(nonce, body, prefix)

    def decode(self, data: bytes) -> bytes:
        """The plain content of stored ``data`` in any format this module writes (or plain)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        kind = _sniff(data)
        if kind == "envelope":
            return self._open_envelope(data)
        return _decompress(kind, data, "stored version")

    def _open_envelope(self, data: bytes) -> bytes:
        end = data.find(b"\n", len(ENVELOPE_MAGIC), len(ENVELOPE_MAGIC) + _MAX_HEADER)
        if end < 0:
            raise DecodeError("encrypted version (key id unknown): envelope header is missing or corrupt")
        prefix, ciphertext = data[: end + 1], data[end + 1 :]
        try:
            header = json.loads(prefix[len(ENVELOPE_MAGIC) : end].decode("utf-8"))
            if not isinstance(header, dict):
                raise ValueError("not an object")
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(f"encrypted version (key id unknown): envelope header is corrupt ({exc})") from None
        kid = header.get("kid")
        who = f"key id {kid!r}"
        if not isinstance(kid, str) or not kid:
            raise DecodeError(f"encrypted version ({who}): envelope header has no valid key id")
        if header.get("alg") != ALGORITHM:
            raise DecodeError(f"encrypted version ({who}): unsupported algorithm {header.get('alg')!r}")
        comp = header.get("comp")
        if comp is not None and comp not in _COMPRESSIONS:
            raise DecodeError(f"encrypted version ({who}): unknown compression {comp!r}")
        try:
            nonce = base64.b64decode(str(header.get("nonce", "")), validate=True)
        except (binascii.Error, ValueError):
            nonce = b""
        if len(nonce) != NONCE_BYTES:
            raise DecodeError(f"encrypted version ({who}): envelope nonce is corrupt")
        cipher = self._ciphers.get(kid)
        if cipher is None:
            known = ", ".join(map(repr, self._ciphers)) or "none"
            raise DecodeError(f"encrypted version ({who}): that key is not configured (known key ids: {known})")
        from cryptography.exceptions import InvalidTag

        try:
            body = cipher.decrypt(nonce, ciphertext, prefix)
        except InvalidTag:
            raise DecodeError(
                f"encrypted version ({who}): authentication failed -- wrong key for that id, or the data was altered"
            ) from None
        return _decompress(comp, body, f"encrypted version ({who})")


def _sniff(data: bytes) -> str | None:
    if data.startswith(ENVELOPE_MAGIC):
        return "envelope"
    if data.startswith(GZIP_MAGIC):
        return "gzip"
    if data.startswith(ZSTD_MAGIC):
        return "zstd"
    return None
