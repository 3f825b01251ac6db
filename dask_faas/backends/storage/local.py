"""A directory as storage: the embedded default, shared by the local function pool's processes.

Key ``"a/b/c"`` is the file ``root/a/b/c``. Writes are atomic (a hidden temporary file in the same
directory, then :func:`os.replace`), and deleting the last key of a directory removes the directory,
so nothing is left behind. Keys are checked by :func:`~dask_faas.backends.storage.base.check_key`;
temporary files start with :data:`~dask_faas.backends.storage.base.TMP_PREFIX` and are never listed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from ...exceptions import ConfigError, StorageError
from .base import TMP_PREFIX, ObjectStat, Storage, check_key, check_range

__all__ = ["LocalStorage"]

T = TypeVar("T")

_SETTING = "faas.local-storage.root"
#: Attempts of a write whose directory concurrent deletes keep removing (each is a few syscalls).
_WRITE_ATTEMPTS = 20


def _missing(key: str, where: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, f"No such key in {where}", key)


def _version(st: os.stat_result) -> str:
    """A file's version: modification time, inode and size (each write replaces the inode)."""
    return f"{st.st_mtime_ns:x}-{st.st_ino:x}-{st.st_size:x}"


class LocalStorage(Storage):
    """Storage in a local directory.

    Parameters
    ----------
    root : str or os.PathLike, optional
        The directory (setting ``faas.local-storage.root``); created on the first write or by
        :meth:`check`. Defaults to ``dask-faas-storage`` in the system temporary directory.
    """

    name = "local"

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        if root is None:
            root = os.path.join(tempfile.gettempdir(), "dask-faas-storage")
        self.root = os.path.abspath(os.fspath(root))

    @property
    def location(self) -> str:
        """The absolute root directory (the same as :attr:`root`)."""
        return self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Write ``data`` under ``key`` atomically (temporary file, then :func:`os.replace`)."""
        self._write(key, data, os.replace)

    def put_if(self, key: str, data: bytes | memoryview, *, version: str | None) -> str | None:
        """Write ``data`` under ``key`` if it is at ``version`` (``None``: if absent); the version
        written, or ``None`` if the condition did not hold.

        Conditional writers of one directory take turns on an ``flock`` of the directory. A new
        object is linked into place (:func:`os.link` fails if the key exists); a replacement is
        checked against the current file's version, then moved over it with a modification time
        past the old one's, so a version is never seen twice for one key (inodes are reused).
        """

        def place(tmp: str, path: str) -> str | None:
            with _directory_lock(os.path.dirname(path)):
                return _swap_if(tmp, path, version)

        return self._write(key, data, place)

    def _write(self, key: str, data: bytes | memoryview, place: Callable[[str, str], T]) -> T:
        """Write ``data`` to a temporary file beside ``key``'s, then ``place(tmp, path)`` it.

        A concurrent delete may remove the (then empty) directory at any moment, even while
        :func:`os.makedirs` looks at it (it then says that the directory exists, though it is
        gone): the directory is made again, up to :data:`_WRITE_ATTEMPTS` times.
        """
        path = self._path(key)
        directory = os.path.dirname(path)
        for attempt in range(_WRITE_ATTEMPTS):
            tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
            try:
                os.makedirs(directory, exist_ok=True)
                with open(tmp, "xb") as f:
                    f.write(data)
                return place(tmp, path)
            except (FileNotFoundError, FileExistsError) as err:
                if isinstance(err, FileExistsError) and _file_in_the_way(directory, self.root):
                    raise _key_and_keys_below(key, self.root) from err
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
            except (NotADirectoryError, IsADirectoryError) as err:
                raise _key_and_keys_below(key, self.root) from err
            finally:
                _remove_quietly(tmp)  # gone already once placed
        raise AssertionError("unreachable")

    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        """Read ``key``, or its bytes ``[start, end)``; ``FileNotFoundError`` if missing.

        With ``version``, the open file must be that version (its metadata is read from the open
        file, so a concurrent replacement cannot slip in between), else ``StorageError``.
        """
        check_range(start, end)
        try:
            with open(self._path(key), "rb") as f:
                if version is not None and (found := _version(os.fstat(f.fileno()))) != version:
                    raise StorageError(
                        f"{os.path.join(self.root, key)} changed after it was listed: version "
                        f"{version} was expected, the file is {found} (it was written again); "
                        "read it again from the start"
                    )
                if start is None and end is None:
                    return f.read()
                start = start or 0
                if end is not None and end <= start:
                    return b""
                f.seek(start)
                return f.read() if end is None else f.read(end - start)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise _missing(key, self.root) from None

    def size(self, key: str) -> int:
        """Size of ``key`` in bytes; ``FileNotFoundError`` if missing."""
        return self.stat(key).size

    def stat(self, key: str) -> ObjectStat:
        """Size and version (modification time, inode, size) of ``key``; ``FileNotFoundError`` if missing."""
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            raise _missing(key, self.root) from None
        if not stat.S_ISREG(st.st_mode):
            raise _missing(key, self.root)
        return ObjectStat(key, st.st_size, _version(st))

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Yield ``(key, size)`` for every key starting with ``prefix``, in key order."""
        for found in self.scan(prefix):
            yield found.key, found.size

    def scan(self, prefix: str = "") -> Iterator[ObjectStat]:
        """:class:`ObjectStat` (with versions) of every key starting with ``prefix``, in key order."""
        base, _, rest = prefix.rpartition("/")
        if base:
            check_key(base)
        if "\\" in rest or "\x00" in rest:
            raise ValueError(f"invalid storage prefix {prefix!r}")
        directory = os.path.join(self.root, *base.split("/")) if base else self.root
        for key, st in _walk(directory, f"{base}/" if base else "", rest):
            yield ObjectStat(key, st.st_size, _version(st))

    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys`` (missing ones are ignored) and the directories they leave empty."""
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue
            parent = os.path.dirname(path)
            while parent != self.root and parent.startswith(self.root):
                try:
                    os.rmdir(parent)
                except OSError:
                    break
                parent = os.path.dirname(parent)

    def check(self) -> None:
        """Create the root directory if needed and check that it is writable.

        Raises
        ------
        PermissionError
            If the root cannot be created or written for lack of permission.
        ConfigError
            If the root cannot be created or written for another reason (a file is in the way).
        """
        probe = os.path.join(self.root, f"{TMP_PREFIX}check-{uuid.uuid4().hex}")
        try:
            os.makedirs(self.root, exist_ok=True)
            with open(probe, "xb") as f:
                f.write(b"ok")
            os.unlink(probe)
        except PermissionError as err:
            raise PermissionError(
                f"local storage root {self.root!r} cannot be created or written ({err}); "
                f"fix the permissions or the setting {_SETTING}"
            ) from None
        except OSError as err:
            raise ConfigError(
                f"local storage root {self.root!r} cannot be created or written ({err}); "
                f"check the setting {_SETTING}"
            ) from None

    def locator(self) -> dict[str, Any]:
        """``{"backend": "local", "root": <absolute root>}``."""
        return {"backend": "local", "root": self.root}


@contextlib.contextmanager
def _directory_lock(directory: str) -> Iterator[None]:
    """An exclusive ``flock`` of ``directory`` (its conditional writers take turns)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _swap_if(tmp: str, path: str, version: str | None) -> str | None:
    """Put file ``tmp`` at ``path`` if ``path`` is at ``version`` (``None``: absent); under the lock."""
    if version is None:
        try:
            os.link(tmp, path)
        except FileExistsError:
            return None
        return _version(os.stat(tmp))
    try:
        current = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if _version(current) != version:
        return None
    now = time.time_ns()
    mtime = max(now, current.st_mtime_ns + 1)
    os.utime(tmp, ns=(now, mtime))
    written = _version(os.stat(tmp))
    os.replace(tmp, path)
    return written


def _key_and_keys_below(key: str, root: str) -> FileExistsError:
    why = f"Local storage cannot hold both a key and keys below it (such as 'a' and 'a/b') in {root}"
    return FileExistsError(errno.EEXIST, why, key)


def _file_in_the_way(directory: str, root: str) -> bool:
    """Whether a file (a key) stands where ``directory`` or one of its parents below ``root`` would be."""
    while directory != root and directory.startswith(root):
        try:
            if not stat.S_ISDIR(os.lstat(directory).st_mode):
                return True
        except (FileNotFoundError, NotADirectoryError):
            pass
        directory = os.path.dirname(directory)
    return False


def _remove_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _walk(directory: str, key_prefix: str, name_prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """Yield ``(key, stat)`` below ``directory`` in key order, lazily.

    Sorting a directory's entries by name, with ``"/"`` appended to sub-directories, orders them
    as their keys sort: every key below sub-directory ``d`` starts with ``d + "/"``.
    """
    try:
        with os.scandir(directory) as it:
            entries = [
                (e.name + "/" if e.is_dir(follow_symlinks=False) else e.name, e)
                for e in it
                if e.name.startswith(name_prefix) and not e.name.startswith(TMP_PREFIX)
            ]
    except (FileNotFoundError, NotADirectoryError):
        return
    for sort_name, entry in sorted(entries, key=lambda item: item[0]):
        if sort_name.endswith("/"):
            yield from _walk(entry.path, key_prefix + sort_name)
        else:
            try:
                st = entry.stat()
            except FileNotFoundError:  # deleted while listing
                continue
            yield key_prefix + entry.name, st
