"""The scrub: read every copy of every version back, check its sha256, and optionally repair it.

A copy is *missing* when its target no longer has it, *corrupt* when it reads back with another sha256 or
cannot be decoded (wrong key, damaged bytes), *unreachable* when the target is down (nothing can be said
about it then; it is reported and left as it is). ``repair`` writes a missing or corrupt copy back from a
good copy of the same version (``Backend.restore``) and reads it again to be sure.

Pending copies (still in the outbox) and pruned ones (removed by retention) are not read.
The index records what was found: ``copies.status`` becomes ``missing``/``corrupt`` (or ``stored`` again
after a repair, or when someone put the copy back), ``copies.checked_at`` the time of the check.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.base import StoreOptions
from storage.errors import IntegrityError, RefNotFound, StorageError
from storage.index.models import Copy, CopyStatus, Device, Version

from jobs.controls import one_line
from jobs.deliver.locations import StorageConfigError, StorageLayout

log = logging.getLogger(__name__)


@dataclass
class CopyProblem:
    device: str
    version: int  # the device's version number (1 = first)
    sha256: str
    target: str
    ref: str
    problem: str  # missing | corrupt | unreachable
    detail: str
    repaired: bool = False
    new_ref: str = ""

    def as_dict(self) -> dict:
        return {"device": self.device, "version": self.version, "sha256": self.sha256[:12], "target": self.target,
                "problem": self.problem, "repaired": self.repaired, "detail": self.detail, "ref": self.new_ref or self.ref}


@dataclass
class VerifyReport:
    checked: int = 0
    problems: list[CopyProblem] = field(default_factory=list)
    skipped: int = 0  # pending or pruned copies, not read

    @property
    def unresolved(self) -> list[CopyProblem]:
        return [p for p in self.problems if not p.repaired]

    @property
    def clean(self) -> bool:
        return not self.unresolved


def verify(
    sessions: sessionmaker[Session],
    layout: StorageLayout,
    *,
    repair: bool = False,
    targets: list[str] | None = None,
    devices: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Check (and with ``repair`` fix) every copy; ``progress(n)`` is called as copies are read."""
    report = VerifyReport()
    with sessions.begin() as session:
        query = (
            select(Copy, Version, Device.name)
            .join(Version, Version.id == Copy.version_id)
            .join(Device, Device.id == Version.device_id)
            .order_by(Device.name, Version.id, Copy.id)
        )
        if devices:
            query = query.where(Device.name.in_(devices))
        rows = session.execute(query).all()
        numbers = _version_numbers(session, {v.device_id for _, v, _ in rows})
        by_version: dict[int, list[tuple[Copy, Version, str]]] = defaultdict(list)
        for row in rows:
            by_version[row[1].id].append(tuple(row))  # type: ignore[arg-type]
        to_check = sum(1 for c, _, _ in rows if c.status in CopyStatus.CHECKED and (not targets or c.backend in targets))
        if total:
            total(to_check)
        now = datetime.now(timezone.utc)
        for copies in by_version.values():
            _verify_version(layout, copies, numbers, report, repair=repair, targets=targets, now=now,
                            progress=progress)
    return report


def _version_numbers(session: Session, device_ids: set[int]) -> dict[int, int]:
    numbers: dict[int, int] = {}
    if not device_ids:
        return numbers
    counters: dict[int, int] = defaultdict(int)
    for version_id, device_id in session.execute(
        select(Version.id, Version.device_id).where(Version.device_id.in_(device_ids)).order_by(Version.id)
    ).all():
        counters[device_id] += 1
        numbers[version_id] = counters[device_id]
    return numbers


def _verify_version(layout, copies, numbers, report: VerifyReport, *, repair, targets, now, progress) -> None:
    good: bytes | None = None
    bad: list[tuple[Copy, CopyProblem]] = []
    for copy, version, device in copies:
        checked = copy.status in CopyStatus.CHECKED and (not targets or copy.backend in targets)
        if not checked:
            if copy.status in (CopyStatus.STORED, CopyStatus.UNCHANGED) and good is None:
                good = _read_good(layout, copy, version)  # a repair source on a target not being checked
            else:
                report.skipped += copy.status in (CopyStatus.PENDING, CopyStatus.PRUNED)
            continue
        report.checked += 1
        problem, detail, content = _check(layout, copy, version)
        copy.checked_at = now
        if problem is None:
            if copy.status != CopyStatus.UNCHANGED:
                copy.status = CopyStatus.STORED
            copy.error = ""
            good = good if good is not None else content
        else:
            found = CopyProblem(device, numbers.get(version.id, 0), version.sha256, copy.backend, copy.ref, problem, detail)
            report.problems.append(found)
            log.warning("verify: %s version %s on %s is %s: %s", device, found.version, copy.backend, problem, detail)
            if problem != "unreachable":
                copy.status, copy.error = problem, detail
                bad.append((copy, found))
        if progress:
            progress(1)
    if not repair or not bad:
        return
    for copy, found in bad:
        if good is None:
            found.detail += "; cannot repair: no good copy of this version on any target"
            continue
        version = copies[0][1]
        try:
            backend = layout.open(copy.backend)
            options = StoreOptions(message=f"{one_line(found.device)}: restore version {found.version} (devicevault verify --repair)",
                                   device=found.device, run_id=version.run_id)
            new_ref = backend.restore(good, copy.ref, options)
            if hashlib.sha256(backend.read(new_ref)).hexdigest() != version.sha256:
                raise IntegrityError(f"{copy.backend}: the restored copy reads back with another sha256")
        except (StorageError, OSError, StorageConfigError) as exc:
            found.detail += f"; repair failed: {exc}"
            log.warning("verify: repairing %s version %s on %s failed: %s", found.device, found.version, copy.backend, exc)
            continue
        copy.ref, copy.status, copy.error = new_ref, CopyStatus.STORED, ""
        copy.key_id = layout.key_id_for(copy.backend) if copy.backend in layout.targets else copy.key_id
        found.repaired, found.new_ref = True, new_ref
        log.info("verify: repaired %s version %s on %s", found.device, found.version, copy.backend)


def _check(layout: StorageLayout, copy: Copy, version: Version) -> tuple[str | None, str, bytes | None]:
    if not copy.ref:
        return "missing", "no ref recorded", None
    try:
        content = layout.open(copy.backend).read(copy.ref)
    except RefNotFound as exc:
        return "missing", str(exc), None
    except IntegrityError as exc:  # cannot be decoded: damaged bytes, wrong or unknown key
        return "corrupt", str(exc), None
    except (StorageError, OSError, StorageConfigError) as exc:
        return "unreachable", str(exc), None
    digest = hashlib.sha256(content).hexdigest()
    if digest != version.sha256:
        return "corrupt", f"sha256 {digest[:12]} instead of {version.sha256[:12]}", None
    return None, "", content


def _read_good(layout: StorageLayout, copy: Copy, version: Version) -> bytes | None:
    problem, _, content = _check(layout, copy, version)
    return content if problem is None else None

