"""Read a version back from whichever of its copies is healthy, checking its sha256."""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Iterable

from .errors import IntegrityError, StorageError
from .index.statuses import CopyStatus

log = logging.getLogger(__name__)

_LANDED = CopyStatus.LANDED
_READABLE = CopyStatus.CHECKED


def read_first(
    copies: Iterable[tuple[str, str, str]], sha256: str, open_backend: Callable[[str], object]
) -> tuple[bytes, str]:
    """Content of the first copy ``(backend, ref, status)`` that reads back with the expected sha256.

    Returns ``(content, backend name)``; a copy that is unreadable or corrupt is logged and the next one
    tried. Raises :class:`StorageError` when none is good.
    """
    problems = []
    # landed copies first; copies a scrub found missing or corrupt last (someone may have fixed them)
    ordered = sorted(copies, key=lambda c: c[2] not in _LANDED)
    for backend_name, ref, status in ordered:
        if status not in _READABLE or not ref:
            continue
        try:
            content = open_backend(backend_name).read(ref)  # type: ignore[attr-defined]
        except (StorageError, OSError) as exc:
            problems.append(f"{backend_name}: {exc}")
            log.warning("reading %s from %s failed (%s); trying the next copy", ref, backend_name, exc)
            continue
        if hashlib.sha256(content).hexdigest() != sha256:
            problems.append(f"{backend_name}: sha256 mismatch for {ref}")
            log.warning("copy %s on %s does not match its sha256; trying the next copy", ref, backend_name)
            continue
        if problems:
            log.warning("read %s from %s after %d bad copy(ies): %s", ref, backend_name, len(problems), "; ".join(problems))
        return content, backend_name
    if problems:
        raise IntegrityError("no good copy: " + "; ".join(problems))
    raise StorageError("no stored copy of this version")
