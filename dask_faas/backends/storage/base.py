"""The storage seam: the only state that the client and its functions share.

A :class:`Storage` is one flat namespace of keys (a bucket, a directory). Implementations provide
five primitives -- :meth:`~Storage.put`, :meth:`~Storage.get` (with an optional byte range),
:meth:`~Storage.size`, :meth:`~Storage.list` and :meth:`~Storage.delete` -- and everything else
(:meth:`~Storage.exists`, :meth:`~Storage.delete_prefix`) is built on them.

Errors are builtins: a missing object raises ``FileNotFoundError``, refused credentials
``PermissionError``, a missing bucket or root :class:`~dask_faas.exceptions.ConfigError` from
:meth:`~Storage.check`.

A function never receives credentials: the client sends :meth:`~Storage.locator` (where the data
lives) and the function rebuilds the storage with :meth:`~Storage.from_locator`, taking credentials
from its own environment (its platform identity, or the variables of
:meth:`~Storage.deployment_environment` that a deployment sets once).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

__all__ = ["Storage"]


class Storage(abc.ABC):
    """Abstract object storage: put / get(range) / size / list / delete."""

    #: Registry name of the implementation (``"s3"``, ``"local"``, ``"memory"``).
    name: ClassVar[str]
    #: True when the data lives in this process only, so functions in other processes cannot see it.
    process_local: ClassVar[bool] = False

    @abc.abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> None:
        """Write ``data`` under ``key`` atomically: readers see the old object or the whole new one."""

    @abc.abstractmethod
    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Read ``key``, or its bytes ``[start, end)`` when a range is given.

        ``end`` past the object's size is clipped, as HTTP ranges are.

        Raises
        ------
        FileNotFoundError
            If ``key`` does not exist.
        """

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Size of ``key`` in bytes; ``FileNotFoundError`` if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` for every key starting with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; keys that do not exist are ignored."""

    # -- built on the primitives -------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix`` and return how many there were."""
        if not prefix:
            raise ValueError("refusing to delete the whole storage: prefix is empty")
        keys = [key for key, _ in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            self.delete(keys[start : start + 1000])
        return len(keys)

    # -- how functions reach the same storage ------------------------------------------------

    def check(self) -> None:  # noqa: B027 - optional hook
        """Fail early, naming the setting, if the storage is unreachable or refuses access."""

    def locator(self) -> dict[str, Any]:
        """Where the data lives, without any credential: sent to functions in payloads."""
        raise NotImplementedError(f"{type(self).__name__} cannot be reached from other processes")

    @classmethod
    def from_locator(cls, locator: dict[str, Any]) -> Storage:
        """Rebuild a storage from :meth:`locator` inside a function (credentials from its environment)."""
        return cls(**{k: v for k, v in locator.items() if k != "backend"})

    def deployment_environment(self) -> dict[str, str]:
        """Environment variables a function deployment needs to reach this storage (credentials).

        Set once on the function's configuration (for the local pool: its processes' environment),
        never inside a payload.
        """
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.locator_repr()}>"

    def locator_repr(self) -> str:
        try:
            return " ".join(f"{k}={v!r}" for k, v in self.locator().items() if k != "backend")
        except NotImplementedError:
            return f"at {id(self):#x}"
