"""Safe, reversible path components and root confinement."""

from __future__ import annotations

import os

import pytest

from storage import UnsafePath, decode_component, device_path, encode_component, resolve_inside

NAMES = ["r1", "ams-r1.lab", "../../etc/x", "a b/c", "Zürich 路由器", ".", "..", "...x", ".hidden", "100%", "%2E", "-x_"]


@pytest.mark.parametrize("name", NAMES)
def test_encode_is_reversible_and_safe(name):
    enc = encode_component(name)
    assert decode_component(enc) == name
    assert enc and "/" not in enc and "\\" not in enc and not enc.startswith(".")
    assert enc not in (".", "..")
    assert all(c.isascii() and (c.isalnum() or c in "._-%") for c in enc)


def test_plain_names_unchanged():
    assert encode_component("ams-r1.lab_2") == "ams-r1.lab_2"
    assert device_path("site_ams", "ams-r1") == "site_ams/ams-r1"
    assert device_path("a/b", "../x") == "a%2Fb/%2E%2E%2Fx"


def test_encoding_is_injective():
    encoded = {encode_component(n) for n in NAMES}
    assert len(encoded) == len(NAMES)


@pytest.mark.parametrize("bad", ["", None])
def test_empty_name_refused(bad):
    with pytest.raises(UnsafePath):
        encode_component(bad)


@pytest.mark.parametrize("bad", ["a/b", "%zz", "", "a b", "%2e"])
def test_decode_rejects_non_encoded(bad):
    with pytest.raises(UnsafePath):
        decode_component(bad)


def test_resolve_inside(tmp_path):
    assert resolve_inside(tmp_path, "a/b") == tmp_path.resolve() / "a" / "b"
    for bad in ["../x", "a/../../x", "/etc/passwd", "a//b", ""]:
        with pytest.raises(UnsafePath):
            resolve_inside(tmp_path, bad)


def test_resolve_inside_refuses_symlink_escape(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(tmp_path, root / "link")
    with pytest.raises(UnsafePath):
        resolve_inside(root, "link/x")
