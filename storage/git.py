"""Git backend: one file per device in a real repository, one commit per change.

The file for ``path`` lives at ``<repo>/<path>``.  Each changed device gets
exactly one commit; unchanged content makes no commit.  Writes go through the
git CLI (via GitPython's command wrapper), serialised across processes by an
``flock`` on ``.git/devicevault.lock``.

Ref format: ``<branch>:<path>@<40-hex commit sha>`` -- the commit that
produced (last changed) that version.  Git history is immutable here:
:meth:`GitBackend.delete` of the newest version commits the previous content
(or removes the file); deleting an older version is a no-op.  ``restore`` of a
lost version lands as a new commit (see :meth:`GitBackend.restore`).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import threading
from email.utils import parseaddr
from pathlib import Path

import git as gitpython
from git.exc import GitCommandError, InvalidGitRepositoryError, NoSuchPathError

from ._lock import file_lock
from .base import StoreOptions, as_content, as_utc, default_message
from .errors import RefNotFound, StorageError, TargetUnavailable, UnsafePath
from .paths import resolve_inside, split_relpath

LOCK_NAME = "devicevault.lock"
_REF = re.compile(r"\A(?P<branch>[^:]+):(?P<path>.+)@(?P<sha>[0-9a-f]{40})\Z")
_BRANCH = re.compile(r"\A(?!-)(?!.*\.\.)(?!.*//)[A-Za-z0-9._/-]+(?<![./])\Z")


def git_blob_sha(content: bytes) -> str:
    """The object id git gives ``content`` as a blob (sha1 repositories)."""
    return hashlib.sha1(b"blob %d\x00" % len(content) + content).hexdigest()


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
    ) -> None:
        if not _BRANCH.match(branch or ""):
            raise ValueError(f"invalid branch name {branch!r}")
        self.repo_path = Path(repo_path)
        self.branch = branch
        self.author_name = author_name
        self.author_email = author_email
        self._tlock = threading.Lock()
        # path -> (blob sha, commit sha); valid while the branch tip is _cache_tip
        self._cache: dict[str, tuple[str, str]] = {}
        self._cache_tip: str | None = None
        self._repo = self._open_or_init()
        self.work_tree = Path(self._repo.working_tree_dir)
        self.git_dir = Path(self._repo.git_dir)

    def __repr__(self) -> str:
        return f"GitBackend(repo_path={str(self.repo_path)!r}, branch={self.branch!r})"

    def close(self) -> None:
        self._repo.close()

    # --- repository setup ------------------------------------------------------
    def _open_or_init(self) -> gitpython.Repo:
        where = f"git {self.repo_path}"
        try:
            self.repo_path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetUnavailable(f"{where}: cannot create repository directory: {exc.strerror or exc}") from exc
        try:
            repo = gitpython.Repo(self.repo_path)
        except (InvalidGitRepositoryError, NoSuchPathError):
            others = {p.name for p in self.repo_path.iterdir()} - {".git"}
            if others:
                raise StorageError(f"{where}: directory exists, is not empty and is not a git repository")
            try:
                repo = gitpython.Repo.init(self.repo_path, initial_branch=self.branch)
            except GitCommandError as exc:
                raise StorageError(f"{where}: git init failed: {exc.stderr.strip()}") from exc
        if repo.bare:
            raise StorageError(f"{where}: bare repositories are not supported")
        try:
            current = repo.head.reference.name
        except TypeError:  # detached HEAD
            raise StorageError(f"{where}: HEAD is detached, expected branch {self.branch!r}")
        if current != self.branch:
            if repo.head.is_valid():
                raise StorageError(f"{where}: repository is on branch {current!r}, expected {self.branch!r}")
            repo.git.symbolic_ref("HEAD", f"refs/heads/{self.branch}")
        return repo

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
            name, email = parseaddr(options.author) if "<" in options.author else (options.author, "")
            env["GIT_AUTHOR_NAME"] = name or options.author or self.author_name
            env["GIT_AUTHOR_EMAIL"] = email or self.author_email
            if options.timestamp is not None:
                env["GIT_AUTHOR_DATE"] = f"{int(as_utc(options.timestamp).timestamp())} +0000"
        return env

    def _cmd(self, *args: str) -> list[str]:
        return [
            "git",
            "-c", f"user.name={self.author_name}",
            "-c", f"user.email={self.author_email}",
            "-c", "commit.gpgsign=false",
            "-c", "core.autocrlf=false",
            "-c", "core.safecrlf=false",
            "-c", "core.quotepath=false",
            "-c", "gc.auto=0",
            *args,
        ]

    def _git(self, *args: str, options: StoreOptions | None = None, binary: bool = False, what: str = "") -> str | bytes:
        try:
            return self._repo.git.execute(
                self._cmd(*args),
                env=self._env(options),
                stdout_as_string=not binary,
                strip_newline_in_stdout=False,
            )
        except GitCommandError as exc:
            stderr = exc.stderr.strip() if isinstance(exc.stderr, str) else str(exc.stderr)
            raise StorageError(f"git {self.repo_path}: {what or 'git ' + args[0]} failed: {stderr}") from exc
        except OSError as exc:
            raise TargetUnavailable(f"git {self.repo_path}: cannot run git: {exc}") from exc

    def _tip(self) -> str | None:
        try:
            out = self._repo.git.execute(
                self._cmd("rev-parse", "-q", "--verify", f"refs/heads/{self.branch}^{{commit}}"),
                env=self._env(),
            )
        except GitCommandError:
            return None
        return out.strip() or None

    def _ls_tree(self, paths: list[str]) -> dict[str, str]:
        """Blob ids of ``paths`` at the branch tip (missing paths left out)."""
        if not paths:
            return {}
        try:
            out = self._repo.git.execute(
                self._cmd("ls-tree", "-z", "--full-tree", f"refs/heads/{self.branch}", "--", *paths),
                env=self._env(),
                strip_newline_in_stdout=False,
            )
        except GitCommandError:
            if self._tip() is None:
                return {}
            raise
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

    def _locked(self):
        if not self.git_dir.is_dir():
            raise TargetUnavailable(f"git {self.repo_path}: repository is gone")
        return file_lock(self.git_dir / LOCK_NAME)

    def _sync_cache(self) -> None:
        tip = self._tip()
        if tip != self._cache_tip:
            self._cache.clear()
            self._cache_tip = tip

    def _write(self, path: str, content: bytes) -> None:
        target = resolve_inside(self.work_tree, path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.parent / f".{target.name}.devicevault-tmp"
            tmp.write_bytes(content)
            os.replace(tmp, target)
        except OSError as exc:
            raise StorageError(f"git {self.repo_path}: cannot write {path!r}: {exc.strerror or exc}") from exc

    # --- Backend ---------------------------------------------------------------
    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        return self.store_many([(content, path, options)])[0]

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """Store several versions under one lock: one commit per changed item, refs in input order."""
        prepared = []
        for content, path, options in items:
            prepared.append((as_content(content, path), self._check_path(path), options or StoreOptions()))
        refs: list[str] = [""] * len(prepared)
        with self._tlock, self._locked():
            self._sync_cache()
            chunk: list[int] = []
            seen: set[str] = set()
            for idx, (_c, path, _o) in enumerate(prepared):
                if path in seen:  # same path twice: commit what we have first
                    self._store_chunk([(i, *prepared[i]) for i in chunk], refs)
                    chunk, seen = [], set()
                chunk.append(idx)
                seen.add(path)
            self._store_chunk([(i, *prepared[i]) for i in chunk], refs)
        return refs

    def _store_chunk(self, chunk: list[tuple[int, bytes, str, StoreOptions]], refs: list[str]) -> None:
        if not chunk:
            return
        current = self._ls_tree([path for _i, _c, path, _o in chunk])
        changed: list[tuple[int, str, str, StoreOptions]] = []
        unchanged: list[tuple[int, str, str]] = []
        for idx, content, path, options in chunk:
            blob = git_blob_sha(content)
            if current.get(path) == blob:
                unchanged.append((idx, path, blob))
            else:
                self._write(path, content)
                changed.append((idx, path, blob, options))
        if unchanged:
            missing = [p for _i, p, b in unchanged if self._cache.get(p, ("", ""))[0] != b]
            found = self._last_commits(missing)
            for idx, path, blob in unchanged:
                if path in found:
                    self._cache[path] = (blob, found[path])
                refs[idx] = self._ref(path, self._cache[path][1])
        if changed:
            self._git("add", "-f", "--", *[p for _i, p, _b, _o in changed], what="git add")
            for _idx, path, _blob, options in changed:
                self._git(
                    "commit", "-q", "--no-verify", "--allow-empty-message",
                    "-m", default_message(path, options), "--", path,
                    options=options, what=f"commit of {path!r}",
                )
            shas = self._git("rev-list", "-n", str(len(changed)), f"refs/heads/{self.branch}").split()
            shas.reverse()
            for (idx, path, blob, _o), sha in zip(changed, shas):
                self._cache[path] = (blob, sha)
                refs[idx] = self._ref(path, sha)
            self._cache_tip = shas[-1]

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes:
        path, sha = self._parse_ref(ref)
        try:
            return self._repo.git.execute(
                self._cmd("cat-file", "blob", f"{sha}:{path}"),
                env=self._env(),
                stdout_as_string=False,
                strip_newline_in_stdout=False,
            )
        except GitCommandError as exc:
            if not self.git_dir.is_dir():
                raise TargetUnavailable(f"git {self.repo_path}: repository is gone") from exc
            raise RefNotFound(f"git {self.repo_path}: no version {ref!r}") from exc

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
        try:
            return self.git_dir.is_dir() and os.access(self.git_dir, os.W_OK) and bool(
                self._git("rev-parse", "--git-dir").strip()
            )
        except StorageError:
            return False
