"""The storage contract: one test suite every backend runs unchanged, importable from outside the repository.

Like fsspec's ``fsspec/tests/abstract/``: a backend (built in, or a plugin in another package) runs the whole
contract by subclassing :class:`BackendContract` and giving it a ``harness`` fixture that returns a
:class:`Harness` around a fresh, empty backend::

    import pytest
    from storage.contract import BackendContract, Harness

    class TestTapeBackend(BackendContract):
        @pytest.fixture
        def harness(self, tmp_path):
            backend = TapeBackend(tmp_path / "tape")           # registered: storage.registry.register("tape", ...)
            return Harness(backend, versions=backend.count)    # damage/raw/secrets: optional, see Harness

The harness keeps the target's files in a folder below ``tmp_path`` (the contract checks that nothing is
written next to it). Parametrise the fixture to run it over several harnesses (``tests/test_storage_contract.py`` runs it over
fs, git, s3, versioned s3 and encoded targets). Tests that need what a harness cannot do (damage a stored
version, read the raw bytes) skip or check less; an encrypted harness (``encrypted=True``) also has to show
that no plaintext reaches the target.

This module needs pytest and is imported only by tests: DeviceVault's own code never imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import pytest

from .base import Backend, StoreOptions
from .errors import IntegrityError, RefNotFound, UnsafePath
from .paths import decode_component, device_path
from .registry import available


@dataclass
class Harness:
    """A backend under test and what the contract needs to look behind it."""

    backend: Backend
    versions: Callable[[], int]  #: how many versions/commits/objects the target holds
    secrets: list[str] = field(default_factory=list)  #: credentials that must never show in repr or errors
    #: ``damage(ref, "missing" | "garbage")`` loses or overwrites a stored version; False when the target
    #: cannot be damaged that way (the restore tests then skip)
    damage: Callable[[str, str], bool] = lambda ref, how: False
    raw: Callable[[], list[bytes]] = list  #: every stored byte string, as the target holds it
    encrypted: bool = False  #: the backend encrypts: ``raw()`` must hold no plaintext


OPTS = StoreOptions(device="ams-r1", run_id="run-1")
UNSAFE_PATHS = ["..", "../x", "a/../../b", "/etc/passwd", "", "a//b", "a/", "./a", "a/.", "a\\b", "a\x00b", "a\nb"]

SAMPLE = (
    b"hostname ams-r1\n"
    b"interface GigabitEthernet0/1\n"
    b" description uplink to ams-core-01\n"
    b" ip address 10.20.30.1 255.255.255.0\n"
    b"snmp-server community n0t-public RO\n"
    b"end\n"
)


class BackendContract:
    """The contract. Subclass it and define a ``harness`` fixture (see the module's docstring)."""

    @pytest.fixture
    def harness(self) -> Harness:
        raise NotImplementedError("a BackendContract subclass defines the harness fixture")

    @pytest.fixture
    def backend(self, harness):
        yield harness.backend
        harness.backend.close()

    # --- the contract -----------------------------------------------------------------
    def test_is_a_backend(self, backend):
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
    def test_round_trip(self, backend, content):
        ref = backend.store(content, "site_ams/ams-r1", OPTS)
        assert isinstance(ref, str) and ref
        assert backend.read(ref) == content
        assert backend.latest("site_ams/ams-r1") == ref

    def test_round_trip_5mb(self, backend):
        blob = os.urandom(5 * 1024 * 1024)
        ref = backend.store(blob, "big/blob", OPTS)
        assert backend.read(ref) == blob

    def test_the_same_version_stored_twice_creates_nothing(self, harness, backend):
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

    def test_two_contents_two_refs(self, harness, backend):
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

    def test_latest_unknown_path_is_none(self, backend):
        assert backend.latest("nowhere/nothing") is None
        backend.store(b"x", "somewhere/r1")
        assert backend.latest("somewhere/r2") is None

    def test_paths_are_independent(self, backend):
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
    def test_untrusted_names_stay_inside(self, tmp_path, backend, group, host):
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
    def test_unusual_but_valid_raw_paths(self, backend, path):
        ref = backend.store(b"cfg", path)
        assert backend.read(ref) == b"cfg"
        assert backend.latest(path) == ref

    def test_unsafe_paths_refused(self, harness, backend):
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

    def test_read_unknown_ref(self, backend):
        ref = backend.store(b"exists", "grp/dev-one")
        missing = ref.replace("dev-one", "dev-two")
        with pytest.raises(RefNotFound) as exc:
            backend.read(missing)
        assert "dev-two" in str(exc.value)
        with pytest.raises(RefNotFound):
            backend.read("not a ref at all")
        with pytest.raises(KeyError):  # RefNotFound is also a KeyError
            backend.read(missing)

    def test_delete(self, backend):
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

    def test_store_many(self, harness, backend):
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

    def test_repr_has_no_secrets(self, harness, backend):
        text = repr(backend)
        assert type(backend).__name__ in text
        for secret in harness.secrets:
            assert secret not in text
            assert secret not in str(vars(backend))

    def test_error_messages_have_no_secrets(self, harness, backend):
        ref = backend.store(b"x", "g/dev-one")
        with pytest.raises(RefNotFound) as exc:
            backend.read(ref.replace("dev-one", "dev-two"))
        for secret in harness.secrets:
            assert secret not in str(exc.value)

    # --- restore (a scrub repairing a copy) -------------------------------------------

    def test_restore_intact_version_writes_nothing(self, harness, backend):
        r1 = backend.store(b"version one\n", "g/r1", OPTS)
        r2 = backend.store(b"version two\n", "g/r1", OPTS)
        before = harness.versions()
        assert backend.restore(b"version one\n", r1) == r1
        assert backend.restore(b"version two\n", r2, OPTS) == r2
        assert harness.versions() == before
        assert backend.latest("g/r1") == r2

    @pytest.mark.parametrize("how", ["missing", "garbage"])
    def test_restore_latest_version(self, harness, backend, how):
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
    def test_restore_old_version_keeps_latest(self, harness, backend, how):
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

    def test_restore_refuses_bad_input(self, harness, backend):
        ref = backend.store(b"x\n", "g/r1")
        before = harness.versions()
        with pytest.raises(RefNotFound):
            backend.restore(b"x\n", "not a ref at all")
        with pytest.raises(TypeError):
            backend.restore("x\n", ref)  # type: ignore[arg-type]
        assert harness.versions() == before

    # --- encrypted targets ------------------------------------------------------------
    def test_encrypted_target_holds_no_plaintext(self, harness, backend):
        if not harness.encrypted:
            pytest.skip(f"{backend.name}: not an encrypting harness")
        first = backend.store(SAMPLE, "site_ams/ams-r1", OPTS)
        backend.store(SAMPLE + b"ntp server 10.0.0.1\n", "site_ams/ams-r1", OPTS)
        harness.damage(first, "missing")
        backend.restore(SAMPLE, first, OPTS)
        blobs = harness.raw()
        assert len(blobs) >= 2
        for blob in blobs:
            assert blob.startswith(b"DVENC1\n")
            for line in SAMPLE.splitlines()[:-1]:  # all but "end", too short not to occur by chance
                assert line.strip() not in blob, line
            for secret in harness.secrets:
                assert secret.encode() not in blob
