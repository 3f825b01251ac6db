"""S3-compatible object storage through boto3: AWS S3, IBM COS, Ceph and MinIO (``endpoint_url``).

Argument names mirror the ``storage_options`` of s3fs. Credentials are given here or found by
boto3's usual chain (environment, profile, platform identity); they are never part of
:meth:`~S3Storage.locator`, which is what functions receive: a function gets them from its own
environment, such as the variables of :meth:`~S3Storage.deployment_environment` (its deployment).

Faults. Requests are retried by botocore's ``standard`` retry mode (or ``adaptive``, setting
``faas.s3.retry-mode``; 8 attempts, exponential backoff with jitter) on 5xx answers, throttling,
connection resets and read timeouts before an answer. On top of that, reads check what they receive
(:meth:`S3Storage.get`), and every answer whose body breaks off, stalls past ``read_timeout`` or is
shorter than its ``Content-Length`` or ``Content-Range`` is requested again (:data:`READ_ATTEMPTS`
in all, with backoff), never returned short. A GET of a key that is not there (yet) is repeated for
``read_after_write_s`` seconds, as an eventually consistent service may lag behind a write. A read
of a known version (``version=``, the ETag a listing or HEAD gave) is sent with ``If-Match`` and its
answer's ETag checked, so a stale replica's older bytes are never used: it is read again, and an
object that was really overwritten fails naming it. What outlasts its retries raises
:class:`~dask_faas.exceptions.StorageError` naming ``s3://bucket/key``, the cause, the HTTP status
and the attempts.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import boto3
import botocore.exceptions as bce
import botocore.session
import urllib3.exceptions
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

from ...exceptions import ConfigError, StorageError
from .base import ObjectStat, Storage, check_range

__all__ = ["CHECK_ATTEMPTS", "READ_AFTER_WRITE_S", "READ_ATTEMPTS", "S3Storage"]

#: Attempts of the storage check's HeadBucket while the service answers 5xx.
CHECK_ATTEMPTS = 8
#: Attempts of a read whose body broke off, stalled, came short or came from another version
#: (each on top of botocore's own retries of the request).
READ_ATTEMPTS = 8
#: Seconds for which a GET of a missing key is repeated (by default).
READ_AFTER_WRITE_S = 1.0
_BACKOFF_S, _BACKOFF_CAP_S = 0.05, 1.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

_CREDENTIALS = "faas.s3.key / faas.s3.secret (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
_DENIED = {"AccessDenied", "AllAccessDisabled", "ExpiredToken", "InvalidAccessKeyId", "403"}
_DENIED |= {"InvalidToken", "SignatureDoesNotMatch"}
_ENV_NAMES = {"key": "AWS_ACCESS_KEY_ID", "secret": "AWS_SECRET_ACCESS_KEY"}
_ENV_NAMES["token"] = "AWS_SESSION_TOKEN"
_MISSING_KEY = {"NoSuchKey", "NotFound", "404"}
#: A conditional write that lost: the condition failed, or a concurrent conditional write won.
_CONDITION_FAILED = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNREACHABLE = (bce.EndpointConnectionError, bce.ConnectTimeoutError, bce.ProxyConnectionError)
#: A body that broke off, stalled or came short after the answer's headers: botocore does not retry
#: these (a streaming body's are wrapped by botocore, a parsed answer's pass as urllib3's).
_BODY_ERRORS = (
    bce.ResponseStreamingError,
    bce.IncompleteReadError,
    bce.ReadTimeoutError,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)
#: No answer, or a broken one: what botocore retries before the headers, and the body errors.
_BROKEN = (*_BODY_ERRORS, bce.ConnectionClosedError)

logger = logging.getLogger("dask_faas.storage")

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
    read_timeout : float, optional
        Seconds to wait for the next bytes of an answer (setting ``faas.s3.read-timeout``; botocore's
        default of 60 s if unset); a read that stalls longer is retried. Sent to functions in the
        locator.
    read_after_write_s : float
        Seconds for which a GET of a missing key is repeated before ``FileNotFoundError``, for
        services whose reads may lag behind writes (:data:`READ_AFTER_WRITE_S`).
    retry_mode : str
        botocore's retry mode (setting ``faas.s3.retry-mode``): ``"standard"`` (8 attempts,
        exponential backoff with jitter) or ``"adaptive"`` (the same, plus a client-side rate
        limit that slows down while the service answers throttling errors).
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
        read_timeout: float | None = None,
        read_after_write_s: float = READ_AFTER_WRITE_S,
        retry_mode: str = "standard",
    ) -> None:
        if not bucket:
            raise ConfigError("no S3 bucket given: set faas.s3.bucket")
        if read_timeout is not None and not read_timeout > 0:
            raise ConfigError(
                f"faas.s3.read-timeout must be a positive number of seconds, got {read_timeout!r}"
            )
        if retry_mode not in ("standard", "adaptive"):
            raise ConfigError(f"faas.s3.retry-mode must be 'standard' or 'adaptive', got {retry_mode!r}")
        if not read_after_write_s >= 0:
            raise ConfigError(f"read_after_write_s must be >= 0 seconds, got {read_after_write_s!r}")
        self.bucket = bucket
        self.read_timeout = None if read_timeout is None else float(read_timeout)
        self.read_after_write_s = float(read_after_write_s)
        self.retry_mode = retry_mode
        self.endpoint_url = endpoint_url
        self.region_name = region_name
        self._credentials = {"key": key, "secret": secret, "token": token}
        self._client_kwargs = dict(client_kwargs or {})
        self._max_pool_connections = max_pool_connections
        self._client = self._make_client(retries={"max_attempts": 8, "mode": retry_mode})

    @property
    def location(self) -> str:
        """The bucket (the same as :attr:`bucket`)."""
        return self.bucket

    def _make_client(self, **config: Any) -> Any:
        kwargs = {"endpoint_url": self.endpoint_url, "region_name": self.region_name}
        kwargs.update(self._client_kwargs)
        options: dict[str, Any] = {"max_pool_connections": self._max_pool_connections}
        if self.read_timeout is not None:
            options["read_timeout"] = self.read_timeout
        options.update(config)
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
        except (bce.BotoCoreError, bce.ClientError, *_BROKEN) as err:
            mapped = self._builtin(err, key)
            if mapped is None:
                raise
            raise mapped from err

    def _builtin(self, err: Exception, key: str | None) -> Exception | None:
        where = f"s3://{self.bucket}/{key}" if key else f"s3://{self.bucket}"
        if isinstance(err, _UNREACHABLE):
            return ConnectionError(f"cannot reach {where} ({err}); check faas.s3.endpoint-url")
        if isinstance(err, _BROKEN):  # no answer, or one that broke off, past the retries
            return StorageError(
                f"S3 request on {where} got no complete answer (no HTTP status: "
                f"{type(err).__name__}: {err}) after its retries"
            )
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
                self._again(lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=body))
            else:
                config = TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=self.multipart_chunksize,
                    max_concurrency=8,
                )
                self._again(
                    lambda: self._client.upload_fileobj(io.BytesIO(body), self.bucket, key, Config=config)
                )

    def put_if(self, key: str, data: bytes | memoryview, *, version: str | None) -> str | None:
        """PutObject with ``If-Match: version`` (``If-None-Match: *`` for ``None``); the ETag written,
        or ``None`` on 412 PreconditionFailed, 409 ConditionalRequestConflict (a concurrent
        conditional write) or a missing key."""
        body = data if isinstance(data, bytes) else bytes(data)
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        with self._errors(key):
            try:
                response = self._again(
                    lambda: self._client.put_object(Bucket=self.bucket, Key=key, Body=body, **condition)
                )
            except bce.ClientError as err:
                code = _code(err)
                if code in _CONDITION_FAILED or (version is not None and code in _MISSING_KEY):
                    return None
                raise
        return response.get("ETag")

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        """One GetObject: the bytes of ``key`` and their ETag (checked as :meth:`get` checks)."""
        return self._read(key)

    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        """Read ``key``, or its bytes ``[start, end)`` with a ``Range`` request.

        What comes back is checked before it is returned: the body must hold its ``Content-Length``,
        and a ranged answer's ``Content-Range`` must start at ``start`` and cover the range up to
        the object's end, with a body of that length. An answer that fails the checks, breaks off
        or stalls is requested again (:data:`READ_ATTEMPTS` attempts, with backoff). A missing
        key is asked for again during :attr:`read_after_write_s`. With ``version`` (an ETag from
        :meth:`stat` or :meth:`scan`) the request carries ``If-Match`` and the answer's ETag must
        be that version: a 412 or another ETag (a stale replica) is read again.

        Raises
        ------
        FileNotFoundError
            If the key or the bucket does not exist.
        PermissionError
            If the credentials are refused.
        StorageError
            Naming ``s3://bucket/key``, the cause and the attempts: when the answers stayed short,
            broken or of another version than ``version`` (the object was overwritten), or the
            service kept failing.
        """
        return self._read(key, start, end, version)[0]

    def _read(
        self, key: str, start: int | None = None, end: int | None = None, version: str | None = None
    ) -> tuple[bytes, str | None]:
        """:meth:`get`'s request loop; the bytes and the answer's ETag."""
        check_range(start, end)
        kwargs: dict[str, Any] = {}
        first = start or 0
        ranged = start is not None or end is not None
        if ranged:
            if end is not None and end <= first:
                return b"", None
            kwargs["Range"] = f"bytes={first}-" if end is None else f"bytes={first}-{end - 1}"
        if version is not None:
            kwargs["IfMatch"] = version
        where = f"s3://{self.bucket}/{key}"
        began = time.monotonic()
        tries = failures = 0
        with self._errors(key):
            while True:
                tries += 1
                status: Any = "?"
                changed = False
                try:  # no answer after botocore's retries (a ConnectionClosedError, ...) raises
                    response = self._again(
                        lambda: self._client.get_object(Bucket=self.bucket, Key=key, **kwargs)
                    )
                except bce.ClientError as err:
                    code = _code(err)
                    if code == "InvalidRange":
                        return b"", None  # start at or past the end of the object
                    if code in _MISSING_KEY and time.monotonic() - began < self.read_after_write_s:
                        _backoff(tries)  # not there yet, maybe: an eventually consistent read
                        continue
                    if code != "PreconditionFailed" or version is None:
                        raise
                    status, changed = 412, True
                    problem = f"it is no longer version {version} (412 PreconditionFailed)"
                else:
                    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
                    try:
                        data = _body(response)
                    except _BODY_ERRORS as err:
                        problem = f"the answer broke off or stalled ({type(err).__name__}: {err})"
                    else:
                        problem = _short(response, data, first, end)
                        if problem is None and (problem := _other_version(response, version)):
                            changed = True
                        if problem is None:
                            if ranged and "ContentRange" not in response:  # the server ignored the range
                                data = data[start:end]
                            return data, response.get("ETag")
                failures += 1
                if failures < READ_ATTEMPTS:
                    _backoff(tries)
                    continue
                if changed:
                    raise StorageError(
                        f"S3 GetObject of {where} failed: {problem} (HTTP {status}) after {tries} "
                        "attempts: the object was written again after it was listed; read it again "
                        "(run the job again)"
                    )
                raise StorageError(
                    f"S3 GetObject of {where} failed: {problem} (HTTP {status}) after {tries} attempts; "
                    "no part of it was used"
                )

    def stat(self, key: str) -> ObjectStat:
        """Size and ETag (the version) of ``key`` from a HeadObject; ``FileNotFoundError`` if missing."""
        with self._errors(key):
            head = self._again(lambda: self._client.head_object(Bucket=self.bucket, Key=key))
        return ObjectStat(key, int(head["ContentLength"]), head.get("ETag"))

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes; ``FileNotFoundError`` if missing."""
        return self.stat(key).size

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` for every key starting with ``prefix``, in key order."""
        for found in self.scan(prefix):
            yield found.key, found.size

    def scan(self, prefix: str = "") -> Iterator[ObjectStat]:
        """:class:`ObjectStat` (size and ETag) of every key starting with ``prefix``, in key order.

        Each ListObjectsV2 page whose answer breaks off is requested again (:data:`READ_ATTEMPTS`).
        """
        token: str | None = None
        while True:
            kwargs = {
                "Bucket": self.bucket,
                "Prefix": prefix,
                **({"ContinuationToken": token} if token else {}),
            }
            with self._errors():
                page = self._again(lambda kwargs=kwargs: self._client.list_objects_v2(**kwargs))
            for obj in page.get("Contents", ()):
                yield ObjectStat(obj["Key"], int(obj["Size"]), obj.get("ETag"))
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    def _again(self, request: Callable[[], Any]) -> Any:
        """``request()``, sent again (:data:`READ_ATTEMPTS` in all, with backoff) while its answer
        breaks off, or while botocore stopped retrying early on its retry quota.

        botocore retries what fails before an answer, not a body that breaks off mid-way. And its
        standard mode stops retrying once a client-side quota runs dry (each retry of a 5xx costs
        14 tokens out of 500, a success gives back 1): under a sustained 30% of 503s that happens
        after a few hundred requests, and every later failure would fail its call at once.
        """
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return request()
            except _BODY_ERRORS:
                if attempt == READ_ATTEMPTS:
                    raise
            except bce.ClientError as err:
                if attempt == READ_ATTEMPTS or not _quota_reached(err):
                    raise
            _backoff(attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` with ``DeleteObjects`` requests of up to 1000 keys."""
        keys = list(keys)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            with self._errors():
                response = self._again(
                    lambda batch=batch: self._client.delete_objects(
                        Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
                )
            for error in response.get("Errors", ()):
                if error.get("Code") != "NoSuchKey":
                    with self._errors(error.get("Key")):
                        raise bce.ClientError({"Error": error}, "DeleteObjects")

    def open_uploads(self, prefix: str) -> list[str]:
        """Keys of the multipart uploads open under ``prefix`` (ListMultipartUploads)."""
        return [key for key, _ in self._uploads(prefix)]

    def abort_uploads(self, prefix: str) -> int:
        """Abort every multipart upload open under ``prefix`` (an interrupted large write: its parts
        are stored, and billed, until aborted); return how many there were.

        Credentials that may not list the uploads (no ``s3:ListBucketMultipartUploads``) abort
        none: a warning names the permission, and the caller's deletion goes on.
        """
        try:
            uploads = self._uploads(prefix)
        except PermissionError as err:
            logger.warning(
                "cannot list the multipart uploads under s3://%s/%s (%s): uploads left open there are "
                "not aborted; allow s3:ListBucketMultipartUploads on the bucket",
                self.bucket,
                prefix,
                err.strerror or err,
            )
            return 0
        for key, upload_id in uploads:
            with self._errors(key):
                try:
                    self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
                except bce.ClientError as err:
                    if _code(err) != "NoSuchUpload":  # completed or aborted meanwhile
                        raise
        return len(uploads)

    def _uploads(self, prefix: str) -> list[tuple[str, str]]:
        """``(key, upload id)`` of the multipart uploads open under ``prefix``, all pages."""
        found: list[tuple[str, str]] = []
        markers: dict[str, str] = {}
        while True:
            kwargs = {"Bucket": self.bucket, "Prefix": prefix, **markers}
            with self._errors():
                page = self._again(lambda kwargs=kwargs: self._client.list_multipart_uploads(**kwargs))
            found += [
                (u["Key"], u["UploadId"]) for u in page.get("Uploads", ()) if u["Key"].startswith(prefix)
            ]
            if not page.get("IsTruncated"):
                return found
            markers = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }

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
        """HeadBucket, sent again while the service sheds load (5xx) or the connection breaks or
        stalls (up to :data:`CHECK_ATTEMPTS` times): one answer of an overloaded endpoint must not
        fail the executor, while a wrong endpoint or bucket fails at once."""
        for attempt in range(CHECK_ATTEMPTS):
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except _BROKEN:  # the check's client does not retry
                if attempt == CHECK_ATTEMPTS - 1:
                    raise
            except bce.ClientError as err:
                status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status not in (500, 502, 503, 504) or attempt == CHECK_ATTEMPTS - 1:
                    raise
            time.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))

    def locator(self) -> dict[str, Any]:
        """``backend``, ``bucket``, ``endpoint_url`` and ``region_name`` (and ``read_timeout``,
        ``read_after_write_s`` and ``retry_mode`` when not the defaults): never a credential."""
        locator: dict[str, Any] = {
            "backend": "s3",
            "bucket": self.bucket,
            "endpoint_url": self.endpoint_url,
            "region_name": self.region_name,
        }
        if self.read_timeout is not None:
            locator["read_timeout"] = self.read_timeout
        if self.read_after_write_s != READ_AFTER_WRITE_S:
            locator["read_after_write_s"] = self.read_after_write_s
        if self.retry_mode != "standard":
            locator["retry_mode"] = self.retry_mode
        return locator

    def deployment_environment(self) -> dict[str, str]:
        """``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN`` given here."""
        return {_ENV_NAMES[k]: v for k, v in self._credentials.items() if v}

    def close(self) -> None:
        """Close the HTTP connections of the client."""
        self._client.close()


def _body(response: dict[str, Any]) -> bytes:
    """The whole body of a GetObject answer (read after botocore's retries are over)."""
    with response["Body"] as body:
        return bytes(body.read())


def _quota_reached(err: bce.ClientError) -> bool:
    """Whether botocore gave up on ``err`` early, its retry quota spent (a retryable 5xx)."""
    return bool(err.response.get("ResponseMetadata", {}).get("RetryQuotaReached"))


def _backoff(attempt: int) -> None:
    """Sleep before attempt ``attempt + 1``: exponential with full jitter, capped."""
    time.sleep(random.uniform(0, min(_BACKOFF_CAP_S, _BACKOFF_S * 2**attempt)))


def _short(response: dict[str, Any], data: bytes, first: int, end: int | None) -> str | None:
    """Why the body of a GetObject answer is not the whole of what was asked for, or ``None``.

    The body must hold its ``Content-Length``; a ``Content-Range`` must start at ``first``, end at
    ``end - 1`` or at the object's last byte, and span as many bytes as the body holds.
    """
    length = response.get("ContentLength")
    if length is not None and len(data) != int(length):
        return f"the body held {len(data)} of its Content-Length of {length} bytes"
    content_range = response.get("ContentRange")
    if content_range is None:
        return None
    match = _CONTENT_RANGE.fullmatch(content_range)
    if match is None:
        return f"its Content-Range {content_range!r} is not one range"
    low, high, total = int(match[1]), int(match[2]), match[3]
    last = high if total == "*" else int(total) - 1
    if end is not None:
        last = min(last, end - 1)
    if low != first or high != last or len(data) != high - low + 1:
        asked = f"bytes {first}-{'' if end is None else end - 1}"
        return f"the body held {len(data)} bytes for Content-Range {content_range!r} ({asked} asked for)"
    return None


def _other_version(response: dict[str, Any], version: str | None) -> str | None:
    """Why the answer is not of ``version`` (its ETag differs: a stale replica), or ``None``."""
    etag = response.get("ETag")
    if version is None or etag is None or etag.strip('"') == version.strip('"'):
        return None
    return f"the answer had ETag {etag} where version {version} was asked for"


def _code(err: Exception) -> str:
    """The error code of a botocore ``ClientError`` (``"NoSuchKey"``, ``"403"``), else ``""``."""
    if not isinstance(err, bce.ClientError):
        return ""
    return str(err.response.get("Error", {}).get("Code", ""))
