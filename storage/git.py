"""Git backend: one file per device in a real repository, one commit per change.

The file for ``path`` lives at ``<repo>/<path>``.  Each changed device gets
exactly one commit; unchanged content makes no commit.  Writes are
serialised across processes by an ``flock`` on ``.git/devicevault.lock``.

Ref format: ``<branch>:<path>@<40-hex commit sha>`` -- the commit that
produced (last changed) that version.  Git history is immutable here:
:meth:`GitBackend.delete` of the newest version commits the previous content
(or removes the file); deleting an older version is a no-op.  ``restore`` of a
lost version lands as a new commit (see :meth:`GitBackend.restore`).

Write path (:meth:`GitBackend.store_many`): ONE git process per call, whatever
the number of devices (``python -m bench.gitcount`` counts them; figures in
bench/README.md).  Before, the storage path cost 7.6 git processes per changed
device (``ls-tree`` before each commit, ``commit`` and the ``git maintenance
run --auto`` it starts, ``git version`` when GitPython is imported in each job,
``add``/``rev-list`` per batch, and the storage job's ``latest()`` reads); now
0.1 (one ``fast-import`` per batch of 10).  How:

1. the branch tip is read from ``refs/heads/<branch>`` / ``packed-refs`` in
   Python (``git rev-parse`` only for a reftable repository or a symbolic ref);
2. one ``git fast-import`` process answers ``ls <tip> <path>`` for the paths
   whose blob at the tip is not cached (the "identical content is a no-op"
   check: a retried storage job storing the same version again gets the same
   ref and makes no commit), then creates one commit per changed item (author,
   author date and message from :class:`~storage.base.StoreOptions` as
   ``git commit`` made them, committer = the backend's identity, first parent
   = the tip read in 1.), moves the branch (fast-forward only: a tip moved
   behind our back makes it fail, nothing changes) and prints each commit's
   id (``get-mark``) for the refs;
3. the work-tree files are written in Python and the index is rewritten in
   Python (format v2/v3: the changed paths' entries get the new blob ids and
   the files' real stat data, every other entry is copied byte for byte,
   optional extensions such as the cache-tree are dropped -- git rebuilds
   them), so ``git status`` stays clean and plain git users see a normal
   repository.  An index this code does not understand (v4, split index,
   sparse index, a directory/file clash) is brought up to date by a second
   process, ``git read-tree --reset -u``.  A crash between 2. and 3. leaves
   ``.git/devicevault-sync``; the next write repairs the work tree and index
   from the branch first (``git read-tree --reset -u``).

Measured alternative: fast-import followed by ``git read-tree -m -u <old>
<new>`` instead of 3. is two processes per batch and no simpler to get
right, so the index is written here.  ``fastimport.unpackLimit=0`` keeps
fast-import from starting ``git unpack-objects`` for small imports (a second,
hidden process); the resulting small packs are rolled up with ``git repack
-d -l --geometric=2`` when there are more than :data:`PACK_LIMIT` of them
(one extra process every few dozen batches).  An unchanged item whose
last commit is not in the per-backend cache costs one ``git log`` (a retried
job, never the normal path).  Reads, ``latest``, ``restore`` and ``delete``
still use the git CLI (one or two processes each).

Maintenance (:meth:`GitBackend.maintain`, run by the scheduler's maintenance pass, at most hourly per
installation): every batch leaves one small pack and ``restore``/``delete`` (``git commit``) leave loose
objects, while automatic gc is off (``gc.auto=0``, ``maintenance.auto=false``: no git process may start
behind a store's back).  ``maintain`` runs ``git repack -d -l -q --geometric=2``: loose objects and the
small packs are rolled into one pack, the big pack is left alone unless the small ones add up to half its
size, so the cost follows what was written since the last pass, not the repository's size, and the pack
count stays logarithmic (one or two in practice); ``-d`` also removes the loose objects now packed
(``prune-packed``).  Then ``git commit-graph write --reachable --changed-paths --split`` adds the new
commits to the commit-graph as a small new layer (with changed-path Bloom filters, so ``git log --
<path>`` -- ``latest``, the refs of a retried job, anyone browsing a device's history -- skips the
commits that did not touch the path instead of diffing every one).  Nothing to do (no loose object, at
most one pack, counted in Python, and no full repack due) starts no git process.

Full repack, when due (at most once per ``full_repack_interval`` seconds, default
:data:`FULL_REPACK_INTERVAL` = 24 h, a per-target option in the storage file; the time and the pack it
made are recorded in ``<git dir>/``:data:`FULL_REPACK_MARK`, so every process and every scheduler agrees):
``git repack -a -d -f -k -l`` with :data:`FULL_REPACK_OPTIONS` instead of the geometric one, then the
commit-graph is rewritten as one layer (``--split=replace``).  Why: ``fast-import`` deltas each blob
against the previous blob of its stream, i.e. another device's configuration, and the geometric repack
reuses existing deltas, so without it a device's versions are never deltified against each other and the
repository grows ~2.75 KiB per commit (bench.gitgrowth: 269 MiB at 100,000 commits); ``-f`` searches the
deltas afresh (57 MiB).  ``-k`` keeps unreachable objects (packed, never pruned, as before).  A repository
already fully packed (its one pack is the one the last full repack made, no loose object) is left alone
even when the interval has passed.  Between two full repacks the geometric passes still keep
fast-import's deltas, so the size is the full-repack figure plus ~2.75 KiB per commit since the last one
(bench.gitgrowth with a full repack every 5,000 commits: 15.5 MiB at 20,000 instead of 54.3).

Both kinds hold the store lock (``.git/devicevault.lock``) and never wait for it: while a store holds it,
``maintain`` returns at once with ``skipped="busy"`` and the pass tries again later.  A store that comes
while ``maintain`` runs waits for it: a geometric pass is a repack of the recent packs (about a second);
a full repack rewrites the repository (about a minute of CPU at 100,000 commits, measured with
bench.gitgrowth; figures in :meth:`GitBackend.maintain`).  Measured (tests/test_storage_git.py, 202
single-device commits of 20 devices in 40 batches, a delete's loose objects): before, 41 packs of 126
KiB and 3 loose objects; after the geometric repack, 1 pack of 71 KiB, 0 loose, in 0.4 s here.
Compared: ``git maintenance run --task=loose-objects --task=incremental-repack`` left the loose objects
(it deletes them only on its next run) and a second pack; ``git repack -a -d`` every pass rewrites the
whole repository every hour; ``git gc`` also does that and expires reflogs and prunes.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from email.utils import parseaddr
from pathlib import Path
from typing import Iterator

from jobs.controls import escape_controls

from ._lock import file_lock
from .base import StoreOptions, as_content, as_utc, default_message
from .errors import RefNotFound, StorageError, TargetUnavailable, UnsafePath
from .paths import resolve_inside, split_relpath

log = logging.getLogger(__name__)

LOCK_NAME = "devicevault.lock"
#: left in the git directory while the branch may be ahead of the work tree and index (see the module doc)
SYNC_MARK = "devicevault-sync"
#: more packs than this in objects/pack and a write rolls them up (``git repack --geometric=2``)
PACK_LIMIT = 50
#: default seconds between two full repacks by :meth:`GitBackend.maintain` (per target: ``full_repack_interval``)
FULL_REPACK_INTERVAL = 24 * 3600
#: in the (common) git directory: ``<unix time> <pack name>`` of the last full repack
FULL_REPACK_MARK = "devicevault-full-repack"
#: the full repack's delta search (bench.gitgrowth; see :meth:`GitBackend.maintain`)
FULL_REPACK_OPTIONS = ("--window=10", "--depth=50")
#: seconds a write waits for someone else's ``index.lock`` before it gives up (the next write repairs)
INDEX_LOCK_WAIT = 5.0
#: an ``index.lock`` older than this (seconds) that no live process holds open is stale and removed
#: (:meth:`GitBackend._clear_stale_index_lock`)
STALE_INDEX_LOCK = 120.0
_LOOSE_DIR = re.compile(r"\A[0-9a-f]{2}\Z")
_REF = re.compile(r"\A(?P<branch>[^:]+):(?P<path>.+)@(?P<sha>[0-9a-f]{40})\Z")
_BRANCH = re.compile(r"\A(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![./])\Z")
_SHA = re.compile(r"\A[0-9a-f]{40}\Z")
_IDENT_CRUD = re.compile(r"[<>\n\r\x00]")
_LS_CHUNK = 256  # ls queries written before their answers are read (keeps both pipes far from full)
_REGULAR = 0o100644


def _processes_holding(path: Path) -> list[int]:
    """Process ids on this host with ``path`` open (those whose ``/proc/<pid>/fd`` can be read)."""
    target = str(path)
    holders = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    holders.append(int(entry.name))
                    break
            except OSError:
                continue
    return holders


def git_blob_sha(content: bytes) -> str:
    """The object id git gives ``content`` as a blob (sha1 repositories)."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


def _quote(path: str) -> bytes:
    """``path`` as a C-style quoted fast-import path (any byte allowed)."""
    out = bytearray(b'"')
    for b in path.encode("utf-8", "surrogateescape"):
        if b in (0x22, 0x5C):
            out += b"\\" + bytes([b])
        elif b < 0x20 or b == 0x7F:
            out += b"\\%03o" % b
        else:
            out.append(b)
    return bytes(out + b'"')


def _clean_message(message: str) -> bytes:
    """What ``git commit -m`` stores (cleanup "whitespace"): trailing blanks, leading/trailing and repeated
    empty lines removed, one final newline; nothing for an empty message."""
    lines: list[str] = []
    for line in message.replace("\r\n", "\n").split("\n"):
        line = line.rstrip()
        if line or (lines and lines[-1]):
            lines.append(line)
    while lines and not lines[-1]:
        lines.pop()
    return ("\n".join(lines) + "\n").encode() if lines else b""


def _ident(name: str, email: str) -> bytes:
    name = _IDENT_CRUD.sub("", name).strip()
    email = _IDENT_CRUD.sub("", email).strip()
    return f"{name} <{email}>".encode() if name else f"<{email}>".encode()


@contextmanager
def _try_file_lock(lock_path: Path) -> Iterator[bool]:
    """The ``flock`` of :func:`storage._lock.file_lock` on the same file, without waiting: yields False
    (holding nothing) when someone else holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _IndexUnsupported(Exception):
    """An index this module does not rewrite itself (git does it instead)."""


class GitBackend:
    name = "git"
    #: old versions stay readable after delete(); history is never rewritten
    history_is_immutable = True

    def __init__(
        self,
        repo_path: str | os.PathLike[str],
        branch: str = "main",
        author_name: str = "DeviceVault",
        author_email: str = "devicevault@localhost",
        full_repack_interval: float | str = FULL_REPACK_INTERVAL,
    ) -> None:
        if not _BRANCH.match(branch or ""):
            raise ValueError(f"invalid branch name {branch!r}")
        try:
            self.full_repack_interval = float(full_repack_interval)
        except (TypeError, ValueError):
            raise ValueError(f"full_repack_interval must be a number of seconds, not {full_repack_interval!r}") from None
        if not self.full_repack_interval >= 0:
            raise ValueError(f"full_repack_interval must not be negative, not {full_repack_interval!r}")
        self.repo_path = Path(repo_path)
        self.branch = branch
        self.author_name = author_name
        self.author_email = author_email
        self._tlock = threading.Lock()
        # path -> (blob sha, commit sha); valid while the branch tip is _cache_tip
        self._cache: dict[str, tuple[str, str]] = {}
        self._cache_tip: str | None = None
        self.work_tree = self.repo_path.absolute()
        self.git_dir, self.common_dir = self._open_or_init()

    def __repr__(self) -> str:
        return f"GitBackend(repo_path={str(self.repo_path)!r}, branch={self.branch!r})"

    def close(self) -> None:
        """Nothing to release: no git process outlives a call."""

    # --- repository setup ------------------------------------------------------
    def _find_git_dir(self) -> Path | None:
        dotgit = self.work_tree / ".git"
        if dotgit.is_dir():
            return dotgit
        if dotgit.is_file():  # a linked work tree or a submodule: "gitdir: <path>"
            text = dotgit.read_text(errors="replace").strip()
            if text.startswith("gitdir:"):
                found = Path(text[len("gitdir:"):].strip())
                return found if found.is_absolute() else (self.work_tree / found).resolve()
        return None

    def _open_or_init(self) -> tuple[Path, Path]:
        where = f"git {self.repo_path}"
        try:
            self.repo_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetUnavailable(f"{where}: cannot create repository directory: {exc.strerror or exc}") from exc
        git_dir = self._find_git_dir()
        if git_dir is None:
            if (self.work_tree / "HEAD").is_file() and (self.work_tree / "objects").is_dir():
                raise StorageError(f"{where}: bare repositories are not supported")
            if any(p.name != ".git" for p in self.work_tree.iterdir()):
                raise StorageError(f"{where}: directory exists, is not empty and is not a git repository")
            self._run("init", "-q", f"--initial-branch={self.branch}", cwd=self.work_tree, what="git init")
            git_dir = self._find_git_dir()
            if git_dir is None:
                raise StorageError(f"{where}: git init made no repository")
        common = git_dir
        try:
            common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
        except OSError:
            pass
        try:
            head = (git_dir / "HEAD").read_text().strip()
        except OSError as exc:
            raise StorageError(f"{where}: cannot read HEAD: {exc.strerror or exc}") from exc
        if not head.startswith("ref: "):
            raise StorageError(f"{where}: HEAD is detached, expected branch {self.branch!r}")
        current = head[len("ref: "):].strip()
        if current != f"refs/heads/{self.branch}":
            self.git_dir, self.common_dir = git_dir, common
            if self._read_ref(current) is not None:
                raise StorageError(
                    f"{where}: repository is on branch {current.removeprefix('refs/heads/')!r}, expected {self.branch!r}"
                )
            self._run("symbolic-ref", "HEAD", f"refs/heads/{self.branch}", what="git symbolic-ref")
        return git_dir, common

    # --- git plumbing ----------------------------------------------------------
    def _env(self, options: StoreOptions | None = None) -> dict[str, str]:
        env = {
            "GIT_LITERAL_PATHSPECS": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_COMMITTER_NAME": self.author_name,
            "GIT_COMMITTER_EMAIL": self.author_email,
            "GIT_AUTHOR_NAME": self.author_name,
            "GIT_AUTHOR_EMAIL": self.author_email,
        }
        if options is not None:
            name, email = self._author(options)
            env["GIT_AUTHOR_NAME"] = name
            env["GIT_AUTHOR_EMAIL"] = email
            if options.timestamp is not None:
                env["GIT_AUTHOR_DATE"] = f"{int(as_utc(options.timestamp).timestamp())} +0000"
        return env

    def _author(self, options: StoreOptions) -> tuple[str, str]:
        name, email = parseaddr(options.author) if "<" in options.author else (options.author, "")
        return name or options.author or self.author_name, email or self.author_email

    def _cmd(self, *args: str) -> list[str]:
        return [
            "git",
            "-c", f"user.name={self.author_name}",
            "-c", f"user.email={self.author_email}",
            "-c", "commit.gpgsign=false",
            "-c", "core.autocrlf=false",
            "-c", "core.safecrlf=false",
            "-c", "core.quotepath=false",
            "-c", "core.splitIndex=false",
            "-c", "gc.auto=0",
            "-c", "maintenance.auto=false",
            *args,
        ]

    def _run(self, *args: str, options: StoreOptions | None = None, input: bytes | None = None,
             cwd: Path | None = None, what: str = "", check: bool = True) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(
                self._cmd(*args), cwd=cwd or self.work_tree, env={**os.environ, "LANGUAGE": "C", **self._env(options)},
                input=input, capture_output=True,
            )
        except OSError as exc:
            raise TargetUnavailable(f"git {self.repo_path}: cannot run git: {exc}") from exc
        if check and proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            raise StorageError(f"git {self.repo_path}: {what or 'git ' + args[0]} failed: {stderr}")
        return proc

    def _git(self, *args: str, options: StoreOptions | None = None, binary: bool = False, what: str = "") -> str | bytes:
        out = self._run(*args, options=options, what=what).stdout
        return out if binary else out.decode("utf-8", "surrogateescape")

    def _read_ref(self, name: str) -> str | None:
        """The commit id ``name`` (``refs/heads/...``) points to, read from the ref files; None if it does not exist."""
        try:
            text = (self.common_dir / name).read_text().strip()
        except (FileNotFoundError, NotADirectoryError):
            text = None
        except OSError:
            return self._rev_parse(name)
        if text is not None:
            return text if _SHA.match(text) else self._rev_parse(name)
        if (self.common_dir / "reftable").exists():
            return self._rev_parse(name)
        try:
            packed = (self.common_dir / "packed-refs").read_text()
        except FileNotFoundError:
            return None
        suffix = " " + name
        for line in packed.splitlines():
            if line.endswith(suffix) and _SHA.match(line[:40]):
                return line[:40]
        return None

    def _rev_parse(self, name: str) -> str | None:
        out = self._run("rev-parse", "-q", "--verify", f"{name}^{{commit}}", check=False)
        return out.stdout.decode().strip() or None if out.returncode == 0 else None

    def _tip(self) -> str | None:
        return self._read_ref(f"refs/heads/{self.branch}")

    def _ls_tree(self, paths: list[str]) -> dict[str, str]:
        """Blob ids of ``paths`` at the branch tip (missing paths left out)."""
        if not paths or self._tip() is None:
            return {}
        out = self._git("ls-tree", "-z", "--full-tree", f"refs/heads/{self.branch}", "--", *paths, what="git ls-tree")
        wanted = set(paths)
        found: dict[str, str] = {}
        for entry in out.split("\x00"):
            if not entry:
                continue
            meta, _, name = entry.partition("\t")
            _mode, kind, sha = meta.split()
            if kind == "blob" and name in wanted:
                found[name] = sha
        return found

    def _last_commits(self, paths: list[str]) -> dict[str, str]:
        """Newest commit on the branch touching each path (one git process)."""
        result: dict[str, str] = {}
        wanted = set(paths)
        if not wanted:
            return result
        env = {**os.environ, "LANGUAGE": "C", **self._env()}
        cmd = self._cmd("log", "--format=%x01%H", "--name-only", "-z", f"refs/heads/{self.branch}", "--", *sorted(wanted))
        proc = subprocess.Popen(cmd, cwd=self.work_tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        buf = b""

        def consume(record: bytes) -> None:
            if not record:
                return
            head, _, names = record.partition(b"\x00")
            sha = head.decode().strip()
            for raw in names.split(b"\x00"):
                name = raw.lstrip(b"\n").decode("utf-8", "surrogateescape")
                if name in wanted and name not in result:
                    result[name] = sha

        try:
            while len(result) < len(wanted):
                chunk = proc.stdout.read1(1 << 16)
                if not chunk:
                    for record in buf.split(b"\x01"):
                        consume(record)
                    break
                buf += chunk
                records = buf.split(b"\x01")
                buf = records.pop()
                for record in records:
                    consume(record)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.wait()
        return result

    def _check_path(self, path: str) -> str:
        parts = split_relpath(path, target=f"git {self.repo_path}")
        if any(p.lower() == ".git" for p in parts):
            raise UnsafePath(f"git {self.repo_path}: path {path!r} would write into .git")
        resolve_inside(self.repo_path, path)
        return path

    def _ref(self, path: str, sha: str) -> str:
        return f"{self.branch}:{path}@{sha}"

    def _parse_ref(self, ref: str) -> tuple[str, str]:
        m = _REF.match(ref) if isinstance(ref, str) else None
        if not m or m.group("branch") != self.branch:
            raise RefNotFound(f"git {self.repo_path}: malformed ref {ref!r} (expected {self.branch}:<path>@<sha>)")
        return self._check_path(m.group("path")), m.group("sha")

    @contextmanager
    def _locked(self):
        """DeviceVault's store lock on this repository; once held, a stale ``index.lock`` is cleared
        (:meth:`_clear_stale_index_lock`)."""
        if not self.git_dir.is_dir():
            raise TargetUnavailable(f"git {self.repo_path}: repository is gone")
        with file_lock(self.git_dir / LOCK_NAME):
            self._clear_stale_index_lock()
            yield

    def _clear_stale_index_lock(self) -> None:
        """Remove ``index.lock`` left by a git process that crashed (or was killed) while writing the index:
        git never removes it by itself, and every later write here would fail on it, each copy pending for
        good until a person deleted it. Called with DeviceVault's own store lock held (so no DeviceVault
        writer can be using it: every one holds that lock), it is removed only when also

        - no live process on this host has it open (git holds its lock file open from creating it to the
          rename that ends it; ``/proc/*/fd``), and
        - it is older than :data:`STALE_INDEX_LOCK` seconds (longer than any git write of the index takes:
          margin for a git run by a person or another user, whose open files cannot be read).

        The removal is logged (warning) with the lock's age."""
        lock = self.git_dir / "index.lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age < STALE_INDEX_LOCK:
            return
        holders = _processes_holding(lock)
        if holders:
            log.info("git %s: index.lock (%.0f s old) is held open by process(es) %s; left alone",
                     self.repo_path, age, ", ".join(map(str, holders)))
            return
        try:
            lock.unlink()
        except FileNotFoundError:
            return
        log.warning("git %s: removed a stale index.lock (%.0f s old, no process holds it: left by a git that "
                    "crashed or was killed); copies go on landing", self.repo_path, age)

    def _sync_cache(self) -> str | None:
        """Repair an interrupted write, drop the cache if the branch moved; returns the tip."""
        if (self.git_dir / SYNC_MARK).exists():
            self._reset_worktree()
        tip = self._tip()
        if tip != self._cache_tip:
            self._cache.clear()
            self._cache_tip = tip
        return tip

    def _reset_worktree(self) -> None:
        """Index and work tree := the branch tip (git does it: the slow, always-correct way)."""
        if self._tip() is not None:
            self._run("read-tree", "--reset", "-u", f"refs/heads/{self.branch}", what="git read-tree")
        (self.git_dir / SYNC_MARK).unlink(missing_ok=True)

    def _write(self, path: str, content: bytes) -> os.stat_result:
        target = resolve_inside(self.work_tree, path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.devicevault-tmp"
            tmp.write_bytes(content)
            os.replace(tmp, target)
            return os.lstat(target)
        except OSError as exc:
            raise StorageError(f"git {self.repo_path}: cannot write {path!r}: {exc.strerror or exc}") from exc

    # --- the index, read and written here (see the module doc) ------------------
    def _read_index(self) -> tuple[int, list[tuple[bytes, int, bytes]]]:
        """(version, [(path, stage, on-disk entry)]) of ``.git/index``; optional extensions are dropped."""
        try:
            data = (self.git_dir / "index").read_bytes()
        except FileNotFoundError:
            return 2, []
        if len(data) < 32 or data[:4] != b"DIRC":
            raise _IndexUnsupported("not an index")
        version, count = struct.unpack_from(">LL", data, 4)
        if version not in (2, 3):
            raise _IndexUnsupported(f"index version {version}")
        if data[-20:] != b"\x00" * 20 and hashlib.sha1(data[:-20]).digest() != data[-20:]:
            raise _IndexUnsupported("index checksum")
        entries = []
        pos, end = 12, len(data) - 20
        for _ in range(count):
            (flags,) = struct.unpack_from(">H", data, pos + 60)
            name_at = pos + 62
            if flags & 0x4000:
                if version < 3:
                    raise _IndexUnsupported("extended flags in a v2 index")
                name_at += 2
            nul = data.index(b"\x00", name_at, end)
            size = (name_at - pos + (nul - name_at) + 8) & ~7
            entries.append((data[name_at:nul], (flags >> 12) & 3, data[pos:pos + size]))
            pos += size
        while pos < end:
            signature, size = data[pos:pos + 4], struct.unpack_from(">L", data, pos + 4)[0]
            if not b"A" <= signature[:1] <= b"Z":
                raise _IndexUnsupported(f"index extension {signature!r}")
            pos += 8 + size
        return version, entries

    @staticmethod
    def _index_entry(name: bytes, blob: str, st: os.stat_result) -> bytes:
        m = 0xFFFFFFFF
        head = struct.pack(
            ">LLLLLLLLLL20sH",
            (st.st_ctime_ns // 1_000_000_000) & m, st.st_ctime_ns % 1_000_000_000,
            (st.st_mtime_ns // 1_000_000_000) & m, st.st_mtime_ns % 1_000_000_000,
            st.st_dev & m, st.st_ino & m, _REGULAR, st.st_uid & m, st.st_gid & m, st.st_size & m,
            bytes.fromhex(blob), min(len(name), 0xFFF),
        )
        size = (62 + len(name) + 8) & ~7
        return head + name + b"\x00" * (size - 62 - len(name))

    def _update_worktree(self, files: dict[str, tuple[bytes, str]]) -> None:
        """Write ``files`` (path -> (content, blob id)), already committed on the branch, to the work tree and the
        index; git's ``read-tree`` does it for an index this module does not rewrite."""
        try:
            version, entries = self._read_index()
            names = {path.encode("utf-8", "surrogateescape"): path for path in files}
            for name, _stage, _raw in entries:  # a file where a directory goes, or the reverse
                if name in names:
                    continue
                cut = name.find(b"/")
                while cut != -1:
                    if name[:cut] in names:
                        raise _IndexUnsupported("a directory where a file goes")
                    cut = name.find(b"/", cut + 1)
            present = {n for n, _s, _r in entries}
            for name in names:
                cut = name.rfind(b"/")
                while cut != -1:
                    if name[:cut] in present:
                        raise _IndexUnsupported("a file where a directory goes")
                    cut = name.rfind(b"/", 0, cut)
        except _IndexUnsupported:
            self._reset_worktree()
            return
        kept = [(n, s, r) for n, s, r in entries if n not in names]
        for name, path in names.items():
            content, blob = files[path]
            kept.append((name, 0, self._index_entry(name, blob, self._write(path, content))))
        kept.sort(key=lambda e: (e[0], e[1]))
        body = b"DIRC" + struct.pack(">LL", version, len(kept)) + b"".join(r for _n, _s, r in kept)
        lock = self.git_dir / "index.lock"
        deadline = time.monotonic() + INDEX_LOCK_WAIT
        while True:
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise StorageError(f"git {self.repo_path}: index.lock is held by another git process; "
                                       "the commits are made, the next write brings the index up to date")
                time.sleep(0.02)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(body + hashlib.sha1(body).digest())
            os.replace(lock, self.git_dir / "index")
        except BaseException:
            lock.unlink(missing_ok=True)
            raise
        (self.git_dir / SYNC_MARK).unlink(missing_ok=True)

    def _roll_up_packs(self) -> None:
        try:
            packs = sum(1 for n in os.listdir(self.common_dir / "objects" / "pack") if n.endswith(".pack"))
        except OSError:
            return
        if packs > PACK_LIMIT:
            self._run("repack", "-d", "-l", "-q", "--geometric=2", what="git repack", check=False)

    def _object_counts(self) -> tuple[int, int]:
        """(loose objects, packs) in the object directory, counted without git."""
        loose, packs = self._objects()
        return loose, len(packs)

    def _objects(self) -> tuple[int, list[str]]:
        """(loose objects, names of the packs) in the object directory, without git."""
        objects = self.common_dir / "objects"
        loose = 0
        try:
            for entry in os.scandir(objects):
                if entry.is_dir() and _LOOSE_DIR.match(entry.name):
                    loose += sum(1 for name in os.listdir(entry.path) if len(name) == 38)
            packs = sorted(n for n in os.listdir(objects / "pack") if n.endswith(".pack"))
        except FileNotFoundError:
            packs = []
        except OSError as exc:
            raise StorageError(f"git {self.repo_path}: cannot list objects: {exc.strerror or exc}") from exc
        return loose, packs

    def last_full_repack(self) -> tuple[float | None, str]:
        """(unix time, pack name) of the last full repack as recorded in the repository; (None, "") if none."""
        try:
            when, _, pack = (self.common_dir / FULL_REPACK_MARK).read_text().strip().partition(" ")
            return float(when), pack.strip()
        except (OSError, ValueError):
            return None, ""

    def _record_full_repack(self, when: float, pack: str) -> None:
        mark = self.common_dir / FULL_REPACK_MARK
        tmp = mark.with_name(mark.name + ".tmp")
        tmp.write_text(f"{when:.0f} {pack}\n")
        os.replace(tmp, mark)

    def maintain(self, full: bool | None = None) -> dict[str, int | float | bool | str]:
        """Pack loose objects and roll up small packs, keep the commit-graph current and, when due, repack
        everything afresh (module doc, "Maintenance") under the store lock.

        ``full``: None (the maintenance pass) = a full repack when the last one recorded in the repository is
        ``full_repack_interval`` seconds old or there is none (and the repository is not still fully packed);
        True = now; False = not now.

        Never waits for the lock: while a store (or another ``maintain``) holds it, returns at once with
        ``{"ran": False, "skipped": "busy"}``.  Otherwise returns ``{"ran", "skipped", "full_repack",
        "loose_before", "packs_before", "loose_after", "packs_after", "seconds"}``: ``skipped`` is ``""`` when
        it ran, ``"nothing to do"`` when there was no loose object, at most one pack and no full repack due
        (no git process then); ``full_repack`` says whether this pass was the full repack; ``seconds`` is how
        long it held the store lock.

        Lock-hold time (``seconds``), bench.gitgrowth (1,000 devices, lab configurations of 12.8 KB average,
        2-core machine shared with other test runs, 2026-11-30): a geometric pass with its commit-graph layer
        0.7-1.2 s (3.2 s at load ~15); the full repack with its commit-graph 2.8 s at 5,000 commits, 4.4 s
        at 10,000, 10.7 s (9.1 s CPU) at 20,000 at load ~10, 37.6 s at 20,000 at load ~15.  At 100,000
        commits (linear in the objects; bench/README.md measured ``repack -a -d -f`` alone at 96 s wall / 58 s
        CPU under load, the changed-paths commit-graph is ~1 s CPU per 20,000 commits): about a minute of
        CPU, so a store arriving then waits ~40 s on an idle 2-core machine and up to ~2 min under load --
        once a day by default.  ``FULL_REPACK_OPTIONS`` = git's defaults (window 10, depth 50): at 20,000
        commits 54.3 -> 14.5 MiB in 12.6 s CPU; ``--window=50 --depth=50`` gave 13.1 MiB (10% smaller) for
        22.4 s CPU (1.8x the lock time), not worth it.
        """
        if not self.git_dir.is_dir():
            raise TargetUnavailable(f"git {self.repo_path}: repository is gone")
        result: dict[str, int | float | bool | str] = {"ran": False, "skipped": "busy"}
        if not self._tlock.acquire(blocking=False):
            return result
        try:
            with _try_file_lock(self.git_dir / LOCK_NAME) as held:
                if not held:
                    return result
                started = time.monotonic()
                loose, packs = self._objects()
                result.update(loose_before=loose, packs_before=len(packs))
                if full is None:
                    last, last_pack = self.last_full_repack()
                    full = (last is None or time.time() - last >= self.full_repack_interval) and not (
                        loose == 0 and packs == [last_pack])
                if loose == 0 and len(packs) <= 1 and not full:
                    result.update(skipped="nothing to do", full_repack=False, loose_after=loose,
                                  packs_after=len(packs), seconds=round(time.monotonic() - started, 3))
                    return result
                graph = ["commit-graph", "write", "--reachable", "--changed-paths"]
                if full:
                    self._run("repack", "-a", "-d", "-f", "-k", "-l", "-q", *FULL_REPACK_OPTIONS, what="git repack -a")
                    self._run(*graph, "--split=replace", what="git commit-graph write")
                else:
                    self._run("repack", "-d", "-l", "-q", "--geometric=2", what="git repack")
                    self._run(*graph, "--split", what="git commit-graph write")
                loose, packs = self._objects()
                if full:
                    self._record_full_repack(time.time(), packs[0] if len(packs) == 1 else "")
                result.update(ran=True, skipped="", full_repack=full, loose_after=loose, packs_after=len(packs),
                              seconds=round(time.monotonic() - started, 3))
                return result
        finally:
            self._tlock.release()

    # --- Backend ---------------------------------------------------------------
    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        return self.store_many([(content, path, options)])[0]

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """Store several versions under one lock: one commit per changed item, refs in input order.

        One ``git fast-import`` process for the whole call (module doc); an item equal to what its path holds
        (at the tip, or after an earlier item of the same call) makes no commit and gets that version's ref.
        """
        prepared = []
        for content, path, options in items:
            prepared.append((as_content(content, path), self._check_path(path), options or StoreOptions()))
        if not prepared:
            return []
        with self._tlock, self._locked():
            return self._store_locked(prepared)

    def _store_locked(self, prepared: list[tuple[bytes, str, StoreOptions]]) -> list[str]:
        tip = self._sync_cache()
        refs: list[str] = [""] * len(prepared)
        current: dict[str, str | None] = {p: self._cache[p][0] for _c, p, _o in prepared if p in self._cache}
        if tip is None:
            current = {p: None for _c, p, _o in prepared}
        unknown = sorted({p for _c, p, _o in prepared} - current.keys())
        proc = None
        try:
            if unknown or any(current.get(p) != git_blob_sha(c) for c, p, _o in prepared):
                proc = self._fast_import()
            if unknown:
                current.update(self._ls(proc, tip, unknown))
            # decide, in order: which items make a commit (mark), which repeat what their path holds
            commits: list[tuple[int, bytes, str, StoreOptions]] = []  # (mark, content, path, options)
            last: dict[str, tuple[str, int | str]] = {}  # path -> (blob, mark of this call | commit sha)
            plan: list[tuple[int, str, int | str | None]] = []  # (index, path, mark | commit sha | None=look up)
            for idx, (content, path, options) in enumerate(prepared):
                blob = git_blob_sha(content)
                if current.get(path) == blob:
                    earlier = last.get(path)
                    cached = self._cache.get(path)
                    plan.append((idx, path, earlier[1] if earlier else (cached[1] if cached and cached[0] == blob else None)))
                    continue
                mark = len(commits) + 1
                commits.append((mark, content, path, options))
                current[path] = blob
                last[path] = (blob, mark)
                plan.append((idx, path, mark))
            marks: dict[int, str] = {}
            if proc is not None:
                marks = self._commit(proc, tip, commits)
                proc = None
        finally:
            if proc is not None:
                proc.kill()
                proc.wait()
        if commits:
            files = {path: (content, last[path][0]) for _m, content, path, _o in commits}
            self._update_worktree(files)
            for path, (blob, mark) in last.items():
                self._cache[path] = (blob, marks[mark])
            self._cache_tip = marks[len(commits)]
            self._roll_up_packs()
        missing = sorted({path for _i, path, where in plan if where is None})
        found = self._last_commits(missing)
        for idx, path, where in plan:
            if where is None:
                if path not in found:
                    raise StorageError(f"git {self.repo_path}: no commit on {self.branch} touches {path!r}")
                self._cache[path] = (current[path], found[path])
                sha = found[path]
            else:
                sha = marks[where] if isinstance(where, int) else where
            refs[idx] = self._ref(path, sha)
        return refs

    def _fast_import(self) -> subprocess.Popen:
        cmd = self._cmd("-c", "fastimport.unpackLimit=0", "fast-import", "--quiet", "--done", "--date-format=raw")
        try:
            return subprocess.Popen(cmd, cwd=self.work_tree, env={**os.environ, "LANGUAGE": "C", **self._env()},
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as exc:
            raise TargetUnavailable(f"git {self.repo_path}: cannot run git: {exc}") from exc

    def _failed(self, proc: subprocess.Popen, what: str) -> StorageError:
        proc.kill()
        _out, err = proc.communicate()
        return StorageError(f"git {self.repo_path}: {what} failed: {err.decode('utf-8', 'replace').strip()}")

    def _ls(self, proc: subprocess.Popen, tip: str, paths: list[str]) -> dict[str, str | None]:
        """Blob id of each path at ``tip`` (None: not a file there), asked of the running fast-import."""
        found: dict[str, str | None] = {}
        for start in range(0, len(paths), _LS_CHUNK):
            chunk = paths[start:start + _LS_CHUNK]
            try:
                proc.stdin.write(b"".join(b"ls %s %s\n" % (tip.encode(), _quote(p)) for p in chunk))
                proc.stdin.flush()
            except OSError:
                raise self._failed(proc, "git fast-import ls") from None
            for path in chunk:
                line = proc.stdout.readline()
                if not line:
                    raise self._failed(proc, "git fast-import ls")
                meta = line.split(b"\t", 1)[0].split()
                found[path] = meta[2].decode() if len(meta) == 3 and meta[1] == b"blob" else None
        return found

    def _commit(self, proc: subprocess.Popen, tip: str | None, commits: list[tuple[int, bytes, str, StoreOptions]]) -> dict[int, str]:
        """Send one commit per item and ``done``; the commit id of each mark. The branch moves at the end."""
        now = int(time.time())
        committer = _ident(self.author_name, self.author_email)
        stream: list[bytes] = []
        for mark, content, path, options in commits:
            when = int(as_utc(options.timestamp).timestamp()) if options.timestamp is not None else now
            # a message's control characters (an escape, a bidi override) are shown, never acted on; the
            # device name in it is one line already (default_message, the storage jobs' messages)
            message = _clean_message(escape_controls(default_message(path, options).replace("\r\n", "\n"),
                                                     keep_newlines=True))
            stream += [
                b"commit refs/heads/%s\nmark :%d\n" % (self.branch.encode(), mark),
                b"author %s %d +0000\ncommitter %s %d +0000\n" % (_ident(*self._author(options)), when, committer, now),
                b"data %d\n%s\n" % (len(message), message),
                b"from %s\n" % tip.encode() if mark == 1 and tip else b"",
                b"M 100644 inline %s\ndata %d\n" % (_quote(path), len(content)), content, b"\n",
            ]
        stream += [b"get-mark :%d\n" % mark for mark, *_rest in commits]
        stream.append(b"done\n")
        if commits:
            (self.git_dir / SYNC_MARK).write_text(f"{tip or ''}\n")
        try:
            out, err = proc.communicate(b"".join(stream))
        except OSError:
            raise self._failed(proc, "git fast-import") from None
        if proc.returncode != 0:
            (self.git_dir / SYNC_MARK).unlink(missing_ok=True)
            raise StorageError(f"git {self.repo_path}: git fast-import failed: {err.decode('utf-8', 'replace').strip()}")
        shas = out.decode().split()
        if len(shas) != len(commits) or not all(_SHA.match(s) for s in shas):
            raise StorageError(f"git {self.repo_path}: git fast-import answered {out[:200]!r}")
        if commits and self._tip() != shas[-1]:
            raise StorageError(f"git {self.repo_path}: {self.branch} is not at the commit fast-import made")
        return {mark: sha for (mark, *_rest), sha in zip(commits, shas)}

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes:
        path, sha = self._parse_ref(ref)
        proc = self._run("cat-file", "blob", f"{sha}:{path}", check=False)
        if proc.returncode == 0:
            return proc.stdout
        if not self.git_dir.is_dir():
            raise TargetUnavailable(f"git {self.repo_path}: repository is gone")
        raise RefNotFound(f"git {self.repo_path}: no version {ref!r}")

    def latest(self, path: str) -> str | None:
        self._check_path(path)
        if path not in self._ls_tree([path]):
            return None
        sha = self._last_commits([path]).get(path)
        return self._ref(path, sha) if sha else None

    def restore(self, content: bytes, ref: str, options: StoreOptions | None = None) -> str:
        """Put ``content`` back as the version ``ref`` names.

        Git history is immutable, so a version whose commit still reads back as
        ``content`` is left alone and ``ref`` is returned unchanged (restoring an
        old version then changes nothing, ``latest`` included).  Otherwise -- the
        commit or blob was lost, e.g. a rewound or re-created repository -- the
        restore lands as a new commit "restore <path>" that puts ``content`` at
        ``path``, made only if the file currently differs (if it already holds
        ``content``, the ref of the commit that last changed it is returned).
        Such a commit makes ``content`` the file's current content, so a scrub
        that restores several lost versions of one path restores them oldest first.
        """
        path, old_sha = self._parse_ref(ref)
        content = as_content(content, ref)
        try:
            if self.read(ref) == content:
                return ref
        except RefNotFound:
            pass
        blob = git_blob_sha(content)
        with self._tlock, self._locked():
            self._sync_cache()
            if self._ls_tree([path]).get(path) == blob:
                sha = self._last_commits([path]).get(path)
                if sha:
                    self._cache[path] = (blob, sha)
                    return self._ref(path, sha)
            self._write(path, content)
            self._git("add", "-f", "--", path, what="git add")
            self._git(
                "commit", "-q", "--no-verify", "-m", f"restore {path}", "-m", f"Restores version {old_sha}.",
                "--", path, options=options or StoreOptions(), what=f"commit of {path!r}",
            )
            sha = self._tip()
            self._cache[path] = (blob, sha)
            self._cache_tip = sha
        return self._ref(path, sha)

    def delete(self, ref: str) -> None:
        """Retire a version.

        Git history is never rewritten: deleting the newest version commits
        the removal of the file (``latest`` becomes None); deleting an older
        version changes nothing and it stays readable.
        """
        path, sha = self._parse_ref(ref)
        self.read(ref)  # raises RefNotFound
        with self._tlock, self._locked():
            self._sync_cache()
            if path not in self._ls_tree([path]) or self._last_commits([path]).get(path) != sha:
                return
            self._git("rm", "-q", "--", path, what=f"removal of {path!r}")
            self._git(
                "commit", "-q", "--no-verify", "-m", f"{path}: version {sha[:12]} deleted", "--", path,
                what=f"commit of {path!r}",
            )
            self._cache.pop(path, None)
            self._cache_tip = self._tip()

    def healthy(self) -> bool:
        """The repository is there and writable (checked without starting git)."""
        return (
            self.git_dir.is_dir()
            and os.access(self.git_dir, os.W_OK)
            and (self.git_dir / "HEAD").is_file()
            and (self.common_dir / "objects").is_dir()
        )
