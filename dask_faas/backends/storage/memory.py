"""Storage in a dict of this process: for tests and for functions that run in-process.

Keys follow the rules of :class:`~dask_faas.backends.storage.local.LocalStorage`
(:func:`~dask_faas.backends.storage.base.check_key`), so code tested against memory storage also runs
against a directory. The data lives in this process only (``process_local``): memory storage has no
locator, so functions in other processes cannot be given it.
"""

from __future__ import annotations

import errno
import itertools
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from ...exceptions import StorageError
from .base import ObjectStat, Storage, check_key, check_range

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """Storage in a dict guarded by a lock; visible to this process only."""

    name = "memory"
    process_local = True

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, str]] = {}  # key -> (data, version)
        self._versions = itertools.count(1)
        self._lock = threading.Lock()

    @property
    def location(self) -> str:
        """``""``: memory storage has no container name."""
        return ""

    def locator(self) -> dict[str, Any]:
        """Memory storage has no locator: its data lives in this process only.

        Raises
        ------
        NotImplementedError
            Always, naming the storage and why; use ``local`` or ``s3`` storage for functions.
        """
        raise NotImplementedError(
            f"memory storage at {id(self):#x} lives in this process only, so functions in other "
            "processes cannot reach it: it has no locator (use 'local' or 's3' storage)"
        )

    def _read(self, key: str) -> tuple[bytes, str]:
        with self._lock:
            try:
                return self._objects[check_key(key)]
            except KeyError:
                raise FileNotFoundError(errno.ENOENT, "No such key in memory", key) from None

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Store a copy of ``data`` under ``key`` (a new version)."""
        value = bytes(data)
        with self._lock:
            self._objects[check_key(key)] = (value, str(next(self._versions)))

    def put_if(self, key: str, data: bytes | memoryview, *, version: str | None) -> str | None:
        """Store a copy of ``data`` under ``key`` if it is at ``version`` (``None``: if absent); the
        version written, or ``None`` if the condition did not hold."""
        value = bytes(data)
        key = check_key(key)
        with self._lock:
            found = self._objects.get(key)
            if (found[1] if found else None) != version:
                return None
            written = str(next(self._versions))
            self._objects[key] = (value, written)
            return written

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        """The bytes of ``key`` and their version; ``FileNotFoundError`` if missing."""
        return self._read(key)

    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        """Read ``key``, or its bytes ``[start, end)``; ``FileNotFoundError`` if missing, ``StorageError``
        if it is not ``version``."""
        check_range(start, end)
        data, found = self._read(key)
        if version is not None and found != version:
            raise StorageError(
                f"memory object {key!r} changed after it was listed: version {version} was expected, "
                f"it is {found} (it was written again)"
            )
        if start is None and end is None:
            return data
        return data[start:end]

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes; ``FileNotFoundError`` if missing."""
        return len(self._read(key)[0])

    def stat(self, key: str) -> ObjectStat:
        """Size and version of ``key``; ``FileNotFoundError`` if missing."""
        data, version = self._read(key)
        return ObjectStat(key, len(data), version)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` for every key starting with ``prefix``, in key order."""
        for found in self.scan(prefix):
            yield found.key, found.size

    def scan(self, prefix: str = "") -> Iterator[ObjectStat]:
        """:class:`ObjectStat` (with versions) of every key starting with ``prefix``, in key order."""
        with self._lock:
            found = [ObjectStat(k, len(d), v) for k, (d, v) in self._objects.items() if k.startswith(prefix)]
        found.sort(key=lambda s: s.key)
        yield from found

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; missing ones are ignored."""
        keys = [check_key(key) for key in keys]
        with self._lock:
            for key in keys:
                self._objects.pop(key, None)
