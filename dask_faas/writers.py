"""Write a Dask DataFrame's partitions as objects, one per partition, from inside the functions.

:func:`to_csv` and :func:`to_parquet` write through dask-faas storage (``s3://``, ``cos://`` or a
local directory): dask's own writers need fsspec's ``s3fs`` for ``s3://`` URLs. dask's
``df.to_csv(dir)`` / ``df.to_parquet(dir)`` still work for a local directory that the functions share
with the client. ``s3://`` outputs take s3fs-style ``storage_options`` as :func:`dask_faas.read_csv`
does (:func:`dask_faas.backends.storage.urls.s3_storage`).

Credentials never travel with a partition: inside a function the storage is rebuilt from its
locator (bucket, endpoint, region) with the credentials of the function's own environment, once per
process (:func:`~dask_faas.backends.storage.storage_from_locator`).

This module does not import :mod:`dask.dataframe` (the function that writes a partition imports
this module only); :mod:`dask_faas.dataframe` re-exports :func:`to_csv` and :func:`to_parquet`.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import dask
import pandas as pd

from .backends.storage import Storage, storage_from_locator
from .backends.storage.urls import s3_storage, split_url

if TYPE_CHECKING:
    import dask.dataframe as dd

__all__ = ["to_csv", "to_parquet"]

# -- writers ---------------------------------------------------------------------------------------


def to_csv(
    df: dd.DataFrame,
    urlpath: str,
    *,
    name_function: Callable[[int], str] | None = None,
    compute: bool = True,
    scheduler: Any = None,
    storage_options: dict[str, Any] | None = None,
    compute_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> list[str] | list[Any]:
    """Write each partition of ``df`` as one CSV object, from inside the functions.

    Parameters
    ----------
    urlpath : str
        ``s3://bucket/out/part-*.csv``, ``cos://...`` or a local path: ``*`` becomes
        ``name_function(i)`` (zero-padded partition numbers by default). Without ``*`` it is a
        directory (prefix) of ``0.part``, ``1.part``, ...
    compute : bool
        Write now and return the URLs; otherwise return one :class:`dask.delayed.Delayed` per
        partition.
    scheduler : optional
        Scheduler of the compute (default: the active one, e.g. set by ``dask_faas.enable``).
    storage_options : dict, optional
        ``endpoint_url``, ``region_name`` (``s3://``); default: the ``faas.s3`` settings.
    **kwargs
        Passed to :meth:`pandas.DataFrame.to_csv` (``index``, ``sep``, ``compression``, ...).

    Raises
    ------
    ConfigError
        Before any write, if the bucket does not exist.
    """
    return _write(df, urlpath, "*.part", "csv", kwargs, name_function, compute, scheduler,
                  storage_options, compute_kwargs)  # fmt: skip


def to_parquet(
    df: dd.DataFrame,
    urlpath: str,
    *,
    write_index: bool = True,
    compression: str | None = "snappy",
    name_function: Callable[[int], str] | None = None,
    compute: bool = True,
    scheduler: Any = None,
    storage_options: dict[str, Any] | None = None,
    compute_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> list[str] | list[Any]:
    """Write each partition of ``df`` as one Parquet object (``part.<i>.parquet``), inside functions.

    Every object gets the schema of ``df``'s meta, so partitions agree. Needs pyarrow
    (``pip install 'dask-faas[parquet]'``). Parameters are those of :func:`to_csv`, plus
    ``write_index``, ``compression`` and keywords of :func:`pyarrow.parquet.write_table`.
    """
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError("to_parquet needs pyarrow: pip install 'dask-faas[parquet]'") from exc
    meta = df._meta if isinstance(df._meta, pd.DataFrame) else df._meta.to_frame()
    options = {
        "schema": pa.Schema.from_pandas(meta, preserve_index=write_index),
        "write_index": write_index,
        "compression": compression,
        "kwargs": kwargs,
    }
    return _write(df, urlpath, "part.*.parquet", "parquet", options, name_function, compute, scheduler,
                  storage_options, compute_kwargs)  # fmt: skip


def _write(
    df: dd.DataFrame,
    urlpath: str,
    default_name: str,
    fmt: str,
    options: dict[str, Any],
    name_function: Callable[[int], str] | None,
    compute: bool,
    scheduler: Any,
    storage_options: dict[str, Any] | None,
    compute_kwargs: dict[str, Any] | None,
) -> list[str] | list[Any]:
    storage, url_prefix, template = _output(urlpath, default_name, storage_options)
    storage.check()
    parts = df.to_delayed()
    if name_function is None:
        width = len(str(max(len(parts) - 1, 0)))
        name_function = lambda i: str(i).zfill(width)  # noqa: E731 - as dask's build_name_function
    locator = storage.locator()
    token = dask.base.tokenize(df, urlpath, fmt, options)
    write = dask.delayed(_write_partition, pure=False)
    writes = []
    for i, part in enumerate(parts):
        key = template.replace("*", name_function(i))
        name = f"faas-to-{fmt}-{token}-{i}"
        writes.append(write(part, locator, key, f"{url_prefix}{key}", fmt, options, dask_key_name=name))
    if not compute:
        return writes
    kwargs = dict(compute_kwargs or {})
    if scheduler is not None:
        kwargs["scheduler"] = scheduler
    return list(dask.compute(*writes, **kwargs))


def _write_partition(
    df: pd.DataFrame | pd.Series,
    locator: dict[str, Any],
    key: str,
    url: str,
    fmt: str,
    options: dict[str, Any],
) -> str:
    """Encode one partition and put it as one object (runs inside a function); return its URL."""
    if isinstance(df, pd.Series):
        df = df.to_frame()
    buffer = io.BytesIO()
    if fmt == "csv":
        df.to_csv(buffer, **options)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(df, schema=options["schema"], preserve_index=options["write_index"])
        pq.write_table(table, buffer, compression=options["compression"], **options["kwargs"])
    storage_from_locator(locator).put(key, buffer.getbuffer())
    return url


def _output(
    urlpath: str, default_name: str, storage_options: dict[str, Any] | None
) -> tuple[Storage, str, str]:
    """``(storage, URL prefix, key template with '*')`` of an output URL."""
    scheme, bucket, key = split_url(urlpath)
    if scheme in ("", "file"):
        from .backends.storage.local import LocalStorage

        path = os.path.abspath(os.path.expanduser(key))
        if "*" not in os.path.basename(path):
            path = os.path.join(path, default_name)
        root, name = os.path.split(path)
        if "*" in root:
            raise ValueError(f"{urlpath!r}: '*' may appear in the file name only")
        return LocalStorage(root), root + os.sep, name
    key = key.strip("/") if "*" not in key.rpartition("/")[2] else key
    if "*" not in key:
        key = f"{key}/{default_name}" if key else default_name
    if "*" in key.rpartition("/")[0]:
        raise ValueError(f"{urlpath!r}: '*' may appear in the object name only")
    return s3_storage(bucket, storage_options), f"{scheme}://{bucket}/", key
