"""Read a version back from whichever of its copies is healthy, checking its sha256."""

from __future__ import annotations

import hashlib
import logging
from typing import Callable, Iterable

from .errors import IntegrityError, StorageError

log = logging.getLogger(__name__)


def read_first(
    copies: Iterable[tuple[str, str, str]], sha256: str, open_backend: Callable[[str], object]
) -> tuple[bytes, str]:
    """Content of the first copy ``(backend, ref, status)`` that reads back with the expected sha256.

    Returns ``(content, backend name)``; a copy that is unreadable or corrupt is logged and the next one
    tried. Raises :class:`StorageError` when none is good.
    """
    problems = []
    for backend_name, ref, status in copies:
        if status == "failed" or not ref:
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
        return content, backend_name
    if problems:
        raise IntegrityError("no good copy: " + "; ".join(problems))
    raise StorageError("no stored copy of this version")
