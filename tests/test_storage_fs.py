"""Filesystem backend specifics: human-browsable layout, atomic writes, ordering."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from storage import StoreOptions
from storage.fs import FilesystemBackend


def test_layout_is_browsable(tmp_path):
    b = FilesystemBackend(tmp_path / "root")
    ref = b.store(b"hostname r1\n", "site_ams/ams-r1")
    assert re.fullmatch(r"site_ams/ams-r1/\d{8}T\d{6}\.\d{6}Z_[0-9a-f]{12}\.cfg", ref)
    assert (tmp_path / "root" / ref).read_bytes() == b"hostname r1\n"
    # no temp files left behind
    assert [p.name for p in (tmp_path / "root" / "site_ams" / "ams-r1").iterdir()] == [ref.rsplit("/", 1)[1]]


def test_explicit_timestamp_used(tmp_path):
    b = FilesystemBackend(tmp_path / "root")
    ts = datetime(2024, 5, 1, 12, 30, 0, 123456, tzinfo=timezone.utc)
    ref = b.store(b"x", "g/r1", StoreOptions(timestamp=ts))
    assert ref.startswith("g/r1/20240501T123000.123456Z_")


def test_versions_ordered_even_within_a_microsecond(tmp_path):
    b = FilesystemBackend(tmp_path / "root")
    refs = [b.store(f"v{i}".encode(), "g/r1") for i in range(50)]
    assert refs == sorted(refs)
    assert b.latest("g/r1") == refs[-1]


def test_delete_prunes_empty_dirs(tmp_path):
    b = FilesystemBackend(tmp_path / "root")
    b.delete(b.store(b"x", "g/r1"))
    assert list((tmp_path / "root").iterdir()) == [tmp_path / "root" / ".devicevault.lock"]
