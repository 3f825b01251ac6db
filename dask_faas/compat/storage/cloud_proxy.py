"""``lithops.storage.cloud_proxy``: Lithops' ``os`` and ``open`` over object storage.

::

    from lithops.storage.cloud_proxy import open, os

    with open("bar/foo.txt", "w") as f:        # an object "bar/foo.txt" of the configured storage
        f.write("Hello world!")
    os.listdir("bar")                           # ["foo.txt"]
    os.remove("bar/foo.txt")

Paths are keys: a leading ``/`` is dropped, ``/`` alone is the whole bucket; a directory is a
prefix that has objects below it (``mkdir`` / ``makedirs`` create nothing). On the client the
storage is the one ``lithops.Storage()`` gives (the facade's configuration); inside a function the
module's ``os`` and ``open`` use the job's storage, so functions and the client see the same files.
Keys of jobs (``dask-faas/...``, ``lithops.jobs/...``) are not listed.

Errors are the ``os`` module's: ``FileNotFoundError`` naming the path, ``IsADirectoryError``,
``NotADirectoryError``, ``FileExistsError``. As Lithops' on object storage, ``os.remove`` of a
directory does not fail: it removes the objects below it (Lithops' ``storage_os.py`` ends with
``os.remove('/test')``).
"""

from __future__ import annotations

import errno
import io
import posixpath
from collections.abc import Iterator
from typing import IO, Any, NamedTuple

from ...backends.storage import Storage, storage_from_locator

__all__ = ["CloudFileProxy", "CloudPath", "cloud_open", "open", "os"]

#: First key components of the objects jobs keep: not listed, not walked.
HIDDEN = ("dask-faas", "lithops.jobs")


def _key(path: str) -> str:
    """The key of ``path``: normalised, no leading ``/``; ``""`` for the root."""
    if not isinstance(path, str):
        raise TypeError(f"a cloud_proxy path is a str, not {type(path).__name__}: {path!r}")
    key = posixpath.normpath("/" + path).lstrip("/")
    return "" if key == "." else key


def _error(cls: type[OSError], code: int, path: str) -> OSError:
    import os as base_os

    return cls(code, base_os.strerror(code), path)


class _Resolver:
    """The storage of a proxy: given, or resolved on use (the job's in a function, else the configured)."""

    def __init__(self, storage: Storage | None) -> None:
        self._storage = storage

    @property
    def storage(self) -> Storage:
        if self._storage is not None:
            return self._storage
        from ... import worker

        try:
            return worker.current().storage  # each call: a warm process runs other jobs later
        except RuntimeError:  # on the client: the configured storage, built once
            from . import Storage as LithopsStorage

            self._storage = LithopsStorage().faas_storage
        return self._storage

    def __reduce__(self) -> Any:
        if self._storage is None:
            return (_Resolver, (None,))
        return (_from_locator, (self._storage.locator(),))


def _from_locator(locator: dict[str, Any]) -> _Resolver:
    return _Resolver(storage_from_locator(locator))


class StatResult(NamedTuple):
    """What :meth:`CloudFileProxy.stat` returns: the ``os.stat_result`` fields object storage has."""

    st_mode: int
    st_size: int


class DirEntry:
    """An entry of :meth:`CloudFileProxy.scandir` (``name``, ``path``, ``is_dir()``, ``is_file()``)."""

    def __init__(self, name: str, path: str, is_dir: bool) -> None:
        self.name, self.path, self._is_dir = name, path, is_dir

    def is_dir(self) -> bool:
        """Whether the entry is a directory (a prefix with objects below it)."""
        return self._is_dir

    def is_file(self) -> bool:
        """Whether the entry is a file (an object)."""
        return not self._is_dir

    def __repr__(self) -> str:
        return f"<DirEntry {self.name!r}>"


class CloudPath:
    """``os.path`` over a storage: ``exists``, ``isfile``, ``isdir``, ``getsize``; the pure functions of
    :mod:`posixpath` (``join``, ``dirname``, ``basename``, ``split``, ...) as they are."""

    def __init__(self, resolver: _Resolver) -> None:
        self._resolver = resolver

    def __getattr__(self, name: str) -> Any:
        return getattr(posixpath, name)  # pure path functions: join, dirname, basename, ...

    def isfile(self, path: str) -> bool:
        """Whether an object ``path`` exists."""
        key = _key(path)
        return bool(key) and self._resolver.storage.exists(key)

    def isdir(self, path: str) -> bool:
        """Whether ``path`` is the root or a prefix with objects below it."""
        key = _key(path)
        if not key:
            return True
        return next(iter(self._resolver.storage.list(key + "/")), None) is not None

    def exists(self, path: str) -> bool:
        """Whether ``path`` is a file or a directory."""
        return self.isfile(path) or self.isdir(path)

    def getsize(self, path: str) -> int:
        """The size of the object ``path``; ``FileNotFoundError`` if there is none."""
        try:
            return self._resolver.storage.size(_key(path))
        except FileNotFoundError:
            raise _error(FileNotFoundError, errno.ENOENT, path) from None


class CloudFileProxy:
    """Lithops' ``os`` over a storage: ``listdir``, ``walk``, ``scandir``, ``stat``, ``remove``,
    ``mkdir``, ``makedirs``, ``rmdir``, ``open`` and :attr:`path`.

    Parameters
    ----------
    storage : Storage, optional
        A dask-faas storage (default: the job's inside a function, the configured one on the client).
        Pickled as its locator: functions reach it with their own credentials.
    """

    sep = "/"

    def __init__(self, storage: Storage | None = None) -> None:
        self._resolver = storage if isinstance(storage, _Resolver) else _Resolver(storage)
        self.path = CloudPath(self._resolver)

    def __reduce__(self) -> Any:
        return (CloudFileProxy, (self._resolver,))

    @property
    def storage(self) -> Storage:
        """The dask-faas storage the files are objects of."""
        return self._resolver.storage

    def open(self, filename: str, mode: str = "r", encoding: str | None = None) -> IO[Any]:
        """:func:`cloud_open` on this storage."""
        return cloud_open(filename, mode, encoding, storage=self._resolver)

    def _entries(self, path: str, missing_ok: bool = True) -> dict[str, bool]:
        """``{name: is_dir}`` of the directory ``path``: empty for a missing one if ``missing_ok`` (on
        object storage an empty directory is a missing one); else raises as ``os.listdir``."""
        key = _key(path)
        prefix = key + "/" if key else ""
        entries: dict[str, bool] = {}
        for found, _ in self.storage.list(prefix):
            name, slash, _rest = found[len(prefix) :].partition("/")
            if not prefix and name in HIDDEN:
                continue
            entries[name] = entries.get(name, False) or bool(slash)
        if not entries and key:
            if self.storage.exists(key):
                raise _error(NotADirectoryError, errno.ENOTDIR, path)
            if not missing_ok:
                raise _error(FileNotFoundError, errno.ENOENT, path)
        return entries

    def listdir(self, path: str = "") -> list[str]:
        """Names of the files and directories in ``path`` (sorted); ``[]`` for a directory without
        objects (as Lithops': an empty directory does not exist on object storage).

        Raises
        ------
        NotADirectoryError
            If ``path`` is a file, naming it.
        """
        return sorted(self._entries(path))

    def scandir(self, path: str = "") -> Iterator[DirEntry]:
        """:class:`DirEntry` of each name in ``path`` (sorted by name)."""
        for name, is_dir in sorted(self._entries(path).items()):
            yield DirEntry(name, posixpath.join(path, name), is_dir)

    def walk(
        self, top: str, topdown: bool = True, onerror: Any = None
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """``(dirpath, dirnames, filenames)`` as ``os.walk`` (names sorted); a missing ``top`` yields
        nothing, or calls ``onerror`` with the error."""
        try:
            entries = self._entries(top, missing_ok=False)
        except OSError as exc:
            if onerror is not None:
                onerror(exc)
            return
        dirs = sorted(name for name, is_dir in entries.items() if is_dir)
        files = sorted(name for name, is_dir in entries.items() if not is_dir)
        if topdown:
            yield top, dirs, files
        for name in dirs:
            yield from self.walk(posixpath.join(top, name), topdown, onerror)
        if not topdown:
            yield top, dirs, files

    def stat(self, path: str) -> StatResult:
        """``st_mode`` (a regular file or a directory) and ``st_size``; ``FileNotFoundError`` if neither."""
        import stat

        key = _key(path)
        if key and self.storage.exists(key):
            return StatResult(stat.S_IFREG | 0o644, self.storage.size(key))
        if self.path.isdir(path):
            return StatResult(stat.S_IFDIR | 0o755, 0)
        raise _error(FileNotFoundError, errno.ENOENT, path)

    def remove(self, path: str) -> None:
        """Delete the file ``path``; a directory: the objects below it (as Lithops' never fails on one).

        Raises
        ------
        FileNotFoundError
            If ``path`` is neither a file nor a directory.
        """
        key = _key(path)
        if key and self.storage.exists(key):
            self.storage.delete([key])
        elif key and self.path.isdir(path):
            self.storage.delete_prefix(key + "/")
        else:
            raise _error(FileNotFoundError, errno.ENOENT, path)

    unlink = remove

    def mkdir(self, path: str, mode: int = 0o777) -> None:
        """Nothing to create (a directory exists while objects are below it); ``FileExistsError`` if
        ``path`` exists, as ``os.mkdir``."""
        if self.path.exists(path):
            raise _error(FileExistsError, errno.EEXIST, path)

    def makedirs(self, path: str, mode: int = 0o777, exist_ok: bool = False) -> None:
        """Nothing to create; ``FileExistsError`` if ``path`` exists and not ``exist_ok``."""
        if self.path.isfile(path) or (not exist_ok and self.path.isdir(path) and _key(path)):
            raise _error(FileExistsError, errno.EEXIST, path)

    def rmdir(self, path: str) -> None:
        """``OSError`` (directory not empty) for a directory with objects, ``NotADirectoryError`` for
        a file; an empty directory does not exist on object storage: ``FileNotFoundError``."""
        if self.path.isfile(path):
            raise _error(NotADirectoryError, errno.ENOTDIR, path)
        if self.path.isdir(path):
            raise _error(OSError, errno.ENOTEMPTY, path)
        raise _error(FileNotFoundError, errno.ENOENT, path)


class _Upload:
    """Writes the buffer's content to the key on ``close`` (mode ``w``/``a``/``x``)."""

    def __init__(self, resolver: _Resolver, key: str, encoding: str | None) -> None:
        self._resolver, self._key, self._encoding = resolver, key, encoding

    def __call__(self, value: bytes | str) -> None:
        data = value if isinstance(value, bytes) else value.encode(self._encoding or "utf-8")
        self._resolver.storage.put(self._key, data)


class _UploadOnClose:
    """A file in memory whose content is stored when it is closed (``upload``; None: read-only),
    positioned at its end when it was opened to write (appending keeps what was there)."""

    _upload: _Upload | None

    def _opened(self, upload: _Upload | None) -> None:
        self._upload = upload
        if upload is not None:
            self.seek(0, io.SEEK_END)  # type: ignore[attr-defined]

    def close(self) -> None:
        if not self.closed and self._upload is not None:  # type: ignore[attr-defined]
            self._upload(self.getvalue())  # type: ignore[attr-defined]
        super().close()  # type: ignore[misc]


class _BytesFile(_UploadOnClose, io.BytesIO):
    def __init__(self, initial: bytes, upload: _Upload | None) -> None:
        io.BytesIO.__init__(self, initial)
        self._opened(upload)


class _TextFile(_UploadOnClose, io.StringIO):
    def __init__(self, initial: str, upload: _Upload | None) -> None:
        io.StringIO.__init__(self, initial, newline="")
        self._opened(upload)


def cloud_open(
    filename: str, mode: str = "r", encoding: str | None = None, *, storage: Storage | _Resolver | None = None
) -> IO[Any]:
    """Open the object ``filename`` as a file: modes ``r``, ``w``, ``a``, ``x``, text or binary (``b``).

    Reading loads the object; writing keeps the content in memory and writes the object on
    ``close`` (or at the end of a ``with`` block).

    Raises
    ------
    FileNotFoundError
        Reading (or ``r+``) an object that does not exist, naming the path.
    IsADirectoryError
        If ``filename`` is a directory.
    FileExistsError
        Mode ``x`` on an existing object.
    ValueError
        For another mode.
    """
    resolver = storage if isinstance(storage, _Resolver) else _Resolver(storage)
    kind = set(mode) - {"b", "t", "+"}
    if len(kind) != 1 or not kind <= {"r", "w", "a", "x"} or ("b" in mode and "t" in mode):
        raise ValueError(f"cloud_proxy open({filename!r}): invalid mode {mode!r} (r, w, a, x; b or t; +)")
    key = _key(filename)
    proxy = CloudFileProxy(resolver)
    if not key or proxy.path.isdir(filename):
        raise _error(IsADirectoryError, errno.EISDIR, filename)
    (how,) = kind
    initial = b""
    if how in ("r", "a"):
        try:
            initial = resolver.storage.get(key)
        except FileNotFoundError:
            if how == "r":
                raise _error(FileNotFoundError, errno.ENOENT, filename) from None
    elif how == "x" and resolver.storage.exists(key):
        raise _error(FileExistsError, errno.EEXIST, filename)
    upload = None if how == "r" and "+" not in mode else _Upload(resolver, key, encoding)
    if "b" in mode:
        handle: IO[Any] = _BytesFile(initial, upload)
    else:
        handle = _TextFile(initial.decode(encoding or "utf-8"), upload)
    if how == "r":
        handle.seek(0)
    return handle


#: ``os`` and ``open`` of the configured storage (in a function: of the job's storage).
os = CloudFileProxy()


def open(filename: str, mode: str = "r", encoding: str | None = None) -> IO[Any]:
    """:func:`cloud_open` on the configured storage (in a function: the job's)."""
    return cloud_open(filename, mode, encoding, storage=os._resolver)
