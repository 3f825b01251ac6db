"""The ``obj`` argument: objects planned into chunks on the client, read as :class:`CloudObject` in functions.

A function with an ``obj`` parameter gets one call per object, or per chunk of it with
``obj_chunk_size`` / ``obj_chunk_number`` (Lithops' ``job/partitioner.py``). The client lists the
objects and plans byte ranges from their sizes alone; each call receives a :class:`Chunk`, which
becomes a :class:`CloudObject` inside the function, where its bytes are streamed from storage.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import partition
from ..backends.storage import Storage, storage_from_locator
from ..backends.storage.urls import split_url
from ._binding import as_list
from ._cloudobjects import CloudObject as CloudObjectRef
from ._http import HttpObjects

#: Lithops' storage names used as URL schemes (``aws_s3://bucket/key``) -> dask-faas's.
SCHEMES = {
    "aws_s3": "s3",
    "minio": "s3",
    "ceph": "s3",
    "ibm_cos": "cos",
    "localhost": "local",
    "local": "local",
}


@dataclass(frozen=True)
class Chunk:
    """What the client sends for one ``obj`` argument: a planned range of one object."""

    rng: partition.ByteRange
    scheme: str
    part: int
    total_parts: int
    chunked: bool
    newline: str | None


def expand_objects(
    calls: list[dict[str, Any]],
    storage: Storage,
    storage_options: dict[str, Any] | None,
    chunk_size: int | None,
    chunk_number: int | None,
    newline: str | None,
    name: str = "obj",
) -> tuple[list[dict[str, Any]], list[int], list[dict[str, Any]]]:
    """One call per chunk of every object that the ``obj`` argument of each call names.

    Parameters
    ----------
    calls : list of dict
        The keyword arguments of each call; ``obj`` is a URL, glob, path, :class:`CloudObject` or a
        list of them (``bucket/key`` without scheme means ``storage``).
    storage : Storage
        The executor's storage.
    storage_options : dict, optional
        Options for listing ``s3://`` data on the client.
    chunk_size, chunk_number : int, optional
        Lithops' ``obj_chunk_size`` and ``obj_chunk_number`` (which wins).
    newline : str or None
        ``"\\n"``: chunks hold whole lines; ``None``: exact byte ranges.
    name : str
        The parameter that names the objects: ``obj``, or PyWren-IBM's ``url``.

    Returns
    -------
    calls : list of dict
        The calls, ``obj`` replaced by a :class:`Chunk`; empty objects get no call.
    parts : list of int
        The number of chunks of each object, in call order.
    locators : list of dict
        The locators of the storages holding the objects.

    Raises
    ------
    NotImplementedError
        For a ``newline`` other than ``"\\n"`` or ``None``.
    """
    if newline not in ("\n", None):
        raise NotImplementedError(f"obj_newline={newline!r}: chunks align to '\\n' (or None)")
    expanded, parts, locators = [], [], {}
    for data in calls:
        for obj in as_list(data[name]):
            url = _url(obj, storage)
            found, objects = _discover(url, storage_options)
            if found.name != "http":  # HTTP objects are read by URL, not through a storage
                locators[repr(found.locator())] = found.locator()
            scheme = found.name if found.name in ("local", "http") else split_url(url)[0]  # s3, s3a or cos
            for info in objects:
                if info.size == 0:
                    continue
                ranges = _ranges(found, info, chunk_size, chunk_number)
                chunked = len(ranges) > 1
                for rng in ranges:
                    chunk = Chunk(rng, scheme, rng.index + 1, len(ranges), chunked, newline)
                    expanded.append({**data, name: chunk})
                parts.append(len(ranges))
    return expanded, parts, list(locators.values())


def _discover(url: str, storage_options: dict[str, Any] | None) -> tuple[Storage, list[partition.ObjectInfo]]:
    """The storage and the objects of ``url`` (an HTTP URL is one object, sized by HEAD)."""
    if url.startswith(("http://", "https://")):
        http = HttpObjects()
        return http, [partition.ObjectInfo(url, url, http.size(url))]
    return partition.discover(url, storage_options)


def _url(obj: Any, storage: Storage) -> str:
    """The URL or path of an ``obj`` element; ``bucket/key`` is in the executor's ``storage``.

    Lithops' storage names are schemes too (``aws_s3://``, ``ibm_cos://``, ``localhost://``); for
    ``local://`` / ``localhost://`` an absolute path follows, or a directory below the local
    storage's root.
    """
    if isinstance(obj, CloudObject | CloudObjectRef):
        obj = obj.url
    url = os.fspath(obj)
    if url.startswith(("http://", "https://")):
        return url
    given, sep, rest = url.partition("://")
    if sep and given.lower() in SCHEMES:
        target = SCHEMES[given.lower()]
        if target != "local":
            return f"{target}://{rest}"
        if os.path.isabs(rest):
            return rest
        base = storage.location if storage.name == "local" else os.getcwd()
        return os.path.join(base, rest)
    scheme, _, path = split_url(url)
    if scheme or os.path.isabs(path):
        return url
    if storage.name in ("s3", "cos"):
        return f"s3://{url}"
    return os.path.join(storage.location, url)


def _ranges(
    storage: Storage, info: partition.ObjectInfo, chunk_size: int | None, chunk_number: int | None
) -> list[partition.ByteRange]:
    """Lithops' chunking of one object: ``obj_chunk_number`` wins over ``obj_chunk_size``."""
    size = None
    if chunk_number:
        size = -(-info.size // chunk_number)  # Lithops: size // number, plus one for a remainder
    elif chunk_size:
        size = int(chunk_size)
    if size is not None and size >= info.size:
        size = None
    return partition.plan(storage, [info], size, compression=None, header=False)


class CloudObject:
    """The ``obj`` argument: one object, or one chunk of it (Lithops' ``CloudObject``).

    Parameters
    ----------
    chunk : Chunk
        The planned chunk.

    Attributes
    ----------
    backend, bucket, key : str
        ``"s3"``/``"cos"``/``"local"``, the bucket and key; for a local file as Lithops does: its
        directory and file name.
    url, path : str
        The object's URL (``s3://bucket/key``) or local path.
    name : str
        The last segment of the key (the PyWren-IBM talk's ``obj.name``).
    size : int
        The object's size in bytes.
    data_byte_range : tuple of int
        First and last byte (inclusive) of the chunk as planned; lines are completed past it.
    chunk_size, part, total_parts, newline
        Planned size of the chunk, its number (from 1) and the object's number of chunks.
    locator : dict
        The locator of the storage holding the object.
    data_stream : file-like
        The chunk's bytes, streamed: whole lines (``newline="\\n"``), exact bytes (``None``), or the
        whole raw object when it is not chunked.
    """

    def __init__(self, chunk: Chunk) -> None:
        rng = chunk.rng
        self._chunk = chunk
        self.backend = chunk.scheme
        self.url = self.path = rng.url
        if chunk.scheme == "local":
            self.bucket, self.key = os.path.split(rng.url)
        elif chunk.scheme == "http":
            self.bucket, self.key = "", rng.url
        else:
            self.bucket, self.key = rng.locator["bucket"], rng.key
        self.name = rng.key.rsplit("/", 1)[-1]
        self.size = rng.size
        self.data_byte_range = (rng.start, rng.end - 1)
        self.chunk_size = rng.end - rng.start
        self.part, self.total_parts, self.newline = chunk.part, chunk.total_parts, chunk.newline
        self._stream: io.BufferedReader | None = None

    @property
    def data_stream(self) -> io.BufferedReader:
        if self._stream is None:
            self._stream = io.BufferedReader(_IterStream(self._pieces()), buffer_size=1 << 16)
        return self._stream

    @property
    def locator(self) -> dict[str, Any]:
        """The locator of the storage holding the object (no credentials)."""
        return self._chunk.rng.locator

    def read(self, n: int = -1) -> bytes:
        """Read from :attr:`data_stream`."""
        return self.data_stream.read(n)

    def _pieces(self) -> Iterator[bytes]:
        chunk = self._chunk
        rng = chunk.rng
        storage = HttpObjects() if chunk.scheme == "http" else storage_from_locator(rng.locator)
        if not chunk.chunked:
            yield storage.get(rng.key, version=rng.version)
        elif chunk.newline is None:
            yield storage.get(rng.key, rng.start, rng.end, version=rng.version)
        else:
            yield from partition.iter_lines(storage, rng)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stream": None}

    def __repr__(self) -> str:
        return f"<CloudObject {self.url} part {self.part}/{self.total_parts}>"


class _IterStream(io.RawIOBase):
    """A readable raw stream over an iterator of byte strings, each copied out once."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._piece = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view, filled = memoryview(b).cast("B"), 0
        while filled < len(view):
            if not self._piece:
                piece = next(self._pieces, None)
                if piece is None:
                    break
                self._piece = memoryview(piece).cast("B")
                continue
            n = min(len(view) - filled, len(self._piece))
            view[filled : filled + n] = self._piece[:n]
            self._piece, filled = self._piece[n:], filled + n
        return filled
