"""S3 backend (boto3), for AWS or any S3-compatible endpoint.

Unversioned bucket: one object per version,
``<prefix>/<path>/<UTC %Y%m%dT%H%M%S.%fZ>_<sha256[:12]>.cfg``,
ref ``s3://<bucket>/<key>``.

Versioned bucket (versioning "Enabled"): one key per device,
``<prefix>/<path>.cfg``, each version an S3 object version,
ref ``s3://<bucket>/<key>?versionId=<id>``.  A restored *older* version of a
versioned key is kept beside it, see :meth:`S3Backend.restore`.

Keys in refs are percent-quoted (``/`` kept), so refs parse unambiguously.
A version stored with an explicit ``StoreOptions.timestamp`` (the collection time) is recognised by it when
stored again (the object of that timestamp; on a versioned bucket the current version's ``timestamp``
metadata): nothing is written, even when the bytes differ (encryption is randomised).
Credentials are handed to boto3 only; they never appear in repr or errors.

:meth:`S3Backend.store_many` stores a batch's items concurrently, at most ``concurrency`` at once
(:data:`STORE_CONCURRENCY`, 16, unless a storage file sets the ``concurrency`` option): threads sharing the
backend's one boto3 client (clients are thread-safe; sessions and resources are not). Items of one path are
stored one after the other, in input order, so the last of them is ``latest``.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import (
    BackendBase,
    already_holds,
    VERSION_NAME,
    StoreOptions,
    as_content,
    format_stamp,
    next_stamp,
    restored_name,
    sha256_hex,
    version_name,
)
from .errors import IntegrityError, RefNotFound, StorageError, TargetUnavailable
from .paths import split_relpath

#: how many items of one :meth:`S3Backend.store_many` call are stored at once (the ``concurrency`` option)
STORE_CONCURRENCY = 16

_SESSION: boto3.session.Session | None = None
_SESSION_LOCK = threading.Lock()
_NOT_FOUND = {"NoSuchKey", "404", "NotFound", "NoSuchVersion"}
_NO_BUCKET = {"NoSuchBucket"}


def _safe_endpoint(url: str | None) -> str | None:
    """The endpoint URL without any user:password part."""
    if not url:
        return url
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts)


class S3Backend(BackendBase):
    name = "s3"
    history_is_immutable = False

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region_name: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        create_bucket: bool = False,
        *,
        session_token: str | None = None,
        versioned: bool | None = None,
        connect_timeout: float = 3.0,
        read_timeout: float = 30.0,
        max_attempts: int = 2,
        concurrency: int = STORE_CONCURRENCY,
    ) -> None:
        if not bucket:
            raise ValueError("bucket is required")
        self.concurrency = int(concurrency)
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            split_relpath(self.prefix, target=f"s3://{bucket}")
        self.endpoint_url = _safe_endpoint(endpoint_url)
        self.region_name = region_name
        self._versioned = versioned
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
            max_pool_connections=max(10, self.concurrency),  # one connection per thread of store_many
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        with _SESSION_LOCK:  # one shared session: its data loaders are costly to build
            global _SESSION
            if _SESSION is None:
                _SESSION = boto3.session.Session()
            self._client = _SESSION.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region_name,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                aws_session_token=session_token,
                config=config,
            )
        if create_bucket:
            self._create_bucket()

    def __repr__(self) -> str:
        return f"S3Backend(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint_url={self.endpoint_url!r})"

    @property
    def _target(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"
        return f"{where} ({self.endpoint_url})" if self.endpoint_url else where

    # --- error mapping -----------------------------------------------------------
    def _call(self, op: str, what: str, *, missing: str | None = None, **kwargs: Any) -> Any:
        try:
            return getattr(self._client, op)(**kwargs)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            if missing is not None and (code in _NOT_FOUND or (code == "InvalidArgument" and "VersionId" in kwargs)):
                raise RefNotFound(f"s3 {self._target}: {missing}") from None
            if code in _NO_BUCKET:
                raise TargetUnavailable(f"s3 {self._target}: {what}: bucket {self.bucket!r} does not exist") from None
            msg = err.get("Message") or code
            raise StorageError(f"s3 {self._target}: {what}: {code}: {msg}") from None
        except (BotoConnectionError, HTTPClientError) as exc:
            raise TargetUnavailable(f"s3 {self._target}: {what}: endpoint unreachable: {type(exc).__name__}") from None
        except BotoCoreError as exc:
            raise StorageError(f"s3 {self._target}: {what}: {type(exc).__name__}: {exc}") from None

    def _create_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region_name and self.region_name != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region_name}
        try:
            self._call("create_bucket", "create bucket", **kwargs)
        except StorageError as exc:
            if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                raise

    @property
    def versioned(self) -> bool:
        if self._versioned is None:
            resp = self._call("get_bucket_versioning", "get bucket versioning", Bucket=self.bucket)
            self._versioned = resp.get("Status") == "Enabled"
        return self._versioned

    # --- keys and refs -------------------------------------------------------------
    def _base(self, path: str) -> str:
        split_relpath(path, target=self._target)
        return f"{self.prefix}/{path}" if self.prefix else path

    def _ref(self, key: str, version_id: str | None = None) -> str:
        ref = f"s3://{self.bucket}/{quote(key, safe='/')}"
        return f"{ref}?versionId={quote(version_id, safe='')}" if version_id else ref

    def _parse_ref(self, ref: str) -> tuple[str, str | None]:
        if not isinstance(ref, str) or not ref.startswith("s3://"):
            raise RefNotFound(f"s3 {self._target}: malformed ref {ref!r}")
        bucket, _, rest = ref[5:].partition("/")
        quoted, _, query = rest.partition("?")
        key = unquote(quoted)
        if bucket != self.bucket or not key:
            raise RefNotFound(f"s3 {self._target}: ref {ref!r} is not in this bucket")
        split_relpath(key, target=self._target)
        if self.prefix and not key.startswith(self.prefix + "/"):
            raise RefNotFound(f"s3 {self._target}: ref {ref!r} is outside prefix {self.prefix!r}")
        version = parse_qs(query).get("versionId", [None])[0] if query else None
        if version is None and not VERSION_NAME.match(key.rsplit("/", 1)[-1]):
            raise RefNotFound(f"s3 {self._target}: malformed ref {ref!r}")
        return key, version

    def _latest_name(self, base: str) -> str | None:
        names = self._names(base)
        return max(names) if names else None

    def _names(self, base: str) -> list[str]:
        """Names of the version objects under ``base`` (one object per version)."""
        names: list[str] = []
        token = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": base + "/", "Delimiter": "/"}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self._call("list_objects_v2", f"list {base!r}", **kwargs)
            for obj in resp.get("Contents", []):
                name = obj["Key"][len(base) + 1 :]
                if VERSION_NAME.match(name):
                    names.append(name)
            if not resp.get("IsTruncated"):
                break
            token = resp.get("NextContinuationToken")
        return names

    def _head(self, key: str, version_id: str | None = None) -> dict[str, Any] | None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            return self._call("head_object", f"head {key!r}", missing=key, **kwargs)
        except RefNotFound:
            return None

    @staticmethod
    def _metadata(digest: str, options: StoreOptions) -> dict[str, str]:
        metadata = {"sha256": digest}
        if options.timestamp is not None:
            metadata["timestamp"] = format_stamp(options.timestamp)
        if options.device:
            metadata["device"] = quote(options.device, safe="")
        if options.run_id:
            metadata["run-id"] = quote(options.run_id, safe="")
        return metadata

    def _put(self, key: str, content: bytes, metadata: dict[str, str], what: str) -> dict[str, Any]:
        return self._call(
            "put_object", what, Bucket=self.bucket, Key=key, Body=content,
            Metadata=metadata, ContentType="application/octet-stream",
        )

    # --- Backend -------------------------------------------------------------------
    def store(self, content: bytes, path: str, options: StoreOptions | None = None) -> str:
        if not isinstance(content, (bytes, bytearray, memoryview)):
            raise TypeError(f"content for {path!r} must be bytes, not {type(content).__name__}")
        content = bytes(content)
        options = options or StoreOptions()
        base = self._base(path)
        digest = sha256_hex(content)
        metadata = self._metadata(digest, options)
        if self.versioned:
            key = f"{base}.cfg"
            head = self._head(key)
            held = head.get("Metadata", {}) if head is not None else {}
            if head is not None and (held.get("sha256") == digest or
                                     (options.timestamp is not None and held.get("timestamp") == metadata.get("timestamp"))):
                return self._ref(key, head.get("VersionId"))
            resp = self._put(key, content, metadata, f"store {path!r}")
            return self._ref(key, resp.get("VersionId"))
        names = self._names(base)
        latest = max(names) if names else None
        if latest is not None and VERSION_NAME.match(latest).group(2) == digest[:12]:
            head = self._head(f"{base}/{latest}")
            if head is not None and head.get("Metadata", {}).get("sha256") == digest:
                return self._ref(f"{base}/{latest}")
        stamp = next_stamp(options, latest)
        if options.timestamp is not None:  # this version may be here already (a repeated store)
            same = sorted(n for n in names if n.startswith(stamp + "_"))
            if same:
                return self._ref(f"{base}/{same[0]}")
        key = f"{base}/{version_name(stamp, digest)}"
        self._put(key, content, metadata, f"store {path!r}")
        return self._ref(key)

    def store_many(self, items: list[tuple[bytes, str, StoreOptions | None]]) -> list[str]:
        """Store several versions; refs in input order. Every item is checked first (an unsafe path stores
        nothing), then the items are stored concurrently, at most ``concurrency`` at once; the items of one
        path one after the other, in input order. A failure stops what has not started yet and is raised (the
        first in input order: e.g. :class:`TargetUnavailable` for an endpoint that is down) once the items
        under way are done; what was stored is recognised when the batch is stored again."""
        for content, path, _options in items:
            as_content(content, path)
            self._base(path)
        if not items:
            return []
        self.versioned  # noqa: B018 - asked once here, not by every thread
        by_path: dict[str, list[int]] = {}
        for index, (_content, path, _options) in enumerate(items):
            by_path.setdefault(path, []).append(index)
        refs: list[str | None] = [None] * len(items)
        errors: dict[int, BaseException] = {}
        stop = threading.Event()

        def store_path(indices: list[int]) -> None:
            for index in indices:
                if stop.is_set():
                    return
                try:
                    refs[index] = self.store(*items[index])
                except BaseException as exc:  # noqa: BLE001 - raised by store_many, in input order
                    errors[index] = exc
                    stop.set()
                    return

        groups = list(by_path.values())
        if len(groups) == 1 or self.concurrency == 1:
            for indices in groups:
                store_path(indices)
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(groups)),
                                    thread_name_prefix="s3-store") as pool:
                for future in [pool.submit(store_path, indices) for indices in groups]:
                    future.result()
        if errors:
            raise errors[min(errors)]
        return refs  # type: ignore[return-value]

    def read(self, ref: str, options: StoreOptions | None = None) -> bytes:
        key, version = self._parse_ref(ref)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version:
            kwargs["VersionId"] = version
        resp = self._call("get_object", f"read {ref!r}", missing=f"no version {ref!r}", **kwargs)
        try:
            data = resp["Body"].read()
        except (BotoCoreError, OSError) as exc:
            raise TargetUnavailable(f"s3 {self._target}: read {ref!r}: {type(exc).__name__}") from None
        expected = resp.get("Metadata", {}).get("sha256")
        digest = sha256_hex(data)
        m = VERSION_NAME.match(key.rsplit("/", 1)[-1])
        if (expected and expected != digest) or (m and m.group(2) != digest[:12]):
            raise IntegrityError(f"s3 {self._target}: checksum mismatch for {ref!r}")
        return data

    def restore(self, content: bytes, ref: str, options: StoreOptions | None = None) -> str:
        """Put ``content`` back as the version ``ref`` names (missing or corrupt copy).

        If ``ref`` already reads back as ``content`` nothing is written.  Otherwise:

        * one object per version (ref without ``versionId``): the object is
          written again under the same timestamp name, so it keeps its place in
          history and an old version never becomes ``latest``.  The name's digest
          part is that of ``content``; if it differs from ``ref``'s (e.g.
          re-encrypted bytes) the new name is used, the old object deleted and
          the new ref returned.
        * versioned bucket, ``ref`` is the key's current version or the key has
          no current version: ``content`` is put at the same key and the new
          object version's ref returned (it is, rightly, ``latest``).
        * versioned bucket, the key's current version is another one (``ref``
          is an older version): S3 cannot insert a version below the current one,
          and putting it on top would make the old content ``latest``.  The
          version is restored *beside* the key instead, as the object
          ``<key>~restored/<timestamp>_<sha256[:12]>.cfg`` (timestamp of the
          lost version when S3 still knows it, else ``options.timestamp``, else
          now); its ref has no ``versionId``.  ``latest`` is unchanged, and ``~``
          never occurs in paths made by :func:`storage.paths.device_path`.
        """
        key, version = self._parse_ref(ref)
        content = as_content(content, ref)
        if already_holds(self, ref, content):
            return ref
        options = options or StoreOptions()
        digest = sha256_hex(content)
        metadata = self._metadata(digest, options)
        what = f"restore {ref!r}"
        if version is None:
            folder, _, name = key.rpartition("/")
            new_key = f"{folder}/{restored_name(name, digest)}" if folder else restored_name(name, digest)
            self._put(new_key, content, metadata, what)
            if new_key != key:
                try:
                    self._call("delete_object", what, missing=key, Bucket=self.bucket, Key=key)
                except RefNotFound:
                    pass
            return self._ref(new_key)
        head = self._head(key)
        current = head.get("VersionId") if head is not None else None
        if current is None or current == version:
            resp = self._put(key, content, metadata, what)
            return self._ref(key, resp.get("VersionId"))
        lost = self._head(key, version)
        stamp = format_stamp(lost["LastModified"]) if lost and lost.get("LastModified") else next_stamp(options, None)
        new_key = f"{key}~restored/{version_name(stamp, digest)}"
        self._put(new_key, content, metadata, what)
        return self._ref(new_key)

    def delete(self, ref: str) -> None:
        key, version = self._parse_ref(ref)
        if self._head(key, version) is None:
            raise RefNotFound(f"s3 {self._target}: no version {ref!r}")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if version:
            kwargs["VersionId"] = version
        self._call("delete_object", f"delete {ref!r}", **kwargs)

    def latest(self, path: str) -> str | None:
        base = self._base(path)
        if self.versioned:
            head = self._head(f"{base}.cfg")
            return self._ref(f"{base}.cfg", head.get("VersionId")) if head is not None else None
        name = self._latest_name(base)
        return self._ref(f"{base}/{name}") if name else None

    def healthy(self) -> bool:
        try:
            self._call("head_bucket", "head bucket", Bucket=self.bucket)
        except StorageError:
            return False
        return True
