"""Reading line-aligned byte ranges of objects: the function side of :mod:`dask_faas.partition`.

A :class:`ByteRange` (planned on the client by :func:`dask_faas.partition.plan`) is read inside a
function. A range that starts mid-line skips to the next line end, and its last line is completed by
reading past the range's end until a newline, however long that line is. Every line of an object
belongs to exactly one range: the one in which it starts. Lines end with ``b"\\n"`` (so CRLF works
unchanged). Compressed objects (gzip, bz2, xz, zstd) are one range each, read whole and decompressed.

Quoted fields with line breaks cannot be split at line ends. The ranges of an object split into
several are checked as pandas' parser reads them: a quote character opens a quoted field only at
the start of a field (at the line start or right after the delimiter); inside such a field ``""``
is an escaped quote and a lone quote closes it; any other quote is a literal character (``5" screen``).
A line that ends inside a quoted field raises ``ValueError`` naming the object and suggesting
``blocksize=None``. An object read as one range is returned as is, and pandas reads its quoted line
breaks correctly. Partitions without the quote character are not scanned. Not modelled: pandas'
``escapechar``, ``skipinitialspace`` and ``doublequote=False``.
"""

from __future__ import annotations

import bz2
import csv
import functools
import lzma
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .backends.storage import Storage

__all__ = ["ByteRange", "iter_lines", "quote_options", "read_range", "read_sample"]

#: The largest GET when a long line is completed (the read-ahead doubles up to this).
MAX_CHUNK = 64 * 2**20
_WHITESPACE = (b" ", b"\t")  # the delimiters of sep=r"\s+" in pandas' C parser


@dataclass(frozen=True)
class ByteRange:
    """A partition: the lines of one object that start in ``[start, end)``.

    Parameters
    ----------
    locator : dict
        Storage locator of the object's bucket or directory (no credentials).
    key, url, size
        The object, as in :class:`dask_faas.partition.ObjectInfo`.
    start, end : int
        Nominal byte range; ``end`` is exclusive (``end == size`` for the last range).
    index : int
        Position of this range among the object's ranges.
    compression : str or None
        ``"gzip"``, ``"bz2"``, ... for a compressed object (always one range for the whole object).
    header : bytes
        The object's header line (with its line end) to put in front of ranges that start after it;
        empty when there is no header.
    version : str or None
        The object's version when it was planned (:attr:`~dask_faas.backends.storage.base.ObjectStat.version`,
        S3's ETag): every read of the range asks for it, so an object overwritten after planning
        fails naming it instead of mixing versions, and a stale replica is read again.
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
    version: str | None = None


def read_range(
    storage: Storage,
    rng: ByteRange,
    *,
    read_ahead: int = 1 << 20,
    sep: str | None = ",",
    quotechar: str | None = '"',
) -> bytes:
    """The bytes of the lines starting in ``rng``, header first (decompressed for compressed objects).

    The range is read with one ranged GET of ``[start - 1, end + read_ahead)``; a last line that
    continues past that is completed with further GETs of growing size (``read_ahead``, doubled).

    Parameters
    ----------
    storage : Storage
        Where the object is.
    rng : ByteRange
        The range to read.
    read_ahead : int
        Bytes read past ``rng.end`` with the first GET, to complete the last line.
    sep : str or None
        The delimiter, as :func:`pandas.read_csv` takes it: one character; ``r"\\s+"`` (spaces
        and tabs); ``None`` (sniffed from the first line, as pandas does); a longer regex is not
        checked (pandas then reads each line as one record and never joins lines on quotes).
    quotechar : str or None
        The quote character; ``None`` (as for ``quoting=csv.QUOTE_NONE``) skips the check.
        Non-ASCII characters are looked for as UTF-8.

    Raises
    ------
    ValueError
        Naming the object, if a quoted field with a line break crosses the range's boundary.
    """
    if read_ahead < 1:
        raise ValueError(f"read_ahead must be >= 1, got {read_ahead}")
    if quotechar is not None and len(quotechar) != 1:
        raise ValueError(f"quotechar must be one character, got {quotechar!r}")
    prefix = rng.header if rng.start > 0 and not rng.compression else b""
    first = rng.end - rng.start + 1 + read_ahead
    data = b"".join([prefix, *_owned(storage, rng, first, read_ahead, MAX_CHUNK)])
    split = rng.start > 0 or rng.end < rng.size
    if split and not rng.compression and quotechar and _open_at_line_end(data, len(prefix), sep, quotechar):
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


def quote_options(read_csv_kwargs: Mapping[str, Any]) -> dict[str, str | None]:
    """The ``sep`` and ``quotechar`` keywords of :func:`read_range` for :func:`pandas.read_csv` keywords.

    ``delimiter`` wins over ``sep`` as in pandas, ``delim_whitespace=True`` means ``r"\\s+"``, and
    ``quoting=csv.QUOTE_NONE`` means no quote character.
    """
    sep = read_csv_kwargs.get("delimiter")
    if sep is None:
        sep = read_csv_kwargs.get("sep", ",")
    if read_csv_kwargs.get("delim_whitespace"):
        sep = r"\s+"
    if read_csv_kwargs.get("quoting", csv.QUOTE_MINIMAL) == csv.QUOTE_NONE:
        return {"sep": sep, "quotechar": None}
    return {"sep": sep, "quotechar": read_csv_kwargs.get("quotechar", '"')}


def first_line(
    storage: Storage, key: str, compression: str | None, sample_bytes: int, version: str | None = None
) -> bytes:
    """The first line of ``key`` (of ``version``) with its line end: ``sample_bytes`` read, more only
    for a longer line."""
    chunks = raw_chunks(storage, key, 0, sample_bytes, sample_bytes, MAX_CHUNK, version)
    parts = []
    for chunk in decompressed(chunks, compression, strict=False) if compression else chunks:
        newline = chunk.find(b"\n")
        parts.append(chunk if newline < 0 else chunk[: newline + 1])
        if newline >= 0:
            break
    return b"".join(parts)


def read_sample(storage: Storage, rng: ByteRange, sample_bytes: int) -> tuple[bytes, bool]:
    """The start of ``rng``'s object (decompressed) for inferring dtypes, and whether it is all of it.

    At least ``sample_bytes`` are read, and more until the sample ends at a line end and holds a
    complete row after ``rng.header``: a line ending in ``b"\\n"`` with something other than spaces,
    tabs and ``b"\\r"`` (pandas skips the others as blank). It grows with ranged GETs of
    ``sample_bytes``, then doubling up to :data:`MAX_CHUNK`, bounded only by the object's end (as
    :func:`dask.dataframe.read_csv`'s sample grows to the next line end).

    Parameters
    ----------
    storage : Storage
        Where the object is.
    rng : ByteRange
        Any range of the object: its ``key``, ``size``, ``compression`` and ``header`` are used.
    sample_bytes : int
        The least number of bytes of the sample (``>= 1``).

    Returns
    -------
    sample : bytes
        A prefix of the object made of whole lines (the object itself if it has no such row).
    whole : bool
        True if the sample is the whole object.
    """
    if sample_bytes < 1:
        raise ValueError(f"sample_bytes must be >= 1, got {sample_bytes}")
    chunks = raw_chunks(storage, rng.key, 0, sample_bytes, sample_bytes, MAX_CHUNK, rng.version)
    stream = decompressed(chunks, rng.compression, strict=False) if rng.compression else chunks
    buffer = bytearray()
    line_start, row_end = len(rng.header), -1  # the start of the next line to look at for a row
    for chunk in stream:
        buffer += chunk
        while row_end < 0:
            newline = buffer.find(b"\n", line_start)
            if newline < 0:
                break
            if buffer[line_start:newline].strip(b" \t\r"):
                row_end = newline + 1
            line_start = newline + 1
        if row_end < 0:
            continue
        newline = buffer.find(b"\n", max(sample_bytes - 1, row_end - 1))
        if newline < 0:
            continue
        cut = newline + 1
        if cut < len(buffer):
            return bytes(buffer[:cut]), False
        if not rng.compression:
            return bytes(buffer), cut >= rng.size
        return bytes(buffer), next(stream, None) is None  # a compressed stream may hold more
    return bytes(buffer), True


# -- quoted line breaks ------------------------------------------------------------------------


def _open_at_line_end(data: bytes, pos: int, sep: str | None, quotechar: str) -> bool:
    """Whether a line of ``data[pos:]`` (which starts at a line start) ends inside a quoted field."""
    quote = quotechar.encode()
    if data.find(quote, pos) < 0:
        return False
    if sep is None:  # pandas' python engine sniffs the delimiter from the first line it is given
        end = data.find(b"\n")
        try:
            sep = csv.Sniffer().sniff(data[: end if end >= 0 else None].decode("utf-8", "replace")).delimiter
        except csv.Error:
            return False  # pandas cannot read it either, and says so
    if sep == r"\s+":
        delimiters = _WHITESPACE
    elif len(sep) == 1:
        delimiters = (sep.encode(),)
    else:
        return False
    return any(_quoted_fields(delimiters, quote).findall(data, pos))


@functools.lru_cache(maxsize=32)
def _quoted_fields(delimiters: tuple[bytes, ...], quote: bytes) -> re.Pattern[bytes]:
    """Matches quoted fields left to right; group 1 (a ``"\\n"``) is set when one spans a line end.

    A match starts at a quote that opens a field: at the start of the data, or after a line end or
    a delimiter. A closed field takes the text after it up to the next quote, and up to 1024 more
    closed fields in a row, so that matches (and the list ``findall`` builds) stay few.
    """
    q = re.escape(quote)
    after = b"|".join(rb"(?<=%s%s)" % (re.escape(d), q) for d in (b"\n", *delimiters))
    opener = rb"%s(?:(?<=^%s)|%s)" % (q, q, after)
    body = rb"[^%s\n]*(?:%s%s[^%s\n]*)*" % (q, q, q, q)  # "" is an escaped quote
    closed = rb"%s%s(?!%s)[^%s]*" % (body, q, q, q)  # then literal text up to the next quote
    return re.compile(rb"%s(?:%s(?:%s%s){0,1024}|%s(\n))" % (opener, closed, opener, closed, body))


# -- chunks and decompression ------------------------------------------------------------------


def zstd_decompressor() -> Any:
    """A zstd decompressor (``compression.zstd`` on Python >= 3.14, else ``zstandard``)."""
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
    "zstd": zstd_decompressor,
}


def raw_chunks(
    storage: Storage, key: str, pos: int, first: int, step: int, cap: int, version: str | None = None
) -> Iterator[bytes]:
    """Bytes of ``key`` from ``pos`` to its end, in GETs of ``first``, then ``step`` doubling to ``cap``;
    each GET asks for ``version`` (see :meth:`~dask_faas.backends.storage.base.Storage.get`)."""
    want, following = first, step
    pinned = {} if version is None else {"version": version}  # unversioned: any get() signature
    while True:
        data = storage.get(key, pos, pos + want, **pinned)
        if data:
            yield data
        if len(data) < want:
            return
        pos += len(data)
        want, following = following, min(2 * following, max(cap, step))


def decompressed(chunks: Iterable[bytes], compression: str, *, strict: bool) -> Iterator[bytes]:
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
        chunks = raw_chunks(storage, rng.key, 0, first, step, cap, rng.version)
        yield from decompressed(chunks, rng.compression, strict=True)
        return
    start, end = rng.start, rng.end
    if start >= end:
        return
    pos = max(start - 1, 0)  # offset of the next chunk; byte start - 1 tells if a line starts at start
    seeking = start > 0
    for chunk in raw_chunks(storage, rng.key, pos, first, step, cap, rng.version):
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
