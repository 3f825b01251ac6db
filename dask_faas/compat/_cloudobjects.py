"""Lithops' references to stored objects (``lithops.storage.utils``) and its missing-key error."""

from __future__ import annotations

import os


class StorageNoSuchKeyError(FileNotFoundError):
    """A key (or a bucket) that is not in the storage (Lithops' ``StorageNoSuchKeyError``).

    Parameters
    ----------
    bucket, key : str
        Where the object was looked for.
    """

    def __init__(self, bucket: str, key: str) -> None:
        super().__init__(f"No such key /{bucket}/{key} found in storage.")
        self.bucket, self.key = bucket, key

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (self.bucket, self.key)


class CloudObject:
    """A reference to a stored object, as ``Storage.put_cloudobject`` returns it.

    Parameters
    ----------
    backend : str
        The storage's Lithops name (``"aws_s3"``, ``"localhost"``, ...) or dask-faas name.
    bucket, key : str
        Where the object is (for local storage the bucket is a directory).
    """

    def __init__(self, backend: str, bucket: str, key: str) -> None:
        self.backend, self.bucket, self.key = backend, bucket, key

    @property
    def url(self) -> str:
        """``<backend>://<bucket>/<key>``, as a ``map`` input."""
        return f"{self.backend}://{self.bucket}/{self.key}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CloudObject):
            return NotImplemented
        return (self.backend, self.bucket, self.key) == (other.backend, other.bucket, other.key)

    def __hash__(self) -> int:
        return hash((self.backend, self.bucket, self.key))

    def __str__(self) -> str:
        return f"<CloudObject at {self.url}>"

    __repr__ = __str__


class CloudObjectUrl:
    """A reference to an object named by its URL."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __str__(self) -> str:
        return f"<CloudObject at {self.url}>"


class CloudObjectLocal:
    """A reference to a file of the local filesystem."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.bucket, self.key = os.path.dirname(path), os.path.basename(path)

    def __str__(self) -> str:
        return f"<CloudObject at {self.path}>"
