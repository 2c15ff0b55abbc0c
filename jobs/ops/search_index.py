"""Fill the search index of an index that predates it (``devicevault search-index``).

The index consumer writes each device's searchable text with every new version (``storage.index.search``);
an index from before migration 0007 has versions without one. This reads the newest version of each such
device from storage once (the first good copy, sha256 checked), masks it with its platform's secret patterns
(the stored text may carry kept secrets: ``devicevault_secrets: keep``) and writes it. Idempotent: a device
whose newest version is indexed is skipped, so it can be stopped and run again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError
from storage.index import search
from storage.retrieve import read_first

log = logging.getLogger(__name__)


@dataclass
class Backfill:
    indexed: int = 0
    failed: list[str] = field(default_factory=list)  # "device: why" (no storage paths: those are logged)


def masked(platform_name: str, text: str) -> str:
    """``text`` with the secrets of its platform masked by the one masker (``jobs.collect.normalize``; a
    platform DeviceVault does not know: as it is, for lack of rules)."""
    from jobs.collect.normalize import SecretsMode, clean_lines
    from jobs.collect.platforms import get_platform

    platform = get_platform(platform_name) if platform_name else None
    if platform is None:
        return text
    return "\n".join(clean_lines(platform, text, SecretsMode.MASK))


def backfill(sessions: sessionmaker[Session], open_backend: Callable[[str], object], *,
             progress: Callable[[int, int], None] | None = None, batch: int = 100) -> Backfill:
    """Index the newest version of every device whose newest version is not indexed yet."""
    from sqlalchemy import select

    from storage.index.models import Copy

    outcome = Backfill()
    with sessions() as session:
        todo = search.missing(session)
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        texts: list[tuple[int, int, str]] = []
        with sessions() as session:
            copies: dict[int, list[tuple[str, str, str]]] = {}
            for vid, backend, ref, status in session.execute(
                    select(Copy.version_id, Copy.backend, Copy.ref, Copy.status)
                    .where(Copy.version_id.in_([p[3] for p in part])).order_by(Copy.id)):
                copies.setdefault(vid, []).append((backend, ref, status))
        for device_id, name, platform, version_id, sha in part:
            try:
                content, _ = read_first(copies.get(version_id, []), sha, open_backend)
            except StorageError as exc:
                log.warning("search-index: %s (version %s) cannot be read: %s", name, sha[:12], exc)
                outcome.failed.append(f"{name}: no copy of its newest version could be read (see the log)")
                continue
            texts.append((device_id, version_id, masked(platform, content.decode("utf-8", errors="replace"))))
        with sessions.begin() as session:
            for device_id, version_id, body in texts:
                search.put(session, device_id, version_id, body)
        outcome.indexed += len(texts)
        if progress is not None:
            progress(min(start + batch, len(todo)), len(todo))
    return outcome
