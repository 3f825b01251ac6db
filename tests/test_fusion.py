"""Partition-wise fusion keeps independent partitions parallel.

A reduction's aggregate depends on every partition: fusing partition 0's chain into it would run
that chain only after all the others (measured once as "15 tasks (1 after fusion) in 1 invocation"
for a 2-partition read_csv + filter + groupby). These tests count the invocations that run at the
same time, from the intervals the partition functions record themselves, and compare the results
with pandas.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
import pytest
from dask._task_spec import convert_legacy_graph

import dask_faas
from dask_faas.fusion import fuse_partitionwise


def record_interval(df: pd.DataFrame, folder: str, seconds: float) -> pd.DataFrame:
    """Sleep inside the partition's function and record when it ran (and in which process)."""
    if len(df):  # dask also calls partition functions on empty metadata frames
        start = time.time()
        time.sleep(seconds)
        name = f"{os.getpid()}-{df.index[0]}-{time.monotonic_ns()}.json"
        Path(folder, name).write_text(json.dumps([start, time.time(), os.getpid()]))
    return df


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = current = 0
    for _, delta in events:
        current += delta
        best = max(best, current)
    return best


# each partition sleeps long enough for the other worker to start one too, even on a loaded machine
@pytest.mark.parametrize(("partitions", "seconds"), [(2, 2.0), (16, 0.5)])
def test_a_csv_reduction_runs_its_partitions_in_parallel(make_executor, tmp_path, partitions, seconds):
    rows = 40 * partitions
    frame = pd.DataFrame({"key": [i % 5 for i in range(rows)], "x": range(rows), "y": range(rows)})
    source = tmp_path / "data.csv"
    frame.to_csv(source, index=False)
    folder = tmp_path / "intervals"
    folder.mkdir()
    ex = make_executor(workers=2)
    size = source.stat().st_size
    df = dask_faas.read_csv(str(source), blocksize=-(-size // partitions))
    assert df.npartitions == partitions
    recorded = df.map_partitions(record_interval, str(folder), seconds, meta=df._meta)
    query = recorded[recorded.x % 3 != 0].groupby("key").y.sum()
    result = query.compute(scheduler=ex)

    expected = frame[frame.x % 3 != 0].groupby("key").y.sum()
    pd.testing.assert_series_equal(result.sort_index(), expected, check_names=False)
    report = ex.last_report
    intervals = [tuple(json.loads(p.read_text())[:2]) for p in folder.iterdir()]
    assert len(intervals) == partitions, intervals
    assert max_overlap(intervals) == 2, (intervals, str(report))  # both workers busy at once
    assert report.invocations >= 2, str(report)
    assert report.executed > 1, str(report)


def test_a_task_is_not_fused_into_a_dependent_of_other_partitions():
    graph = {
        ("load", 0): (range, 3),
        ("load", 1): (range, 4),
        ("chunk", 0): (sum, ("load", 0)),
        ("chunk", 1): (sum, ("load", 1)),
        ("aggregate", 0): (sum, [("chunk", 0), ("chunk", 1)]),
    }
    tasks = convert_legacy_graph(graph)
    fused = fuse_partitionwise(tasks, keep={("aggregate", 0)})
    # each partition's chain is one task; neither is folded into the aggregation
    assert set(fused) == {("chunk", 0), ("chunk", 1), ("aggregate", 0)}
    assert fused[("aggregate", 0)].dependencies == {("chunk", 0), ("chunk", 1)}
    assert dask.get(fused, ("aggregate", 0)) == dask.get(graph, ("aggregate", 0)) == 9


def test_a_chain_is_not_fused_into_a_task_that_waits_for_a_scalar_of_every_partition():
    # (a * 2) - b.sum(): the scalar's key has index 0 like partition 0, but it spans every partition
    graph = {
        ("a", 0): (range, 3),
        ("a", 1): (range, 4),
        ("double", 0): (list, ("a", 0)),
        ("double", 1): (list, ("a", 1)),
        ("chunk", 0): (sum, ("a", 0)),
        ("chunk", 1): (sum, ("a", 1)),
        ("total", 0): (sum, [("chunk", 0), ("chunk", 1)]),
        ("minus", 0): (len, [("double", 0), ("total", 0)]),
        ("minus", 1): (len, [("double", 1), ("total", 0)]),
    }
    for order in (list(graph), list(reversed(graph))):  # the same fusion whatever the order
        fused = fuse_partitionwise(
            convert_legacy_graph({k: graph[k] for k in order}), keep={("minus", 0), ("minus", 1)}
        )
        assert ("double", 0) in fused and ("double", 1) in fused, sorted(fused)
        assert dask.get(fused, [("minus", 0), ("minus", 1)]) == (2, 2)


def test_a_diamond_after_a_shuffle_still_fuses():
    # a reducer depends on every mapper; the partition's chain after it is one task
    graph = {
        ("map", 0): (sum, [1, 2]),
        ("map", 1): (sum, [3, 4]),
        ("reduce", 0): (list, [("map", 0), ("map", 1)]),
        ("left", 0): (len, ("reduce", 0)),
        ("right", 0): (sum, ("reduce", 0)),
        ("both", 0): (list, [("left", 0), ("right", 0)]),
    }
    fused = fuse_partitionwise(convert_legacy_graph(graph), keep={("both", 0)})
    assert set(fused) == {("map", 0), ("map", 1), ("both", 0)}
    assert dask.get(fused, ("both", 0)) == dask.get(graph, ("both", 0))


def test_a_single_partition_chain_still_fuses_into_its_aggregate():
    graph = {
        ("load", 0): (range, 3),
        ("chunk", 0): (sum, ("load", 0)),
        ("aggregate", 0): (sum, [("chunk", 0)]),
    }
    fused = fuse_partitionwise(convert_legacy_graph(graph), keep={("aggregate", 0)})
    assert set(fused) == {("aggregate", 0)}
    assert dask.get(fused, ("aggregate", 0)) == 3


def test_dask_dataframe_reductions_equal_pandas_after_fusion(executor):
    pdf = pd.DataFrame({"a": range(100), "b": [i % 7 for i in range(100)]})
    ddf = dd.from_pandas(pdf, npartitions=8)
    got = dask.compute(
        ddf.a.sum(), ddf.groupby("b").a.mean(), (ddf.a - ddf.a.mean()).max(), scheduler=executor
    )
    assert got[0] == pdf.a.sum()
    pd.testing.assert_series_equal(got[1].sort_index(), pdf.groupby("b").a.mean())
    assert got[2] == (pdf.a - pdf.a.mean()).max()
