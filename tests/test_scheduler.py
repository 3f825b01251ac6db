"""faas_get as a scheduler: references instead of data, fewer invocations, callbacks, persist."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import pytest
from dask.diagnostics import Callback, ProgressBar
from dask.diagnostics import Profiler as DaskProfiler

from dask_faas import (
    ConfigError,
    FaasExecutor,
    FunctionMemoryError,
    FunctionTimeoutError,
    RemoteTraceback,
    faas_get,
)


def test_faas_get_and_the_executor_are_the_same_path(executor):
    total = dask.delayed(sum)([dask.delayed(pow)(i, 2) for i in range(10)])
    assert dask.compute(total, scheduler=executor)[0] == 285
    assert faas_get(total.__dask_graph__(), total.key, executor=executor) == 285
    with dask.config.set(scheduler=executor):
        assert total.compute() == 285
    assert executor.last_report.invocations >= 1


def test_only_the_final_result_reaches_the_client(executor):
    x = da.random.default_rng(0).random((20_000, 1_000), chunks=(1_000, 1_000))  # 20 chunks of 8 MB
    centred = x - x.mean(axis=0)
    result = centred.sum(axis=1)  # 160 kB
    before = executor.stats["bytes_received"]
    values = result.compute(scheduler=executor)
    received = executor.stats["bytes_received"] - before
    report = executor.last_report
    assert report.bytes_received == received
    assert values.nbytes <= received <= values.nbytes + 64 * 1024 + 2_000 * report.invocations
    assert received < x.nbytes / 500  # 160 MB of intermediates stayed in storage
    np.testing.assert_allclose(values, result.compute(scheduler="sync"))


def test_a_thousand_partition_bag_runs_in_few_invocations(executor):
    bag = db.from_sequence(range(10_000), npartitions=1_000)
    total = bag.map(lambda v: v + 1).filter(lambda v: v % 3).map(lambda v: v * 2).sum()
    assert total.compute(scheduler=executor) == total.compute(scheduler="sync")
    report = executor.last_report
    assert report.invocations * 4 <= report.tasks
    assert f"{report.tasks} tasks" in str(report) and f"{report.invocations} invocations" in str(report)


def test_progress_bar_reaches_100_percent(executor, capsys):
    total = dask.delayed(sum)([dask.delayed(pow)(i, 2) for i in range(40)])
    with ProgressBar(dt=0.01):
        assert total.compute(scheduler=executor) == sum(i * i for i in range(40))
    assert "100%" in capsys.readouterr().out


def test_profiler_and_callbacks_see_every_task(executor):
    leaves = [dask.delayed(pow)(i, 2, dask_key_name=f"leaf-{i}") for i in range(8)]
    pairs = [dask.delayed(sum)(leaves[i : i + 2], dask_key_name=f"pair-{i}") for i in range(0, 8, 2)]
    total = dask.delayed(sum)(pairs, dask_key_name="total")
    started, finished = [], []
    spy = Callback(
        pretask=lambda key, dsk, state: started.append(key), posttask=lambda *a: finished.append(a[0])
    )
    with DaskProfiler() as prof, spy:
        assert total.compute(scheduler=executor, optimize_graph=False) == sum(i * i for i in range(8))
    expected = {f"leaf-{i}" for i in range(8)} | {f"pair-{i}" for i in range(0, 8, 2)} | {"total"}
    assert {r.key for r in prof.results} >= expected
    assert set(started) == set(finished) >= expected


def fails_in(where: str) -> None:
    raise ValueError(f"failed in pid {os.getpid()} ({where})")


def test_a_task_exception_is_raised_with_its_remote_frames(executor):
    broken = dask.delayed(fails_in)("a task")
    with pytest.raises(ValueError, match=r"\(a task\)") as info:
        dask.delayed(sum)([broken, 1]).compute(scheduler=executor)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fails_in" in str(info.value.__cause__)
    assert f"pid {os.getpid()} " not in str(info.value)


def test_rerun_exceptions_locally_runs_the_failed_task_on_the_client(executor):
    broken = dask.delayed(fails_in)("locally")
    with dask.config.set(rerun_exceptions_locally=True), pytest.raises(ValueError) as info:
        broken.compute(scheduler=executor)
    assert f"pid {os.getpid()} " in str(info.value)


def record(directory: str, block: np.ndarray) -> np.ndarray:
    Path(directory, f"{os.getpid()}-{time.perf_counter_ns()}").touch()
    return block * 2


def test_persisted_partitions_stay_in_storage_and_run_once(executor, tmp_path):
    calls = tmp_path / "calls"
    calls.mkdir()
    x = da.ones((4_000, 1_000), chunks=(500, 1_000)).map_blocks(lambda b: record(str(calls), b))

    def remote_calls() -> int:  # map_blocks also calls it on the client, on empty blocks (meta)
        return len([p for p in calls.iterdir() if not p.name.startswith(f"{os.getpid()}-")])

    (persisted,) = dask.persist(x, scheduler=executor)
    assert remote_calls() == 8
    stored = [key for key, _ in executor.storage.list(executor.job_prefix) if "/fn/" not in key]
    assert len(stored) == 8  # 4 MB partitions: each one object in storage
    assert float(persisted.sum().compute(scheduler=executor)) == 8_000_000
    assert float((persisted + 1).mean().compute(scheduler=executor)) == 3
    assert remote_calls() == 8  # never recomputed

    del persisted
    gc.collect()
    time.sleep(0.1)
    left = [key for key, _ in executor.storage.list(executor.job_prefix) if "/fn/" not in key]
    assert left == []  # dropped with the collection


def test_persisted_data_belongs_to_its_executor(executor, make_executor):
    (persisted,) = dask.persist(da.arange(10, chunks=5), scheduler=executor)
    other = make_executor()
    with pytest.raises(ValueError, match="persisted by another FaasExecutor"):
        persisted.sum().compute(scheduler=other)


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


def hold_memory(megabytes: int) -> int:
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(30)
    return len(block)


def flaky(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise ConnectionError("first attempt fails")
    return "second attempt"


def test_annotations_reach_the_invocations(executor, tmp_path):
    with dask.annotate(faas_timeout_s=0.5):
        slow = dask.delayed(sleep_for)(30)
    with pytest.raises(FunctionTimeoutError, match=r"timeout_s=0.5"):
        slow.compute(scheduler=executor)

    with dask.annotate(faas_memory_mb=200):
        hungry = dask.delayed(hold_memory)(400)
    with pytest.raises(FunctionMemoryError, match=r"memory_mb=200"):
        hungry.compute(scheduler=executor)

    with dask.annotate(faas_retries=1):
        retried = dask.delayed(flaky)(str(tmp_path / "marker"))
    assert retried.compute(scheduler=executor) == "second attempt"
    assert executor.stats["retries"] == 1


def test_intermediates_are_deleted_as_soon_as_no_task_needs_them(make_executor):
    ex = make_executor(batch_size=1)
    seen = []

    class Watch(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            seen.append(len([k for k, _ in ex.storage.list(ex.job_prefix) if "/fn/" not in k]))

    chain = dask.delayed(np.zeros)(400_000)  # 3.2 MB results go to storage
    for _ in range(6):
        chain = dask.delayed(np.add)(chain, 1)
    with Watch():
        assert chain.compute(scheduler=ex, optimize_graph=False)[0] == 6
    assert max(seen) <= 3  # never the whole chain at once


def test_enable_sets_the_scheduler_for_every_compute(executor):
    with dask_faas_enable(executor):
        assert dask.delayed(sum)([1, 2]).compute() == 3
        assert executor.last_report is not None
        assert dask.config.get("dataframe.shuffle.method") == "tasks"


def dask_faas_enable(executor: FaasExecutor):
    import dask_faas

    return dask_faas.enable(executor)


def test_dataframe_from_delayed_parts(executor):
    import dask.dataframe as dd
    import pandas as pd

    parts = [dask.delayed(pd.Series)([1, 2]), dask.delayed(pd.Series)([3])]
    series = dd.from_delayed(parts, meta=pd.Series(dtype="int64"), verify_meta=False)
    assert series.compute(scheduler=executor).tolist() == [1, 2, 3]  # graph keys != node keys


def test_partitionwise_fusion_keeps_a_partition_in_one_function(executor):
    import dask.dataframe as dd
    import pandas as pd

    pdf = pd.DataFrame(
        {"key": [i % 7 for i in range(800)], "a": range(800), "b": [i % 3 for i in range(800)]}
    )
    df = dd.from_pandas(pdf, npartitions=8)
    query = df[(df.a > 10) & (df.b != 1)].groupby("key").a.sum()  # a diamond per partition
    result = query.compute(scheduler=executor)
    expected = pdf[(pdf.a > 10) & (pdf.b != 1)].groupby("key").a.sum()
    pd.testing.assert_series_equal(result.sort_index(), expected, check_dtype=False)
    report = executor.last_report
    assert report.executed <= 8 + 3 < report.tasks  # one task per partition, plus the aggregation


def test_an_annotation_above_the_platforms_limit_is_refused_naming_the_task(executor):
    limit = executor.backend.max_timeout_s
    with dask.annotate(faas_timeout_s=limit * 2):
        value = dask.delayed(sum)([1, 2], dask_key_name="too-long")
    with pytest.raises(ConfigError, match=r"task 'too-long'.*max_timeout_s"):
        dask.compute(value, scheduler=executor, optimize_graph=False)
