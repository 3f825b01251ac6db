"""The storage exchange: dataframe shuffles under faas_get, through object storage only.

Results are compared with ``scheduler="sync"`` and ``dataframe.shuffle.method="tasks"`` (dask's task
shuffle, single-stage at these sizes: the same rows in the same order within each partition), on
local storage and on the S3-compatible test server (moto). Request counts are taken from a counting
HTTP proxy on loopback in front of moto, through which the function processes talk too.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest
from dask.diagnostics import Callback
from fixtures_platforms import PLATFORMS, executor_settings

import dask_faas
from dask_faas import IntegrityError, exchange, shuffle
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.testing.s3 import CountingProxy

# -- data and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pdf() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    n = 2_000
    return pd.DataFrame(
        {
            "key": rng.integers(0, 60, n),
            "x": rng.standard_normal(n),
            "y": rng.integers(-500, 500, n),
            "s": pd.array([f"w{i % 17}" for i in range(n)], dtype="str"),
        }
    )


@pytest.fixture(scope="module")
def other() -> pd.DataFrame:
    rng = np.random.default_rng(12)
    n = 1_500
    return pd.DataFrame({"key": rng.integers(0, 80, n), "z": rng.standard_normal(n)})


def _identity(df: pd.DataFrame) -> pd.DataFrame:
    return df


def operations(pdf: pd.DataFrame, other: pd.DataFrame) -> dict[str, Callable[[], Any]]:
    """Each builds a fresh collection (collections remember the shuffle method they were built with)."""
    ddf = lambda: dd.from_pandas(pdf, npartitions=8)  # noqa: E731
    return {
        "shuffle": lambda: ddf().shuffle("key"),
        "groupby-split-out": lambda: ddf().groupby("key").agg({"x": "sum", "y": "max"}, split_out=4),
        "merge": lambda: ddf().merge(dd.from_pandas(other, npartitions=6), on="key", how="inner"),
        "set-index": lambda: ddf().set_index("y"),
        # map_partitions: a bare sort_values().compute() is simplified into one sort of the whole
        "sort-values": lambda: ddf().sort_values(["x"]).map_partitions(_identity),
    }


def on_sync_tasks(make: Callable[[], Any]) -> list[pd.DataFrame]:
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        return list(dask.compute(*make().to_delayed(), scheduler="sync"))


class KeyNames(Callback):
    """The key names of every task faas_get ran (fused names included)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
        self.names.append(str(key[0] if isinstance(key, tuple) else key))


def assert_ran_the_exchange(names: list[str]) -> None:
    assert any("exchange-map" in n for n in names), names
    for other_method in ("split-", "group-", "shuffle-partition-", "zpartd-", "barrier-", "transfer"):
        assert not any(other_method in n for n in names), (other_method, names)


def check_same_partitions(name: str, got: list[pd.DataFrame], want: list[pd.DataFrame]) -> None:
    assert len(got) == len(want)
    if name == "merge":  # merge_chunk's row order depends on the hash table only: compare rows
        got = [g.sort_values(list(g.columns)).reset_index(drop=True) for g in got]
        want = [w.sort_values(list(w.columns)).reset_index(drop=True) for w in want]
    for g, w in zip(got, want, strict=True):
        pdt.assert_frame_equal(g, w)


def partitions_on(ex: Any, collection: Any) -> list[pd.DataFrame]:
    """The partitions, computed from the collection's expression (persist) on ``ex``."""
    (persisted,) = dask.persist(collection, scheduler=ex)
    try:
        return list(dask.compute(*persisted.to_delayed(), scheduler=ex))
    finally:
        del persisted
        gc.collect()  # its stored partitions are deleted with it


def assert_nothing_left(ex: Any) -> None:
    left = [key for key, _ in ex.storage.list(ex.job_prefix) if "/fn/" not in key]
    assert not left, f"objects left after the compute: {left[:3]}"


def run_all(ex: Any, pdf: pd.DataFrame, other: pd.DataFrame) -> None:
    for name, make in operations(pdf, other).items():
        want = on_sync_tasks(make)
        names = KeyNames()
        with dask_faas.enable(ex), names:  # also runs set_index's nested quantile compute on ex
            collection = make()
            got = partitions_on(ex, collection)
            whole = collection.compute() if name in ("set-index", "sort-values") else None
        assert_ran_the_exchange(names.names)
        check_same_partitions(name, got, want)
        if whole is not None:
            pdt.assert_frame_equal(whole, pd.concat(got))
            assert (whole.index if name == "set-index" else whole["x"]).is_monotonic_increasing
        assert_nothing_left(ex)


# -- acceptance: results ----------------------------------------------------------------------


def test_shuffles_equal_the_sync_task_shuffle_on_local_storage(make_executor, pdf, other):
    run_all(make_executor(), pdf, other)


@pytest.mark.slow
def test_shuffles_equal_the_sync_task_shuffle_on_s3(s3_endpoint, s3_bucket, make_executor, pdf, other):
    s3 = {"bucket": s3_bucket, "endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    run_all(make_executor(storage="s3", s3={**s3, "key": "testing", "secret": "testing"}), pdf, other)


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_shuffles_equal_the_sync_task_shuffle_on_each_platform(request, platform, make_executor, pdf, other):
    """The exchange through a platform's emulator (functions in its instances), storage on S3."""
    run_all(make_executor(**executor_settings(request, platform, "")), pdf, other)


@pytest.mark.parametrize("method", [None, "p2p"])
def test_every_lowered_method_becomes_the_exchange(executor, pdf, other, method):
    """dask's default here (the local-disk shuffle) and P2P (with its hash join): from the
    expression, and from a plain graph that dask materialized before faas_get saw it (to_delayed)."""
    for name in ("shuffle", "merge"):
        make = operations(pdf, other)[name]
        want = on_sync_tasks(make)
        with dask.config.set({"dataframe.shuffle.method": method}):
            collection = make()
        names = KeyNames()
        with names:
            got = partitions_on(executor, collection)
        assert_ran_the_exchange(names.names)
        if name == "merge" and method == "p2p":  # P2P's join hashes the keys as floats
            check_same_partitions(name, [pd.concat(got)], [pd.concat(want)])
        else:
            check_same_partitions(name, got, want)
        if method == "p2p" and name == "merge":
            with pytest.raises(dask_faas.ConfigError, match="P2P hash join"):
                dask.compute(*collection.to_delayed(), scheduler=executor)
            continue
        with names:
            got = list(dask.compute(*collection.to_delayed(), scheduler=executor))
        assert_ran_the_exchange(names.names)
        if name == "merge" and method == "p2p":
            continue
        check_same_partitions(name, got, want)
    assert_nothing_left(executor)


def test_a_filtered_shuffle_writes_and_reads_only_its_buckets(executor, pdf):
    shuffled = dd.from_pandas(pdf, npartitions=8).shuffle("key")
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        want = dd.from_pandas(pdf, npartitions=8).shuffle("key").partitions[[2, 5]].compute(scheduler="sync")
    got = shuffled.partitions[[2, 5]].compute(scheduler=executor)
    pdt.assert_frame_equal(got, want)


# -- acceptance: requests ---------------------------------------------------------------------


@pytest.fixture
def proxy(s3_endpoint: str) -> Iterator[CountingProxy]:
    with CountingProxy(s3_endpoint) as p:
        yield p


def test_a_16_to_16_shuffle_makes_16_writes_and_at_most_256_reads(s3_bucket, proxy, make_executor, pdf):
    s3 = {"bucket": s3_bucket, "endpoint_url": proxy.url, "region_name": "us-east-1"}
    ex = make_executor(storage="s3", s3={**s3, "key": "testing", "secret": "testing"})
    shuffled = dd.from_pandas(pdf, npartitions=16).shuffle("key", npartitions=16)
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        want = dd.from_pandas(pdf, npartitions=16).shuffle("key", npartitions=16)
        want = want.map_partitions(len).compute(scheduler="sync")
    proxy.requests.clear()
    got = shuffled.map_partitions(len).compute(scheduler=ex)
    pdt.assert_series_equal(got, want)

    in_exchange = lambda path: f"/{s3_bucket}/{ex.job_prefix}/" in path and "/x/" in path  # noqa: E731
    ours = proxy.count(lambda method, path, rng: in_exchange(path))
    ranged = proxy.count(lambda method, path, rng: in_exchange(path) and method == "GET" and rng is not None)
    everything = proxy.count(lambda *_: True)
    print(f"\nexchange requests: {dict(ours)}; all requests of the compute: {dict(everything)}")
    assert ours["PUT"] == 16  # one object per mapper, no commit markers: the index is the commit
    assert 0 < ours["GET"] <= 16 * 16 and ranged["GET"] == ours["GET"]
    assert ours["HEAD"] == 0
    puts = [path for method, path, _ in proxy.requests if method == "PUT" and in_exchange(path)]
    assert len({path.split("/x/")[1].split("/")[0] for path in puts}) > 4  # spread over key prefixes
    objects = [key for key, _ in ex.storage.list(ex.job_prefix)]
    assert not [key for key in objects if "/x/" in key], "exchange objects left behind"
    assert all("/fn/" in key for key in objects), objects


# -- acceptance: retried and duplicated mappers ------------------------------------------------------


class FailOnceAfterWriteStorage(LocalStorage):
    """Local storage that fails the first write of one kind of exchange object after it is stored,
    and logs every write and read of exchange objects.

    ``kind`` is ``"m"`` (a mapper's object) or ``"c"`` (a combiner's). The functions rebuild this
    storage from its locator, which names the class by import path (the function processes share the
    tests' ``sys.path``); its state lives in files of ``state``, as the functions are other processes:
    ``fail-once`` (removed by the failing write, so only one write fails), ``failed`` (that write's key)
    and ``log`` (lines ``put <key>`` / ``get <key>``, appended).
    """

    def __init__(self, root: str, state: str, kind: str) -> None:
        super().__init__(root)
        self.state, self.kind = Path(state), kind

    def _log(self, op: str, key: str) -> None:
        with open(self.state / "log", "a") as f:  # one short append per line: lines do not interleave
            f.write(f"{op} {key}\n")

    def put(self, key: str, data: bytes | memoryview) -> None:
        super().put(key, data)
        if "/x/" not in key:
            return
        self._log("put", key)
        if key.rsplit("/", 1)[1].split(".")[0].rsplit("-", 1)[1].startswith(self.kind):
            try:
                os.remove(self.state / "fail-once")
            except FileNotFoundError:
                return
            (self.state / "failed").write_text(key)
            raise ConnectionResetError(f"injected after writing {key}")

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        if "/x/" in key:
            self._log("get", key)
        return super().get(key, start, end)

    def locator(self) -> dict[str, Any]:
        backend = f"{__name__}:{type(self).__qualname__}"
        return {"backend": backend, "root": self.root, "state": str(self.state), "kind": self.kind}


@pytest.mark.parametrize("kind", ["m", "c"], ids=["mapper", "combiner"])
def test_an_exchange_task_that_fails_after_its_write_is_retried_exactly(
    make_executor, storage_root, tmp_path, pdf, kind
):
    """The failed attempt's object is stored, but no one reads it: the retry writes its own key and
    only the index of the accepted attempt reaches the tasks downstream."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "fail-once").touch()
    storage = FailOnceAfterWriteStorage(str(storage_root), str(state), kind)
    two_level = {"two_level_above": 10} if kind == "c" else {}  # 8 x 8 buckets: combiners above 10
    ex = make_executor(retries=1, storage=storage, exchange=two_level)
    make = operations(pdf, pdf)["shuffle"]
    want = on_sync_tasks(make)
    got = list(dask.compute(*make().to_delayed(optimize_graph=False), scheduler=ex))
    check_same_partitions("shuffle", got, want)

    assert (state / "failed").exists() and not (state / "fail-once").exists(), "no write failed"
    failed = (state / "failed").read_text()
    assert ex.stats["retries"] == 1
    log = [line.split(" ", 1) for line in (state / "log").read_text().splitlines()]
    puts, gets = [key for op, key in log if op == "put"], {key for op, key in log if op == "get"}
    assert failed in puts and failed not in gets, f"the failed attempt's object was read: {failed}"
    stem = failed.rsplit(".", 2)[0]  # <exchange>-<m|c><i>, then .<call>.<attempt>
    retried = [key for key in puts if key.rsplit(".", 2)[0] == stem and key != failed]
    assert len(retried) == 1 and retried[0] in gets, (failed, retried)
    assert not [key for key, _ in ex.storage.list(ex.job_prefix) if "/fn/" not in key]


def test_a_duplicated_mapper_never_reaches_a_reducer(executor, pdf):
    """Run one mapper twice (two invocations, as a duplicated delivery would): reducers read the
    object of the index they were given, even when the other run's object is garbage."""
    spec = exchange.Spec("dup", "cdup", 4, "_partitions", False)
    frame = pdf.assign(_partitions=pdf.key % 4)
    parts = [frame.iloc[:1000], frame.iloc[1000:]]
    committed = executor.submit(exchange.map_partition, parts[0], spec, 0).result()
    duplicate = executor.submit(exchange.map_partition, parts[0], spec, 0).result()
    second = executor.submit(exchange.map_partition, parts[1], spec, 1).result()
    assert committed.key != duplicate.key and committed.sizes == duplicate.sizes
    executor.storage.put(duplicate.key, b"\0" * sum(duplicate.sizes))  # the loser is overwritten
    for bucket in range(4):
        got = executor.submit(exchange.reduce_partition, spec, bucket, [committed, second]).result()
        pdt.assert_frame_equal(got, pd.concat([p[p._partitions == bucket] for p in parts]))
    data = bytearray(executor.storage.get(committed.key))  # the accepted object altered: refused
    data[-1] ^= 1
    executor.storage.put(committed.key, bytes(data))
    with pytest.raises(IntegrityError, match="tag check"):
        executor.submit(exchange.reduce_partition, spec, 3, [committed, second]).result()


# -- the two-level exchange ---------------------------------------------------------------------


def test_the_two_level_rule():
    assert shuffle.plan(40, 40, threshold=16_384) is None
    assert shuffle.plan(128, 128, threshold=16_384) is None
    groups = shuffle.plan(200, 100, threshold=16_384)
    assert groups is not None and len(groups) == 15  # ceil(sqrt(200)) groups of consecutive mappers
    assert [i for g in groups for i in g] == list(range(200))
    assert shuffle.plan(3, 10**6, threshold=1) is None  # too few mappers to group


def test_two_level_exchange_equals_the_sync_task_shuffle(make_executor, pdf, other):
    executor = make_executor(exchange={"two_level_above": 10})  # the executor's setting reaches it
    for name in ("shuffle", "merge"):
        make = operations(pdf, other)[name]
        names = KeyNames()
        with names:
            got = list(dask.compute(*make().to_delayed(optimize_graph=False), scheduler=executor))
        assert any("exchange-combine" in n for n in names.names)
        check_same_partitions(name, got, on_sync_tasks(make))
