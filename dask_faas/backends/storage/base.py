"""The storage seam: the only state that the client and its functions share.

A :class:`Storage` is one flat namespace of keys in one container (a bucket, a directory), named by
:attr:`~Storage.location`. Implementations provide five primitives -- :meth:`~Storage.put`,
:meth:`~Storage.get` (with an optional byte range), :meth:`~Storage.size`, :meth:`~Storage.list` and
:meth:`~Storage.delete` -- plus :meth:`~Storage.locator` and :attr:`~Storage.location`; everything
else (:meth:`~Storage.exists`, :meth:`~Storage.stat`, :meth:`~Storage.scan`,
:meth:`~Storage.delete_prefix`) is built on them.

Versions: :meth:`~Storage.stat` and :meth:`~Storage.scan` report each object's
:attr:`ObjectStat.version`, an opaque text that changes whenever the object is written again (the
ETag of S3, the modification time and inode of a file, a counter in memory; ``None`` when an
implementation has none). A reader that planned from a listing passes it to :meth:`~Storage.get`
(``version=``), which then returns the bytes of exactly that version or raises
:class:`~dask_faas.exceptions.StorageError` naming the object, so an object overwritten between
planning and reading is never read half old, half new, and a stale replica's older bytes are
never used. Every ``get`` returns all the bytes it was asked for (up to the object's end) or raises:
a short body is never returned.

Conditional writes: :meth:`~Storage.put_if` writes only if the object is still at a version the
writer read (``version=``) or does not exist yet (``version=None``), and :meth:`~Storage.get_versioned`
reads the bytes and their version in one go: S3's ``If-Match`` / ``If-None-Match`` on PutObject,
a directory lock and :func:`os.link` locally, the storage's lock in memory. They are what the
shared-state primitives of :mod:`dask_faas.compat.multiprocessing` (locks, queues, values) are built
on. A storage without them raises ``NotImplementedError`` naming itself.

Multipart uploads: :meth:`~Storage.delete_prefix` also aborts the uploads left open under the
prefix (:meth:`~Storage.open_uploads` lists them; only S3 has any), so an interrupted large write
leaves nothing behind.

Errors are builtins: a missing object raises ``FileNotFoundError``, refused credentials
``PermissionError``, a missing bucket or root :class:`~dask_faas.exceptions.ConfigError` from
:meth:`~Storage.check`.

A function never receives credentials: the client sends :meth:`~Storage.locator` (where the data
lives) and the function rebuilds the storage with :meth:`~Storage.from_locator`, taking credentials
from its own environment (its platform identity, or the variables of
:meth:`~Storage.deployment_environment` that a deployment sets once). The one exception is a storage
whose :attr:`~Storage.process_local` is true (``memory``): its data lives in one process, so it has
no locator, and its :meth:`~Storage.locator` raises ``NotImplementedError`` saying so.

Keys that a directory can hold are checked by :func:`check_key` (the local and memory storages use
it; S3 accepts whatever S3 accepts); byte ranges by :func:`check_range` (every storage).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from ...exceptions import StorageError

__all__ = ["TMP_PREFIX", "ObjectStat", "Storage", "check_key", "check_range"]

#: Key segments starting with this are temporary files of a local write in progress: never a key.
TMP_PREFIX = ".tmp-"


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid storage key, else raise ``ValueError`` naming it.

    A key is ``/``-separated segments, none of them empty, ``"."``, ``".."`` or starting with
    :data:`TMP_PREFIX`, without backslashes or NUL characters.

    Raises
    ------
    TypeError
        If ``key`` is not a ``str``.
    ValueError
        Naming the key and what is wrong with it.
    """
    if not isinstance(key, str):
        raise TypeError(f"storage key must be a str, not {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("invalid storage key '': keys must not be empty")
    if "\\" in key or "\x00" in key:
        raise ValueError(f"invalid storage key {key!r}: backslashes and NUL are not allowed")
    if key.startswith("/"):
        raise ValueError(f"invalid storage key {key!r}: keys must not start with '/'")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or segment.startswith(TMP_PREFIX):
            raise ValueError(
                f"invalid storage key {key!r}: segment {segment!r} is empty, '.', '..' "
                f"or starts with {TMP_PREFIX!r}"
            )
    return key


def check_range(start: int | None, end: int | None) -> None:
    """Raise ``ValueError`` for a negative ``start`` or ``end`` (ranges are absolute offsets)."""
    if (start is not None and start < 0) or (end is not None and end < 0):
        raise ValueError(f"byte range must not be negative, got start={start} end={end}")


@dataclass(frozen=True)
class ObjectStat:
    """What a listing or a HEAD says of one object.

    Parameters
    ----------
    key : str
        The object's key.
    size : int
        Its size in bytes.
    version : str or None
        An opaque text that changes whenever the object is written again (S3's ETag, a file's
        modification time, inode and size, a counter in memory); ``None`` if the storage has none.
        :meth:`Storage.get` takes it back as ``version=``.
    """

    key: str
    size: int
    version: str | None = None


class Storage(abc.ABC):
    """Abstract object storage: put / get(range) / size / list / delete, locator and location."""

    #: Registry name of the implementation (``"s3"``, ``"local"``, ``"memory"``).
    name: ClassVar[str]
    #: True when the data lives in this process only, so functions in other processes cannot see it;
    #: such a storage has no :meth:`locator`.
    process_local: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """The name of the container: the bucket of S3 storage, the absolute root directory of local
        storage, ``""`` for memory storage (it has none). Keys are relative to it."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes | memoryview) -> None:
        """Write ``data`` under ``key`` atomically: readers see the old object or the whole new one."""

    @abc.abstractmethod
    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        """Read ``key``, or its bytes ``[start, end)`` when a range is given.

        ``end`` past the object's size is clipped, as HTTP ranges are. The result is never shorter
        than what the object holds in the range: an answer that breaks off is read again or raises.

        Parameters
        ----------
        key : str
            The object.
        start, end : int, optional
            Absolute byte offsets; ``end`` is exclusive.
        version : str, optional
            The :attr:`ObjectStat.version` the reader expects (from :meth:`stat` or :meth:`scan`):
            the bytes returned are of that version, or the read fails.

        Raises
        ------
        FileNotFoundError
            If ``key`` does not exist.
        StorageError
            If ``version`` is given and the object holds another version (it was written again),
            naming the object and both versions.
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

    def put_if(self, key: str, data: bytes | memoryview, *, version: str | None) -> str | None:
        """Write ``data`` under ``key`` only if the object is at ``version`` (``None``: only if absent).

        The check and the write are one atomic step among conditional writers: of two writers
        holding the same version, one wins. Plain :meth:`put` and :meth:`delete` are not held
        back by it. Versions may be derived from the bytes (S3's ETag): a writer that may write the
        same bytes twice should make them differ (a counter inside), so that an old version is
        never taken for the new one.

        Returns
        -------
        str or None
            The version written, or ``None`` if the condition did not hold (the object exists, has
            another version, or is missing when a version was given): nothing was written.

        Raises
        ------
        NotImplementedError
            If the storage has no conditional writes (the default), naming it.
        """
        raise NotImplementedError(
            f"{self.name} storage {self.locator_repr()} has no conditional writes (put_if): "
            "use 'local', 'memory' or 's3' storage"
        )

    def get_versioned(self, key: str) -> tuple[bytes, str | None]:
        """The bytes of ``key`` and their version, read together; ``FileNotFoundError`` if missing.

        Built on :meth:`stat` and :meth:`get` with ``version=`` (read again if the object was
        written in between); implementations that can read both in one request override it.
        """
        for _ in range(9):
            found = self.stat(key)
            with contextlib.suppress(StorageError):
                return self.get(key, version=found.version), found.version
        found = self.stat(key)
        return self.get(key, version=found.version), found.version

    # -- built on the primitives -------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def stat(self, key: str) -> ObjectStat:
        """Size and version of ``key``; ``FileNotFoundError`` if it does not exist.

        Built on :meth:`size` (version ``None``); implementations with versions override it.
        """
        return ObjectStat(key, self.size(key))

    def scan(self, prefix: str = "") -> Iterator[ObjectStat]:
        """:class:`ObjectStat` of every key starting with ``prefix``, in key order.

        Built on :meth:`list` (versions ``None``); implementations with versions override it.
        """
        for key, size in self.list(prefix):
            yield ObjectStat(key, size)

    def open_uploads(self, prefix: str) -> list[str]:
        """Keys of the multipart uploads open under ``prefix`` (none for storages without them)."""
        return []

    def abort_uploads(self, prefix: str) -> int:
        """Abort the multipart uploads open under ``prefix``; return how many there were."""
        return 0

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``, abort the multipart uploads open under it, and return
        how many keys there were."""
        if not prefix:
            raise ValueError("refusing to delete the whole storage: prefix is empty")
        self.abort_uploads(prefix)  # first: an upload completing later then fails, leaving no object
        keys = [key for key, _ in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            self.delete(keys[start : start + 1000])
        return len(keys)

    # -- how functions reach the same storage ------------------------------------------------

    def check(self) -> None:  # noqa: B027 - optional hook
        """Fail early, naming the setting, if the storage is unreachable or refuses access."""

    @abc.abstractmethod
    def locator(self) -> dict[str, Any]:
        """Where the data lives, without any credential: sent to functions in payloads.

        A JSON-serializable dict whose ``"backend"`` is the registry name of the implementation
        and whose other items :meth:`from_locator` takes.

        Raises
        ------
        NotImplementedError
            For a :attr:`process_local` storage only, saying that it cannot be reached from
            other processes.
        """

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
        """The locator's items (without ``backend``) as ``name=value`` text, for :func:`repr`."""
        try:
            return " ".join(f"{k}={v!r}" for k, v in self.locator().items() if k != "backend")
        except NotImplementedError:
            return f"at {id(self):#x}"
