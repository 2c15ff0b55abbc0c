"""The storage contract (:mod:`storage.contract`) run over every built-in backend (fs, git, s3, s3 versioned)
and the same backends wrapped in an :class:`EncodedBackend` (gzip, AES-256-GCM + zstd/gzip), and over a
throwaway in-memory backend registered here, to show that a new backend needs ``storage/`` and this suite
only: its targets work through ``jobs.deliver.locations.StorageLayout`` without an edit in ``jobs/``.

The s3 backends talk to moto's standalone server over real HTTP.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import base64
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

import pytest

from storage.base import BackendBase, as_content, sha256_hex
from storage.contract import BackendContract, Harness
from storage.paths import split_relpath
from storage.registry import Setting, register, unregister
from storage import (
    Codec,
    EncodedBackend,
    IntegrityError,
    RefNotFound,
    StoreOptions,
    UnknownBackend,
    UnsafePath,
    available,
    decode_component,
    device_path,
    get_backend,
)

DUMMY_KEY = "AKIADUMMYKEY0000TEST"
DUMMY_SECRET = "dummy-secret-do-not-print-0123456789"
ENC_KEY = b"contract-test-key-0123456789abcd"  # 32 printable bytes, so "raw" can be searched for
ENC_SECRETS = [ENC_KEY.decode(), base64.b64encode(ENC_KEY).decode(), ENC_KEY.hex()]


# --- moto server (real HTTP endpoint) ---------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def reset_moto(endpoint: str) -> None:
    req = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    urllib.request.urlopen(req, timeout=10).read()


@functools.lru_cache(maxsize=None)
def s3_client(endpoint: str):
    import boto3

    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=DUMMY_KEY, aws_secret_access_key=DUMMY_SECRET,
    )



# --- harnesses --------------------------------------------------------------------
def _prune(directory: Path, root: Path) -> None:
    while directory != root and not any(directory.iterdir()):
        directory.rmdir()
        directory = directory.parent


def _fs_harness(tmp_path: Path, _request) -> Harness:
    root = tmp_path / "root"
    backend = get_backend("fs", root=root)

    def damage(ref: str, how: str) -> bool:
        file = root / ref
        if how == "garbage":
            file.write_bytes(b"garbage, not the version that was stored\n")
        else:
            file.unlink()
            _prune(file.parent, root)
        return True

    def raw() -> list[bytes]:
        return [p.read_bytes() for p in root.rglob("*") if p.is_file() and p.name != ".devicevault.lock"]

    return Harness(backend, lambda: sum(1 for p in root.rglob("*.cfg") if p.is_file()), damage=damage, raw=raw)


def _git_harness(tmp_path: Path, _request) -> Harness:
    repo = tmp_path / "root"
    backend = get_backend("git", repo_path=repo)

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)

    def commits() -> int:
        out = git("rev-list", "--count", "--all")
        return int(out.stdout.strip()) if out.returncode == 0 else 0

    def damage(ref: str, how: str) -> bool:
        """Lose the newest commit for good (history rewound, then garbage-collected)."""
        sha = ref.rsplit("@", 1)[1]
        parent = git("rev-parse", "-q", "--verify", f"{sha}^").stdout.strip()
        if how != "missing" or git("rev-parse", "main").stdout.strip() != sha or not parent:
            return False  # git objects cannot be overwritten, and older commits live on in their children
        for args in (["reset", "-q", "--hard", parent], ["reflog", "expire", "--expire=now", "--all"],
                     ["gc", "-q", "--prune=now"]):
            assert git(*args).returncode == 0, args
        assert git("cat-file", "-e", f"{sha}^{{commit}}").returncode != 0
        return True

    return Harness(backend, commits, damage=damage)


def _s3_harness(versioned: bool):
    def make(tmp_path: Path, request) -> Harness:
        endpoint = request.getfixturevalue("moto_endpoint")
        reset_moto(endpoint)
        client = s3_client(endpoint)
        client.create_bucket(Bucket="vault")
        if versioned:
            client.put_bucket_versioning(Bucket="vault", VersioningConfiguration={"Status": "Enabled"})
        backend = get_backend(
            "s3", bucket="vault", prefix="configs", endpoint_url=endpoint, region_name="us-east-1",
            access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET,
        )

        def versions() -> list[dict]:
            pages = client.get_paginator("list_object_versions").paginate(Bucket="vault")
            return [v for p in pages for v in p.get("Versions", [])]

        def damage(ref: str, how: str) -> bool:
            key, _, version = ref[len("s3://vault/"):].partition("?versionId=")
            key, version = unquote(key), unquote(version)
            if version:
                if how == "garbage":
                    return False  # an S3 object version cannot be overwritten
                client.delete_object(Bucket="vault", Key=key, VersionId=version)
            elif how == "garbage":
                client.put_object(Bucket="vault", Key=key, Body=b"garbage, not the version that was stored\n")
            else:
                client.delete_object(Bucket="vault", Key=key)
            return True

        def raw() -> list[bytes]:
            return [
                client.get_object(Bucket="vault", Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
                for v in versions()
            ]

        return Harness(backend, lambda: len(versions()), secrets=[DUMMY_KEY, DUMMY_SECRET], damage=damage, raw=raw)

    return make


def _encoded(make, codec: Callable[[], Codec]):
    def wrapped(tmp_path: Path, request) -> Harness:
        h = make(tmp_path, request)
        c = codec()
        h.backend = EncodedBackend(h.backend, c)
        h.encrypted = c.encrypts
        h.secrets = h.secrets + (ENC_SECRETS if c.encrypts else [])
        return h

    return wrapped


HARNESSES = {
    "fs": _fs_harness,
    "git": _git_harness,
    "s3": _s3_harness(versioned=False),
    "s3-versioned": _s3_harness(versioned=True),
    "fs+gzip": _encoded(_fs_harness, lambda: Codec("gzip")),
    "fs+aes": _encoded(_fs_harness, lambda: Codec("zstd", keys={"k1": ENC_KEY})),
    "s3+aes": _encoded(_s3_harness(versioned=False), lambda: Codec("gzip", keys={"k1": ENC_KEY})),
}


class TestBuiltinBackends(BackendContract):
    @pytest.fixture(params=list(HARNESSES))
    def harness(self, request, tmp_path) -> Harness:
        return HARNESSES[request.param](tmp_path, request)


# --- what only one backend does ---------------------------------------------------
def test_fs_restore_stays_inside_root(tmp_path):
    backend = get_backend("fs", root=tmp_path / "root")
    with pytest.raises(UnsafePath):
        backend.restore(b"evil", "../../outside/20240101T000000.000000Z_0123456789ab.cfg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


def test_git_restore_of_a_lost_version_is_a_new_commit(tmp_path, request):
    h = _git_harness(tmp_path, request)
    h.backend.store(b"first\n", "g/r0")
    ref = h.backend.store(b"lost\n", "g/r1")
    assert h.damage(ref, "missing")
    restored = h.backend.restore(b"lost\n", ref, StoreOptions(author="Scrub <scrub@example.net>"))
    assert restored != ref and h.backend.read(restored) == b"lost\n"
    out = subprocess.run(["git", "log", "-1", "--format=%an|%s"], cwd=tmp_path / "root", capture_output=True, text=True)
    assert out.stdout.strip() == "Scrub|restore g/r1"
    h.backend.close()


# --- registry -------------------------------------------------------------------
def test_registry_names():
    assert {"fs", "git", "s3"} <= set(available())
    with pytest.raises(UnknownBackend) as exc:
        get_backend("tape")
    assert "tape" in str(exc.value)
    with pytest.raises(LookupError):
        get_backend("tape")


# --- a backend from outside: registered, run through the contract and a storage file ------------------
class MemoryBackend(BackendBase):
    """Versions in a dict: a throwaway backend, to show what a new backend type needs and nothing more."""

    name = "memtest"

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.history: dict[str, list[str]] = {}  # path -> refs, oldest first
        self.blobs: dict[str, bytes] = {}  # ref -> content (a lost or garbled one: see damage)
        self.stamps: dict[str, datetime | None] = {}
        self.digests: dict[str, str] = {}  # ref -> sha256 of what was stored, to notice garbled content
        self.counter = 0

    def _path(self, ref: str) -> str:
        path, sep, number = ref.removeprefix("mem:").rpartition("@")
        if not ref.startswith("mem:") or not sep or not number.isdigit() or ref not in self.stamps:
            raise RefNotFound(f"memtest: no version {ref!r}")
        return path

    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        content, when = as_content(content, path), (options or StoreOptions()).timestamp
        split_relpath(path, target="memtest")
        for ref in self.history.setdefault(path, []):
            if when is not None and self.stamps[ref] == when:
                return ref  # the same version stored again (a version is named by its time, as on fs and s3)
        self.counter += 1
        ref = f"mem:{path}@{self.counter}"
        self.history[path].append(ref)
        self.blobs[ref], self.stamps[ref], self.digests[ref] = content, when, sha256_hex(content)
        return ref

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes:
        self._path(ref)
        if ref not in self.blobs:
            raise RefNotFound(f"memtest: version {ref!r} is lost")
        if sha256_hex(self.blobs[ref]) != self.digests[ref]:
            raise IntegrityError(f"memtest: version {ref!r} does not match its checksum")
        return self.blobs[ref]

    def delete(self, ref: str) -> None:
        self.history[self._path(ref)].remove(ref)
        self.blobs.pop(ref, None)
        del self.stamps[ref]

    def restore(self, content: bytes, ref: str, options: StoreOptions | None = None) -> str:
        content = as_content(content, ref)
        self._path(ref)
        self.blobs[ref], self.digests[ref] = content, sha256_hex(content)  # the ref keeps its place in the history and its timestamp
        return ref

    def latest(self, path: str) -> str | None:
        split_relpath(path, target="memtest")
        refs = self.history.get(path)
        return refs[-1] if refs else None

    def healthy(self) -> bool:
        return True


@pytest.fixture
def memtest():
    """``memtest`` registered as a backend type for one test: a setting, a storage-file alias, a retention."""
    register("memtest", MemoryBackend, settings=[Setting("label", "LABEL", lambda home: f"vault in {home}")],
             aliases={"tag": "label"}, keep_last=7)
    try:
        yield MemoryBackend
    finally:
        unregister("memtest")


def _memory_harness(backend: MemoryBackend) -> Harness:
    def damage(ref: str, how: str) -> bool:
        if how == "missing":
            del backend.blobs[ref]
        else:
            backend.blobs[ref] = b"garbage, not the version that was stored\n"
        return True

    return Harness(backend, lambda: len(backend.blobs), damage=damage, raw=lambda: list(backend.blobs.values()))


class TestAnOutsideBackend(BackendContract):
    @pytest.fixture(params=["memtest", "memtest+aes"])
    def harness(self, request, memtest) -> Harness:
        h = _memory_harness(get_backend("memtest"))
        if request.param.endswith("+aes"):
            h.backend, h.encrypted, h.secrets = EncodedBackend(h.backend, Codec("gzip", keys={"k1": ENC_KEY})), True, ENC_SECRETS
        return h


def test_an_outside_backend_is_a_storage_file_target_without_an_edit_in_jobs(tmp_path, memtest):
    from jobs.deliver.locations import StorageLayout
    from jobs.settings import Settings

    (tmp_path / "storage.yml").write_text("targets:\n  fs: {type: fs}\n  ram: {type: memtest, tag: offsite}\n"
                                          "  spare: {type: memtest, keep_days: 3}\n"
                                          "locations: {default: [fs, ram], both: [ram, spare]}\n")
    layout = StorageLayout.load(Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path)}))
    ram, spare = layout.targets["ram"], layout.targets["spare"]
    assert (ram.type, ram.options, ram.keep_last, ram.keep_days) == ("memtest", {"label": "offsite"}, 7, None)
    assert (spare.options, spare.keep_last, spare.keep_days) == ({"label": f"vault in {tmp_path}"}, None, 3)
    assert layout.targets_for("any") == ["fs", "ram"] and layout.types() == ["fs", "memtest"]
    assert layout.queue_for("ram") == "storage.memtest"
    backend = layout.open("ram")
    assert isinstance(backend.inner, MemoryBackend) and backend.inner.label == "offsite"
    refs = backend.store_many([(b"hostname r1\n", device_path("ams", "r1"), None)])
    assert backend.read(refs[0]) == b"hostname r1\n" and backend.latest(device_path("ams", "r1")) == refs[0]

    (tmp_path / "storage.yml").unlink()  # without a storage file: a target per type, its variables read
    settings = Settings.load(env={"DEVICEVAULT_HOME": str(tmp_path), "DEVICEVAULT_TARGETS": "git,memtest",
                                  "DEVICEVAULT_MEMTEST_LABEL": "from-env", "DEVICEVAULT_MEMTEST_KEEP_LAST": "2"})
    layout = StorageLayout.load(settings)
    assert settings.memtest_label == "from-env" and layout.targets_for("any") == ["git", "memtest"]
    assert (layout.targets["memtest"].options, layout.targets["memtest"].keep_last) == ({"label": "from-env"}, 2)
