"""Plain-filesystem backend: one human-browsable file per version.

Layout: ``<root>/<path>/<UTC %Y%m%dT%H%M%S.%fZ>_<sha256[:12]>.cfg``.
Ref: that file's path relative to the root, posix style.
A version stored with an explicit ``StoreOptions.timestamp`` (DeviceVault passes the collection time) is
named by it: storing it again finds the file of that timestamp and writes nothing, even when the bytes
differ (an encrypting wrapper encodes the same version differently each time).
``restore`` rewrites a version file in place (same timestamp), see :meth:`FilesystemBackend.restore`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ._lock import file_lock
from .base import BackendBase, already_holds, VERSION_NAME, StoreOptions, as_content, next_stamp, restored_name, sha256_hex, version_name
from .errors import IntegrityError, RefNotFound, StorageError, TargetUnavailable, UnsafePath
from .paths import resolve_inside, split_relpath

LOCK_NAME = ".devicevault.lock"


class FilesystemBackend(BackendBase):
    name = "fs"
    history_is_immutable = False

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root)
        if create:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise TargetUnavailable(f"fs {self.root}: cannot create storage root: {exc.strerror or exc}") from exc

    def __repr__(self) -> str:
        return f"FilesystemBackend(root={str(self.root)!r})"

    # --- helpers -------------------------------------------------------------
    def _dir(self, path: str) -> Path:
        split_relpath(path, target=f"fs {self.root}")
        return resolve_inside(self.root, path)

    @staticmethod
    def _latest_name(directory: Path) -> str | None:
        try:
            names = [e.name for e in os.scandir(directory) if VERSION_NAME.match(e.name) and e.is_file()]
        except (FileNotFoundError, NotADirectoryError):
            return None
        return max(names) if names else None

    def _parse_ref(self, ref: str) -> tuple[str, str, Path]:
        if not isinstance(ref, str) or "/" not in ref:
            raise RefNotFound(f"fs {self.root}: malformed ref {ref!r}")
        path, name = ref.rsplit("/", 1)
        m = VERSION_NAME.match(name)
        if not m:
            raise RefNotFound(f"fs {self.root}: malformed ref {ref!r}")
        return path, m.group(2), self._dir(path) / name

    def _lock(self):
        if not self.root.is_dir():
            raise TargetUnavailable(f"fs {self.root}: storage root does not exist")
        return file_lock(self.root / LOCK_NAME)

    @staticmethod
    def _write_atomic(directory: Path, name: str, content: bytes) -> None:
        """Write ``directory/name`` via a temp file in the same directory, fsync, rename."""
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, directory / name)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    # --- Backend -------------------------------------------------------------
    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        return self.store_many([(content, path, options)])[0]

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """Store several versions under one lock acquisition; refs in input order."""
        prepared = []
        for content, path, options in items:
            prepared.append((as_content(content, path), path, self._dir(path), options or StoreOptions()))
        with self._lock():
            return [self._store_one(*item) for item in prepared]

    def _store_one(self, content: bytes, path: str, directory: Path, options: StoreOptions) -> str:
        digest = sha256_hex(content)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            latest = self._latest_name(directory)
            if latest is not None and VERSION_NAME.match(latest).group(2) == digest[:12]:
                if (directory / latest).read_bytes() == content:
                    return f"{path}/{latest}"
            stamp = next_stamp(options, latest)
            if options.timestamp is not None:  # this version may be here already (a repeated store)
                same = sorted(e.name for e in os.scandir(directory)
                              if e.name.startswith(stamp + "_") and VERSION_NAME.match(e.name))
                if same:
                    return f"{path}/{same[0]}"
            name = version_name(stamp, digest)
            self._write_atomic(directory, name, content)
        except UnsafePath:
            raise
        except OSError as exc:
            raise StorageError(f"fs {self.root}: cannot store {path!r}: {exc.strerror or exc}") from exc
        return f"{path}/{name}"

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes:
        _path, sha12, file = self._parse_ref(ref)
        try:
            data = file.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise RefNotFound(f"fs {self.root}: no version {ref!r}") from exc
        except OSError as exc:
            raise StorageError(f"fs {self.root}: cannot read {ref!r}: {exc.strerror or exc}") from exc
        if sha256_hex(data)[:12] != sha12:
            raise IntegrityError(f"fs {self.root}: checksum mismatch for {ref!r}")
        return data

    def restore(self, content: bytes, ref: str, options: StoreOptions | None = None) -> str:
        """Put ``content`` back as the version file ``ref`` names (missing or corrupt copy).

        If the file already holds ``content`` nothing is written.  Otherwise the
        file is rewritten atomically (temp file + rename, inside the root) under
        the same timestamp, so the version keeps its place in history and a
        restored old version never becomes ``latest``.  The name's digest part is
        that of ``content``: when it matches ``ref`` the returned ref is ``ref``;
        when it does not (e.g. re-encrypted bytes) the restored file gets the new
        digest in its name, the old file is removed and the new ref returned.
        """
        path, _sha12, file = self._parse_ref(ref)
        content = as_content(content, ref)
        if already_holds(self, ref, content):
            return ref
        name = restored_name(file.name, sha256_hex(content))
        directory = file.parent
        with self._lock():
            try:
                directory.mkdir(parents=True, exist_ok=True)
                self._write_atomic(directory, name, content)
                if name != file.name:
                    file.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"fs {self.root}: cannot restore {ref!r}: {exc.strerror or exc}") from exc
        return f"{path}/{name}"

    def delete(self, ref: str) -> None:
        _path, _sha12, file = self._parse_ref(ref)
        with self._lock():
            try:
                file.unlink()
            except (FileNotFoundError, NotADirectoryError) as exc:
                raise RefNotFound(f"fs {self.root}: no version {ref!r}") from exc
            except OSError as exc:
                raise StorageError(f"fs {self.root}: cannot delete {ref!r}: {exc.strerror or exc}") from exc
            # prune now-empty directories up to (not including) the root
            root = self.root.resolve()
            parent = file.parent
            while parent != root and parent.is_relative_to(root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    def latest(self, path: str) -> str | None:
        name = self._latest_name(self._dir(path))
        return f"{path}/{name}" if name else None

    def healthy(self) -> bool:
        return self.root.is_dir() and os.access(self.root, os.W_OK | os.X_OK)
