"""Data discovery and CSV byte ranges: plan on the client from sizes, read inside functions.

Planning (client side) touches only LIST/HEAD requests, plus one small sample per object for the
header: a URL, a glob or a list of keys becomes :class:`ObjectInfo` records, and those become
:class:`ByteRange` partitions of about ``blocksize`` bytes each. Reading (function side) aligns a
range to whole lines: a range that starts mid-line skips to the next line end, and its last line is
completed by reading past the range's end until a newline, however long that line is. Every line of
an object belongs to exactly one range: the one in which it starts.

URLs: ``s3://bucket/key-or-prefix-or-glob`` and ``cos://...`` (the same S3-compatible protocol), and
local paths (``/dir/*.csv``, ``file:///dir/*.csv``). In a glob ``*`` does not cross ``/`` and ``**``
does; only the longest literal prefix is listed. In a list, a bare key after an ``s3://`` URL is a
key of the same bucket.

Lines end with ``b"\\n"`` (so CRLF works unchanged). A range that owns no line reads as its header
alone (pandas parses that to an empty frame with the right columns), or as ``b""`` without header;
an empty object reads as ``b""``, which ``pandas.read_csv`` rejects (``EmptyDataError``): callers
treat such a partition as having no rows. Compressed objects (gzip, bz2, xz, zstd) are one range
each, read whole and decompressed; their ``header`` is taken from the decompressed start.

Quoted fields with line breaks cannot be split at line ends. An object split into several ranges is
checked: a line with an odd number of ``"`` characters (a quoted field spanning a line break)
raises ``ValueError`` naming the object and suggesting ``blocksize=None``. An object read as one
range is returned as is, and pandas reads its quoted line breaks correctly.
"""

from __future__ import annotations

import bz2
import errno
import itertools
import lzma
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .backends.storage import Storage
from .backends.storage.local import LocalStorage
from .exceptions import ConfigError

__all__ = ["ByteRange", "ObjectInfo", "discover", "iter_lines", "plan", "read_range"]

_GLOB = re.compile(r"[*?\[]")
_S3_SCHEMES = ("s3", "cos")
_S3_OPTIONS = ("key", "secret", "token", "endpoint_url", "region_name", "client_kwargs")
_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}
_MAX_CHUNK = 64 * 2**20
#: A line with an odd number of quotes: a quoted field that continues on the next line.
_ODD_QUOTES = re.compile(rb'^[^"\n]*"(?:[^"\n]*"[^"\n]*")*[^"\n]*$', re.MULTILINE)


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
    Keys ending in ``/`` (directory markers) are skipped; objects come sorted by key.

    Parameters
    ----------
    urlpath : str or sequence of str
        ``s3://`` / ``cos://`` URLs, local paths or ``file://`` URLs.
    storage_options : dict, optional
        S3 options named as in s3fs: ``key``, ``secret``, ``token``, ``endpoint_url``,
        ``region_name`` and ``client_kwargs``. By default the settings ``faas.s3.*``.

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
    parsed = [_parse(item) for item in items]
    scheme, bucket = parsed[0][:2]
    if scheme in _S3_SCHEMES:
        specs = []
        for item, (sch, bkt, key) in zip(items, parsed, strict=True):
            if not sch and not os.path.isabs(key):  # a bare key of the first URL's bucket
                sch, bkt = scheme, bucket
            if sch not in _S3_SCHEMES or bkt != bucket:
                raise ValueError(f"all URLs must name one bucket: {items[0]!r} and {item!r} do not")
            specs.append((item, key))
        storage: Storage = _s3_storage(bucket, storage_options)
        base = f"{scheme}://{bucket}/"
    else:
        if any(sch in _S3_SCHEMES for sch, _, _ in parsed):
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
    found: dict[str, int] = {}
    for item, spec in specs:
        found.update(_match(storage, spec, item))
    return storage, [ObjectInfo(base + key, key, size) for key, size in sorted(found.items())]


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
        more only if the line is longer) and put in every range's ``header``.
    """
    if blocksize is not None and (isinstance(blocksize, bool) or not isinstance(blocksize, int)):
        raise TypeError(f"blocksize must be an int or None, got {blocksize!r}")
    if (blocksize is not None and blocksize < 1) or sample_bytes < 1:
        raise ValueError(f"blocksize and sample_bytes must be >= 1, got {blocksize}, {sample_bytes}")
    comps = [_compression(obj, compression) for obj in objects]

    def first_line(job: tuple[ObjectInfo, str | None]) -> bytes:
        obj, comp = job
        chunks = _raw_chunks(storage, obj.key, 0, sample_bytes, sample_bytes, _MAX_CHUNK)
        parts = []
        for chunk in _decompressed(chunks, comp, strict=False) if comp else chunks:
            newline = chunk.find(b"\n")
            parts.append(chunk if newline < 0 else chunk[: newline + 1])
            if newline >= 0:
                break
        return b"".join(parts)

    heads = [b""] * len(objects)
    if header and objects:
        with ThreadPoolExecutor(min(16, len(objects))) as pool:
            heads = list(pool.map(first_line, zip(objects, comps, strict=True)))
    locator, ranges = storage.locator(), []
    for obj, comp, head in zip(objects, comps, heads, strict=True):
        count = 1 if comp or blocksize is None else max(1, -(-obj.size // blocksize))
        cuts = [i * obj.size // count for i in range(count + 1)]
        for index, (start, end) in enumerate(itertools.pairwise(cuts)):
            ranges.append(ByteRange(locator, obj.key, obj.url, obj.size, start, end, index, comp, head))
    return ranges


def read_range(storage: Storage, rng: ByteRange, *, read_ahead: int = 1 << 20) -> bytes:
    """The bytes of the lines starting in ``rng``, header first (decompressed for compressed objects).

    The range is read with one ranged GET of ``[start - 1, end + read_ahead)``; a last line that
    continues past that is completed with further GETs of growing size (``read_ahead``, doubled).

    Raises
    ------
    ValueError
        Naming the object, if a quoted field with a line break crosses the range's boundary.
    """
    if read_ahead < 1:
        raise ValueError(f"read_ahead must be >= 1, got {read_ahead}")
    prefix = rng.header if rng.start > 0 and not rng.compression else b""
    first = rng.end - rng.start + 1 + read_ahead
    data = b"".join([prefix, *_owned(storage, rng, first, read_ahead, _MAX_CHUNK)])
    split = rng.start > 0 or rng.end < rng.size
    quoted = split and not rng.compression and data.find(b'"', len(prefix)) >= 0
    if quoted and _ODD_QUOTES.search(data, len(prefix)):
        raise ValueError(
            f"{rng.url}: a quoted field contains a line break (in bytes {rng.start}-{rng.end}), "
            "so this object cannot be split into byte ranges; read it with blocksize=None"
        )
    return data


def iter_lines(storage: Storage, rng: ByteRange, *, read_ahead: int = 1 << 20) -> Iterator[bytes]:
    """The lines starting in ``rng`` (header excluded), streamed: for PyWren-style chunk functions.

    Each line keeps its line end (the object's last line may have none). The header line (the first
    line of the object when it was planned with ``header=True``) is never yielded. Objects are read
    in GETs of ``read_ahead`` bytes; lines are not checked for quoted line breaks.
    """
    if read_ahead < 1:
        raise ValueError(f"read_ahead must be >= 1, got {read_ahead}")
    skip = rng.start == 0 and bool(rng.header)
    carry = b""
    for chunk in _owned(storage, rng, read_ahead, read_ahead, read_ahead):
        lines = (carry + chunk).split(b"\n")
        carry = lines.pop()
        for line in lines:
            if skip:
                skip = False
                continue
            yield line + b"\n"
    if carry and not skip:
        yield carry


# -- discovery ---------------------------------------------------------------------------------


def _parse(item: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key spec)`` of an S3 URL, ``("file" or "", "", path)`` otherwise."""
    scheme, sep, rest = item.partition("://")
    if not sep:
        return "", "", item
    scheme = scheme.lower()
    if scheme == "file":
        return "file", "", rest
    if scheme not in _S3_SCHEMES:
        raise ValueError(f"unsupported URL {item!r}: use s3://, cos://, file:// or a local path")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"no bucket in URL {item!r}")
    return scheme, bucket, key


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


def _s3_storage(bucket: str, storage_options: dict[str, Any] | None) -> Storage:
    from .backends.storage.s3 import S3Storage

    if storage_options is None:
        import dask.config

        from . import config as _config  # noqa: F401 - registers the faas.* defaults

        settings = dask.config.get("faas.s3", default=None) or {}
        names = {"endpoint-url", "region-name", "key", "secret", "token"}
        opts = {k.replace("-", "_"): v for k, v in settings.items() if k.replace("_", "-") in names}
    else:
        opts = dict(storage_options)
        unknown = sorted(set(opts) - set(_S3_OPTIONS))
        if unknown:
            raise ConfigError(f"unsupported storage_options {unknown}; supported: {', '.join(_S3_OPTIONS)}")
    client_kwargs = dict(opts.pop("client_kwargs", None) or {})
    for name in ("endpoint_url", "region_name"):  # the locator must carry them, not client_kwargs
        value = client_kwargs.pop(name, None)
        if opts.get(name) is None:
            opts[name] = value
    opts = {k: v for k, v in opts.items() if v is not None}
    return S3Storage(bucket, client_kwargs=client_kwargs or None, **opts)


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


def _match(storage: Storage, spec: str, url: str) -> list[tuple[str, int]]:
    """``(key, size)`` of the objects that ``spec`` (key, prefix or glob) names."""
    glob = _GLOB.search(spec)
    try:
        if glob:
            regex = _glob_regex(spec)
            found = [(k, s) for k, s in storage.list(spec[: glob.start()]) if regex.fullmatch(k)]
        elif not spec or spec.endswith("/"):
            found = list(storage.list(spec))
        else:
            try:
                found = [(spec, storage.size(spec))]
            except FileNotFoundError:  # a "directory" named without its "/"
                found = list(storage.list(spec + "/"))
    except PermissionError as err:
        raise PermissionError(errno.EACCES, f"access to {url} refused: {err.strerror or err}") from err
    except FileNotFoundError as err:
        raise FileNotFoundError(errno.ENOENT, f"cannot list {url}: {err.strerror or err}") from err
    found = [(key, size) for key, size in found if not key.endswith("/")]
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


# -- reading -----------------------------------------------------------------------------------


def _compression(obj: ObjectInfo, compression: str | None) -> str | None:
    if compression == "infer":
        compression = _SUFFIXES.get(os.path.splitext(obj.key)[1].lower())
    if compression not in (None, *_SUFFIXES.values()):
        raise ValueError(f"unsupported compression {compression!r} for {obj.url}")
    if compression == "zstd":
        try:
            _zstd()
        except ImportError:
            raise ImportError(f"reading {obj.url} needs zstd: pip install zstandard") from None
    return compression


def _zstd() -> Any:
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14

        return zstd.ZstdDecompressor()
    except ImportError:
        import zstandard  # type: ignore[import-not-found]

        return zstandard.ZstdDecompressor().decompressobj()


_DECOMPRESSORS: dict[str, Callable[[], Any]] = {
    "gzip": lambda: zlib.decompressobj(wbits=47),
    "bz2": bz2.BZ2Decompressor,
    "xz": lzma.LZMADecompressor,
    "zstd": _zstd,
}


def _raw_chunks(storage: Storage, key: str, pos: int, first: int, step: int, cap: int) -> Iterator[bytes]:
    """Bytes of ``key`` from ``pos`` to its end, in GETs of ``first``, then ``step`` doubling to ``cap``."""
    want, following = first, step
    while True:
        data = storage.get(key, pos, pos + want)
        if data:
            yield data
        if len(data) < want:
            return
        pos += len(data)
        want, following = following, min(2 * following, max(cap, step))


def _decompressed(chunks: Iterable[bytes], compression: str, *, strict: bool) -> Iterator[bytes]:
    """Decompress a stream of (possibly concatenated) compressed members."""
    make = _DECOMPRESSORS[compression]
    decompressor, fed = make(), False
    for chunk in chunks:
        while chunk:
            fed = True
            out = decompressor.decompress(chunk)
            if out:
                yield out
            if getattr(decompressor, "eof", False):  # a member ended: more may follow
                chunk, decompressor, fed = decompressor.unused_data, make(), False
            else:
                chunk = b""
    if strict and fed:
        raise EOFError(f"compressed ({compression}) data ended before the end-of-stream marker")


def _owned(storage: Storage, rng: ByteRange, first: int, step: int, cap: int) -> Iterator[bytes]:
    """The bytes of the lines starting in ``[rng.start, rng.end)``, header not added, in pieces."""
    if rng.compression:
        chunks = _raw_chunks(storage, rng.key, 0, first, step, cap)
        yield from _decompressed(chunks, rng.compression, strict=True)
        return
    start, end = rng.start, rng.end
    if start >= end:
        return
    pos = max(start - 1, 0)  # offset of the next chunk; byte start - 1 tells if a line starts at start
    seeking = start > 0
    for chunk in _raw_chunks(storage, rng.key, pos, first, step, cap):
        lo = 0
        if seeking:  # the first line start in [start, end) follows a "\n" in [start - 1, end - 1)
            newline = chunk.find(b"\n", 0, max(end - 1 - pos, 0))
            if newline < 0:
                pos += len(chunk)
                if pos >= end - 1:
                    return
                continue
            seeking, lo = False, newline + 1
        newline = chunk.find(b"\n", max(end - 1 - pos, lo))  # the last line ends at a "\n" >= end - 1
        if newline >= 0:
            yield chunk[lo : newline + 1]
            return
        if lo < len(chunk):
            yield chunk[lo:]
        pos += len(chunk)
