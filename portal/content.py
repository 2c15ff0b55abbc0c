"""Configuration texts for the portal: read through the storage layout (failover, sha256 check), cached by
sha256, diffed and searched. No Streamlit here, so the bench and the tests call it directly.

A version's content never changes (its sha256 is checked on every read), so the cache is keyed by sha256
alone, shared by every session of the process, and bounded by size (least recently used texts go first).

Search patterns run on RE2 (``google-re2``): matching takes time linear in the text, whatever the pattern,
so no pattern can pin the portal (Python's ``re`` backtracks: ``(a+)+$`` on a line of 30 ``a`` and a ``!``
takes hours). The query's time limit is hard: the search runs in a thread of its own, and the answer
comes back at the limit, "too slow", with what was found so far (:func:`search`).
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Protocol, Sequence


from jobs import diffs
#: the memory RE2 may use for one pattern (a larger pattern is refused: "pattern too large")
from jobs.patterns import PATTERN_MEMORY, PatternError, compile_re2  # noqa: F401 - PATTERN_MEMORY: for readers
from storage.errors import StorageError
from storage.retrieve import read_first

Copies = Sequence[tuple[str, str, str]]  # (backend, ref, status)
log = logging.getLogger(__name__)


class ContentCache:
    """sha256 -> bytes, at most ``max_bytes`` in all (LRU). Thread safe."""

    def __init__(self, max_bytes: int = 256 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, sha256: str) -> bytes | None:
        with self._lock:
            value = self._items.get(sha256)
            if value is None:
                self.misses += 1
                return None
            self._items.move_to_end(sha256)
            self.hits += 1
            return value

    def put(self, sha256: str, content: bytes) -> None:
        if len(content) > self.max_bytes:
            return
        with self._lock:
            if sha256 in self._items:
                return
            self._items[sha256] = content
            self._size += len(content)
            while self._size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self._size -= len(dropped)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._items)


CACHE = ContentCache()


def read_version(sha256: str, copies: Copies, open_backend: Callable[[str], object],
                 cache: ContentCache | None = CACHE) -> bytes:
    """The content of the version ``sha256`` from the first good copy (``storage.retrieve.read_first``)."""
    if cache is not None:
        cached = cache.get(sha256)
        if cached is not None:
            return cached
    content, _ = read_first(copies, sha256, open_backend)
    if cache is not None:
        cache.put(sha256, content)
    return content


def as_text(content: bytes) -> str:
    return content.decode("utf-8", errors="replace")


def read_many(items: Iterable[tuple[str, Copies]], open_backend: Callable[[str], object], *, workers: int = 8,
              cache: ContentCache | None = CACHE) -> dict[str, bytes | StorageError]:
    """sha256 -> content (or the error that kept it from being read), reading uncached ones in parallel."""
    todo: dict[str, Copies] = {}
    out: dict[str, bytes | StorageError] = {}
    for sha, copies in items:
        hit = cache.get(sha) if cache is not None else None
        if hit is not None:
            out[sha] = hit
        else:
            todo.setdefault(sha, copies)

    def one(sha: str) -> tuple[str, bytes | StorageError]:
        try:
            return sha, read_version(sha, todo[sha], open_backend, cache)
        except StorageError as exc:
            return sha, exc

    if len(todo) <= 1:
        out.update(one(sha) for sha in todo)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(todo))) as pool:
            out.update(pool.map(one, list(todo)))
    return out


# --- diffs ----------------------------------------------------------------------------------------------
def unified_diff(old: str, new: str, old_label: str, new_label: str, context: int = 3) -> str:
    """Each hunk header names its configuration section: ``jobs.diffs`` (the CLI's ``diff`` uses it too)."""
    return diffs.unified_diff(old, new, old_label, new_label, context)


_STATS: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()
_STATS_LOCK = threading.Lock()


def line_stats(old: str, new: str, key: tuple[str, str] | None = None) -> tuple[int, int]:
    """(lines added, lines removed) from ``old`` to ``new``; cached under ``key`` (the two sha256s)."""
    if key is not None:
        with _STATS_LOCK:
            if key in _STATS:
                return _STATS[key]
    added = removed = 0
    matcher = difflib.SequenceMatcher(None, old.splitlines(), new.splitlines(), autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    if key is not None:
        with _STATS_LOCK:
            _STATS[key] = (added, removed)
            while len(_STATS) > 100_000:
                _STATS.popitem(last=False)
    return added, removed


@dataclass(frozen=True)
class SideRow:
    old_no: int | None
    old: str
    new_no: int | None
    new: str
    change: str  # "" (same), "changed", "removed", "added"


def side_by_side(old: str, new: str, context: int | None = 3) -> list[SideRow]:
    """Rows pairing the two texts' lines; ``context`` lines around each change (None = the whole file).
    A row with ``change == "..."`` stands for skipped unchanged lines and names the configuration section of
    the change after it (``… interface Gi0/1``, as the unified diff's hunk headers: ``jobs.diffs``)."""
    a, b = old.splitlines(), new.splitlines()
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    groups = [matcher.get_opcodes()] if context is None else list(matcher.get_grouped_opcodes(context))
    rows: list[SideRow] = []
    for n, group in enumerate(groups):
        section = diffs.hunk_section(a, b, group) if context is not None else ""
        if context is not None and (n or section):
            label = f"… {section}" if section else "…"
            rows.append(SideRow(None, label, None, label, "..."))
        for tag, i1, i2, j1, j2 in group:
            if tag == "equal":
                rows.extend(SideRow(i + 1, a[i], j + 1, b[j], "") for i, j in zip(range(i1, i2), range(j1, j2)))
            elif tag == "replace":
                for k in range(max(i2 - i1, j2 - j1)):
                    i, j = i1 + k, j1 + k
                    rows.append(SideRow(i + 1 if i < i2 else None, a[i] if i < i2 else "",
                                        j + 1 if j < j2 else None, b[j] if j < j2 else "",
                                        "changed" if i < i2 and j < j2 else ("removed" if i < i2 else "added")))
            elif tag == "delete":
                rows.extend(SideRow(i + 1, a[i], None, "", "removed") for i in range(i1, i2))
            elif tag == "insert":
                rows.extend(SideRow(None, "", j + 1, b[j], "added") for j in range(j1, j2))
    return rows


# --- search ---------------------------------------------------------------------------------------------
class SearchError(ValueError):
    """An invalid search (empty, or a regular expression that does not compile)."""


class Pattern(Protocol):
    """A compiled search pattern (RE2's)."""

    def search(self, text: str): ...


#: CSV cells starting with one of these are formulas to a spreadsheet (or can make one)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def compile_pattern(text: str, *, regex: bool, case_sensitive: bool) -> Pattern:
    """``text`` as an RE2 pattern (``regex``: RE2 syntax, else the text literally); :class:`SearchError` for
    an empty or invalid one, or one RE2 does not have (backreferences, lookaround)."""
    if not text:
        raise SearchError("type something to search for")
    try:
        return compile_re2(text, case_sensitive=case_sensitive, literal=not regex)
    except PatternError as exc:
        raise SearchError(f"{exc} (the search uses RE2 syntax: no backreferences or lookaround)") from None


def csv_export(frame) -> bytes:
    """A table (pandas DataFrame) as CSV bytes, every cell :func:`csv_safe`."""
    return frame.map(csv_safe).to_csv(index=False).encode()


def csv_safe(value):
    """A CSV cell a spreadsheet shows as text: a string starting with ``= + - @``, a tab or a carriage return
    gets a leading ``'`` (so ``=HYPERLINK(...)`` in a device's configuration never runs as a formula)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


@dataclass(frozen=True)
class Target:
    """One configuration to search: a device's version."""

    device: str
    number: int
    sha256: str
    created_at: object
    copies: Copies


@dataclass
class SearchResult:
    rows: list[dict] = field(default_factory=list)
    searched: int = 0  # configurations searched
    unreadable: list[str] = field(default_factory=list)  # "device vN: why" (never a storage path)
    truncated: str = ""  # why the search stopped early ("" = it did not)
    too_slow: bool = False  # it stopped at its time limit
    total: int = 0  # configurations to search


#: what a search says of a configuration none of whose copies could be read (the details go to the log)
UNREADABLE = "no copy could be read (storage unreachable, or the copies are missing or corrupt; see the portal's log)"


def _limited(work: Callable[[SearchResult, threading.Event], None], time_budget: float) -> SearchResult:
    """``work(result, stop)`` in a thread of its own, answered after ``time_budget`` seconds at the latest:
    then ``too_slow`` with what was found so far, and ``stop`` is set (the thread stops at its next line;
    RE2 releases the GIL while it matches, so even a long line never holds up another session)."""
    result = SearchResult()
    stop = threading.Event()
    failure: list[BaseException] = []

    def scan() -> None:
        try:
            work(result, stop)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    worker = threading.Thread(target=scan, name="devicevault-search", daemon=True)
    worker.start()
    worker.join(max(0.0, time_budget))
    if worker.is_alive():
        stop.set()
        return SearchResult(rows=list(result.rows), searched=result.searched, unreadable=list(result.unreadable),
                            too_slow=True, total=result.total,
                            truncated=f"was too slow: stopped at its {time_budget:g} s limit after searching "
                                      f"{result.searched} of {result.total} configuration(s)")
    if failure:
        raise failure[0]
    return result


def _match_lines(result: SearchResult, stop: threading.Event, device: str, number: int, sha256: str, text: str,
                 pattern: Pattern, *, context: int, max_results: int, only: Sequence[int] | None = None,
                 lines: list[str] | None = None) -> bool:
    """Every line of ``text`` matching ``pattern`` into ``result`` (``only``: just these line indexes, the
    others cannot match); True when the search must end here."""
    lines = text.splitlines() if lines is None else lines
    for i in (range(len(lines)) if only is None else only):
        line = lines[i]
        if stop.is_set():
            return True
        if pattern.search(line):
            lo, hi = max(0, i - context), min(len(lines), i + context + 1)
            result.rows.append({
                "device": device, "version": number, "sha": sha256[:12], "line": i + 1, "text": line,
                "context": "\n".join(f"{n + 1:>5}{'>' if n == i else ' '} {lines[n]}" for n in range(lo, hi)),
            })
            if len(result.rows) >= max_results:
                result.truncated = f"stopped at {max_results} matching lines"
                return True
    result.searched += 1
    return False


def search(targets: Sequence[Target], pattern: Pattern, open_backend: Callable[[str], object], *,
           context: int = 2, max_results: int = 2000, time_budget: float = 60.0, chunk: int = 16) -> SearchResult:
    """Every line matching ``pattern`` in ``targets`` (read from storage: every version of the devices) with
    ``context`` lines before and after.

    Reads configurations in parallel (through the cache) ``chunk`` at a time; stops after ``max_results``
    matching lines and says so in ``truncated``. The time limit is hard (:func:`_limited`). A configuration
    that cannot be read is listed as ``device vN: ...`` without storage paths (they go to the log).
    """
    def work(result: SearchResult, stop: threading.Event) -> None:
        result.total = len(targets)
        for start in range(0, len(targets), chunk):
            part = targets[start:start + chunk]
            contents = read_many(((t.sha256, t.copies) for t in part), open_backend)
            for t in part:
                content = contents.get(t.sha256)
                if isinstance(content, Exception) or content is None:
                    log.warning("search: %s v%s (%s) cannot be read: %s", t.device, t.number, t.sha256[:12], content)
                    result.unreadable.append(f"{t.device} v{t.number}: {UNREADABLE}")
                    continue
                if _match_lines(result, stop, t.device, t.number, t.sha256, as_text(content), pattern,
                                context=context, max_results=max_results):
                    return

    return _limited(work, time_budget)


def search_index(sessions: Callable[[], object], pattern: Pattern, query: str, *, regex: bool,
                 groups: Sequence[str] = (), platforms: Sequence[str] = (), devices: Sequence[str] = (),
                 context: int = 2, max_results: int = 2000, time_budget: float = 60.0) -> SearchResult:
    """The same search over the newest configuration of each device, from the index's search table
    (``storage.index.search``: no storage read). The database narrows the devices by the literal every match
    contains (the query, or :func:`storage.index.search.required_literal` of a regular expression); in each
    candidate the lines that can match are found over the whole text at once (:func:`_line_finder`: ``find``
    or one RE2 scan) and only those are matched line by line. Devices with versions but no searchable text
    yet are listed in ``unreadable`` (``devicevault search-index``)."""
    from storage.index import search as index

    literal = index.required_literal(query) if regex else query
    finder = _line_finder(query, regex=regex, case_sensitive=_case_sensitive(pattern))

    def work(result: SearchResult, stop: threading.Event) -> None:
        with sessions() as session:
            missing = index.not_indexed(session, groups=groups, platforms=platforms, devices=devices)
            result.unreadable.extend(f"{name}: not in the search index yet (run `devicevault search-index`)"
                                     for name in missing)
            ids = index.candidate_ids(session, literal, groups=groups, platforms=platforms, devices=devices)
            result.total = len(ids)
            found: list[tuple[int, dict]] = []
            for batch in index.bodies(session, ids):
                for c in batch:
                    if stop.is_set():
                        return
                    lines = c.body.splitlines()
                    only = finder(c.body, len(lines))
                    if only == []:
                        result.searched += 1
                        continue
                    before = len(result.rows)
                    done = _match_lines(result, stop, c.device, 0, "", c.body, pattern, context=context,
                                        max_results=max_results, only=only, lines=lines)
                    found += [(c.version_id, row) for row in result.rows[before:]]
                    if done:
                        break
                else:
                    continue
                break
            numbers = index.version_numbers(session, [v for v, _ in found])
            shas = index.version_shas(session, [v for v, _ in found])
            for version_id, row in found:
                row["version"], row["sha"] = numbers.get(version_id, 0), shas.get(version_id, "")[:12]

    return _limited(work, time_budget)


def _case_sensitive(pattern: Pattern) -> bool:
    options = getattr(pattern, "options", None)
    return bool(getattr(options, "case_sensitive", True))


def _line_finder(query: str, *, regex: bool, case_sensitive: bool) -> Callable[[str, int], list[int] | None]:
    """``finder(text, number of lines)``: the indexes of the lines of ``text`` that can match, found over the
    whole text at once (``str.find``, or one RE2 scan in multi-line mode); None when that cannot be told (a
    match across lines, a pattern anchored to the text's ends, line breaks other than ``\\n``): then every
    line is matched."""
    def lines_of(text: str, count: int, starts) -> list[int] | None:
        if text.count("\n") + (not text.endswith("\n")) != count:  # other line breaks (splitlines) count too
            return None
        out: list[int] = []
        line = last = 0
        for start in starts:
            if start is None:
                return None
            line += text.count("\n", last, start)
            last = start
            if not out or out[-1] != line:
                out.append(line)
        return out

    if not regex:
        needle = query if case_sensitive else query.lower()

        def literal_starts(text: str):
            hay = text if case_sensitive else text.lower()
            if len(hay) != len(text):  # lower() changed the length: positions would not map back
                yield None
                return
            at = hay.find(needle)
            while at >= 0:
                yield at
                at = hay.find(needle, at + 1)

        return lambda text, count: lines_of(text, count, literal_starts(text))
    if "\\A" in query or "\\z" in query:
        return lambda text, count: None
    try:
        whole = compile_re2("(?m)" + query, case_sensitive=case_sensitive)
    except PatternError:
        return lambda text, count: None

    def regex_starts(text: str):
        for m in whole.finditer(text):
            start, end = m.span()
            yield None if "\n" in text[start:end] else start

    return lambda text, count: lines_of(text, count, regex_starts(text))

