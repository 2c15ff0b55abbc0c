"""The search index: the newest normalised, masked configuration of every device, in the database.

Written by the index consumer (the index's one writer) in the transaction that creates a version
(:func:`put`, called by ``storage.index.records.apply_device_result`` with the masked view the device result
carries); filled once for an index from before it by ``devicevault search-index`` (:func:`missing` lists
what it must read from storage). Read by the portal's search (``portal.content.search_index``), which never
touches storage for the newest configurations.

Narrowing is done by the database, matching is not: a literal (or the longest literal every match of a regular
expression must contain, :func:`required_literal`) selects the candidate devices through SQLite's FTS5
trigram index (``search_fts``) or PostgreSQL's pg_trgm index (``ILIKE``), both case-insensitive, so a
superset; the caller then matches each candidate's lines with RE2 under its time limit. A literal under three
characters, or a pattern without one, reads every configuration in scope from the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from .models import Device, SearchText, Version, utcnow

#: devices whose configurations are fetched together
BATCH = 200


def put(session: Session, device_id: int, version_id: int, body: str | None) -> None:
    """Make ``body`` (the masked view of version ``version_id``) the searchable text of the device, unless
    the device already has a newer one indexed; ``None`` (the text is not at hand): the device has no
    searchable text until ``devicevault search-index`` reads it from storage."""
    row = session.get(SearchText, device_id)
    if body is None:
        if row is not None and row.version_id < version_id:
            session.delete(row)
        return
    if row is None:
        session.add(SearchText(device_id=device_id, version_id=version_id, body=body, updated_at=utcnow()))
    elif row.version_id <= version_id:
        row.version_id, row.body, row.updated_at = version_id, body, utcnow()


@dataclass(frozen=True)
class Candidate:
    device: str
    device_id: int
    version_id: int
    body: str


def _scope(query, groups: Sequence[str], platforms: Sequence[str], devices: Sequence[str]):
    if groups:
        query = query.where(Device.group_name.in_(list(groups)))
    if platforms:
        query = query.where(Device.platform.in_(list(platforms)))
    if devices:
        query = query.where(Device.name.in_(list(devices)))
    return query


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def candidate_ids(session: Session, literal: str = "", *, groups: Sequence[str] = (), platforms: Sequence[str] = (),
                  devices: Sequence[str] = ()) -> list[tuple[str, int]]:
    """(device name, device id) of the indexed devices in scope whose text may contain ``literal``
    (case-insensitive; "" = every one), by name."""
    query = select(Device.name, SearchText.device_id).join(Device, Device.id == SearchText.device_id)
    if len(literal) >= 3:
        if session.get_bind().dialect.name == "sqlite":
            phrase = '"' + literal.replace('"', '""') + '"'
            hits = select(text("rowid")).select_from(text("search_fts")).where(text("search_fts MATCH :phrase"))
            query = query.where(SearchText.device_id.in_(hits)).params(phrase=phrase)
        else:
            # the texts live in TOAST, which PostgreSQL's cost model does not see: it reads and filters every
            # row (1.2 s on 10,000 configurations for a rare name) rather than scan the trigram index (3 ms);
            # for this transaction only, it is left no other way than the index
            session.execute(text("SET LOCAL enable_seqscan = off"))
            session.execute(text("SET LOCAL enable_indexscan = off"))
            query = query.where(SearchText.body.ilike(f"%{_like_escape(literal)}%", escape="\\"))
    query = _scope(query, groups, platforms, devices).order_by(Device.name)
    return [(name, int(device_id)) for name, device_id in session.execute(query)]


def bodies(session: Session, ids: Sequence[tuple[str, int]], *, batch: int = BATCH) -> Iterator[list[Candidate]]:
    """The indexed texts of ``ids`` (from :func:`candidate_ids`), ``batch`` devices at a time, in that order."""
    for start in range(0, len(ids), batch):
        part = ids[start:start + batch]
        found = {d: (v, b) for d, v, b in session.execute(
            select(SearchText.device_id, SearchText.version_id, SearchText.body)
            .where(SearchText.device_id.in_([i for _, i in part])))}
        yield [Candidate(name, i, *found[i]) for name, i in part if i in found]


def version_numbers(session: Session, version_ids: Sequence[int]) -> dict[int, int]:
    """version id -> its number among its device's versions (1 = the first)."""
    numbers: dict[int, int] = {}
    ids = sorted(set(version_ids))
    for start in range(0, len(ids), 500):
        part = ids[start:start + 500]
        older = Version.__table__.alias("older")
        rows = session.execute(
            select(Version.id, func.count(older.c.id))
            .join(older, (older.c.device_id == Version.device_id) & (older.c.id <= Version.id))
            .where(Version.id.in_(part)).group_by(Version.id))
        numbers.update({int(v): int(n) for v, n in rows})
    return numbers


def version_shas(session: Session, version_ids: Sequence[int]) -> dict[int, str]:
    """version id -> its sha256."""
    ids = sorted(set(version_ids))
    shas: dict[int, str] = {}
    for start in range(0, len(ids), 500):
        shas.update(session.execute(select(Version.id, Version.sha256).where(Version.id.in_(ids[start:start + 500]))).all())
    return shas


def not_indexed(session: Session, *, groups: Sequence[str] = (), platforms: Sequence[str] = (),
                devices: Sequence[str] = ()) -> list[str]:
    """Devices in scope that have a version but no searchable text (an index from before the search
    index: ``devicevault search-index`` fills it), by name."""
    query = (select(Device.name).outerjoin(SearchText, SearchText.device_id == Device.id)
             .where(Device.last_change_at.is_not(None), SearchText.device_id.is_(None)))
    return list(session.scalars(_scope(query, groups, platforms, devices).order_by(Device.name)))


def missing(session: Session) -> list[tuple[int, str, str, int, str]]:
    """(device id, name, platform, newest version id, its sha256) of every device whose newest version is
    not the one indexed: what ``devicevault search-index`` reads from storage."""
    newest = select(Version.device_id, func.max(Version.id).label("vid")).group_by(Version.device_id).subquery()
    rows = session.execute(
        select(Device.id, Device.name, Device.platform, newest.c.vid, Version.sha256)
        .join(newest, newest.c.device_id == Device.id).join(Version, Version.id == newest.c.vid)
        .outerjoin(SearchText, SearchText.device_id == Device.id)
        .where((SearchText.device_id.is_(None)) | (SearchText.version_id < newest.c.vid))
        .order_by(Device.name))
    return [(int(a), b, c or "", int(d), e) for a, b, c, d, e in rows]


def required_literal(pattern: str) -> str:
    """The longest run of plain characters every match of the RE2 ``pattern`` must contain ("" when there
    is none of three characters or more, or the pattern has alternatives): only top-level characters count,
    a character made optional by ``?``, ``*`` or ``{`` is dropped, and ``\\.``-style escapes are literal."""
    if "|" in pattern:
        return ""
    runs: list[str] = []
    current = ""
    depth = 0
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            following = pattern[i + 1:i + 2]
            i += 2
            if following and not following.isalnum():  # an escaped character stands for itself
                if depth == 0:
                    current += following
                continue
            runs.append(current)
            current = ""
            continue
        if c == "[":
            runs.append(current)
            current = ""
            end = pattern.find("]", i + 2)
            i = len(pattern) if end < 0 else end + 1
            continue
        if c in "?*{":
            runs.append(current[:-1])
            current = ""
            if c == "{":
                end = pattern.find("}", i)
                i = len(pattern) if end < 0 else end + 1
            else:
                i += 1
            continue
        if c in "().^$+":
            depth += 1 if c == "(" else (-1 if c == ")" else 0)
            runs.append(current)
            current = ""
            i += 1
            continue
        if depth == 0:
            current += c
        i += 1
    runs.append(current)
    best = max(runs, key=len)
    return best if len(best) >= 3 else ""


@dataclass(frozen=True)
class LineComparison:
    """Which devices in scope have a configuration line (compared without its leading and trailing blanks),
    and which lack it."""

    line: str
    have: list[str]
    lack: list[str]
    not_indexed: list[str]  # devices with versions but no searchable text yet (neither list holds them)


def compare_line(session: Session, line: str, *, groups: Sequence[str] = (), platforms: Sequence[str] = (),
                 devices: Sequence[str] = ()) -> LineComparison:
    """:class:`LineComparison` of ``line`` over the newest configuration of every device in scope."""
    wanted = line.strip()
    if not wanted:
        raise ValueError("type the configuration line to compare")
    scope = dict(candidate_ids(session, "", groups=groups, platforms=platforms, devices=devices))
    have: set[str] = set()
    if session.get_bind().dialect.name == "postgresql":
        # the whole test in the database (a regular expression the trigram index serves): no text leaves it
        line = "".join(ch if ch.isalnum() or ch == " " else "\\" + ch for ch in wanted)
        session.execute(text("SET LOCAL enable_seqscan = off"))
        session.execute(text("SET LOCAL enable_indexscan = off"))
        query = (select(Device.name).join(SearchText, SearchText.device_id == Device.id)
                 .where(SearchText.body.regexp_match(f"(^|\n)[ \t]*{line}[ \t]*(\n|$)")))
        have.update(session.scalars(_scope(query, groups, platforms, devices)))
    else:
        for batch in bodies(session, candidate_ids(session, wanted, groups=groups, platforms=platforms,
                                                   devices=devices)):
            for c in batch:
                if wanted in c.body and any(x.strip() == wanted for x in c.body.splitlines()):
                    have.add(c.device)
    return LineComparison(wanted, sorted(have), sorted(set(scope) - have),
                          not_indexed(session, groups=groups, platforms=platforms, devices=devices))
