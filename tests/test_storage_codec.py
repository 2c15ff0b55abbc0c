"""At-rest compression and encryption: the Codec formats, key rotation, tamper detection, secrets,
and an encoded filesystem target (real files)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
from datetime import datetime, timezone

import pytest
import zstandard

from storage import Backend, Codec, DecodeError, EncodedBackend, IntegrityError, StoreOptions, get_backend

K1 = b"k1-secret-key-material-32-bytes!"  # printable, so the raw form can be searched for in text
K2 = os.urandom(32)
assert len(K1) == 32

CONFIG = (
    b"!\n"
    b"hostname ams-core-01\n"
    b"enable secret 5 $1$mERr$hx5rVt7rPNoS4wqbXKX7m0\n"
    b"interface GigabitEthernet0/1\n"
    b" description uplink to ams-dist-02\n"
    b" ip address 10.20.30.1 255.255.255.0\n"
    b"router bgp 65001\n"
    b" neighbor 192.0.2.7 password bgp-peer-pw\n"
    b"snmp-server community n0t-public RO\n"
    b"end\n"
)
CONTENTS = {
    "config": CONFIG,
    "empty": b"",
    "binary": b"\xff\xfe\x00binary\r\n\x80 not utf-8\n",
    "gzip-magic": b"\x1f\x8b looks like gzip but is not",
    "zstd-magic": b"\x28\xb5\x2f\xfd looks like zstd but is not",
    "envelope-magic": b"DVENC1\nnot an envelope\n",
    "large": os.urandom(256 * 1024) + CONFIG * 2000,
}
COMPRESSIONS = [None, "none", "gzip", "zstd"]
KEYSETS = {"plain": None, "aes": {"k1": K1}}


def secret_forms(key: bytes) -> list[bytes]:
    return [key, base64.b64encode(key), key.hex().encode(), repr(key).encode()]


def lines_of(content: bytes) -> list[bytes]:
    """The configuration's lines long enough that finding one in random bytes is no accident."""
    lines = [line.strip() for line in content.splitlines() if len(line.strip()) >= 8]
    assert len(lines) >= 5
    return lines


def header_of(data: bytes) -> dict:
    magic, header, _rest = data.split(b"\n", 2)
    assert magic == b"DVENC1"
    return json.loads(header)


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


# --- formats ------------------------------------------------------------------------
@pytest.mark.parametrize("content", list(CONTENTS.values()), ids=list(CONTENTS))
@pytest.mark.parametrize("keys", list(KEYSETS.values()), ids=list(KEYSETS))
@pytest.mark.parametrize("compression", COMPRESSIONS, ids=[str(c) for c in COMPRESSIONS])
def test_round_trip_every_combination(compression, keys, content):
    codec = Codec(compression, keys=keys)
    encoded = codec.encode(content)
    assert codec.decode(encoded) == content
    # any other codec reads it too, as long as it holds the key
    assert Codec("zstd" if compression != "zstd" else "gzip", keys={"k1": K1}).decode(encoded) == content
    if keys:
        assert encoded.startswith(b"DVENC1\n") and codec.encrypts and codec.key_id == "k1"
    else:
        assert not codec.encrypts and codec.key_id == ""


def test_no_compression_no_keys_stores_plain_bytes():
    codec = Codec()
    assert codec.encode(CONFIG) == CONFIG
    assert codec.decode(CONFIG) == CONFIG
    assert Codec("none").encode(b"") == b""
    # content that would be taken for an encoded format is written as gzip instead
    tricky = CONTENTS["gzip-magic"]
    assert gzip.decompress(codec.encode(tricky)) == tricky


def test_gzip_output_is_a_standard_gzip_stream():
    encoded = Codec("gzip").encode(CONFIG)
    assert encoded[:2] == b"\x1f\x8b"
    assert gzip.decompress(encoded) == CONFIG
    assert len(Codec("gzip").encode(CONFIG * 50)) < len(CONFIG * 50) // 5


def test_zstd_output_is_a_standard_zstd_frame():
    encoded = Codec("zstd").encode(CONFIG)
    assert encoded[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.ZstdDecompressor().decompress(encoded) == CONFIG
    assert len(Codec("zstd").encode(CONFIG * 50)) < len(CONFIG * 50) // 5


def test_plain_gzip_and_zstd_written_by_other_tools_decode():
    codec = Codec(keys={"k1": K1})
    assert codec.decode(gzip.compress(CONFIG, compresslevel=1)) == CONFIG
    stream = zstandard.ZstdCompressor().compressobj()  # a frame without the content size in its header
    assert codec.decode(stream.compress(CONFIG) + stream.flush()) == CONFIG
    assert codec.decode(CONFIG) == CONFIG  # plain text (written before encoding was turned on)


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=[str(c) for c in COMPRESSIONS])
def test_envelope_hides_every_line(compression):
    codec = Codec(compression, keys={"k1": K1})
    a, b = codec.encode(CONFIG), codec.encode(CONFIG)
    assert a != b  # a fresh nonce every time
    for encoded in (a, b):
        header = header_of(encoded)
        assert header["alg"] == "AES-256-GCM" and header["kid"] == "k1"
        assert header["comp"] == (None if compression in (None, "none") else compression)
        assert len(base64.b64decode(header["nonce"])) == 12
        for line in lines_of(CONFIG):
            assert line not in encoded, line
        for form in secret_forms(K1):
            assert form not in encoded
    assert header_of(a)["nonce"] != header_of(b)["nonce"]


# --- keys ---------------------------------------------------------------------------
def test_key_rotation():
    old = Codec("gzip", keys={"k1": K1})
    written_with_k1 = old.encode(CONFIG)
    rotated = Codec("zstd", keys={"k1": K1, "k2": K2}, key_id="k2")
    assert rotated.key_id == "k2"
    written_with_k2 = rotated.encode(CONFIG + b"!changed\n")
    assert header_of(written_with_k2)["kid"] == "k2"
    assert rotated.decode(written_with_k1) == CONFIG
    assert rotated.decode(written_with_k2) == CONFIG + b"!changed\n"
    # the old codec cannot read the new key's versions, and says which key it lacks
    with pytest.raises(DecodeError, match="'k2'"):
        old.decode(written_with_k2)
    # the first key is the default active one
    assert Codec(keys={"k2": K2, "k1": K1}).key_id == "k2"


def test_unknown_key_id_names_it():
    data = Codec(keys={"k1": K1}).encode(CONFIG)
    with pytest.raises(DecodeError) as exc:
        Codec(keys={"k2": K2}).decode(data)
    assert "'k1'" in str(exc.value) and "not configured" in str(exc.value)
    with pytest.raises(DecodeError, match="'k1'"):
        Codec("gzip").decode(data)  # no keys at all


def test_wrong_key_names_the_key_id_and_cause():
    data = Codec(keys={"k1": K1}).encode(CONFIG)
    with pytest.raises(DecodeError) as exc:
        Codec(keys={"k1": K2}).decode(data)
    message = str(exc.value)
    assert "'k1'" in message and "authentication failed" in message
    assert isinstance(exc.value, IntegrityError)
    for form in secret_forms(K1) + secret_forms(K2):
        assert form.decode("latin-1") not in message


@pytest.mark.parametrize("compression", ["gzip", None])
def test_any_altered_byte_is_detected(compression):
    codec = Codec(compression, keys={"k1": K1})
    data = codec.encode(CONFIG)
    body_start = data.index(b"\n", len(b"DVENC1\n")) + 1
    for index in [body_start, body_start + 5, len(data) // 2, len(data) - 1]:
        with pytest.raises(DecodeError, match="'k1'.*authentication failed"):
            codec.decode(flip(data, index))
    with pytest.raises(DecodeError, match="'k1'"):
        codec.decode(data[:-1])  # truncated
    # the header is authenticated too: pointing it at another key that exists fails
    both = Codec(compression, keys={"k1": K1, "k2": K2})
    relabelled = data.replace(b'"kid":"k1"', b'"kid":"k2"')
    with pytest.raises(DecodeError, match="'k2'.*authentication failed"):
        both.decode(relabelled)
    # any change to the header line, even one that leaves key, nonce and compression alone
    with pytest.raises(DecodeError, match="'k1'.*authentication failed"):
        codec.decode(data.replace(b'{"alg"', b'{"note":"x","alg"'))
    # and so is the compression it announces
    other = b'"comp":"zstd"' if compression else b'"comp":"gzip"'
    altered = data.replace(b'"comp":"gzip"' if compression else b'"comp":null', other)
    assert altered != data
    with pytest.raises(DecodeError, match="'k1'"):
        codec.decode(altered)
    for index in range(len(b"DVENC1\n"), body_start - 1):  # every header byte
        with pytest.raises(DecodeError):
            codec.decode(flip(data, index))


def test_corrupt_gzip_and_zstd_raise_decode_error():
    with pytest.raises(DecodeError, match="gzip"):
        Codec().decode(Codec("gzip").encode(CONFIG)[:-6])
    with pytest.raises(DecodeError, match="zstd"):
        Codec().decode(flip(Codec("zstd").encode(CONFIG * 10), 20))


def test_repr_and_errors_never_show_key_material():
    codec = Codec("zstd", keys={"k1": K1, "k2": K2}, key_id="k2")
    text = repr(codec)
    assert text == "Codec(compression='zstd', key_id='k2', keys={'k1': REDACTED, 'k2': REDACTED})"
    everything = text + str(vars(codec)) + str(codec)
    for key in (K1, K2):
        for form in secret_forms(key):
            assert form.decode("latin-1") not in everything
    with pytest.raises(ValueError) as exc:
        Codec(keys={"short": K1[:16]})
    assert "'short'" in str(exc.value) and "16 bytes" in str(exc.value)
    for form in secret_forms(K1[:16]):
        assert form.decode("latin-1") not in str(exc.value)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError, match="'lz4'"):
        Codec("lz4")
    with pytest.raises(ValueError, match="'k9'"):
        Codec(keys={"k1": K1}, key_id="k9")
    with pytest.raises(ValueError, match="'k1'"):
        Codec(key_id="k1")
    with pytest.raises(TypeError, match="'k1'"):
        Codec(keys={"k1": K1.decode()})  # type: ignore[dict-item]
    assert Codec("GZIP").compression == "gzip" and Codec("none").compression is None


def test_zstd_without_the_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "zstandard", None)  # as if it were not installed
    with pytest.raises(ImportError, match="zstandard"):
        Codec("zstd")
    assert Codec("gzip").decode(Codec("gzip").encode(CONFIG)) == CONFIG


# --- an encoded filesystem target ---------------------------------------------------
def files_under(root) -> list:
    return [p for p in root.rglob("*") if p.is_file() and p.name != ".devicevault.lock"]


def test_encrypted_fs_target_keeps_no_plaintext_on_disk(tmp_path):
    root = tmp_path / "root"
    backend = EncodedBackend(get_backend("fs", root=root), Codec("zstd", keys={"k1": K1}))
    assert isinstance(backend, Backend) and backend.name == "fs"
    first = StoreOptions(device="ams-core-01", timestamp=datetime(2026, 11, 29, 11, 0, tzinfo=timezone.utc))
    r1 = backend.store(CONFIG, "site_ams/ams-core-01", first)
    second = StoreOptions(device="ams-core-01", timestamp=datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc))
    r2 = backend.store(CONFIG + b"ntp server 10.0.0.1\n", "site_ams/ams-core-01", second)
    assert backend.store(CONFIG + b"ntp server 10.0.0.1\n", "site_ams/ams-core-01", second) == r2  # idempotent
    (root / r1).write_bytes(b"garbage")
    r1 = backend.restore(CONFIG, r1)
    assert backend.read(r1) == CONFIG and backend.latest("site_ams/ams-core-01") == r2
    files = files_under(root)
    assert len(files) == 2
    for file in files:
        data = file.read_bytes()
        assert header_of(data)["kid"] == "k1"
        for line in lines_of(CONFIG + b"ntp server 10.0.0.1\n"):
            assert line not in data, (file, line)
        for form in secret_forms(K1):
            assert form not in data
    for form in secret_forms(K1):
        assert form.decode("latin-1") not in repr(backend)


def test_changing_settings_keeps_old_versions_readable(tmp_path):
    root = tmp_path / "root"
    path = "site_ams/ams-r1"
    plain = get_backend("fs", root=root)
    v1 = plain.store(b"hostname r1\n", path)
    zipped = EncodedBackend(get_backend("fs", root=root), Codec("gzip"))
    at = StoreOptions(timestamp=datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc))
    v2 = zipped.store(b"hostname r1\nv2\n", path, at)
    assert gzip.decompress((root / v2).read_bytes()) == b"hostname r1\nv2\n"
    k1 = EncodedBackend(get_backend("fs", root=root), Codec("zstd", keys={"k1": K1}))
    assert k1.store(b"hostname r1\nv2\n", path, at) == v2  # the same version again, new settings: no new file
    v3 = k1.store(b"hostname r1\nv3\n", path)
    rotated = EncodedBackend(get_backend("fs", root=root), Codec("zstd", keys={"k1": K1, "k2": K2}, key_id="k2"))
    v4 = rotated.store(b"hostname r1\nv4\n", path)
    assert [header_of((root / v).read_bytes())["kid"] for v in (v3, v4)] == ["k1", "k2"]
    assert [rotated.read(v) for v in (v1, v2, v3, v4)] == [
        b"hostname r1\n", b"hostname r1\nv2\n", b"hostname r1\nv3\n", b"hostname r1\nv4\n",
    ]
    assert len(files_under(root)) == 4
    # a target that lost key k1 says so when reading a k1 version, naming the kid and the ref
    only_k2 = EncodedBackend(get_backend("fs", root=root), Codec(keys={"k2": K2}))
    with pytest.raises(DecodeError) as exc:
        only_k2.read(v3)
    assert "'k1'" in str(exc.value) and v3 in str(exc.value)
    # and storing beside an undecodable latest writes a fresh, readable version; the same version twice, once
    v5 = only_k2.store(b"hostname r1\nv4\n", path, StoreOptions(timestamp=datetime(2026, 11, 30, tzinfo=timezone.utc)))
    assert only_k2.read(v5) == b"hostname r1\nv4\n"
    assert only_k2.store(b"hostname r1\nv4\n", path, StoreOptions(timestamp=datetime(2026, 11, 30, tzinfo=timezone.utc))) == v5


def test_store_many_stores_a_repeated_version_once(tmp_path):
    """A storage job run again (its worker died after writing) stores the same versions again: same content,
    same collection time. Encryption makes new bytes each time, yet no second file appears."""
    root = tmp_path / "root"
    backend = EncodedBackend(get_backend("fs", root=root), Codec("gzip", keys={"k1": K1}))

    def at(minute: int) -> StoreOptions:
        return StoreOptions(timestamp=datetime(2026, 11, 29, 12, minute, tzinfo=timezone.utc))

    batch = [(b"same\n", "g/r0", at(0)), (b"a\n", "g/r1", at(1)), (b"b\n", "g/r1", at(2))]
    refs = backend.store_many(batch)
    assert len(set(refs)) == 3 and [backend.read(r) for r in refs] == [b"same\n", b"a\n", b"b\n"]
    assert backend.store_many(batch) == refs
    assert len(files_under(root)) == 3
    assert backend.latest("g/r1") == refs[2]
