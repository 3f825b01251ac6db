"""The ``storage`` argument (Lithops' ``Storage`` calls on dask-faas storage), and storages by locator.

Inside a function, storages are rebuilt from their locators (credentials from the function's own
environment) once per process.
"""

from __future__ import annotations

import fnmatch
import io
import os
from collections.abc import Iterable
from typing import Any

from ..backends.storage import Storage, storage_from_locator


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

    Attributes
    ----------
    bucket : str
        The executor's own bucket (or local root).
    backend : str
        The name of the executor's storage (``"s3"``, ``"local"``, ...).
    """

    def __init__(self, storage: Storage, locators: Iterable[dict[str, Any]] = ()) -> None:
        self._default = storage
        self._known: dict[str, Storage] = {}
        self._s3: dict[str, Any] | None = None
        for candidate in [storage, *(storage_from_locator(loc) for loc in locators)]:
            self._known.setdefault(bucket_of(candidate), candidate)
            if candidate.name in ("s3", "cos") and self._s3 is None:
                self._s3 = candidate.locator()
        self.bucket = bucket_of(storage)
        self.backend = storage.name

    def _at(self, bucket: str | None) -> Storage:
        if not bucket or bucket in self._known:
            return self._known.get(bucket or "", self._default)
        if self._s3 is not None:
            return storage_from_locator({**self._s3, "bucket": bucket})
        root = os.path.join(self._default.location, bucket)  # local storage: a directory below its root
        return storage_from_locator({"backend": "local", "root": root})

    def get_object(
        self, bucket: str, key: str, stream: bool = False, extra_get_args: dict[str, Any] | None = None
    ) -> Any:
        """The object's bytes (a file-like with ``stream=True``); ``extra_get_args={"Range": ...}``."""
        start = end = None
        spec = (extra_get_args or {}).get("Range")
        if spec:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), int(last) + 1 if last else None
        data = self._at(bucket).get(key, start, end)
        return io.BytesIO(data) if stream else data

    def put_object(self, bucket: str, key: str, body: Any) -> None:
        """Write ``body`` (bytes, str or a file-like) to ``key``."""
        if hasattr(body, "read"):
            body = body.read()
        self._at(bucket).put(key, body.encode() if isinstance(body, str) else body)

    def head_object(self, bucket: str, key: str) -> dict[str, str]:
        """``{"content-length": <size>}``."""
        return {"content-length": str(self._at(bucket).size(key))}

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

    def get_client(self) -> Any:
        """The boto3 S3 client of the executor's storage (S3 only)."""
        return boto3_client(self._default)

    def __repr__(self) -> str:
        return f"<StorageClient bucket={self.bucket!r}>"
