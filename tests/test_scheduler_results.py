"""Acceptance: Dask collections computed on a FaasExecutor give what ``scheduler="sync"`` gives.

Every compute here runs each task in a pool of 2 local function processes, with the intermediates
kept in local storage; the results are compared with dask's synchronous scheduler (and, where it
is simple, with numpy/pandas directly). One executor serves the whole module; after each test its
job prefix holds nothing but the uploaded function bodies, and at module teardown nothing at all.

Notes on what needs care with functions (which share no disk):

- ``Bag.groupby`` picks its shuffle when the bag is *built*, from ``dataframe.shuffle.method``:
  outside ``enable()`` that is dask's disk-based shuffle (``partd`` files in a local temporary
  directory), which the engine refuses, as it refuses the dataframe disk shuffle. So the bag tests
  pass ``shuffle="tasks"`` explicitly, or build the bag under ``enable()``.
- Dataframe shuffles (``shuffle``, ``set_index`` on unsorted data, ...), whatever method dask
  lowered them to, run through the storage exchange with the same output keys, so their partitions
  equal those of dask's task shuffle; ``dask_faas.enable(executor)`` also reaches the nested
  quantile compute of ``set_index``.
- ``df.head()`` computes at once on the *configured* scheduler: use ``head(compute=False)`` with
  ``scheduler=``, or ``enable()``.
"""

from __future__ import annotations

import gc
import operator
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import dask.dataframe as dd
import numpy as np
import numpy.testing as npt
import pandas as pd
import pandas.testing as pdt
import pytest
from fixtures_platforms import EXECUTOR_KINDS, executor_settings

import dask_faas
from dask_faas import ConfigError, FaasExecutor
from dask_faas.backends.storage import storage_from_settings

# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module", params=EXECUTOR_KINDS)
def ex(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaasExecutor]:
    """One executor for the module per kind (the local pool on local storage, each platform's
    emulator on the S3 test server); checked empty at teardown."""
    root: Path = tmp_path_factory.mktemp("storage")
    executor = FaasExecutor(**executor_settings(request, request.param, str(root)))
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        storage = storage_from_settings(executor.settings)  # the executor closed its own
        left = list(storage.list(executor.job_prefix))
        assert not left, f"job prefix {executor.job_prefix} not empty after shutdown: {left[:5]}"


@pytest.fixture(autouse=True)
def nothing_left_between_computes(ex: FaasExecutor) -> Iterator[None]:
    """After each test, the job prefix holds only the uploaded function bodies."""
    yield
    left = [key for key, _ in ex.storage.list(ex.job_prefix) if "/fn/" not in key]
    assert not left, f"objects left in storage after the computes of this test: {left[:5]}"


def on_faas(ex: FaasExecutor, *collections: Any) -> tuple[Any, ...]:
    return dask.compute(*collections, scheduler=ex)


def on_sync(*collections: Any) -> tuple[Any, ...]:
    return dask.compute(*collections, scheduler="sync")


def assert_same_nested(actual: Any, expected: Any) -> None:
    """Equality for nested lists/tuples/dicts that may hold numpy arrays."""
    assert type(actual) is type(expected)
    if isinstance(expected, dict):
        assert actual.keys() == expected.keys()
        for key in expected:
            assert_same_nested(actual[key], expected[key])
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            assert_same_nested(a, e)
    elif isinstance(expected, np.ndarray):
        npt.assert_array_equal(actual, expected)
    else:
        assert actual == expected


# -- delayed -------------------------------------------------------------------------------------


def test_delayed_dag_with_shared_dependencies(ex):
    calls = dask.delayed(operator.add)
    base = dask.delayed(lambda n: list(range(n)))(10)
    total = dask.delayed(sum)(base)
    longest = dask.delayed(len)(base)
    a = calls(total, longest)  # base feeds three tasks, total two
    b = dask.delayed(operator.mul)(a, total)
    c = dask.delayed(max)(a, b, total)
    assert on_faas(ex, a, b, c) == on_sync(a, b, c) == (55, 55 * 45, 55 * 45)


def test_nested_lists_and_dicts_of_delayed(ex):
    inc = dask.delayed(lambda x: x + 1)
    values = [inc(i) for i in range(5)]
    nested = {"a": values, "b": {"c": (values[0], [values[1], 7]), "d": "text"}, "e": [[inc(10)]]}
    expected = on_sync(nested)
    assert on_faas(ex, nested) == expected
    assert expected[0]["b"]["c"] == (1, [2, 7])  # the containers keep their types
    packed = dask.delayed(lambda d: [*sorted(d["a"]), d["e"][0][0]])(nested)
    assert on_faas(ex, packed) == on_sync(packed) == ([1, 2, 3, 4, 5, 11],)


def test_delayed_large_result_goes_through_storage(ex):
    @dask.delayed
    def big(n: int) -> np.ndarray:
        return np.arange(n, dtype="float64")

    n = 5 * 2**20 // 8  # 5 MB: far past the 256 KiB inline limit
    array = big(n)
    (result,) = on_faas(ex, array)
    npt.assert_array_equal(result, np.arange(n, dtype="float64"))
    assert ex.last_report.bytes_received >= 5 * 2**20

    # consumed by another task, the large intermediate never travels through the client
    checksum = dask.delayed(lambda a: float(a.sum()))(array)
    assert on_faas(ex, checksum) == on_sync(checksum)
    assert ex.last_report.bytes_received < 2**20

    # persisted, it stays in storage (not inline) until the persisted collection is dropped
    (persisted,) = dask.persist(array, scheduler=ex)
    sizes = [size for key, size in ex.storage.list(ex.job_prefix) if "/fn/" not in key]
    assert len(sizes) == 1 and sizes[0] >= 5 * 2**20
    npt.assert_array_equal(on_faas(ex, persisted)[0], result)
    del persisted
    gc.collect()


def test_delayed_large_graph_embedded_argument(ex):
    data = np.random.default_rng(1).random(2**19)  # 4 MB embedded in the graph
    total = dask.delayed(np.sum)(data)
    head = dask.delayed(lambda a: a[:3])(data)
    faas, sync = on_faas(ex, total, head), on_sync(total, head)
    assert faas[0] == sync[0]
    npt.assert_array_equal(faas[1], sync[1])


def test_pure_delayed_shares_keys(ex):
    square = dask.delayed(lambda x: x * x, pure=True)
    a, b, c = square(3), square(3), square(4)
    assert a.key == b.key != c.key
    both = dask.delayed(operator.add)(a, b)
    assert on_faas(ex, both, c) == on_sync(both, c) == (18, 16)
    assert ex.last_report.tasks <= 4  # one square(3) task for the two handles (+ square(4) + add)


# -- array ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def matrices() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    return rng.standard_normal((60, 40)), rng.standard_normal((40, 30))


def test_array_reductions(ex, matrices):
    x_np, _ = matrices
    x = da.from_array(x_np, chunks=(15, 10))
    exprs = {
        "sum": x.sum(),
        "mean0": x.mean(axis=0),
        "std1": x.std(axis=1),
        "min0": x.min(axis=0),
        "max1": x.max(axis=1),
        "argmax0": x.argmax(axis=0),
        "argmax": x.argmax(),
        "argmin1": x.argmin(axis=1),
        "var": x.var(ddof=1),
        "nanmean": da.nanmean(x, axis=1),
    }
    (faas,) = on_faas(ex, exprs)
    (sync,) = on_sync(exprs)
    for name in exprs:
        npt.assert_allclose(faas[name], sync[name], rtol=1e-12, err_msg=name)
    npt.assert_allclose(faas["sum"], x_np.sum())
    npt.assert_allclose(faas["std1"], x_np.std(axis=1))
    npt.assert_array_equal(faas["argmax0"], x_np.argmax(axis=0))
    assert faas["argmax"] == x_np.argmax()


def test_array_reshape_rechunk_slicing(ex, matrices):
    x_np, _ = matrices
    x = da.from_array(x_np, chunks=(15, 10))
    exprs = [
        x.reshape(6, 10, 40),
        x.reshape(-1),
        x.rechunk((20, 40)),
        x.rechunk({0: 7}),
        x[5:50:3, ::-2],
        x[[1, 5, 7, 59]],
        x[:, 3],
        x[x > 1.0],  # unknown chunk sizes
        x.T[::2],
    ]
    faas, sync = on_faas(ex, *exprs), on_sync(*exprs)
    for f, s in zip(faas, sync, strict=True):
        npt.assert_array_equal(f, s)
    npt.assert_array_equal(faas[0], x_np.reshape(6, 10, 40))
    npt.assert_array_equal(faas[4], x_np[5:50:3, ::-2])
    npt.assert_array_equal(faas[7], x_np[x_np > 1.0])


def test_array_products_and_broadcasting(ex, matrices):
    x_np, y_np = matrices
    x, y = da.from_array(x_np, chunks=(15, 10)), da.from_array(y_np, chunks=(10, 15))
    row, col = da.arange(40, chunks=10), da.linspace(0, 1, 60, chunks=20)
    exprs = [
        x @ y,
        x.dot(y),
        da.matmul(x.T, x),
        da.tensordot(x, y, axes=1),
        x + row[None, :] * col[:, None],
        da.exp(x) - 2 * x**2,
        da.where(x > 0, x, -x),
        da.einsum("ij,jk->ik", x, y),
        da.random.default_rng(3).standard_normal((40, 40), chunks=10).sum(axis=0),
    ]
    faas, sync = on_faas(ex, *exprs), on_sync(*exprs)
    for f, s in zip(faas, sync, strict=True):
        npt.assert_allclose(f, s, rtol=1e-12)
    npt.assert_allclose(faas[0], x_np @ y_np, rtol=1e-10)
    npt.assert_allclose(faas[4], x_np + np.arange(40)[None, :] * np.linspace(0, 1, 60)[:, None])


def test_array_tree_reduction_of_many_chunks(ex):
    x = da.arange(20_000, chunks=100)  # 200 chunks, combined 4 at a time
    total = x.sum(split_every=4)
    mean = (x * 2).mean(split_every=4)
    assert on_faas(ex, total, mean) == on_sync(total, mean)
    assert on_faas(ex, total)[0] == sum(range(20_000))
    report = ex.last_report
    assert report.tasks > 200
    assert report.invocations < report.tasks  # ready tasks are batched


# -- bag -----------------------------------------------------------------------------------------

RECORDS = [{"name": f"n{i % 7}", "amount": i, "tags": [f"t{i % 3}", f"u{i % 2}"]} for i in range(120)]


@pytest.fixture
def records() -> db.Bag:
    return db.from_sequence(RECORDS, npartitions=6)


def test_bag_map_filter_pluck(ex, records):
    amounts = records.pluck("amount")
    exprs = [
        amounts.map(lambda x: x * 3).filter(lambda x: x % 2 == 0),
        records.pluck("tags").flatten().frequencies(),
        records.pluck("name").distinct(),
        records.filter(lambda r: r["amount"] > 100).pluck(["name", "amount"]),
        amounts.sum(),
        amounts.mean(),
        amounts.topk(3),
        records.map(lambda r: r["name"]).count(),
    ]
    faas, sync = on_faas(ex, *exprs), on_sync(*exprs)
    assert faas[0] == sync[0] == [3 * i for i in range(120) if (3 * i) % 2 == 0]
    assert sorted(faas[1]) == sorted(sync[1]) == [("t0", 40), ("t1", 40), ("t2", 40), ("u0", 60), ("u1", 60)]
    assert sorted(faas[2]) == sorted(sync[2]) == [f"n{i}" for i in range(7)]
    assert faas[3:] == sync[3:]


def test_bag_foldby(ex, records):
    totals = records.foldby("name", lambda acc, r: acc + r["amount"], 0, operator.add, 0)
    counts = records.foldby(lambda r: r["amount"] % 4, lambda acc, _: acc + 1, 0, operator.add, 0)
    faas, sync = on_faas(ex, totals, counts), on_sync(totals, counts)
    assert sorted(faas[0]) == sorted(sync[0])
    assert sorted(faas[1]) == sorted(sync[1]) == [(k, 30) for k in range(4)]


def test_bag_groupby_with_the_task_shuffle(ex, records):
    # Outside enable(), the default is "disk" (partd in a local temporary directory), which needs a
    # disk shared by every function: it happens to work with the local pool, not on a real platform.
    groups = records.groupby(lambda r: r["amount"] % 5, shuffle="tasks").map(
        lambda kv: (kv[0], sorted(r["amount"] for r in kv[1]))
    )
    by_name = records.pluck("name").groupby(len, shuffle="tasks").starmap(lambda k, v: (k, len(v)))
    faas, sync = on_faas(ex, groups, by_name), on_sync(groups, by_name)
    assert sorted(faas[0]) == sorted(sync[0]) == [(k, list(range(k, 120, 5))) for k in range(5)]
    assert sorted(faas[1]) == sorted(sync[1]) == [(2, 120)]


def test_bag_groupby_with_the_disk_shuffle_never_runs_across_functions(ex, records, tmp_path):
    with dask.config.set(temporary_directory=str(tmp_path)):  # where partd puts its files
        grouped = records.groupby(lambda r: r["amount"] % 5)  # shuffle="disk": dask's default
    try:
        (result,) = on_faas(ex, grouped)
    except ConfigError as exc:  # refused, like the dataframe disk shuffle
        assert "shuffle" in str(exc)
        return
    # or run some other way (e.g. as a task shuffle), but not through files on a local disk
    assert not list(tmp_path.glob("*.partd")), "the disk shuffle ran across functions"
    assert sorted((k, sorted(r["amount"] for r in v)) for k, v in result) == [
        (k, list(range(k, 120, 5))) for k in range(5)
    ]


def test_bag_groupby_built_under_enable_uses_the_task_shuffle(ex, records):
    with dask_faas.enable(ex):  # Bag.groupby reads dataframe.shuffle.method when it is built
        grouped = records.groupby(lambda r: r["amount"] % 5)
        (result,) = dask.compute(grouped)
    assert not [key for key in dict(grouped.__dask_graph__()) if "partd" in str(key)]
    assert sorted((k, sorted(r["amount"] for r in v)) for k, v in result) == [
        (k, list(range(k, 120, 5))) for k in range(5)
    ]


def test_bag_to_dataframe(ex, records):
    rows = records.map(lambda r: {"name": r["name"], "amount": r["amount"]})
    meta = pd.DataFrame({"name": pd.Series([], dtype="object"), "amount": pd.Series([], dtype="int64")})
    frame = rows.to_dataframe(meta=meta)
    faas, sync = on_faas(ex, frame), on_sync(frame)
    pdt.assert_frame_equal(faas[0], sync[0])
    expected = pd.DataFrame([{"name": r["name"], "amount": r["amount"]} for r in RECORDS])
    pdt.assert_frame_equal(faas[0].reset_index(drop=True), expected, check_dtype=False)


def test_bag_to_dataframe_infers_its_meta_on_the_configured_scheduler(ex, records):
    # Without meta, to_dataframe computes the first element at once, on the configured scheduler
    # (a bag's default is the multiprocessing pool): under enable() that runs on the executor too.
    rows = records.map(lambda r: {"name": r["name"], "double": 2 * r["amount"]})
    before = ex.stats["invocations"]
    with dask_faas.enable(ex):
        frame = rows.to_dataframe()
        assert ex.stats["invocations"] > before
        result = frame.compute()
    pdt.assert_frame_equal(result, frame.compute(scheduler="sync"))
    assert list(result["double"]) == [2 * i for i in range(120)]


# -- dataframe -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pdf() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 400
    return pd.DataFrame(
        {
            "key": rng.integers(0, 12, n),
            "x": rng.standard_normal(n),
            "y": rng.integers(-50, 50, n),
            "s": [f"Word{i % 9}_{'ab'[i % 2]}" for i in range(n)],
        }
    )


@pytest.fixture
def ddf(pdf) -> dd.DataFrame:
    return dd.from_pandas(pdf, npartitions=8)


def test_dataframe_elementwise_and_new_columns(ex, pdf, ddf):
    out = ddf.assign(z=ddf.x * 2 + ddf.y, w=(ddf.y > 0).astype("int64"))
    out["v"] = out.z.abs() - out.key
    out = out[out.x > -1.0]
    (faas,), (sync,) = on_faas(ex, out), on_sync(out)
    pdt.assert_frame_equal(faas, sync)
    expected = pdf.assign(z=pdf.x * 2 + pdf.y, w=(pdf.y > 0).astype("int64"))
    expected["v"] = expected.z.abs() - expected.key
    pdt.assert_frame_equal(faas, expected[expected.x > -1.0], check_dtype=False)


def test_dataframe_reductions(ex, pdf, ddf):
    with_nan = ddf.x.where(ddf.y > 0)  # missing values, for count and mean
    exprs = [
        ddf[["x", "y"]].sum(),
        ddf[["x", "y"]].mean(),
        ddf.count(),
        ddf[["key", "s"]].nunique(),
        with_nan.count(),
        with_nan.mean(),
        ddf.key.nunique(),
        ddf.s.nunique(),
        ddf.y.max(),
        ddf.x.std(),
        ddf.shape[0],
    ]
    faas, sync = on_faas(ex, *exprs), on_sync(*exprs)
    for f, s in zip(faas[:4], sync[:4], strict=True):
        pdt.assert_series_equal(f, s)
    assert faas[4:] == pytest.approx(sync[4:], rel=1e-12)
    pdt.assert_series_equal(faas[0], pdf[["x", "y"]].sum(), check_dtype=False, rtol=1e-12)
    pdt.assert_series_equal(faas[3], pdf[["key", "s"]].nunique(), check_dtype=False)
    expected_nan = pdf.x.where(pdf.y > 0)
    assert faas[4] == expected_nan.count() and faas[5] == pytest.approx(expected_nan.mean())
    assert faas[6] == pdf.key.nunique() and faas[7] == pdf.s.nunique()
    assert faas[-1] == len(pdf)


def test_dataframe_groupby_aggregations(ex, pdf, ddf):
    grouped = ddf.groupby("key")
    exprs = [
        grouped.x.sum(),
        grouped.y.mean(),
        grouped.s.count(),
        grouped.agg({"x": ["sum", "mean", "max"], "y": "count"}),
        ddf.groupby(["key", "s"]).y.sum(),
        grouped.size(),
    ]
    faas, sync = on_faas(ex, *exprs), on_sync(*exprs)
    for f, s in zip(faas, sync, strict=True):
        check = pdt.assert_frame_equal if isinstance(s, pd.DataFrame) else pdt.assert_series_equal
        check(f.sort_index(), s.sort_index())
    pdt.assert_series_equal(faas[0].sort_index(), pdf.groupby("key").x.sum(), rtol=1e-12)
    expected = pdf.groupby("key").agg({"x": ["sum", "mean", "max"], "y": "count"})
    pdt.assert_frame_equal(faas[3].sort_index(), expected, check_dtype=False, rtol=1e-12)


def test_dataframe_merge_with_a_small_frame(ex, pdf, ddf):
    small_pdf = pd.DataFrame({"key": range(0, 12, 2), "label": [f"even{k}" for k in range(0, 12, 2)]})
    small = dd.from_pandas(small_pdf, npartitions=1)
    inner = ddf.merge(small, on="key", how="inner")
    left = ddf.merge(small, on="key", how="left")
    faas, sync = on_faas(ex, inner, left), on_sync(inner, left)
    for f, s in zip(faas, sync, strict=True):
        pdt.assert_frame_equal(
            f.sort_values(["key", "x"]).reset_index(drop=True),
            s.sort_values(["key", "x"]).reset_index(drop=True),
        )
    expected = pdf.merge(small_pdf, on="key").sort_values(["key", "x"]).reset_index(drop=True)
    pdt.assert_frame_equal(
        faas[0].sort_values(["key", "x"]).reset_index(drop=True), expected, check_dtype=False
    )


def test_dataframe_head(ex, pdf, ddf):
    head = ddf.head(10, compute=False)
    (faas,), (sync,) = on_faas(ex, head), on_sync(head)
    pdt.assert_frame_equal(faas, sync)
    pdt.assert_frame_equal(faas, pdf.head(10), check_dtype=False)
    # head() with compute=True (the default) computes on the configured scheduler
    before = ex.stats["invocations"]
    with dask.config.set(scheduler=ex):
        pdt.assert_frame_equal(ddf.head(5), sync.head(5))
    assert ex.stats["invocations"] > before


def test_dataframe_value_counts(ex, pdf, ddf):
    expected = pdf.key.value_counts().sort_index()
    # one output partition: a tree reduction, no shuffle
    single = ddf.key.value_counts(split_out=1)
    (faas,), (sync,) = on_faas(ex, single), on_sync(single)
    pdt.assert_series_equal(faas.sort_index(), sync.sort_index())
    pdt.assert_series_equal(faas.sort_index(), expected, check_dtype=False)
    # dask's default (split_out=True) shuffles the counts: it runs through the storage exchange
    pdt.assert_series_equal(on_faas(ex, ddf.key.value_counts())[0].sort_index(), expected, check_dtype=False)
    with dask_faas.enable(ex):
        shuffled = ddf.key.value_counts().compute()
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        sync = ddf.key.value_counts().compute(scheduler="sync")
    pdt.assert_series_equal(shuffled.sort_index(), sync.sort_index())
    pdt.assert_series_equal(shuffled.sort_index(), expected, check_dtype=False)


def test_dataframe_string_ops(ex, pdf, ddf):
    s = ddf.s
    out = ddf.assign(
        upper=s.str.upper(),
        length=s.str.len(),
        has_b=s.str.contains("_b"),
        head=s.str.slice(0, 4),
        part=s.str.split("_").str[0],
    )
    starts = s[s.str.startswith("Word3")]
    faas, sync = on_faas(ex, out, starts), on_sync(out, starts)
    pdt.assert_frame_equal(faas[0], sync[0])
    pdt.assert_series_equal(faas[1], sync[1])
    expected = pdf.s.str.upper()
    pdt.assert_series_equal(faas[0]["upper"], expected, check_dtype=False, check_names=False)
    assert (faas[0]["length"] == pdf.s.str.len()).all()


def test_a_local_disk_shuffle_runs_through_the_storage_exchange(ex, pdf, ddf):
    """Without enable(), dask lowers shuffles to the local-disk method: faas_get swaps in the storage
    exchange with the same output keys, so the same rows land in the same partitions as sync's task
    shuffle, and no partd file is written."""
    assert dask.config.get("dataframe.shuffle.method", None) is None
    shuffled = ddf.shuffle("key")
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        expected = dask.compute(*shuffled.to_delayed(), scheduler="sync")
    partitions = dask.compute(*ddf.shuffle("key").to_delayed(), scheduler=ex)
    by = ["key", "x"]
    for got, want in zip(partitions, expected, strict=True):
        pdt.assert_frame_equal(_normalized(got, by), _normalized(want, by))
    (indexed,) = on_faas(ex, ddf.set_index("key"))
    assert indexed.index.is_monotonic_increasing
    pdt.assert_frame_equal(_normalized(indexed.reset_index(), by), _normalized(pdf, by), check_dtype=False)
    many = dd.from_pandas(pdf, npartitions=16)  # a groupby over 16+ partitions lowers to a shuffle
    (sums,) = on_faas(ex, many.groupby("key").y.sum())
    pdt.assert_series_equal(sums.sort_index(), pdf.groupby("key").y.sum(), check_dtype=False)


def _normalized(frame: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Rows in a defined order: a shuffle does not define the order within a partition."""
    return frame.sort_values(by).reset_index(drop=True)


def test_shuffle_with_enable_equals_sync_task_shuffle(ex, pdf, ddf):
    shuffled = ddf.shuffle("key")
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        expected = dask.compute(*shuffled.to_delayed(), scheduler="sync")
    before = ex.stats["invocations"]
    with dask_faas.enable(ex):
        result = shuffled.compute()
        partitions = dask.compute(*shuffled.to_delayed())
    assert ex.stats["invocations"] > before
    by = ["key", "x"]
    assert len(partitions) == len(expected) == ddf.npartitions
    for got, want in zip(partitions, expected, strict=True):  # the same rows in the same partitions
        pdt.assert_frame_equal(_normalized(got, by), _normalized(want, by))
    pdt.assert_frame_equal(_normalized(result, by), _normalized(pd.concat(expected), by))
    pdt.assert_frame_equal(_normalized(result, by), _normalized(pdf, by), check_dtype=False)
    keys_per_partition = [set(p.key) for p in partitions]
    for i, keys in enumerate(keys_per_partition):  # each key lands in exactly one partition
        for other in keys_per_partition[i + 1 :]:
            assert not keys & other


def test_set_index_with_enable_equals_sync_and_runs_its_quantiles_on_faas(ex, pdf):
    # Data of this test and executor only: dask caches the divisions of a set_index by expression
    # name, so the same data on the next executor kind would not compute its quantiles at all.
    frame = pdf.assign(k=(pdf.key * 7 + pdf.y) % 31, run=ex.job_prefix)
    ddf = dd.from_pandas(frame, npartitions=8)
    before = ex.stats["invocations"]
    with dask_faas.enable(ex):
        indexed = ddf.set_index("k")
        divisions = indexed.divisions  # the nested quantile compute
        after_quantiles = ex.stats["invocations"]
        result = indexed.compute()
    assert after_quantiles > before, "the quantiles of set_index did not run through the executor"
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        expected_ddf = ddf.set_index("k")
        expected = expected_ddf.compute(scheduler="sync")
    assert divisions == expected_ddf.divisions
    assert result.index.is_monotonic_increasing
    by = ["k", "x"]
    pdt.assert_frame_equal(_normalized(result.reset_index(), by), _normalized(expected.reset_index(), by))
    pdt.assert_frame_equal(
        _normalized(result.reset_index(), by),
        _normalized(frame, by)[result.reset_index().columns],
        check_dtype=False,
    )


def test_set_index_compute_under_enable_runs_everything_through_the_executor(ex, pdf):
    frame = pdf.assign(k=(pdf.y * 3 + pdf.key) % 17, run=ex.job_prefix)  # see the test above
    ddf = dd.from_pandas(frame, npartitions=8)
    before = ex.stats["invocations"]
    with dask_faas.enable(ex):
        result = ddf.set_index("k").x.sum().compute()  # divisions computed inside compute()
        report = ex.last_report
    assert ex.stats["invocations"] - before > report.invocations  # the quantiles, then the compute
    with dask.config.set({"dataframe.shuffle.method": "tasks"}):
        expected = ddf.set_index("k").x.sum().compute(scheduler="sync")
    assert result == pytest.approx(expected, rel=1e-12)
    assert result == pytest.approx(frame.x.sum(), rel=1e-12)


# -- several collections at once -----------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Computing mixed collections:UserWarning")  # dask's, sync too
def test_several_collections_in_one_compute(ex, pdf, ddf, records, matrices):
    x_np, _ = matrices
    a = da.from_array(x_np, chunks=(20, 20)).sum(axis=0)
    b = records.pluck("amount").filter(lambda v: v % 3 == 0).sum()
    c = ddf.groupby("key").y.sum()
    d = dask.delayed(lambda u, v: u + v)(b, 1)
    faas, sync = on_faas(ex, a, b, c, d, 42), on_sync(a, b, c, d, 42)
    npt.assert_allclose(faas[0], sync[0], rtol=1e-12)
    assert faas[1] == sync[1] == sum(range(0, 120, 3))
    pdt.assert_series_equal(faas[2].sort_index(), sync[2].sort_index())
    assert faas[3] == sync[3] and faas[4] == 42
    nested = {"arr": a, "list": [b, d]}
    assert_same_nested(on_faas(ex, nested), on_sync(nested))
