"""Turn what a device printed into the text DeviceVault hashes, stores and diffs.

The rules come from the platform data file: output matching an ``errors`` pattern is refused, output that
does not match every ``complete`` pattern is refused as cut short, and every line matching a ``noise``
pattern is dropped, so a configuration whose only difference is a timestamp or counter is the same version.
"""

from __future__ import annotations

import hashlib

from .errors import CommandRejected, IncompleteOutput
from .platforms import Platform

#: Larger output than this is refused rather than stored (a device stuck printing, or the wrong command).
MAX_CONFIG_BYTES = 32 * 1024 * 1024


def decode_output(raw: bytes | str) -> str:
    """Device output as text. Bytes that are not UTF-8 are kept reversibly as surrogate escapes."""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", errors="surrogateescape")


def normalize(device: str, platform: Platform, outputs: list[str]) -> str:
    """The stored text for ``device``: its command outputs, checked, with volatile lines removed."""
    text = "\n".join(o.replace("\r\n", "\n").replace("\r", "\n") for o in outputs)
    size = len(text.encode("utf-8", errors="surrogateescape"))
    if size > MAX_CONFIG_BYTES:
        raise IncompleteOutput(device, f"output of {size} bytes is larger than the {MAX_CONFIG_BYTES} byte limit")
    if not text.strip():
        raise IncompleteOutput(device, "the device returned an empty configuration")
    for pattern in platform.errors:
        match = pattern.search(text)
        if match:
            line = match.group(0).strip()
            raise CommandRejected(device, f"the device rejected the command ({platform.name}): {line!r}")
    for pattern in platform.complete:
        if not pattern.search(text):
            raise IncompleteOutput(
                device,
                "the configuration is incomplete: the output ended early (connection closed or cut short); "
                f"no match for {pattern.pattern!r}",
            )
    kept = [line.rstrip() for line in text.split("\n") if not any(p.search(line) for p in platform.noise)]
    while kept and not kept[0].strip():
        kept.pop(0)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n"


def to_bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def sha256_text(text: str) -> str:
    return hashlib.sha256(to_bytes(text)).hexdigest()
