"""read_csv, to_csv and to_parquet: partitions read and written inside functions, against real storage.

Data lives in a local directory or in a bucket of a moto server on loopback; the computes run on the
embedded local pool through faas_get. Bytes that the client reads from the data are counted by
wrapping the storage classes' ``get`` in the test process only (functions run in other processes).
"""

from __future__ import annotations

import gzip
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import pytest

import dask_faas
from dask_faas import dataframe as fd
from dask_faas.backends.storage import Storage
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.backends.storage.s3 import S3Storage
from dask_faas.dataframe import CSVReader

N_OBJECTS = 4
ROWS = 1_000


def frame(seed: int, rows: int = ROWS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "key": rng.choice(["a", "b", "c", "d"], rows),
            "x": rng.normal(size=rows).round(4),
            "y": rng.integers(0, 1_000, rows),
            "when": pd.date_range("2019-01-01", periods=rows, freq="h").strftime("%Y-%m-%d %H:%M:%S"),
        }
    )


def put_objects(storage: Storage, prefix: str, n: int = N_OBJECTS, **to_csv: Any) -> list[str]:
    keys = []
    for i in range(n):
        key = f"{prefix}/d{i}.csv"
        storage.put(key, frame(i).to_csv(index=False, **to_csv).encode())
        keys.append(key)
    return keys


def download(storage: Storage, keys: list[str], **read_csv: Any) -> pd.DataFrame:
    parts = [pd.read_csv(io.BytesIO(storage.get(key)), **read_csv) for key in keys]
    return pd.concat(parts, ignore_index=True)


class Data:
    """Where a test's CSV objects are: their storage, URL prefix, read_csv options and executor."""

    def __init__(self, storage: Storage, url: str, options: dict[str, Any] | None, executor: Any) -> None:
        self.storage, self.url, self.options, self.executor = storage, url, options, executor

    def read_csv(self, path: str, **kwargs: Any) -> Any:
        return fd.read_csv(f"{self.url}/{path}", storage_options=self.options, **kwargs)


@pytest.fixture(params=["local", "s3"])
def data(request: pytest.FixtureRequest, storage_root: Path) -> Data:
    """Data in a local directory (local job storage) or in a moto bucket (job storage there too)."""
    if request.param == "local":
        root = storage_root.parent / "data"
        return Data(LocalStorage(root), str(root), None, request.getfixturevalue("make_executor")())
    endpoint = request.getfixturevalue("s3_endpoint")
    storage = request.getfixturevalue("s3_storage")  # set up first, so torn down after the executor
    make_executor = request.getfixturevalue("make_executor")
    s3 = {"bucket": storage.bucket, "endpoint_url": endpoint, "region_name": "us-east-1"}
    executor = make_executor(storage="s3", s3={**s3, "key": "testing", "secret": "testing"})
    options = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    return Data(storage, f"s3://{storage.bucket}", options, executor)


@pytest.fixture
def client_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """``(key, bytes)`` of every ``get`` that this (client) process makes on local or S3 storage."""
    reads: list[tuple[str, int]] = []
    for cls in (LocalStorage, S3Storage):
        original = cls.get

        def counting(
            self: Any, key: str, start: Any = None, end: Any = None, _get: Any = original, **pinned: Any
        ) -> bytes:
            value = _get(self, key, start, end, **pinned)
            reads.append((key, len(value)))
            return value

        monkeypatch.setattr(cls, "get", counting)
    yield reads


def data_bytes(reads: list[tuple[str, int]], prefix: str) -> int:
    """Bytes read from the data objects ``d<i>.csv`` (keys below ``prefix``, or the root for local data)."""
    return sum(n for key, n in reads if re.fullmatch(r"d\d+\.csv", key.removeprefix(prefix)))


def test_filter_groupby_equals_pandas_and_the_client_reads_only_samples(data, client_reads):
    keys = put_objects(data.storage, "data")
    total_size = sum(data.storage.size(key) for key in keys)
    sample = 8192

    df = data.read_csv("data/*.csv", blocksize=10_000, sample=sample)
    built = data_bytes(client_reads, "data/")
    assert df.npartitions >= 4 * N_OBJECTS
    # the header of each object (one small GET each) and one dtype sample of the first object, which
    # one more GET of `sample` bytes at most completes to a line end
    assert sample < built <= N_OBJECTS * fd._HEADER_SAMPLE + 2 * sample < total_size / 2

    with dask_faas.enable(data.executor):  # the task shuffle of a many-partition groupby-agg
        result = df[df.x > 0].groupby("key").agg({"y": "sum", "x": "mean"}).compute()
    assert data_bytes(client_reads, "data/") == built  # the partitions were read inside functions
    assert data.executor.last_report.invocations >= 2

    full = download(data.storage, keys)
    expected = full[full.x > 0].groupby("key").agg({"y": "sum", "x": "mean"})
    assert result["y"].to_dict() == expected["y"].to_dict()
    np.testing.assert_allclose(result["x"].sort_index(), expected["x"].sort_index())
    assert len(df.compute(scheduler=data.executor)) == N_OBJECTS * ROWS


def reader_columns(collection: Any) -> list[Any]:
    """The ``columns`` that dask's optimizer hands to each read_csv reader of ``collection``."""
    nodes = collection.optimize(fuse=False).expr.walk()
    return [e.operand("columns") for e in nodes if isinstance(getattr(e, "func", None), CSVReader)]


def bad_column_objects(storage: Storage) -> list[str]:
    """A column ``bad`` that is an integer in the sample and text further down."""
    keys = []
    for i in range(3):
        df = frame(i).assign(bad=np.arange(ROWS).astype(str))
        df.loc[ROWS // 2 :, "bad"] = "not-a-number"
        keys.append(f"proj/p{i}.csv")
        storage.put(keys[-1], df.to_csv(index=False).encode())
    return keys


def test_column_projection_reaches_the_reader_inside_functions(executor, storage_root):
    storage = LocalStorage(storage_root.parent / "data")
    keys = bad_column_objects(storage)
    df = fd.read_csv(f"{storage.root}/proj/*.csv", blocksize=8_000, sample=4_096)
    assert str(df.dtypes["bad"]) == "int64"
    with pytest.raises(ValueError, match=r"(?s)Mismatched dtypes in .*p\d\.csv.*'bad'"):
        df.compute(scheduler=executor)  # every column parsed: 'bad' fails

    projected = df[["y", "key"]]
    assert [sorted(columns) for columns in reader_columns(projected)] == [["key", "y"]]
    result = projected.compute(scheduler=executor)  # 'bad' is never parsed
    full = download(storage, keys)
    assert list(result.columns) == ["y", "key"]
    assert result["y"].sum() == full["y"].sum()
    assert df.y.sum().compute(scheduler=executor) == full["y"].sum()

    used = fd.read_csv(f"{storage.root}/proj/*.csv", blocksize=8_000, usecols=["key", "x"])
    assert list(used.columns) == ["key", "x"]
    assert used.x.sum().compute(scheduler=executor) == pytest.approx(full.x.sum())


def test_projection_keeps_the_columns_that_keywords_need(tmp_path):
    storage = LocalStorage(tmp_path)
    keys = put_objects(storage, "kw", n=2)
    kwargs = {"parse_dates": ["when"], "dtype": {"y": "float64", "x": "float64"}}
    df = fd.read_csv(f"{tmp_path}/kw/*.csv", blocksize=9_000, include_path_column=True, **kwargs)
    with dask.config.set(scheduler="sync"):
        assert df.y.sum().compute() == download(storage, keys)["y"].sum()  # 'when' read for parse_dates
        paths = df[["path"]].compute()["path"]  # no CSV column asked: one is read to count the rows
    assert paths.value_counts().to_dict() == {f"{tmp_path}/{key}": ROWS for key in keys}
    assert reader_columns(df[["path"]]) == [["path"]]


def test_pandas_keywords_pass_through(executor, storage_root):
    storage = LocalStorage(storage_root.parent / "data")
    keys = put_objects(storage, "semi", sep=";")
    kwargs = {"sep": ";", "dtype": {"y": "float64"}, "parse_dates": ["when"]}
    df = fd.read_csv(f"{storage.root}/semi/*.csv", blocksize=9_000, **kwargs)
    assert str(df.dtypes["y"]) == "float64" and str(df.dtypes["when"]).startswith("datetime64")
    result = df.compute(scheduler=executor)
    expected = download(storage, keys, **kwargs)
    pd.testing.assert_frame_equal(
        result.reset_index(drop=True), expected, check_dtype=False, check_index_type=False
    )
    assert str(result["when"].dtype) == str(df.dtypes["when"])

    plain = put_objects(storage, "noheader", header=False)
    names = ["k", "a", "b", "t"]
    df = fd.read_csv(f"{storage.root}/noheader/", blocksize=9_000, names=names, header=None)
    result = df.compute(scheduler=executor)
    assert list(result.columns) == names and len(result) == N_OBJECTS * ROWS
    assert result["b"].sum() == download(storage, plain, names=names, header=None)["b"].sum()

    renamed = fd.read_csv(f"{storage.root}/semi/d0.csv", blocksize=9_000, sep=";", names=names, header=0)
    assert renamed.b.sum().compute(scheduler=executor) == frame(0).y.sum()


def test_include_path_column_and_gzip_objects(executor, storage_root):
    storage = LocalStorage(storage_root.parent / "data")
    for i in range(3):
        storage.put(f"gz/d{i}.csv.gz", gzip.compress(frame(i).to_csv(index=False).encode()))
    df = fd.read_csv(f"{storage.root}/gz/*.csv.gz", blocksize=1_000, include_path_column=True)
    assert df.npartitions == 3  # compressed objects are one partition each
    urls = [f"{storage.root}/gz/d{i}.csv.gz" for i in range(3)]
    assert list(df.dtypes["path"].categories) == urls
    result = df.compute(scheduler=executor)
    assert result["path"].value_counts().to_dict() == dict.fromkeys(urls, ROWS)
    assert result["y"].sum() == sum(frame(i).y.sum() for i in range(3))

    named = fd.read_csv(f"{storage.root}/gz/", include_path_column="source")
    counts = named.groupby("source", observed=True).y.count().compute(scheduler=executor)
    assert counts.to_dict() == dict.fromkeys(urls, ROWS)
    with pytest.raises(ValueError, match="already have a column 'key'"):
        fd.read_csv(f"{storage.root}/gz/", include_path_column="key")


def test_partitions_without_lines_and_small_blocks(tmp_path):
    with dask.config.set(scheduler="sync"):
        (tmp_path / "long.csv").write_text("a,b\n" + "1," + "x" * 5_000 + "\n2,y\n")
        df = fd.read_csv(str(tmp_path / "long.csv"), blocksize=500)
        assert df.npartitions > 5
        result = df.compute()
        assert result["a"].tolist() == [1, 2] and str(df.dtypes["a"]) == "int64"


@pytest.mark.parametrize("eol, final", [("\n", True), ("\r\n", False)], ids=["lf", "crlf-no-final-newline"])
def test_first_data_row_longer_than_the_sample(executor, storage_root, eol, final):
    """dask.dataframe.read_csv reads it (its sample grows to a line end): so must we, for any blocksize."""
    rows = [f"0,{'w' * 300_000},0.5", *(f"{i},t{i % 7},{i / 4}" for i in range(1, 3_000))]
    text = eol.join(["id,text,x", *rows]) + (eol if final else "")
    storage = LocalStorage(storage_root.parent / "data")
    storage.put("long/first.csv", text.encode())
    path = f"{storage.root}/long/first.csv"
    expected = pd.read_csv(path)
    for blocksize in (50_000, 400_000, None):
        df = fd.read_csv(path, blocksize=blocksize)  # the default sample: 65536 bytes
        assert list(df.dtypes.astype(str)[["id", "x"]]) == ["int64", "float64"]
        result = df.compute(scheduler=executor)
        pd.testing.assert_frame_equal(result.reset_index(drop=True), expected, check_dtype=False)


def test_missing_buckets_and_empty_matches_name_the_url(s3_endpoint, storage_root):
    options = {"endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    with pytest.raises(FileNotFoundError, match="s3://no-such-bucket-dfx"):
        fd.read_csv("s3://no-such-bucket-dfx/data/*.csv", storage_options=options)
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        fd.read_csv(f"{storage_root}/nothing-here/*.csv")
    with pytest.raises(ValueError, match="index_col"):
        fd.read_csv(f"{storage_root}/*.csv", index_col=0)
    with pytest.raises(ValueError, match="blocksize=None"):
        fd.read_csv(f"{storage_root}/*.csv", skiprows=2)


def test_to_csv_and_to_parquet_round_trip(data):
    keys = put_objects(data.storage, "src", n=2)
    df = data.read_csv("src/*.csv", blocksize=12_000)
    expected = download(data.storage, keys)
    written = fd.to_csv(df, f"{data.url}/out/part-*.csv", storage_options=data.options,
                        scheduler=data.executor, index=False)  # fmt: skip
    assert len(written) == df.npartitions and all(url.startswith(f"{data.url}/out/part-") for url in written)
    back = data.read_csv("out/part-*.csv").compute(scheduler=data.executor)
    pd.testing.assert_frame_equal(back.reset_index(drop=True), expected, check_dtype=False)

    pytest.importorskip("pyarrow")  # an optional extra

    pq = fd.to_parquet(df[df.x > 0], f"{data.url}/pq", storage_options=data.options, scheduler=data.executor)
    assert [url.rsplit("/", 1)[1] for url in pq] == [f"part.{i}.parquet" for i in range(df.npartitions)]
    got = pd.concat(
        pd.read_parquet(io.BytesIO(data.storage.get("pq/" + url.rsplit("/", 1)[1]))) for url in pq
    )
    assert len(got) == (expected.x > 0).sum()
    assert got["y"].sum() == expected.loc[expected.x > 0, "y"].sum()

    with dask.config.set(scheduler=data.executor):  # the active scheduler writes when none is given
        lazy = fd.to_csv(df, f"{data.url}/lazy", storage_options=data.options, compute=False)
        assert len(lazy) == df.npartitions and not list(data.storage.list("lazy/"))
        dask.compute(*lazy)
    assert len(list(data.storage.list("lazy/"))) == df.npartitions


def test_dask_writers_work_for_a_local_directory(executor, storage_root, tmp_path):
    storage = LocalStorage(storage_root.parent / "data")
    keys = put_objects(storage, "src", n=2)
    df = fd.read_csv(f"{storage.root}/src/*.csv", blocksize=12_000)
    df.to_csv(str(tmp_path / "csv" / "part-*.csv"), index=False, compute_kwargs={"scheduler": executor})
    assert len(list((tmp_path / "csv").glob("part-*.csv"))) == df.npartitions
    pytest.importorskip("pyarrow")
    df.to_parquet(str(tmp_path / "pq"), compute_kwargs={"scheduler": executor})
    assert len(pd.read_parquet(tmp_path / "pq")) == 2 * ROWS
    assert pd.concat(pd.read_csv(p) for p in (tmp_path / "csv").glob("*.csv"))["y"].sum() == sum(
        download(storage, keys)["y"]
    )


def test_writing_to_a_missing_bucket_fails_before_any_invocation(s3_endpoint, executor, storage_root):
    storage = LocalStorage(storage_root.parent / "data")
    put_objects(storage, "src", n=1)
    df = fd.read_csv(f"{storage.root}/src/*.csv")
    before = executor.stats["invocations"]
    with pytest.raises(Exception, match="no-such-bucket-out"):
        fd.to_csv(df, "s3://no-such-bucket-out/x/", storage_options={"endpoint_url": s3_endpoint},
                  scheduler=executor)  # fmt: skip
    assert executor.stats["invocations"] == before


def test_writers_refuse_unknown_storage_options_and_leave_dask_dataframe_unimported(storage_root):
    storage = LocalStorage(storage_root.parent / "data")
    put_objects(storage, "src", n=1)
    df = fd.read_csv(f"{storage.root}/src/*.csv")
    with pytest.raises(dask_faas.ConfigError, match=r"unsupported storage_options \['anon'\]"):
        fd.to_csv(df, "s3://some-bucket/x/", storage_options={"anon": True})
    # the function that writes a partition imports dask_faas.writers only: no dask.dataframe there
    code = "import sys, dask_faas.writers; assert 'dask.dataframe' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
