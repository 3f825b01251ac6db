"""S3-compatible object storage through boto3: AWS S3, IBM COS, Ceph and MinIO (``endpoint_url``).

Argument names mirror the ``storage_options`` of s3fs. Credentials are given here or found by
boto3's usual chain (environment, profile, platform identity); they are never part of
:meth:`~S3Storage.locator`, which is what functions receive: a function gets them from its own
environment, such as the variables of :meth:`~S3Storage.deployment_environment` (its deployment).
"""

from __future__ import annotations

import contextlib
import errno
import io
import random
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
import botocore.exceptions as bce
import botocore.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ...exceptions import ConfigError, StorageError
from .base import Storage, check_range

__all__ = ["CHECK_ATTEMPTS", "S3Storage"]

#: Attempts of the storage check's HeadBucket while the service answers 5xx.
CHECK_ATTEMPTS = 8

_CREDENTIALS = "faas.s3.key / faas.s3.secret (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
_DENIED = {"AccessDenied", "AllAccessDisabled", "ExpiredToken", "InvalidAccessKeyId", "403"}
_DENIED |= {"InvalidToken", "SignatureDoesNotMatch"}
_ENV_NAMES = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY"}
_ENV_NAMES["token"] = "AWS_SESSION_TOKEN"
_MISSING_KEY = {"NoSuchKey", "NotFound", "404"}
_UNREACHABLE = (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ProxyConnectionError)
_STREAM_ERRORS = (bce.ResponseStreamingError, bce.IncompleteReadError, bce.ReadTimeoutError)

_loader_lock = threading.Lock()
_loader: list[Any] = []


def _session() -> boto3.session.Session:
    """A new session (they are not thread-safe) sharing the loaded service models: ~5x faster."""
    core = botocore.session.get_session()
    with _loader_lock:
        if not _loader:
            _loader.append(core.get_component("data_loader"))
        core.register_component("data_loader", _loader[0])
    return boto3.session.Session(botocore_session=core)


class S3Storage(Storage):
    """Storage in an S3 bucket (or any S3-compatible service through ``endpoint_url``).

    Parameters
    ----------
    bucket : str
        The bucket (setting ``faas.s3.bucket``); it must exist, see :meth:`check`.
    endpoint_url : str, optional
        Endpoint of an S3-compatible service (IBM COS, Ceph, MinIO); path-style addressing is used.
    region_name : str, optional
        Region of the bucket.
    key, secret, token : str, optional
        Credentials; by default boto3 finds them in the environment or the platform's identity.
    client_kwargs : dict, optional
        Extra keyword arguments of ``boto3.session.Session().client("s3", ...)``.
    max_pool_connections : int
        Size of the HTTP connection pool (concurrent requests from threads).
    """

    name = "s3"
    #: Objects larger than this are uploaded in parts of ``multipart_chunksize`` bytes.
    multipart_threshold = 64 * 2**20
    multipart_chunksize = 16 * 2**20

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        key: str | None = None,
        secret: str | None = None,
        token: str | None = None,
        client_kwargs: dict[str, Any] | None = None,
        max_pool_connections: int = 64,
    ) -> None:
        if not bucket:
            raise ConfigError("no S3 bucket given: set faas.s3.bucket")
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._credentials = {"key": key, "secret": secret, "token": token}
        self._client_kwargs = dict(client_kwargs or {})
        self._max_pool_connections = max_pool_connections
        self._client = self._make_client(retries={"max_attempts": 8, "mode": "standard"})

    @property
    def location(self) -> str:
        """The bucket (the same as :attr:`bucket`)."""
        return self.bucket

    def _make_client(self, **config: Any) -> Any:
        kwargs = {"endpoint_url": self.endpoint_url, "region_name": self.region_name}
        kwargs.update(self._client_kwargs)
        options: dict[str, Any] = {"max_pool_connections": self._max_pool_connections, **config}
        if self.endpoint_url:
            options["s3"] = {"addressing_style": "path"}
            # S3-compatible services may not speak the newest default checksums of botocore
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        try:
            cfg = Config(**options)
        except TypeError:  # botocore older than 1.36: no checksum options
            options.pop("request_checksum_calculation", None)
            options.pop("response_checksum_validation", None)
            cfg = Config(**options)
        if "config" in kwargs:
            cfg = cfg.merge(kwargs.pop("config"))
        return _session().client(
            "s3",
            aws_access_key_id=self._credentials["key"],
            aws_secret_access_key=self._credentials["secret"],
            aws_session_token=self._credentials["token"],
            config=cfg,
            **kwargs,
        )

    @property
    def client(self) -> Any:
        """The boto3 S3 client of this storage (shared: do not close it, :meth:`close` does)."""
        return self._client

    @contextlib.contextmanager
    def _errors(self, key: str | None = None) -> Iterator[None]:
        """Raise botocore errors on ``key`` (or on the bucket) as builtins: the one place that maps them.

        ``FileNotFoundError`` for a missing key or bucket, ``PermissionError`` for missing or refused
        credentials, ``ConnectionError`` for an unreachable endpoint, :class:`StorageError` for any
        other error the service answered (503 SlowDown past the retries, 500), each naming the
        bucket and key and chained to the botocore error; other botocore errors pass unchanged.
        """
        try:
            yield
        except (bce.BotoCoreError, bce.ClientError) as err:
            mapped = self._builtin(err, key)
            if mapped is None:
                raise
            raise mapped from err

    def _builtin(self, err: Exception, key: str | None) -> Exception | None:
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        if isinstance(err, _UNREACHABLE):
            return ConnectionError(f"cannot reach {where} ({err}); check faas.s3.endpoint-url")
        if isinstance(err, bce.NoCredentialsError):
            return PermissionError(errno.EACCES, f"no credentials; set {_CREDENTIALS}", where)
        code = _code(err)
        if code == "NoSuchBucket" or (code in _MISSING_KEY and key is None):
            return FileNotFoundError(errno.ENOENT, "No such bucket", f"s3://{self.bucket}")
        if code in _MISSING_KEY:
            return FileNotFoundError(errno.ENOENT, "No such key", where)
        if code in _DENIED:
            return PermissionError(errno.EACCES, f"Access refused ({code}); check {_CREDENTIALS}", where)
        if isinstance(err, bce.ClientError):  # e.g. 503 SlowDown or 500 that outlasted the retries
            meta = err.response.get("ResponseMetadata", {})
            tries = int(meta.get("RetryAttempts", 0)) + 1
            return StorageError(
                f"S3 {err.operation_name} of {where} failed with {code or 'an error'} (HTTP "
                f"{meta.get('HTTPStatusCode', '?')}) after {tries} attempt{'s' if tries > 1 else ''}: {err}"
            )
        return None

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Write ``data`` under ``key``; in parts above :attr:`multipart_threshold` bytes."""
        body = data if isinstance(data, bytes) else bytes(data)
        with self._errors(key):
            if len(body) <= self.multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=key, Body=body)
            else:
                config = TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=self.multipart_chunksize,
                    max_concurrency=8,
                )
                self._client.upload_fileobj(io.BytesIO(body), self.bucket, key, Config=config)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read ``key``, or its bytes ``[start, end)`` with a ``Range`` request.

        A response whose body breaks off while streaming is requested again (3 attempts).

        Raises
        ------
        FileNotFoundError
            If the key or the bucket does not exist.
        PermissionError
            If the credentials are refused.
        """
        check_range(start, end)
        kwargs: dict[str, Any] = {}
        if start is not None or end is not None:
            first = start or 0
            if end is not None and end <= first:
                return b""
            kwargs["Range"] = f"bytes={first}-" if end is None else f"bytes={first}-{end - 1}"
        with self._errors(key):
            for attempt in range(3):
                try:
                    response = self._client.get_object(Bucket=self.bucket, Key=key, **kwargs)
                    with response["Body"] as body:
                        data = body.read()
                except _STREAM_ERRORS:
                    if attempt == 2:
                        raise
                    continue
                except bce.ClientError as err:
                    if _code(err) == "InvalidRange":
                        return b""  # start at or past the end of the object
                    raise
                if kwargs and "ContentRange" not in response:  # the server ignored the range
                    data = data[start:end]
                return data
        raise AssertionError("unreachable")  # pragma: no cover

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes; ``FileNotFoundError`` if missing."""
        with self._errors(key):
            return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` for every key starting with ``prefix``, in key order."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        with self._errors():
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield obj["Key"], int(obj["Size"])

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` with ``DeleteObjects`` requests of up to 1000 keys."""
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            with self._errors():
                response = self._client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
            for error in response.get("Errors", ()):
                if error.get("Code") != "NoSuchKey":
                    with self._errors(error.get("Key")):
                        raise bce.ClientError({"Error": error}, "DeleteObjects")

    def check(self) -> None:
        """Check that the bucket exists and the credentials are accepted (one quick request).

        Raises
        ------
        ConfigError
            If the bucket does not exist (``faas.s3.bucket``) or the endpoint cannot be reached
            (``faas.s3.endpoint-url``).
        PermissionError
            If the credentials are missing or refused (``faas.s3.key / faas.s3.secret``).
        """
        client = self._make_client(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15)
        try:
            with self._errors():
                self._head_bucket(client)
        except FileNotFoundError:
            raise ConfigError(
                f"S3 bucket {self.bucket!r} does not exist"
                + (f" at {self.endpoint_url}" if self.endpoint_url else "")
                + "; create it or fix the setting faas.s3.bucket"
            ) from None
        except ConnectionError as err:
            raise ConfigError(
                f"cannot reach the S3 endpoint {self.endpoint_url or '(AWS default)'} ({err.__cause__}); "
                "check the setting faas.s3.endpoint-url"
            ) from None
        finally:
            client.close()

    def _head_bucket(self, client: Any) -> None:
        """HeadBucket, sent again while the service sheds load (5xx, up to :data:`CHECK_ATTEMPTS`
        times): one answer of an overloaded endpoint must not fail the executor, while a wrong
        endpoint or bucket fails at once."""
        for attempt in range(CHECK_ATTEMPTS):
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except bce.ClientError as err:
                status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status not in (500, 502, 503, 504) or attempt == CHECK_ATTEMPTS - 1:
                    raise
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))

    def locator(self) -> dict[str, Any]:
        """``backend``, ``bucket``, ``endpoint_url`` and ``region_name``: never a credential."""
        return {
            "backend": "s3",
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "region_name": self.region_name,
        }

    def deployment_environment(self) -> dict[str, str]:
        """``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` given here."""
        return {_ENV_NAMES[k]: v for k, v in self._credentials.items() if v}

    def close(self) -> None:
        """Close the HTTP connections of the client."""
        self._client.close()


def _code(err: Exception) -> str:
    """The error code of a botocore ``ClientError`` (``"NoSuchKey"``, ``"403"``), else ``""``."""
    if not isinstance(err, bce.ClientError):
        return ""
    return str(err.response.get("Error", {}).get("Code", ""))
