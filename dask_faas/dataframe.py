"""Dask DataFrames whose partitions are read inside functions, straight from storage.

:func:`read_csv` plans on the client from listings and object sizes (plus the header and a dtype
sample of the first object) and builds the collection with :func:`dask.dataframe.from_map`, so
building it computes nothing and no data passes through the client: each partition is one
:class:`~dask_faas.partition.ByteRange`, read by the function that parses it (:class:`CSVReader`).
Column selections (``df[["a", "b"]]``, ``usecols=``) reach that reader as ``usecols``.

Credentials never travel with a partition: inside a function the storage is rebuilt from its
locator (bucket, endpoint, region) with the credentials of the function's own environment.

The writers, :func:`to_csv` and :func:`to_parquet`, live in :mod:`dask_faas.writers` and are
re-exported here, so that ``from dask_faas.dataframe import read_csv, to_csv, to_parquet`` works.

This is the only module of dask-faas that imports :mod:`dask.dataframe`.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import dask.dataframe as dd
import numpy as np
import pandas as pd
from dask.dataframe.utils import clear_known_categories
from dask.utils import parse_bytes
from pandas.api.types import (
    is_datetime64_any_dtype,
    is_float_dtype,
    is_integer_dtype,
    is_object_dtype,
)

from . import partition
from .backends.storage import Storage, storage_from_locator
from .writers import to_csv, to_parquet

__all__ = ["read_csv", "to_csv", "to_parquet"]

_UNSUPPORTED = ("iterator", "chunksize", "nrows")
_ONE_RANGE_ONLY = ("skiprows", "skipfooter")
#: Bytes of each object's start read for its header line (more only if the line is longer).
_HEADER_SAMPLE = 4096

# -- read_csv ------------------------------------------------------------------------------------------


def read_csv(
    urlpath: str | Sequence[str],
    blocksize: int | str | None = "64MB",
    lineterminator: str | None = None,
    compression: str | None = "infer",
    sample: int = 65536,
    sample_rows: int | None = None,
    enforce: bool = False,
    assume_missing: bool = False,
    storage_options: dict[str, Any] | None = None,
    include_path_column: bool | str = False,
    **kwargs: Any,
) -> dd.DataFrame:
    """Read CSV objects into a Dask DataFrame whose partitions are read inside functions.

    The signature mirrors :func:`dask.dataframe.read_csv`. The client lists the objects and reads
    the header and a dtype sample only; each partition, a line-aligned byte range of about
    ``blocksize`` bytes (a whole object when compressed), is read and parsed by the function that
    runs its task. ``df[["a", "b"]]`` and ``usecols=`` make the functions parse only those columns.

    Parameters
    ----------
    urlpath : str or list of str
        ``s3://bucket/prefix/``, ``s3://bucket/year=2019/*.csv``, ``cos://...``, a local path or glob,
        or a list of such (one bucket or directory).
    blocksize : int, str or None
        Bytes per partition (``"64MB"``, ``25e6``); ``None`` for one partition per object.
    lineterminator : None or "\\n"
        Lines end with ``\\n`` (``\\r\\n`` included); other terminators are not supported.
    compression : str or None
        ``"infer"`` (from the suffix), ``"gzip"``, ``"bz2"``, ``"xz"``, ... or ``None``.
    sample : int
        Bytes of the first object read on the client to infer the dtypes; the sample grows to the
        end of its last line, and further until it holds a complete row (as in dask).
    sample_rows : int, optional
        Rows of the sample used for inference (default: every whole line of the sample).
    enforce : bool
        Check that every partition has the columns of the sample.
    assume_missing : bool
        Read integer columns not named in ``dtype=`` as floats (they may hold missing values).
    storage_options : dict, optional
        ``endpoint_url``, ``region_name``, ``key``, ``secret``, ... for listing on the client. The
        functions reach the data with their own credentials, never these.
    include_path_column : bool or str
        Add a categorical column with each row's object URL (named ``"path"``, or this string).
    **kwargs
        Passed to :func:`pandas.read_csv` (``sep``, ``dtype``, ``parse_dates``, ``names``,
        ``header``, ``usecols``, ...).

    Raises
    ------
    FileNotFoundError
        Naming the URL, if the bucket does not exist or nothing matches.
    ValueError
        For keywords that cannot work per partition (``index_col``, ``nrows``, ``chunksize``, or
        ``skiprows``/``skipfooter`` unless ``blocksize=None``).

    Examples
    --------
    >>> df = read_csv("s3://bucket/year=2019/*.csv", blocksize="64MB")       # doctest: +SKIP
    >>> df[df.x > 0].groupby("key").y.sum().compute(scheduler=executor)      # doctest: +SKIP
    """
    _check_keywords(kwargs, lineterminator)
    if isinstance(blocksize, str):
        blocksize = parse_bytes(blocksize)
    elif blocksize is not None:
        blocksize = int(blocksize)
    whole_objects = any(kwargs.get(name) for name in _ONE_RANGE_ONLY) or _header_row(kwargs) > 0
    if whole_objects and blocksize is not None:
        raise ValueError("skiprows, skipfooter and header > 0 apply to whole objects: pass blocksize=None")
    names = kwargs.get("names")
    header_line = kwargs.get("header", "infer" if names is None else None) is not None
    header_line = header_line and not kwargs.get("skiprows") and _header_row(kwargs) == 0

    storage, objects = partition.discover(urlpath, storage_options)
    ranges = partition.plan(
        storage,
        objects,
        blocksize,
        compression=compression,
        header=header_line,
        sample_bytes=min(sample, _HEADER_SAMPLE),
    )
    if not ranges:
        raise FileNotFoundError(f"{urlpath!r} holds no data to read")

    first = next((rng for rng in ranges if rng.size > 0), ranges[0])  # the sample of the dtypes
    head = _head(storage, first, sample, sample_rows, kwargs)
    path_column = "path" if include_path_column is True else include_path_column or None
    if path_column is not None and path_column in head.columns:
        raise ValueError(
            f"the objects already have a column {path_column!r}: give include_path_column another name"
        )
    specified = kwargs.get("dtype") or {}
    if assume_missing and isinstance(specified, dict):
        for column in head.columns:
            if is_integer_dtype(head[column].dtype) and column not in specified:
                head[column] = head[column].astype(float)
    dtypes = head.dtypes.to_dict()
    unknown = []
    for column in head.select_dtypes(include=["category"]).columns:
        if not (
            isinstance(specified, dict) and getattr(specified.get(column), "categories", None) is not None
        ):
            dtypes[column] = "category"  # each partition has its own categories, as in dask
            unknown.append(column)
    meta = clear_known_categories(head.iloc[:0], cols=unknown) if unknown else head.iloc[:0]
    urls = sorted({rng.url for rng in ranges})
    if path_column is not None:
        meta = meta.assign(**{path_column: pd.Categorical([], categories=urls)})
    reader = CSVReader(
        kwargs=kwargs,
        dtypes=dtypes,
        meta=meta,
        csv_columns=list(head.columns),
        path_column=path_column,
        paths=urls,
        enforce=enforce,
    )
    return dd.from_map(reader, ranges, meta=meta, label="read-csv", enforce_metadata=False)


def _check_keywords(kwargs: dict[str, Any], lineterminator: str | None) -> None:
    if lineterminator not in (None, "\n"):
        raise NotImplementedError(
            f"lineterminator={lineterminator!r}: partitions are aligned to '\\n' line ends only"
        )
    if "index" in kwargs or kwargs.get("index_col", False) is not False:
        raise ValueError(
            "Keywords 'index' and 'index_col' are not supported, except for 'index_col=False'. "
            "Use read_csv(...).set_index('my-index') instead"
        )
    for name in _UNSUPPORTED:
        if kwargs.get(name):
            raise ValueError(f"{name!r} is not supported by read_csv; use read_csv(...).head(n) for nrows")
    if isinstance(kwargs.get("header"), list):
        raise TypeError("a list of header rows is not supported by read_csv")
    encoding = kwargs.get("encoding")
    if encoding and "\n".encode(encoding) != b"\n":
        raise NotImplementedError(f"encoding {encoding!r}: partitions need '\\n' to be the byte 0x0a")


def _header_row(kwargs: dict[str, Any]) -> int:
    header = kwargs.get("header")
    return header if isinstance(header, int) and not isinstance(header, bool) else 0


def _head(
    storage: Storage, rng: partition.ByteRange, sample: int, sample_rows: int | None, kwargs: dict[str, Any]
) -> pd.DataFrame:
    """The first rows of ``rng``'s object, parsed with ``kwargs``: the dtypes of the partitions.

    The sample is ``sample`` bytes, grown to a line end and on until it holds a complete row
    (:func:`~dask_faas.partition.read_sample`), however long the first rows are.
    """
    data, whole = partition.read_sample(storage, rng, sample)
    head_kwargs = {k: v for k, v in kwargs.items() if k not in ("skipfooter",)}
    if head_kwargs.get("engine") == "pyarrow":
        head_kwargs["engine"] = "c"
    if sample_rows is not None:
        head_kwargs["nrows"] = sample_rows
    if whole and kwargs.get("skipfooter"):
        head_kwargs["skipfooter"] = kwargs["skipfooter"]
    try:
        return pd.read_csv(io.BytesIO(data), **head_kwargs)
    except pd.errors.EmptyDataError as exc:
        raise ValueError(f"{rng.url} holds no columns to infer the dtypes from: {exc}") from exc


class CSVReader:
    """Reads one partition (a :class:`~dask_faas.partition.ByteRange`) inside a function.

    Its ``columns=`` keyword is dask's column projection protocol for :func:`~dask.dataframe.from_map`:
    the optimizer passes the columns a computation needs, and they reach pandas as ``usecols``.
    """

    def __init__(
        self,
        *,
        kwargs: dict[str, Any],
        dtypes: dict[Any, Any],
        meta: pd.DataFrame,
        csv_columns: list[Any],
        path_column: str | None,
        paths: list[str],
        enforce: bool,
    ) -> None:
        self.kwargs = kwargs
        self.dtypes = dtypes
        self.meta = meta
        self.csv_columns = csv_columns
        self.path_column = path_column
        self.paths = paths
        self.enforce = enforce

    def __call__(self, rng: partition.ByteRange, columns: list[Any] | None = None) -> pd.DataFrame:
        wanted = list(self.meta.columns) if columns is None else list(columns)
        kwargs, project = self._read_kwargs(wanted)
        data = partition.read_range(
            storage_from_locator(rng.locator), rng, **partition.quote_options(self.kwargs)
        )
        try:
            df = pd.read_csv(io.BytesIO(data), **kwargs)
        except pd.errors.EmptyDataError:
            df = None
        except Exception as exc:
            _note(exc, rng)
            raise
        if df is None or len(df) == 0:
            return self.meta[wanted].copy()
        if self.enforce and list(df.columns) != self.csv_columns:
            raise ValueError(f"{rng.url}: columns {list(df.columns)} do not match {self.csv_columns}")
        _coerce_dtypes(df, self.dtypes, rng)
        if self.path_column is not None and self.path_column in wanted:
            codes = np.full(len(df), self.paths.index(rng.url))
            df[self.path_column] = pd.Categorical.from_codes(codes, categories=self.paths)
        return df[wanted] if project or columns is not None else df

    def _read_kwargs(self, wanted: list[Any]) -> tuple[dict[str, Any], bool]:
        """pandas keywords reading only the CSV columns of ``wanted`` (plus those they depend on)."""
        kwargs = dict(self.kwargs)
        needed = [c for c in wanted if c != self.path_column]
        if needed == self.csv_columns or isinstance(kwargs.get("parse_dates"), dict):
            return kwargs, False
        for name in ("parse_dates", "converters"):
            extra = kwargs.get(name)
            if isinstance(extra, list | dict):
                needed += [c for c in extra if c in self.csv_columns and c not in needed]
        if not needed:  # only the path column: still read one column, to count the rows
            needed = self.csv_columns[:1]
        kwargs["usecols"] = needed
        if isinstance(kwargs.get("dtype"), dict):
            kwargs["dtype"] = {k: v for k, v in kwargs["dtype"].items() if k in needed}
        return kwargs, True

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return (
            type(self).__qualname__,
            tokenize(self.kwargs, self.dtypes, self.meta, self.path_column, self.paths, self.enforce),
        )

    def __repr__(self) -> str:
        return f"<CSVReader columns={self.csv_columns!r}>"


def _note(exc: BaseException, rng: partition.ByteRange) -> None:
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(f"while reading {rng.url} bytes {rng.start}-{rng.end}")


def _coerce_dtypes(df: pd.DataFrame, dtypes: dict[Any, Any], rng: partition.ByteRange) -> None:
    """Cast ``df``'s columns to the sample's dtypes in place, or explain the mismatch (as dask does)."""
    bad: list[str] = []
    for column in df.columns:
        if column not in dtypes or df.dtypes[column] == dtypes[column]:
            continue
        actual, desired = df.dtypes[column], dtypes[column]
        if is_float_dtype(actual) and is_integer_dtype(desired):
            bad.append(f"- {column!r}: found {actual}, expected {desired} (missing values?)")
        elif is_object_dtype(actual) and is_datetime64_any_dtype(desired):
            bad.append(f"- {column!r}: values that are not dates (expected {desired})")
        else:
            try:
                df[column] = df[column].astype(desired)
            except Exception as exc:
                bad.append(f"- {column!r}: found {actual}, expected {desired} ({exc})")
    if bad:
        listing = "\n".join(bad)
        raise ValueError(
            f"Mismatched dtypes in {rng.url} (bytes {rng.start}-{rng.end}) against the sample of "
            f"the first object:\n{listing}\nPass dtype={{column: type}} to read_csv "
            "(or assume_missing=True for integer columns with missing values)."
        )
