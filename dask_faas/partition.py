"""Data discovery and CSV byte ranges: plan on the client from sizes, read inside functions.

Planning (client side) touches only LIST/HEAD requests, plus one small sample per object for the
header: a URL, a glob or a list of keys becomes :class:`ObjectInfo` records, and those become
:class:`ByteRange` partitions of about ``blocksize`` bytes each. Reading them (function side:
:func:`read_range`, :func:`iter_lines`) and the dtype sample (:func:`read_sample`) live in
:mod:`dask_faas.ranges` and are re-exported here.

URLs (parsed by :func:`~dask_faas.backends.storage.urls.split_url`):
``s3://bucket/key-or-prefix-or-glob``, ``s3a://...`` and ``cos://...`` (the same S3-compatible
protocol), and local paths (``/dir/*.csv``, ``file:///dir/*.csv``). In a glob ``*`` does not cross
``/`` and ``**`` does; only the longest literal prefix is listed. In a list, a bare key after an
``s3://`` URL is a key of the same bucket.

A range that owns no line reads as its header alone (pandas parses that to an empty frame with the
right columns), or as ``b""`` without header; an empty object reads as ``b""``, which
``pandas.read_csv`` rejects (``EmptyDataError``): callers treat such a partition as having no rows.
Compressed objects (gzip, bz2, xz, zstd) are one range each; their ``header`` is taken from the
decompressed start. Objects whose quoted fields hold line breaks must be read with
``blocksize=None`` (:func:`read_range` says so when it meets one).
"""

from __future__ import annotations

import errno
import itertools
import os
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .backends.storage import Storage
from .backends.storage.base import ObjectStat
from .backends.storage.local import LocalStorage
from .backends.storage.urls import S3_SCHEMES, s3_storage, split_url
from .exceptions import ConfigError
from .ranges import (
    ByteRange,
    first_line,
    iter_lines,
    quote_options,
    read_range,
    read_sample,
    zstd_decompressor,
)

__all__ = [
    "ByteRange",
    "ObjectInfo",
    "discover",
    "iter_lines",
    "plan",
    "quote_options",
    "read_range",
    "read_sample",
    "s3_storage",
]

_GLOB = re.compile(r"[*?\[]")
_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}


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
    version : str or None
        Its version when it was found (S3's ETag, a file's modification time and inode), which
        every read of its ranges asks for: see :attr:`ByteRange.version`.
    """

    url: str
    key: str
    size: int
    version: str | None = None


def discover(
    urlpath: str | Sequence[str], storage_options: dict[str, Any] | None = None
) -> tuple[Storage, list[ObjectInfo]]:
    """Expand ``urlpath`` (URL, prefix, glob or list of them) into objects with their sizes.

    Only LIST and HEAD requests are made. All URLs must name the same bucket (or directory root).
    Keys ending in ``/`` (directory markers) are skipped; objects come sorted by key, each with the
    version the listing reported (:meth:`~dask_faas.backends.storage.base.Storage.scan`).

    Parameters
    ----------
    urlpath : str or sequence of str
        ``s3://`` / ``s3a://`` / ``cos://`` URLs, local paths or ``file://`` URLs.
    storage_options : dict, optional
        S3 options named as in s3fs: ``key``, ``secret``, ``token``, ``endpoint_url``,
        ``region_name`` and ``client_kwargs``. By default the settings ``faas.s3.*``
        (see :func:`s3_storage`, re-exported from :mod:`dask_faas.backends.storage.urls`).

    Raises
    ------
    FileNotFoundError
        If the bucket does not exist or nothing matches, naming the URL.
    PermissionError
        If the credentials are refused, naming the URL.
    """
    items = [os.fspath(urlpath)] if isinstance(urlpath, (str, os.PathLike)) else list(map(os.fspath, urlpath))
    if not items:
        raise ValueError("no URL given")
    parsed = [split_url(item) for item in items]
    scheme, bucket = parsed[0][:2]
    if scheme in S3_SCHEMES:
        specs = []
        for item, (sch, bkt, key) in zip(items, parsed, strict=True):
            if not sch and not os.path.isabs(key):  # a bare key of the first URL's bucket
                sch, bkt = scheme, bucket
            if sch not in S3_SCHEMES or bkt != bucket:
                raise ValueError(f"all URLs must name one bucket: {items[0]!r} and {item!r} do not")
            specs.append((item, key))
        storage: Storage = s3_storage(bucket, storage_options)
        base = f"{scheme}://{bucket}/"
    else:
        if any(sch in S3_SCHEMES for sch, _, _ in parsed):
            raise ValueError(f"cannot mix local paths and S3 URLs: {items!r}")
        local = [_local_spec(path) for _, _, path in parsed]
        root = os.path.commonpath([r for r, _ in local])
        rel = [os.path.relpath(r, root) for r, _ in local]
        specs = [
            (item, s if d == "." else f"{d}/{s}") for item, d, (_, s) in zip(items, rel, local, strict=True)
        ]
        storage = LocalStorage(root)
        base = root.rstrip("/") + "/"
    _check(storage, items[0])
    found: dict[str, ObjectStat] = {}
    for item, spec in specs:
        found.update((stat.key, stat) for stat in _match(storage, spec, item))
    return storage, [ObjectInfo(base + k, k, s.size, s.version) for k, s in sorted(found.items())]


def plan(
    storage: Storage,
    objects: Sequence[ObjectInfo],
    blocksize: int | None,
    *,
    compression: str | None = "infer",
    header: bool = True,
    sample_bytes: int = 65536,
) -> list[ByteRange]:
    """Ranges of about ``blocksize`` bytes over ``objects``; ``None`` means one range per object.

    Parameters
    ----------
    storage : Storage
        Where the objects are (from :func:`discover`).
    objects : sequence of ObjectInfo
        The objects, in the order of the partitions.
    blocksize : int or None
        Nominal bytes per range (any ``int >= 1``); an object is split evenly into
        ``ceil(size / blocksize)`` ranges. Compressed and empty objects are one range.
    compression : str or None
        ``"infer"`` (from ``.gz``, ``.bz2``, ``.xz``, ``.zst``), ``"gzip"``, ``"bz2"``, ``"xz"``,
        ``"zstd"`` or ``None``.
    header : bool
        Whether the first line of each object is a header: sampled (``sample_bytes`` from the start,
        more only if the line is longer, of the object's ``version``) and put in every range's
        ``header``. Each range carries its object's ``version``.
    """
    if blocksize is not None and (isinstance(blocksize, bool) or not isinstance(blocksize, int)):
        raise TypeError(f"blocksize must be an int or None, got {blocksize!r}")
    if (blocksize is not None and blocksize < 1) or sample_bytes < 1:
        raise ValueError(f"blocksize and sample_bytes must be >= 1, got {blocksize}, {sample_bytes}")
    comps = [_compression(obj, compression) for obj in objects]

    heads = [b""] * len(objects)
    if header and objects:
        with ThreadPoolExecutor(min(16, len(objects))) as pool:
            keys, same = [obj.key for obj in objects], itertools.repeat
            versions = [obj.version for obj in objects]
            heads = list(pool.map(first_line, same(storage), keys, comps, same(sample_bytes), versions))
    locator, ranges = storage.locator(), []
    for obj, comp, head in zip(objects, comps, heads, strict=True):
        count = 1 if comp or blocksize is None else max(1, -(-obj.size // blocksize))
        cuts = [i * obj.size // count for i in range(count + 1)]
        for index, (start, end) in enumerate(itertools.pairwise(cuts)):
            ranges.append(
                ByteRange(locator, obj.key, obj.url, obj.size, start, end, index, comp, head, obj.version)
            )
    return ranges


# -- discovery ---------------------------------------------------------------------------------


def _local_spec(path: str) -> tuple[str, str]:
    """``(root, key spec)`` of a local path: the root is the directory before any glob character."""
    path = os.path.abspath(path)
    glob = _GLOB.search(path)
    if glob:
        root = os.path.dirname(path[: glob.start()])
    elif os.path.isdir(path):
        return path, ""
    else:
        root = os.path.dirname(path)
    return root, path[len(root) :].lstrip("/")


def _check(storage: Storage, url: str) -> None:
    """``storage.check()``, with its errors naming ``url``; local roots are checked without writing."""
    if isinstance(storage, LocalStorage):
        if not os.path.isdir(storage.root):
            raise FileNotFoundError(errno.ENOENT, f"no directory {storage.root} for {url}")
        if not os.access(storage.root, os.R_OK | os.X_OK):
            raise PermissionError(errno.EACCES, f"directory {storage.root} of {url} cannot be read")
        return
    try:
        storage.check()
    except PermissionError as err:
        raise PermissionError(errno.EACCES, f"access to {url} refused: {err.strerror or err}") from err
    except ConfigError as err:
        if "does not exist" in str(err):
            raise FileNotFoundError(errno.ENOENT, f"no bucket for {url}: {err}") from err
        raise ConfigError(f"cannot read {url}: {err}") from err


def _match(storage: Storage, spec: str, url: str) -> list[ObjectStat]:
    """Size and version of the objects that ``spec`` (key, prefix or glob) names."""
    glob = _GLOB.search(spec)
    try:
        if glob:
            regex = _glob_regex(spec)
            found = [s for s in storage.scan(spec[: glob.start()]) if regex.fullmatch(s.key)]
        elif not spec or spec.endswith("/"):
            found = list(storage.scan(spec))
        else:
            try:
                found = [storage.stat(spec)]
            except FileNotFoundError:  # a "directory" named without its "/"
                found = list(storage.scan(spec + "/"))
    except PermissionError as err:
        raise PermissionError(errno.EACCES, f"access to {url} refused: {err.strerror or err}") from err
    except FileNotFoundError as err:
        raise FileNotFoundError(errno.ENOENT, f"cannot list {url}: {err.strerror or err}") from err
    found = [stat for stat in found if not stat.key.endswith("/")]
    if not found:
        raise FileNotFoundError(errno.ENOENT, f"no object matches {url}")
    return found


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Regex of a glob: ``*`` and ``?`` do not match ``/``, ``**`` does, ``[...]`` as fnmatch."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):  # "**/" also matches no directory at all
            slash = pattern.startswith("**/", i)
            out.append("(?:.*/)?" if slash else ".*")
            i += 2 + slash
            continue
        char, i = pattern[i], i + 1
        k = i + (pattern[i : i + 1] == "!")
        k += pattern[k : k + 1] == "]"
        close = pattern.find("]", k) if char == "[" else -1
        if close > 0:
            body = pattern[i:close].replace("\\", "\\\\").replace("[", "\\[")
            body = "^" + body[1:] if body.startswith("!") else "\\" + body if body[0] == "^" else body
            out.append(f"(?!/)[{body}]")
            i = close + 1
        else:
            out.append({"*": "[^/]*", "?": "[^/]"}.get(char) or re.escape(char))
    return re.compile("".join(out), re.DOTALL)


# -- planning helpers ---------------------------------------------------------------------------


def _compression(obj: ObjectInfo, compression: str | None) -> str | None:
    if compression == "infer":
        compression = _SUFFIXES.get(os.path.splitext(obj.key)[1].lower())
    if compression not in (None, *_SUFFIXES.values()):
        raise ValueError(f"unsupported compression {compression!r} for {obj.url}")
    if compression == "zstd":
        try:
            zstd_decompressor()
        except ImportError:
            raise ImportError(f"reading {obj.url} needs zstd: pip install zstandard") from None
    return compression
