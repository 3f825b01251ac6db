"""Data discovery and CSV byte ranges: plan on the client from sizes, read inside functions.

Planning (client side) touches only LIST/HEAD requests, plus one small sample per object for the
header: a URL, a glob or a list of keys becomes :class:`ObjectInfo` records, and those become
:class:`ByteRange` partitions of about ``blocksize`` bytes each. Reading (function side) aligns a
range to whole lines: a range that starts mid-line skips to the next line end, and its last line is
completed by reading past the range's end until a newline, however long that line is. Every line of
an object belongs to exactly one range: the one in which it starts.

URLs: ``s3://bucket/key-or-prefix-or-glob`` and ``cos://...`` (the same S3-compatible protocol), and
local paths (``/dir/*.csv``, ``file:///dir/*.csv``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .backends.storage import Storage

__all__ = ["ByteRange", "ObjectInfo", "discover", "iter_lines", "plan", "read_range"]


@dataclass(frozen=True)
class ObjectInfo:
    """One object found by :func:`discover`.

    Parameters
    ----------
    url : str
        Full URL of the object (``s3://bucket/key``, or a local path).
    key : str
        The object's key in its storage.
    size : int
        Size in bytes.
    """

    url: str
    key: str
    size: int


@dataclass(frozen=True)
class ByteRange:
    """A partition: the lines of one object that start in ``[start, end)``.

    Parameters
    ----------
    locator : dict
        Storage locator of the object's bucket or directory (no credentials).
    key, url, size
        The object, as in :class:`ObjectInfo`.
    start, end : int
        Nominal byte range; ``end`` is exclusive (``end == size`` for the last range).
    index : int
        Position of this range among the object's ranges.
    compression : str or None
        ``"gzip"``, ``"bz2"``, ... for a compressed object (always one range for the whole object).
    header : bytes
        The object's header line (with its line end) to put in front of ranges that start after it;
        empty when there is no header.
    """

    locator: dict[str, Any]
    key: str
    url: str
    size: int
    start: int
    end: int
    index: int
    compression: str | None = None
    header: bytes = b""


def discover(
    urlpath: str | Sequence[str], storage_options: dict[str, Any] | None = None
) -> tuple[Storage, list[ObjectInfo]]:
    """Expand ``urlpath`` (URL, prefix, glob or list of them) into objects with their sizes.

    Only LIST and HEAD requests are made. All URLs must name the same bucket (or directory root).

    Raises
    ------
    FileNotFoundError
        If the bucket does not exist or nothing matches, naming the URL.
    PermissionError
        If the credentials are refused, naming the URL.
    """
    raise NotImplementedError


def plan(
    storage: Storage,
    objects: Sequence[ObjectInfo],
    blocksize: int | None,
    *,
    compression: str | None = "infer",
    header: bool = True,
    sample_bytes: int = 65536,
) -> list[ByteRange]:
    """Ranges of about ``blocksize`` bytes over ``objects``; ``None`` means one range per object."""
    raise NotImplementedError


def read_range(storage: Storage, rng: ByteRange, *, read_ahead: int = 1 << 20) -> bytes:
    """The bytes of the lines starting in ``rng``, header first (decompressed for compressed objects).

    Raises
    ------
    ValueError
        Naming the object, if a quoted field with a line break crosses the range's boundary.
    """
    raise NotImplementedError


def iter_lines(storage: Storage, rng: ByteRange) -> Iterator[bytes]:
    """The lines starting in ``rng`` (header excluded), streamed: for PyWren-style chunk functions."""
    raise NotImplementedError
