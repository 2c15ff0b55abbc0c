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


@pytest.mark.parametrize("versioned", [False, True], ids=["one-object-per-version", "versioned-bucket"])
def test_a_batch_of_40_is_stored_concurrently_and_reads_back_in_order(moto_endpoint, versioned):  # noqa: F811
    import threading
    from datetime import datetime, timedelta, timezone

    from storage.s3 import STORE_CONCURRENCY

    reset_moto(moto_endpoint)
    client = s3_client(moto_endpoint)
    client.create_bucket(Bucket="batch")
    if versioned:
        client.put_bucket_versioning(Bucket="batch", VersioningConfiguration={"Status": "Enabled"})
    backend = get_backend("s3", bucket="batch", endpoint_url=moto_endpoint, region_name="us-east-1",
                          access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET)
    assert backend.concurrency == STORE_CONCURRENCY == 16
    # how many PutObject requests are in flight at once, seen on the backend's own boto3 client
    lock, state = threading.Lock(), {"now": 0, "most": 0, "threads": set()}

    def started(**_):
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
            state["threads"].add(threading.get_ident())

    def finished(**_):
        with lock:
            state["now"] -= 1

    backend._client.meta.events.register("before-call.s3.PutObject", started)
    backend._client.meta.events.register("after-call.s3.PutObject", finished)
    at = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
    items = [(f"hostname r{i:02}\n".encode(), f"g{i % 4}/r{i:02}", StoreOptions(device=f"r{i:02}", timestamp=at))
             for i in range(36)]
    # the same device four times in the batch: stored one after the other, in input order
    items += [(f"hostname r00 v{v}\n".encode(), "g0/r00",
               StoreOptions(device="r00", timestamp=at + timedelta(minutes=v))) for v in range(1, 5)]
    refs = backend.store_many(items)
    assert len(refs) == 40 and len(set(refs)) == 40
    assert [backend.read(ref) for ref in refs] == [content for content, _path, _options in items]
    assert backend.latest("g0/r00") == refs[-1] and backend.read(refs[-1]) == b"hostname r00 v4\n"
    assert backend.latest("g3/r35") == refs[35]
    assert 1 < state["most"] <= STORE_CONCURRENCY and len(state["threads"]) > 1
    listed = client.list_object_versions(Bucket="batch") if versioned else client.list_objects_v2(Bucket="batch")
    stored = len(listed["Versions"] if versioned else listed["Contents"])
    assert stored == 40
    # the same batch again (a storage job that died after writing): recognised, nothing new (a versioned
    # bucket recognises a key's current version only: the newest item of each path)
    again = list(range(40)) if not versioned else [*range(1, 36), 39]
    assert backend.store_many([items[i] for i in again]) == [refs[i] for i in again]
    listed = client.list_object_versions(Bucket="batch") if versioned else client.list_objects_v2(Bucket="batch")
    assert len(listed["Versions"] if versioned else listed["Contents"]) == stored


def test_a_batch_to_an_unreachable_endpoint_fails_fast_with_target_unavailable():
    backend = get_backend("s3", bucket="vault", endpoint_url=f"http://127.0.0.1:{_closed_port()}",
                          region_name="us-east-1", access_key_id=DUMMY_KEY, secret_access_key=DUMMY_SECRET,
                          versioned=False)
    start = time.monotonic()
    with pytest.raises(TargetUnavailable) as exc:
        backend.store_many([(f"cfg {i}\n".encode(), f"g/r{i:02}", None) for i in range(40)])
    assert time.monotonic() - start < 10
    assert "vault" in str(exc.value) and "g/r00" in str(exc.value)  # the first item's error, as one by one
