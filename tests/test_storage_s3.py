"""S3 backend specifics: unreachable endpoints, secrets, bucket creation, layout."""

from __future__ import annotations

import re
import socket
import time

import pytest

from storage import StoreOptions, TargetUnavailable, get_backend
from test_storage_contract import DUMMY_KEY, DUMMY_SECRET, moto_endpoint, reset_moto, s3_client  # noqa: F401


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when we return


def test_unreachable_endpoint_fails_fast_without_secrets():
    backend = get_backend(
        "s3", bucket="vault", endpoint_url=f"http://{DUMMY_KEY}:{DUMMY_SECRET}@127.0.0.1:{_closed_port()}",
        region_name="us-east-1", access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET, versioned=False,
    )
    assert DUMMY_SECRET not in repr(backend) and DUMMY_KEY not in repr(backend)
    start = time.monotonic()
    with pytest.raises(TargetUnavailable) as exc:
        backend.store(b"x", "g/r1")
    assert time.monotonic() - start < 5
    message = str(exc.value)
    assert "vault" in message and "g/r1" in message
    assert DUMMY_SECRET not in message and DUMMY_KEY not in message
    assert isinstance(exc.value, ConnectionError)
    assert backend.healthy() is False


def test_create_bucket_and_layout(moto_endpoint):  # noqa: F811
    reset_moto(moto_endpoint)
    backend = get_backend(
        "s3", bucket="fresh", prefix="/dv/", endpoint_url=moto_endpoint, region_name="eu-west-1",
        access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET, create_bucket=True,
    )
    assert backend.healthy()
    ref = backend.store(b"cfg\n", "site_ams/ams-r1", StoreOptions(device="ams-r1", run_id="r7"))
    assert re.fullmatch(r"s3://fresh/dv/site_ams/ams-r1/\d{8}T\d{6}\.\d{6}Z_[0-9a-f]{12}\.cfg", ref)
    key = ref[len("s3://fresh/"):]
    head = s3_client(moto_endpoint).head_object(Bucket="fresh", Key=key)
    assert head["Metadata"]["device"] == "ams-r1" and head["Metadata"]["run-id"] == "r7"
    # a second backend with create_bucket on an existing bucket is fine
    again = get_backend(
        "s3", bucket="fresh", prefix="dv", endpoint_url=moto_endpoint, region_name="eu-west-1",
        access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET, create_bucket=True,
    )
    assert again.latest("site_ams/ams-r1") == ref


def test_versioned_layout(moto_endpoint):  # noqa: F811
    reset_moto(moto_endpoint)
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="vbucket")
    client.put_bucket_versioning(Bucket="vbucket", VersioningConfiguration={"Status": "Enabled"})
    backend = get_backend(
        "s3", bucket="vbucket", endpoint_url=moto_endpoint, region_name="us-east-1",
        access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET,
    )
    r1 = backend.store(b"one", "g/r 1")
    r2 = backend.store(b"two", "g/r 1")
    assert r1.startswith("s3://vbucket/g/r%201.cfg?versionId=") and r2.startswith("s3://vbucket/g/r%201.cfg?versionId=")
    assert r1 != r2
    assert client.get_object(Bucket="vbucket", Key="g/r 1.cfg")["Body"].read() == b"two"
