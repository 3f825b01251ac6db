"""Signed objects under one storage prefix: what the client and its functions write for each other.

:class:`CountedStorage` counts the requests made through a storage by kind, and the bytes read
and written (the client's job store and each invocation inside a function use one).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from . import protocol
from .backends.storage import Storage
from .backends.storage.base import ObjectStat
from .protocol import Ref

__all__ = ["CountedStorage", "SignedStore"]


class SignedStore:
    """Objects under ``prefix`` of ``storage``, each tagged with the job's signing key.

    Parameters
    ----------
    storage : Storage
        Where the objects live.
    key : bytes
        The signing key shared by the client and its functions.
    prefix : str
        Key prefix of every object written through this store.
    """

    def __init__(self, storage: Storage, key: bytes, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix
        self._key = key

    def put(self, name: str, data: bytes | memoryview) -> Ref:
        """Write ``data`` signed under ``<prefix>/<name>``; return its reference."""
        key = f"{self.prefix}/{name}"
        self.storage.put(key, protocol.sign_blob(data, self._key, key))
        return Ref(key, len(data))

    def fetch(self, ref: Ref) -> memoryview:
        """Read the object ``ref`` points to and check its signature.

        Raises
        ------
        IntegrityError
            If the object was altered, moved from another key or signed with another key.
        FileNotFoundError
            If it does not exist (any more).
        """
        return protocol.verify_blob(self.storage.get(ref.key), self._key, ref.key)

    def exists(self, name: str) -> bool:
        """Whether an object ``<prefix>/<name>`` exists (its content unchecked)."""
        return self.storage.exists(f"{self.prefix}/{name}")

    def delete(self, *refs: Ref) -> None:
        """Delete objects that are no longer needed."""
        if refs:
            self.storage.delete([ref.key for ref in refs])

    def delete_under(self, name: str, keep: Iterable[Ref] = ()) -> int:
        """Delete every object under ``<prefix>/<name>/`` but those of ``keep``; how many went."""
        kept = {ref.key for ref in keep}
        doomed = [key for key, _ in self.storage.list(f"{self.prefix}/{name}/") if key not in kept]
        for start in range(0, len(doomed), 1000):
            self.storage.delete(doomed[start : start + 1000])
        return len(doomed)

    def mac(self, *parts: bytes | memoryview) -> bytes:
        """HMAC-SHA256 of ``parts`` with the job's signing key (for objects read by ranges, whose
        pieces carry tags of their own)."""
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.digest()

    def child(self, name: str) -> SignedStore:
        """The store of the sub-prefix ``<prefix>/<name>``."""
        return SignedStore(self.storage, self._key, f"{self.prefix}/{name}")


class CountedStorage(Storage):
    """``storage``, with its requests counted by kind and its bytes read and written.

    Kinds: ``put``, ``get``, ``head`` (size, stat, exists), ``list`` (list, scan) and ``delete``
    (one per call, whatever the number of keys). A call counts once, whatever the retries of
    the storage client underneath.

    Parameters
    ----------
    storage : Storage
        The storage that serves the requests.
    """

    def __init__(self, storage: Storage) -> None:
        self.inner = storage
        self.name = storage.name  # type: ignore[misc]
        self.process_local = storage.process_local  # type: ignore[misc]
        self._lock = threading.Lock()
        #: Requests made so far, by kind.
        self.requests: collections.Counter[str] = collections.Counter()
        #: Bytes returned by reads, and bytes written.
        self.bytes_read = 0
        self.bytes_written = 0

    def _count(self, kind: str, read: int = 0, written: int = 0) -> None:
        with self._lock:
            self.requests[kind] += 1
            self.bytes_read += read
            self.bytes_written += written

    def counts(self) -> dict[str, int]:
        """The requests so far, by kind (a copy)."""
        with self._lock:
            return dict(self.requests)

    @property
    def location(self) -> str:
        return self.inner.location

    def put(self, key: str, data: bytes | memoryview) -> None:
        self._count("put", written=len(data))
        self.inner.put(key, data)

    def put_if(self, key: str, data: bytes | memoryview, *, version: str | None) -> str | None:
        self._count("put", written=len(data))
        return self.inner.put_if(key, data, version=version)

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        data, version = self.inner.get_versioned(key)
        self._count("get", read=len(data))
        return data, version

    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        if version is None:  # storages of older signatures take no version
            data = self.inner.get(key, start, end)
        else:
            data = self.inner.get(key, start, end, version=version)
        self._count("get", read=len(data))
        return data

    def size(self, key: str) -> int:
        self._count("head")
        return self.inner.size(key)

    def exists(self, key: str) -> bool:
        self._count("head")
        return self.inner.exists(key)

    def stat(self, key: str) -> ObjectStat:
        self._count("head")
        return self.inner.stat(key)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        self._count("list")
        return self.inner.list(prefix)

    def scan(self, prefix: str = "") -> Iterator[ObjectStat]:
        self._count("list")
        return self.inner.scan(prefix)

    def delete(self, keys: Iterable[str]) -> None:
        self._count("delete")
        self.inner.delete(keys)

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def open_uploads(self, prefix: str) -> list[str]:
        return self.inner.open_uploads(prefix)

    def abort_uploads(self, prefix: str) -> int:
        return self.inner.abort_uploads(prefix)

    def check(self) -> None:
        self.inner.check()

    def locator(self) -> dict[str, Any]:
        return self.inner.locator()

    def deployment_environment(self) -> dict[str, str]:
        return self.inner.deployment_environment()

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"<CountedStorage of {self.inner!r}>"
