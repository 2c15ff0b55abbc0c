"""One contract every storage backend runs unchanged (fs, git, s3, s3 versioned).

The s3 backends talk to moto's standalone server over real HTTP.
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from storage import (
    Backend,
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


def _fs_harness(tmp_path: Path, _request) -> Harness:
    root = tmp_path / "root"
    backend = get_backend("fs", root=root)
    return Harness(backend, lambda: sum(1 for p in root.rglob("*.cfg") if p.is_file()))


def _git_harness(tmp_path: Path, _request) -> Harness:
    repo = tmp_path / "root"
    backend = get_backend("git", repo_path=repo)

    def commits() -> int:
        out = subprocess.run(["git", "rev-list", "--count", "--all"], cwd=repo, capture_output=True, text=True)
        return int(out.stdout.strip()) if out.returncode == 0 else 0

    return Harness(backend, commits)


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

        def count() -> int:
            pages = client.get_paginator("list_object_versions").paginate(Bucket="vault")
            return sum(len(p.get("Versions", [])) for p in pages)

        return Harness(backend, count, secrets=[DUMMY_KEY, DUMMY_SECRET])

    return make


HARNESSES = {
    "fs": _fs_harness,
    "git": _git_harness,
    "s3": _s3_harness(versioned=False),
    "s3-versioned": _s3_harness(versioned=True),
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


def test_idempotent_restore_creates_nothing(harness, backend):
    ref = backend.store(b"config v1\n", "g/r1", OPTS)
    other = backend.store(b"other device\n", "g/r2", OPTS)  # moves e.g. git HEAD
    before = harness.versions()
    assert backend.store(b"config v1\n", "g/r1", StoreOptions(run_id="run-2")) == ref
    assert backend.store(b"other device\n", "g/r2") == other
    assert harness.versions() == before
    assert backend.latest("g/r1") == ref


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
    r0 = backend.store(b"unchanged\n", "b/r0")
    before = harness.versions()
    refs = backend.store_many(
        [
            (b"unchanged\n", "b/r0", StoreOptions(device="r0")),
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


# --- registry -------------------------------------------------------------------
def test_registry_names():
    assert {"fs", "git", "s3"} <= set(available())
    with pytest.raises(UnknownBackend) as exc:
        get_backend("tape")
    assert "tape" in str(exc.value)
    with pytest.raises(LookupError):
        get_backend("tape")
