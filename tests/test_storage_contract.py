"""One contract every storage backend runs unchanged (fs, git, s3, s3 versioned), and the same
backends wrapped in an :class:`EncodedBackend` (gzip, AES-256-GCM + zstd/gzip).

The s3 backends talk to moto's standalone server over real HTTP.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import base64
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable
from urllib.parse import unquote

import pytest

from storage import (
    Backend,
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


# --- harness ----------------------------------------------------------------------
@dataclass
class Harness:
    backend: Backend
    versions: Callable[[], int]  # how many versions/commits/objects exist
    secrets: list[str] = field(default_factory=list)
    # damage(ref, "missing" | "garbage") -> False when the target cannot be damaged that way
    damage: Callable[[str, str], bool] = lambda ref, how: False
    raw: Callable[[], list[bytes]] = list  # every stored byte string, as the target holds it
    encrypted: bool = False


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


@pytest.fixture(params=list(HARNESSES))
def harness(request, tmp_path) -> Harness:
    h = HARNESSES[request.param](tmp_path, request)
    yield h
    close = getattr(h.backend, "close", None)
    if close:
        close()


@pytest.fixture
def backend(harness) -> Backend:
    return harness.backend


OPTS = StoreOptions(device="ams-r1", run_id="run-1")


# --- the contract -----------------------------------------------------------------
def test_is_a_backend(backend):
    assert isinstance(backend, Backend)
    assert backend.name in available()
    assert backend.healthy() is True


@pytest.mark.parametrize(
    "content",
    [
        b"hostname r1\n!\nend\n",
        b"\xff\xfe\x00binary\r\n\x80 not utf-8\n\n\n",
        b"",
        b"no trailing newline",
    ],
    ids=["text", "binary", "empty", "no-newline"],
)
def test_round_trip(backend, content):
    ref = backend.store(content, "site_ams/ams-r1", OPTS)
    assert isinstance(ref, str) and ref
    assert backend.read(ref) == content
    assert backend.latest("site_ams/ams-r1") == ref


def test_round_trip_5mb(backend):
    blob = os.urandom(5 * 1024 * 1024)
    ref = backend.store(blob, "big/blob", OPTS)
    assert backend.read(ref) == blob


def test_the_same_version_stored_twice_creates_nothing(harness, backend):
    """A version is stored again when a storage job died after its store and before the outbox heard of it:
    the same content with the same options (``timestamp`` = its collection time). Whether a configuration is
    a *new* version is not the backend's question any more (the index decides before anything is stored)."""
    when = datetime(2026, 11, 30, 8, 15, 0, 123456, tzinfo=timezone.utc)
    v1 = StoreOptions(device="ams-r1", run_id="run-1", timestamp=when)
    v2 = StoreOptions(device="ams-r2", run_id="run-1", timestamp=when)
    ref = backend.store(b"config v1\n", "g/r1", v1)
    other = backend.store(b"other device\n", "g/r2", v2)  # moves e.g. git HEAD
    before = harness.versions()
    assert backend.store(b"config v1\n", "g/r1", v1) == ref
    assert backend.store_many([(b"other device\n", "g/r2", v2)]) == [other]
    assert harness.versions() == before
    assert backend.latest("g/r1") == ref and backend.read(ref) == b"config v1\n"


def test_two_contents_two_refs(harness, backend):
    r1 = backend.store(b"v1\n", "g/r1", OPTS)
    r2 = backend.store(b"v2\n", "g/r1", OPTS)
    assert r1 != r2
    assert backend.read(r1) == b"v1\n"
    assert backend.read(r2) == b"v2\n"
    assert backend.latest("g/r1") == r2
    # going back to old content is a change, not a no-op
    r3 = backend.store(b"v1\n", "g/r1", OPTS)
    assert r3 not in (r1, r2)
    assert backend.latest("g/r1") == r3
    assert backend.read(r3) == b"v1\n"


def test_latest_unknown_path_is_none(backend):
    assert backend.latest("nowhere/nothing") is None
    backend.store(b"x", "somewhere/r1")
    assert backend.latest("somewhere/r2") is None


def test_paths_are_independent(backend):
    a = backend.store(b"same\n", "g/a")
    b = backend.store(b"same\n", "g/b")
    assert a != b
    assert backend.latest("g/a") == a and backend.latest("g/b") == b


@pytest.mark.parametrize(
    "group,host",
    [
        ("site", "../../etc/x"),
        ("a b", "c"),
        ("a b/c", "d/e f"),
        ("Zürich", "路由器-1"),
        (".", ".."),
        ("..", ".hidden"),
        ("100%", "r?#@:;*[x]"),
    ],
)
def test_untrusted_names_stay_inside(tmp_path, backend, group, host):
    before = set(tmp_path.iterdir())
    path = device_path(group, host)
    enc_group, enc_host = path.split("/")
    assert (decode_component(enc_group), decode_component(enc_host)) == (group, host)
    content = f"hostname {host}\n".encode()
    ref = backend.store(content, path, OPTS)
    assert backend.read(ref) == content
    assert backend.latest(path) == ref
    assert set(tmp_path.iterdir()) == before  # nothing written next to the root
    assert not (tmp_path.parent / "etc").exists()


@pytest.mark.parametrize("path", ["sp ace/ünï", "a:b@c/d?e#f%", "x/y/z/deep"])
def test_unusual_but_valid_raw_paths(backend, path):
    ref = backend.store(b"cfg", path)
    assert backend.read(ref) == b"cfg"
    assert backend.latest(path) == ref


UNSAFE_PATHS = ["..", "../x", "a/../../b", "/etc/passwd", "", "a//b", "a/", "./a", "a/.", "a\\b", "a\x00b", "a\nb"]


def test_unsafe_paths_refused(harness, backend):
    before = harness.versions()
    for path in UNSAFE_PATHS:
        with pytest.raises(UnsafePath) as exc:
            backend.store(b"evil", path)
        assert repr(path) in str(exc.value), path
        with pytest.raises(UnsafePath):
            backend.latest(path)
        with pytest.raises(ValueError):  # UnsafePath is also a ValueError
            backend.store_many([(b"ok", "fine/path", None), (b"evil", path, None)])
    assert harness.versions() == before
    assert backend.latest("fine/path") is None  # a batch with a bad path stores nothing


def test_read_unknown_ref(backend):
    ref = backend.store(b"exists", "grp/dev-one")
    missing = ref.replace("dev-one", "dev-two")
    with pytest.raises(RefNotFound) as exc:
        backend.read(missing)
    assert "dev-two" in str(exc.value)
    with pytest.raises(RefNotFound):
        backend.read("not a ref at all")
    with pytest.raises(KeyError):  # RefNotFound is also a KeyError
        backend.read(missing)


def test_delete(backend):
    old = backend.store(b"old\n", "g/r1")
    new = backend.store(b"new\n", "g/r1")
    backend.delete(old)  # retention: drop an older version
    assert backend.latest("g/r1") == new
    assert backend.read(new) == b"new\n"
    if not getattr(backend, "history_is_immutable", False):
        with pytest.raises(RefNotFound):
            backend.read(old)
    only = backend.store(b"only\n", "g/r2")
    backend.delete(only)
    assert backend.latest("g/r2") is None
    with pytest.raises(RefNotFound):
        backend.delete(only.replace("g/r2", "g/r9"))
    # storing again after delete works
    again = backend.store(b"only\n", "g/r2")
    assert backend.read(again) == b"only\n"
    assert backend.latest("g/r2") == again


def test_store_many(harness, backend):
    same = StoreOptions(device="r0", timestamp=datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc))
    r0 = backend.store(b"unchanged\n", "b/r0", same)
    before = harness.versions()
    refs = backend.store_many(
        [
            (b"unchanged\n", "b/r0", same),  # the same version again: nothing new
            (b"one\n", "b/r1", StoreOptions(device="r1")),
            (b"two-a\n", "b/r2", StoreOptions(device="r2")),
            (b"two-b\n", "b/r2", StoreOptions(device="r2")),
        ]
    )
    assert refs[0] == r0
    assert [backend.read(r) for r in refs] == [b"unchanged\n", b"one\n", b"two-a\n", b"two-b\n"]
    assert backend.latest("b/r2") == refs[3]
    assert harness.versions() == before + 3


def test_repr_has_no_secrets(harness, backend):
    text = repr(backend)
    assert type(backend).__name__ in text
    for secret in harness.secrets:
        assert secret not in text
        assert secret not in str(vars(backend))


def test_error_messages_have_no_secrets(harness, backend):
    ref = backend.store(b"x", "g/dev-one")
    with pytest.raises(RefNotFound) as exc:
        backend.read(ref.replace("dev-one", "dev-two"))
    for secret in harness.secrets:
        assert secret not in str(exc.value)


# --- restore (a scrub repairing a copy) -------------------------------------------
SAMPLE = (
    b"hostname ams-r1\n"
    b"interface GigabitEthernet0/1\n"
    b" description uplink to ams-core-01\n"
    b" ip address 10.20.30.1 255.255.255.0\n"
    b"snmp-server community n0t-public RO\n"
    b"end\n"
)


def test_restore_intact_version_writes_nothing(harness, backend):
    r1 = backend.store(b"version one\n", "g/r1", OPTS)
    r2 = backend.store(b"version two\n", "g/r1", OPTS)
    before = harness.versions()
    assert backend.restore(b"version one\n", r1) == r1
    assert backend.restore(b"version two\n", r2, OPTS) == r2
    assert harness.versions() == before
    assert backend.latest("g/r1") == r2


@pytest.mark.parametrize("how", ["missing", "garbage"])
def test_restore_latest_version(harness, backend, how):
    other = backend.store(b"another device\n", "g/r0", OPTS)
    opts = StoreOptions(device="ams-r1", run_id="run-1", timestamp=datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc))
    ref = backend.store(SAMPLE, "g/r1", opts)
    before = harness.versions()
    if not harness.damage(ref, how):
        pytest.skip(f"{backend.name}: a stored version cannot be made {how}")
    with pytest.raises((RefNotFound, IntegrityError)):
        backend.read(ref)
    restored = backend.restore(SAMPLE, ref, OPTS)
    assert backend.read(restored) == SAMPLE
    assert backend.latest("g/r1") == restored
    assert harness.versions() == before  # exactly the lost version came back
    assert backend.restore(SAMPLE, restored) == restored  # intact now: nothing to do
    assert backend.store(SAMPLE, "g/r1", opts) == restored  # and storing the same version again is a no-op
    assert harness.versions() == before
    assert backend.read(other) == b"another device\n"


@pytest.mark.parametrize("how", ["missing", "garbage"])
def test_restore_old_version_keeps_latest(harness, backend, how):
    r1 = backend.store(b"version one\n", "g/r1", OPTS)
    opts2 = StoreOptions(device="ams-r1", run_id="run-2", timestamp=datetime.now(timezone.utc) + timedelta(days=1))
    r2 = backend.store(b"version two\n", "g/r1", opts2)
    before = harness.versions()
    if not harness.damage(r1, how) and not backend.history_is_immutable:
        pytest.skip(f"{backend.name}: a stored version cannot be made {how}")
    restored = backend.restore(b"version one\n", r1, OPTS)
    assert backend.read(restored) == b"version one\n"
    assert backend.latest("g/r1") == r2
    assert backend.read(r2) == b"version two\n"
    assert harness.versions() == before
    assert backend.store(b"version two\n", "g/r1", opts2) == r2


def test_restore_refuses_bad_input(harness, backend):
    ref = backend.store(b"x\n", "g/r1")
    before = harness.versions()
    with pytest.raises(RefNotFound):
        backend.restore(b"x\n", "not a ref at all")
    with pytest.raises(TypeError):
        backend.restore("x\n", ref)  # type: ignore[arg-type]
    assert harness.versions() == before


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


# --- encrypted targets ------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in HARNESSES if "+aes" in n])
def test_encrypted_target_holds_no_plaintext(tmp_path, request, name):
    h = HARNESSES[name](tmp_path, request)
    assert h.encrypted
    first = h.backend.store(SAMPLE, "site_ams/ams-r1", OPTS)
    h.backend.store(SAMPLE + b"ntp server 10.0.0.1\n", "site_ams/ams-r1", OPTS)
    h.damage(first, "missing")
    h.backend.restore(SAMPLE, first, OPTS)
    blobs = h.raw()
    assert len(blobs) >= 2
    for blob in blobs:
        assert blob.startswith(b"DVENC1\n")
        for line in SAMPLE.splitlines()[:-1]:  # all but "end", too short not to occur by chance
            assert line.strip() not in blob, line
        for secret in ENC_SECRETS:
            assert secret.encode() not in blob


# --- registry -------------------------------------------------------------------
def test_registry_names():
    assert {"fs", "git", "s3"} <= set(available())
    with pytest.raises(UnknownBackend) as exc:
        get_backend("tape")
    assert "tape" in str(exc.value)
    with pytest.raises(LookupError):
        get_backend("tape")
