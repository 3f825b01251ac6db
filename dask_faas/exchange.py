"""The storage exchange inside functions: the mappers, combiners and reducers of a dataframe shuffle.

:mod:`dask_faas.shuffle` builds the graph; this module is what its tasks run. Object storage is the
only medium, and every object is written once, by one attempt, and read only through the index that
the graph accepted from that attempt:

- a **mapper** splits its partition into the ``R`` output buckets and writes them as ONE object,
  ``<job>/<compute>/x/<hh>/<exchange>-m<i>.<call>.<attempt>.<delivery>`` (``hh``: a hash byte spreading the
  objects over 256 key prefixes, as S3's request limits are per prefix). Its task result is the small
  :class:`Index` (the object's key and the size of each bucket), returned inline with the task result:
  that is the commit. A retried or duplicated mapper writes another key (call, attempt and delivery
  are in the name), and reducers only ever read the key of the index the scheduler accepted;
- a **reducer** reads its bucket from every source object with a ranged GET, in parallel
  (:data:`READ_THREADS`), checks each bucket's tag, decodes the pieces and concatenates them in
  mapper order with dask's own ``_concat``, as the task shuffle does;
- a **combiner** (the two-level exchange) reads the whole objects of a group of mappers, one GET each,
  and writes one object holding, per bucket, the pieces of the whole group (bytes are moved, not
  decoded), so reducers make one ranged GET per group instead of one per mapper.

Integrity: a ranged read cannot be checked against a whole-object signature, so each bucket starts
with its own tag, ``HMAC-SHA256(signing key, domain | object key | bucket number | payload)``. The
object key and the byte range come from the index, which travels inside signed messages; a bucket
moved to another object, another position or altered fails its check.

Encoding: each piece (the rows of one mapper for one bucket) is pickled with protocol 5 and its
buffers out of band: numpy and Arrow buffers are copied once into the object and decoded without
a second pass, and pickle is exact for every pandas dtype. ``benchmarks/bench_shuffle.py`` measures
the candidates on one mapper's 13 MB partition split into 40 buckets; on the project's 2-CPU machine:
4.0-4.5 GB/s to encode and 3.0-3.5 GB/s to decode, against 2.5 / 2.0-2.2 GB/s for pickle in band
and 0.36-0.38 / 0.71-0.84 GB/s for an Arrow IPC stream per bucket.

Layouts (little endian, 8-byte aligned)::

    object  = bucket*                      (sizes in the Index; size 0: bucket not needed)
    bucket  = tag[32] payload
    payload = u32 npieces, u32 0, u64 length[npieces], piece*
    piece   = u32 nframes, u32 0, u64 length[nframes], (frame, zero padding to 8)*
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
import struct
import threading
from array import array
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import cloudpickle

from . import worker
from .exceptions import IntegrityError
from .store import SignedStore

__all__ = [
    "READ_THREADS",
    "Index",
    "Spec",
    "assign_merge_partitions",
    "combine",
    "map_partition",
    "merge_partition",
    "reduce_partition",
]

#: Parallel ranged reads of one function (bounded: a function has one CPU's share and a few sockets).
READ_THREADS = 16

_TAG = 32
_DOMAIN = b"dask-faas-exchange\0"
_COUNT = struct.Struct("<II")


@dataclass(frozen=True)
class Spec:
    """What every task of one exchange knows; travels in the tasks' arguments.

    Parameters
    ----------
    name : str
        Short name of the exchange, unique within its compute (a hash of the shuffle's name).
    compute : str or None
        The compute's name: objects go under ``<job prefix>/<compute>/x/``, deleted at its end.
    npartitions : int
        Number of buckets (output partitions before any filtering).
    by : str or list
        Column(s) that decide the bucket, as for dask's ``shuffle_group``.
    ignore_index : bool
        Drop the index of the pieces (dask's task shuffle does, for ``ignore_index=True``).
    wanted : frozenset of int, optional
        The buckets some reducer reads (the shuffle was filtered); others are not written.
    assigned : bool
        ``by`` is one column that holds the bucket number already (a P2P hash join's).
    """

    name: str
    compute: str | None
    npartitions: int
    by: Any
    ignore_index: bool
    wanted: frozenset[int] | None = None
    assigned: bool = False

    def wants(self, bucket: int) -> bool:
        return self.wanted is None or bucket in self.wanted


@dataclass(frozen=True)
class Index:
    """A committed mapper (or combiner) object: its key and the byte size of each bucket in it."""

    key: str
    sizes: array

    def span(self, bucket: int) -> tuple[int, int]:
        """Byte range ``[start, end)`` of ``bucket`` in the object."""
        start = sum(self.sizes[:bucket])
        return start, start + self.sizes[bucket]


# -- the tasks ----------------------------------------------------------------------------------


def map_partition(df: Any, spec: Spec, mapper: int) -> Index:
    """Split ``df`` into ``spec.npartitions`` buckets and write them as one object."""
    from dask.dataframe.dispatch import group_split_dispatch
    from dask.dataframe.shuffle import shuffle_group

    n = spec.npartitions
    if spec.assigned:  # the column holds the output partition; with a filter, larger ones are unwanted
        ind = df[spec.by].to_numpy()
        if spec.wanted is not None and len(ind) and ind.max() >= n:
            df, ind = df[ind < n], ind[ind < n]
        groups = group_split_dispatch(df, ind, n, ignore_index=spec.ignore_index)
    else:  # exactly the split of dask's single-stage task shuffle
        groups = shuffle_group(df, spec.by, 0, n, n, spec.ignore_index, n)
    buckets = [_payload([_encode(groups[r])]) if spec.wants(r) else None for r in range(n)]
    return _write(spec, f"m{mapper}", buckets)


def combine(spec: Spec, group: int, sources: list[Index]) -> Index:
    """Second level: rewrite a group of mapper objects as one object with the same buckets."""
    context = worker.current()
    store = context.store

    def whole(index: Index) -> memoryview:
        data = memoryview(context.store.storage.get(index.key))
        if len(data) != sum(index.sizes):
            raise IntegrityError(
                f"exchange object {index.key!r} has {len(data)} bytes, not {sum(index.sizes)}"
            )
        return data

    objects = list(_pool().map(whole, sources))
    buckets: list[list[Any] | None] = []
    for r in range(spec.npartitions):
        if not spec.wants(r):
            buckets.append(None)
            continue
        pieces = []
        for index, data in zip(sources, objects, strict=True):
            start, end = index.span(r)
            pieces.extend([p] for p in _pieces(_verified(store, index.key, r, data[start:end])))
        buckets.append(_payload(pieces))
    return _write(spec, f"c{group}", buckets)


def reduce_partition(spec: Spec, bucket: int, sources: list[Index], drop: Any = None) -> Any:
    """Output partition ``bucket``: its pieces from every source, concatenated in mapper order."""
    context = worker.current()
    return _assemble(spec, _fetch(context, [(index, bucket) for index in sources]), drop)


def merge_partition(
    left: Spec,
    right: Spec,
    bucket: int,
    left_sources: list[Index],
    right_sources: list[Index],
    column: str,
    **kwargs: Any,
) -> Any:
    """Output partition ``bucket`` of a hash join: both sides' buckets, then dask's ``merge_chunk``."""
    from dask.dataframe.multi import merge_chunk

    context = worker.current()
    jobs = [(index, bucket) for index in [*left_sources, *right_sources]]
    payloads = _fetch(context, jobs)
    frame_l = _assemble(left, payloads[: len(left_sources)], column)
    frame_r = _assemble(right, payloads[len(left_sources) :], column)
    return merge_chunk(frame_l, frame_r, **kwargs)


def assign_merge_partitions(df: Any, on: Any, column: str, npartitions: int, index_merge: bool) -> Any:
    """``df`` with the bucket of each row in ``column``: the hashing of dask's P2P hash join."""
    import numpy as np
    from dask.dataframe.dask_expr._shuffle import _is_numeric_cast_type, _select_columns_or_index
    from dask.dataframe.shuffle import partitioning_index

    if index_merge:
        index = df[[]].copy()
        index["_index"] = df.index
    else:
        index = _select_columns_or_index(df, on)
    casts = {col: np.float64 for col, dtype in index.dtypes.items() if _is_numeric_cast_type(dtype)}
    if casts:
        index = index.astype(casts, errors="ignore")
    return df.assign(**{column: partitioning_index(index, npartitions)})


# -- objects ------------------------------------------------------------------------------------


def _write(spec: Spec, part: str, buckets: list[list[Any] | None]) -> Index:
    """Write the buckets as one object under a per-attempt key; return its index (the commit)."""
    context = worker.current()
    hh = hashlib.blake2b(f"{spec.name}/{part}".encode(), digest_size=1).hexdigest()
    base = context.store.prefix + (f"/{spec.compute}/x" if spec.compute else "/x")
    key = f"{base}/{hh}/{spec.name}-{part}.{context.tag}"
    store = context.store
    chunks: list[Any] = []
    sizes = array("Q")
    for r, payload in enumerate(buckets):
        if payload is None:
            sizes.append(0)
            continue
        chunks.append(_mac(store, key, r, payload))
        chunks.extend(payload)
        sizes.append(_TAG + sum(len(c) for c in payload))
    context.store.storage.put(key, b"".join(chunks))
    return Index(key, sizes if max(sizes, default=0) >> 32 else array("I", sizes))


def _fetch(context: worker.Context, jobs: list[tuple[Index, int]]) -> list[memoryview | None]:
    """The verified payloads of ``(index, bucket)`` pairs, read in parallel with ranged GETs."""
    store = context.store

    def read(job: tuple[Index, int]) -> memoryview | None:
        index, bucket = job
        start, end = index.span(bucket)
        if start == end:
            return None
        data = context.store.storage.get(index.key, start, end)
        payload = _verified(store, index.key, bucket, memoryview(data))
        return memoryview(bytearray(payload))  # writable memory for the arrays built on it

    if len(jobs) == 1:
        return [read(jobs[0])]
    return list(_pool().map(read, jobs))


def _assemble(spec: Spec, payloads: list[memoryview | None], drop: Any) -> Any:
    from dask.dataframe.core import _concat

    pieces = [_decode(piece) for payload in payloads if payload is not None for piece in _pieces(payload)]
    out = _concat(pieces, spec.ignore_index)
    if drop is not None:
        out = out.drop(columns=drop)
    return out


def _verified(store: SignedStore, key: str, bucket: int, data: memoryview) -> memoryview:
    payload = data[_TAG:]
    if len(data) < _TAG or not hmac.compare_digest(data[:_TAG], _mac(store, key, bucket, [payload])):
        raise IntegrityError(f"bucket {bucket} of exchange object {key!r} failed its tag check (tampered?)")
    return payload


def _mac(store: SignedStore, key: str, bucket: int, chunks: Iterable[Any]) -> bytes:
    return store.mac(_DOMAIN + f"{key}\0{bucket}\0".encode(), *chunks)


# -- encoding -----------------------------------------------------------------------------------


def _frames(count: int, lengths: list[int]) -> bytes:
    return _COUNT.pack(count, 0) + struct.pack(f"<{count}Q", *lengths)


def _encode(obj: Any) -> list[Any]:
    """One piece: the pickle (protocol 5) and its out-of-band buffers, each padded to 8 bytes."""
    buffers: list[pickle.PickleBuffer] = []
    try:  # the C pickler: cloudpickle costs ~40 us more per piece, and pieces can be many and small
        head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    except (pickle.PicklingError, TypeError, AttributeError):  # e.g. an object column holding lambdas
        buffers.clear()
        head = cloudpickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    frames = [head, *(b.raw() for b in buffers)]
    chunks: list[Any] = [_frames(len(frames), [len(f) for f in frames])]
    for frame in frames:
        chunks.append(frame)
        if pad := -len(frame) % 8:
            chunks.append(bytes(pad))
    return chunks


def _decode(piece: memoryview) -> Any:
    count, _ = _COUNT.unpack_from(piece)
    lengths = struct.unpack_from(f"<{count}Q", piece, _COUNT.size)
    starts = accumulate((-(-n // 8) * 8 for n in lengths), initial=_COUNT.size + 8 * count)
    frames = [piece[s : s + n] for s, n in zip(starts, lengths)]  # noqa: B905 - starts is longer
    return pickle.loads(frames[0], buffers=frames[1:])


def _payload(pieces: list[list[Any]]) -> list[Any]:
    """A bucket's payload from its pieces (each a list of chunks)."""
    lengths = [sum(len(c) for c in piece) for piece in pieces]
    return [_frames(len(pieces), lengths), *(c for piece in pieces for c in piece)]


def _pieces(payload: memoryview) -> list[memoryview]:
    count, _ = _COUNT.unpack_from(payload)
    lengths = struct.unpack_from(f"<{count}Q", payload, _COUNT.size)
    start = _COUNT.size + 8 * count
    out = []
    for n in lengths:
        out.append(payload[start : start + n])
        start += n
    if start != len(payload):
        raise IntegrityError(f"exchange bucket of {len(payload)} bytes holds {start}")
    return out


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads of this (warm) function process for the exchange's reads."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="dask-faas-exchange")
        return _POOL
