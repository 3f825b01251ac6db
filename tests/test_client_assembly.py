"""Issue 10, finding (c): a large result of a dask compute works on the default limits.

``dask.compute`` ends every collection with one task of dask's own (``FinalizeCompute``) that turns
the partitions into the value it returns: a concatenation. In a function it must hold every
partition, their concatenation and the pickle of it, so a 200 MiB array or dataframe needed more
than the default ``memory_mb=1024``. That task now runs on the client, from the references of its
inputs (its result reaches the client anyway); user tasks still run in functions.

Not a row of the faults matrix (``tests/test_faults.py``): the scheduler's behaviour. Every executor
here is the embedded default (local pool of 2 processes, ``memory_mb=1024``) and ``make_executor``
checks that its job prefix is empty at the end.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any

import dask
import dask.array as da
import dask.bag as db
import numpy as np
import numpy.testing as npt
import pytest
from dask.highlevelgraph import HighLevelGraph
from dask.typing import Key

from dask_faas import FaasExecutor, FunctionTimeoutError

MiB = 2**20


# -- a collection of our own: where did its finalize run? --------------------------------------


def part(index: int) -> tuple[int, int]:
    """A partition: its index and the process that computed it."""
    return index, os.getpid()


def assemble_here(parts: list[tuple[int, int]]) -> dict[str, Any]:
    """A collection's finalize: its parts and the process that assembled them."""
    return {"parts": list(parts), "assembled_by": os.getpid()}


def fail_to_assemble(parts: list[Any]) -> None:
    raise ValueError(f"cannot assemble {len(parts)} parts")


def sleep_then(index: int, seconds: float) -> int:
    import time

    time.sleep(seconds)
    return index


class Parts(dask.base.DaskMethodsMixin):
    """A minimal dask collection (the collection protocol): ``n`` tasks and a finalize function."""

    def __init__(
        self, n: int, finalize: Callable[[list[Any]], Any] = assemble_here, task: Any = None
    ) -> None:
        self.name = f"parts-{dask.base.tokenize(n, finalize, task)}"
        self._keys: list[Key] = [(self.name, i) for i in range(n)]
        layer = {key: task(i) if task else (part, i) for i, key in enumerate(self._keys)}
        self._graph = HighLevelGraph.from_collections(self.name, layer)
        self._finalize = finalize

    def __dask_graph__(self) -> HighLevelGraph:
        return self._graph

    def __dask_keys__(self) -> list[Key]:
        return self._keys

    def __dask_layers__(self) -> tuple[str, ...]:
        return (self.name,)

    def __dask_tokenize__(self) -> str:
        return self.name

    def __dask_postcompute__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return self._finalize, ()

    def __dask_postpersist__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        raise NotImplementedError

    __dask_scheduler__ = staticmethod(dask.get)

    @staticmethod
    def __dask_optimize__(dsk: Any, keys: Any, **kwargs: Any) -> Any:
        return dsk


# -- 200 MiB results on the defaults -------------------------------------------------------------


def test_a_200_mib_array_computes_on_the_default_memory_limit(make_executor: Callable[..., FaasExecutor]):
    ex = make_executor()
    assert ex.settings["memory-mb"] == 1024
    x = da.random.default_rng(0).random((5120, 5120), chunks=(1024, 1024))  # 200 MiB of float64
    (result,) = dask.compute(x, scheduler=ex)
    assert result.nbytes == 200 * MiB
    report = ex.last_report
    assert report.assembled_locally == 1, str(report)
    assert report.executed == 25, str(report)  # the chunks ran in functions, the finalize did not
    assert report.bytes_received >= 200 * MiB, str(report)  # the chunks reached the client
    npt.assert_array_equal(result, x.compute(scheduler="sync"))


def frame_part(i: int) -> Any:
    import pandas as pd

    data = np.random.default_rng(i).random((131072, 8))  # 8 MiB
    return pd.DataFrame(data, columns=list("abcdefgh"), index=pd.RangeIndex(i * 131072, (i + 1) * 131072))


def test_a_200_mib_dataframe_computes_on_the_default_memory_limit(
    make_executor: Callable[..., FaasExecutor],
):
    dd = pytest.importorskip("dask.dataframe")
    import pandas.testing as pdt

    ex = make_executor()
    df = dd.from_map(frame_part, range(25))  # 25 partitions of 8 MiB
    (result,) = dask.compute(df, scheduler=ex)
    assert result.shape == (25 * 131072, 8)
    report = ex.last_report
    assert report.assembled_locally == 1, str(report)
    assert report.bytes_received >= 200 * MiB, str(report)
    pdt.assert_frame_equal(result, df.compute(scheduler="sync"))


def test_a_200_mib_bag_computes_on_the_default_memory_limit(make_executor: Callable[..., FaasExecutor]):
    ex = make_executor()
    bag = db.range(25, npartitions=25).map(lambda i: bytes([i]) * (8 * MiB))
    (result,) = dask.compute(bag, scheduler=ex)
    assert [len(b) for b in result] == [8 * MiB] * 25
    assert result == bag.compute(scheduler="sync")
    assert ex.last_report.assembled_locally == 1, str(ex.last_report)


# -- which tasks run on the client ---------------------------------------------------------------


def test_the_finalize_runs_on_the_client_and_the_partitions_in_functions(executor: FaasExecutor):
    (value,) = dask.compute(Parts(6), scheduler=executor)
    assert value["assembled_by"] == os.getpid()
    assert [i for i, _ in value["parts"]] == list(range(6))
    assert os.getpid() not in {pid for _, pid in value["parts"]}
    report = executor.last_report
    assert (report.executed, report.assembled_locally) == (6, 1), str(report)
    assert "1 assembled on the client" in str(report)


def test_a_single_partition_is_not_fused_into_the_finalize(executor: FaasExecutor):
    """Linear fusion would merge the only partition into its finalize: the user's task would then
    run on the client. It stays apart, in a function."""
    (value,) = dask.compute(Parts(1), scheduler=executor)
    assert value["assembled_by"] == os.getpid()
    ((_, computed_by),) = value["parts"]
    assert computed_by != os.getpid()
    assert executor.last_report.invocations == 1


def test_each_collection_of_a_compute_is_assembled_on_the_client(executor: FaasExecutor):
    x = da.arange(1_000, chunks=100)
    first, second, bag = dask.compute(x, x * 2, db.range(10, npartitions=5), scheduler=executor)
    npt.assert_array_equal(first, np.arange(1_000))
    npt.assert_array_equal(second, np.arange(1_000) * 2)
    assert bag == list(range(10))
    assert executor.last_report.assembled_locally == 3, str(executor.last_report)


@pytest.mark.parametrize(
    "collection",
    [
        pytest.param(lambda: dask.delayed(os.getpid)(), id="delayed"),
        pytest.param(
            lambda: dask.delayed(os.getpid)(dask_key_name="finalize-mine"), id="delayed-named-finalize"
        ),
        pytest.param(
            lambda: da.arange(10, chunks=5).map_blocks(lambda b: b * 0 + os.getpid()).sum(), id="array-sum"
        ),
        pytest.param(lambda: db.range(10, npartitions=5).map(lambda _: os.getpid()).max(), id="bag-max"),
    ],
)
def test_a_requested_user_task_still_runs_in_a_function(executor: FaasExecutor, collection: Any):
    (value,) = dask.compute(collection(), scheduler=executor)
    assert value != os.getpid() and int(value) > 0
    assert executor.last_report.assembled_locally == 0, str(executor.last_report)


def test_a_dataframe_reduction_still_runs_in_a_function(executor: FaasExecutor):
    dd = pytest.importorskip("dask.dataframe")
    import pandas as pd

    df = dd.from_pandas(pd.DataFrame({"a": range(100)}), npartitions=4)
    assert dask.compute(df.a.sum(), scheduler=executor) == (4950,)
    assert executor.last_report.assembled_locally == 0, str(executor.last_report)
    (frame,) = dask.compute(df[df.a % 2 == 0], scheduler=executor)
    assert frame.a.tolist() == list(range(0, 100, 2))
    assert executor.last_report.assembled_locally == 1, str(executor.last_report)


def test_an_annotated_finalize_runs_in_a_function_with_its_limits(executor: FaasExecutor):
    """``dask.annotate`` around the compute reaches dask's finalize task: the user asked for its
    limits, so it runs in a function, as before."""
    with dask.annotate(faas_memory_mb=512):
        (value,) = dask.compute(Parts(3), scheduler=executor)
    assert value["assembled_by"] != os.getpid()
    assert executor.last_report.assembled_locally == 0, str(executor.last_report)


def test_annotations_of_user_tasks_reach_their_invocations(executor: FaasExecutor):
    with dask.annotate(faas_timeout_s=0.5):
        slow = Parts(2, task=lambda i: (sleep_then, i, 30))
    with pytest.raises(FunctionTimeoutError, match=r"timeout_s=0.5"):
        dask.compute(slow, scheduler=executor)


def test_persist_keeps_the_partitions_in_storage(executor: FaasExecutor):
    x = da.arange(1_000, chunks=100) + 1
    (persisted,) = dask.persist(x, scheduler=executor)
    assert executor.last_report.assembled_locally == 0
    npt.assert_array_equal(persisted.compute(scheduler=executor), np.arange(1, 1_001))
    assert executor.last_report.assembled_locally == 1
    del persisted


def test_a_failing_finalize_names_its_task_and_leaves_nothing_behind(executor: FaasExecutor):
    with pytest.raises(ValueError, match="cannot assemble 4 parts") as info:
        dask.compute(Parts(4, finalize=fail_to_assemble), scheduler=executor)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "task 'finalize-hlgfinalizecompute-" in notes and "(fail_to_assemble)" in notes, notes
    assert "assembling the result on the client" in notes, notes
    left = [key for key, _ in executor.storage.list(executor.job_prefix) if "/fn/" not in key]
    assert not left, left


def test_callbacks_see_the_finalize(executor: FaasExecutor):
    from dask.callbacks import Callback

    finished: list[Hashable] = []

    class Record(Callback):
        def _posttask(self, key: Hashable, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            finished.append(key)

    with Record():
        dask.compute(Parts(3), scheduler=executor)
    assert len(finished) == 4 and str(finished[-1]).startswith("finalize-"), finished
