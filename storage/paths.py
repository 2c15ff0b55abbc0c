"""Safe, reversible names for path components and path validation.

Device and group names come from inventories and may contain anything
(``../../etc/x``, spaces, slashes, unicode).  :func:`encode_component` turns
such a name into a single, harmless path component; :func:`decode_component`
gives the original back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes

from .errors import UnsafePath

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")
_ENCODED = re.compile(r"\A(?:[A-Za-z0-9._-]|%[0-9A-F]{2})+\Z")


def encode_component(name: str) -> str:
    """Percent-encode ``name`` (UTF-8) into one safe path component.

    Everything outside ``[A-Za-z0-9._-]`` is encoded, and so are leading dots,
    so the result is never empty, ``.``, ``..`` or a hidden file name.
    """
    if not isinstance(name, str) or name == "":
        raise UnsafePath(f"empty name cannot be used as a path component: {name!r}")
    out: list[str] = []
    leading = True
    for byte in name.encode("utf-8"):
        if byte == 0x2E and leading:  # "."
            out.append("%2E")
            continue
        leading = False
        out.append(chr(byte) if byte in _SAFE else f"%{byte:02X}")
    return "".join(out)


def decode_component(s: str) -> str:
    """Inverse of :func:`encode_component`."""
    if not _ENCODED.match(s or ""):
        raise UnsafePath(f"not an encoded path component: {s!r}")
    return unquote_to_bytes(s).decode("utf-8")


#: first component of every raw copy: ``encode_component`` never emits ``@``, so no group collides with it
RAW_ROOT = "@raw"


def raw_path(group: str, host: str) -> str:
    """``"@raw/<encoded group>/<encoded host>"`` -- where a device's raw device output is kept
    (``devicevault_keep_raw``, encrypted targets only)."""
    return f"{RAW_ROOT}/{device_path(group, host)}"


def device_path(group: str, host: str) -> str:
    """``"<encoded group>/<encoded host>"`` -- the storage path of one device."""
    return f"{encode_component(group)}/{encode_component(host)}"


def split_relpath(path: str, *, target: str = "storage") -> tuple[str, ...]:
    """Validate a backend path and return its components.

    Refuses absolute paths, empty / ``.`` / ``..`` components, backslashes and
    control characters.  Components are otherwise taken as they are (callers encode
    untrusted names with :func:`encode_component` first).
    """
    if not isinstance(path, str) or path == "":
        raise UnsafePath(f"{target}: empty path {path!r}")
    if "\\" in path or any(ord(c) < 0x20 or c == "\x7f" for c in path):
        raise UnsafePath(f"{target}: path {path!r} contains a control character or backslash")
    if path.startswith("/") or re.match(r"\A[A-Za-z]:/", path):
        raise UnsafePath(f"{target}: absolute path {path!r} refused")
    parts = tuple(path.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePath(f"{target}: path {path!r} has an empty, '.' or '..' component")
    return parts


def resolve_inside(root: str | os.PathLike[str], relpath: str) -> Path:
    """Join ``relpath`` to ``root`` and raise :class:`UnsafePath` if it escapes.

    Symlinks are followed, so a link inside the root pointing outside is
    refused as well.
    """
    split_relpath(str(relpath), target=str(root))
    base = Path(root).resolve()
    candidate = (base / PurePosixPath(relpath)).resolve()
    if candidate != base and not candidate.is_relative_to(base):
        raise UnsafePath(f"{root}: path {relpath!r} resolves outside the root")
    return candidate
