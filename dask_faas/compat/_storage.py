"""The ``storage`` argument (Lithops' ``Storage`` calls on dask-faas storage), and storages by locator.

Inside a function, storages are rebuilt from their locators (credentials from the function's own
environment) once per process.
"""

from __future__ import annotations

import fnmatch
import io
import os
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from ..backends.storage import Storage, storage_from_locator
from ._cloudobjects import CloudObject, StorageNoSuchKeyError

#: dask-faas storage names -> the Lithops names programs see in ``storage.backend``.
LITHOPS_NAMES = {"local": "localhost", "s3": "aws_s3", "cos": "ibm_cos"}
#: Where cloudobjects go when no prefix is known (outside a job).
TEMP_PREFIX = "lithops.jobs/tmp"


def bucket_of(storage: Storage) -> str:
    """The bucket of an S3 storage, the root directory of a local one (its :attr:`~Storage.location`)."""
    return storage.location


def boto3_client(storage: Storage) -> Any:
    """The boto3 S3 client of ``storage`` (the ``ibm_cos`` and ``boto3_client`` arguments).

    Raises
    ------
    TypeError
        If ``storage`` is not S3 storage.
    """
    if storage.name in ("s3", "cos"):
        from ..backends.storage.s3 import S3Storage  # already imported: ``storage`` is one

        if isinstance(storage, S3Storage):
            return storage.client
    raise TypeError(f"a boto3 client needs S3 storage, not {storage!r}: use the 'storage' argument")


class StorageClient:
    """The ``storage`` argument: Lithops' ``Storage`` calls mapped onto dask-faas storage.

    A bucket is an S3 bucket (of the endpoint of the executor's or the data's storage), or for local
    storage a directory (absolute, or relative to the local storage root).

    Parameters
    ----------
    storage : Storage
        The executor's storage: the default one, and :attr:`bucket`.
    locators : iterable of dict, optional
        Locators of the data's storages, reachable by their bucket names.
    open_bucket : callable, optional
        ``open_bucket(name) -> Storage`` for another bucket of the same endpoint (default: from the
        storage's locator, credentials from the environment).
    backend : str, optional
        The name programs see in :attr:`backend` (default: Lithops' name of the storage).
    cloudobject_prefix : str, optional
        Where :meth:`put_cloudobject` writes when given no key (a job's prefix: deleted with it).

    Attributes
    ----------
    bucket : str
        The executor's own bucket (or local root).
    backend : str
        Lithops' name of the executor's storage (``"aws_s3"``, ``"localhost"``, ...).
    """

    def __init__(
        self,
        storage: Storage,
        locators: Iterable[dict[str, Any]] = (),
        open_bucket: Callable[[str], Storage] | None = None,
        backend: str | None = None,
        cloudobject_prefix: str | None = None,
    ) -> None:
        self._default = storage
        self._known: dict[str, Storage] = {}
        self._s3: dict[str, Any] | None = None
        self._open_bucket = open_bucket
        for candidate in [storage, *(storage_from_locator(loc) for loc in locators)]:
            self._known.setdefault(bucket_of(candidate), candidate)
            if candidate.name in ("s3", "cos") and self._s3 is None:
                self._s3 = candidate.locator()
        self.bucket = bucket_of(storage)
        self.backend = backend or LITHOPS_NAMES.get(storage.name, storage.name)
        self._cloudobject_prefix = cloudobject_prefix or TEMP_PREFIX

    @property
    def faas_storage(self) -> Storage:
        """The dask-faas :class:`~dask_faas.backends.storage.Storage` of :attr:`bucket`."""
        return self._default

    def _at(self, bucket: str | None) -> Storage:
        if not bucket or bucket in self._known:
            return self._known.get(bucket or "", self._default)
        if self._s3 is not None:
            found = self._open_bucket(bucket) if self._open_bucket else None
            found = found or storage_from_locator({**self._s3, "bucket": bucket})
        else:  # local storage: a directory below its root, or an absolute one
            found = storage_from_locator({"backend": "local", "root": os.path.join(self.bucket, bucket)})
        self._known[bucket] = found
        return found

    # -- objects ---------------------------------------------------------------------------

    def get_object(
        self, bucket: str, key: str, stream: bool = False, extra_get_args: dict[str, Any] | None = None
    ) -> Any:
        """The object's bytes (a file-like with ``stream=True``); ``extra_get_args={"Range": ...}``.

        Raises
        ------
        StorageNoSuchKeyError
            If there is no such object.
        """
        start = end = None
        spec = (extra_get_args or {}).get("Range")
        if spec:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), int(last) + 1 if last else None
        try:
            data = self._at(bucket).get(key, start, end)
        except FileNotFoundError:
            raise StorageNoSuchKeyError(bucket, key) from None
        return io.BytesIO(data) if stream else data

    def put_object(self, bucket: str, key: str, body: Any) -> None:
        """Write ``body`` (bytes, str or a binary file-like) to ``key``."""
        if isinstance(body, io.IOBase):
            body = body.read()
        self._at(bucket).put(key, body.encode() if isinstance(body, str) else body)

    def head_object(self, bucket: str, key: str) -> dict[str, str]:
        """``{"content-length": <size>}``.

        Raises
        ------
        StorageNoSuchKeyError
            If there is no such object.
        """
        try:
            return {"content-length": str(self._at(bucket).size(key))}
        except FileNotFoundError:
            raise StorageNoSuchKeyError(bucket, key) from None

    def delete_object(self, bucket: str, key: str) -> None:
        self.delete_objects(bucket, [key])

    def delete_objects(self, bucket: str, key_list: list[str]) -> None:
        self._at(bucket).delete(key_list)

    def list_objects(
        self, bucket: str, prefix: str | None = None, match_pattern: str | None = None
    ) -> list[dict[str, Any]]:
        """``[{"Key": ..., "Size": ...}]`` under ``prefix``, keys matching the glob ``match_pattern``."""
        found = self._at(bucket).list(prefix or "")
        return [
            {"Key": k, "Size": s} for k, s in found if not match_pattern or fnmatch.fnmatch(k, match_pattern)
        ]

    def list_keys(self, bucket: str, prefix: str | None = None) -> list[str]:
        return [key for key, _ in self._at(bucket).list(prefix or "")]

    def upload_file(self, file_name: str, bucket: str, key: str | None = None, **_: Any) -> None:
        """Write the local file ``file_name`` to ``key`` (default: its name)."""
        with open(file_name, "rb") as f:
            self._at(bucket).put(key or os.path.basename(file_name), f.read())

    def download_file(self, bucket: str, key: str, file_name: str | None = None, **_: Any) -> None:
        """Write the object ``key`` to the local file ``file_name`` (default: the key's last part)."""
        data = self.get_object(bucket, key)
        with open(file_name or key.rsplit("/", 1)[-1], "wb") as f:
            f.write(data)

    # -- buckets ---------------------------------------------------------------------------

    def head_bucket(self, bucket: str) -> dict[str, Any]:
        """``{"ResponseMetadata": {"HTTPStatusCode": 200, ...}}`` for a bucket that exists.

        Raises
        ------
        StorageNoSuchKeyError
            If the bucket does not exist (or may not be read).
        """
        storage = self._at(bucket)
        if storage.name in ("s3", "cos"):
            try:
                return boto3_client(storage).head_bucket(Bucket=storage.location)
            except Exception as exc:  # botocore's ClientError: 404 or 403
                raise StorageNoSuchKeyError(bucket, "") from exc
        if not os.path.isdir(storage.location):
            raise StorageNoSuchKeyError(bucket, "")
        return {"ResponseMetadata": {"HTTPStatusCode": 200}}

    def create_bucket(self, bucket: str) -> None:
        """Create ``bucket`` (an S3 bucket, or a directory for local storage)."""
        storage = self._at(bucket)
        if storage.name in ("s3", "cos"):
            boto3_client(storage).create_bucket(Bucket=storage.location)
        else:
            os.makedirs(storage.location, exist_ok=True)

    # -- cloudobjects ----------------------------------------------------------------------

    def put_cloudobject(self, body: Any, bucket: str | None = None, key: str | None = None) -> CloudObject:
        """Store ``body``; its :class:`CloudObject` (by default under the job's prefix, deleted with
        the job, or :meth:`delete_cloudobject`)."""
        key = key or f"{self._cloudobject_prefix}/cloudobjects/{uuid.uuid4().hex}"
        bucket = bucket or self.bucket
        self.put_object(bucket, key, body)
        return CloudObject(self.backend, bucket, key)

    def get_cloudobject(self, cloudobject: CloudObject, stream: bool = False) -> Any:
        """The content of ``cloudobject`` (a file-like with ``stream=True``)."""
        return self.get_object(cloudobject.bucket, cloudobject.key, stream=stream)

    def delete_cloudobject(self, cloudobject: CloudObject) -> None:
        self.delete_object(cloudobject.bucket, cloudobject.key)

    def delete_cloudobjects(self, cloudobjects: Iterable[CloudObject]) -> None:
        by_bucket: dict[str, list[str]] = {}
        for co in cloudobjects:
            by_bucket.setdefault(co.bucket, []).append(co.key)
        for bucket, keys in by_bucket.items():
            self.delete_objects(bucket, keys)

    #: PyWren-IBM's names.
    put_cobject = put_cloudobject
    get_cobject = get_cloudobject

    def get_client(self) -> Any:
        """The boto3 S3 client of the executor's storage (S3 only)."""
        return boto3_client(self._default)

    def get_storage_config(self) -> dict[str, Any]:
        """``{"backend": ..., "bucket": ...}`` (never a credential)."""
        return {"backend": self.backend, "bucket": self.bucket}

    def __repr__(self) -> str:
        return f"<StorageClient {self.backend} bucket={self.bucket!r}>"
