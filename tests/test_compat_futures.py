"""Futures of the facade that travel and chain: functions that themselves map (Lithops' internal
executions) and return futures, futures pickled to a file and waited on in another process,
``FuturesList.map`` / ``map_reduce`` chaining, futures as the data of a later map, cloudobjects made
inside functions, ``*args`` / ``**kwargs`` functions over dicts and ``local://`` URLs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import dask_faas.compat as lithops

KEY = "5e" * 32


def job_directories(root: Path) -> set[str]:
    base = root / "dask-faas"
    return {p.name for p in base.iterdir()} if base.is_dir() else set()


def only_outer_job_left(root: Path, outer: str, within_s: float = 60) -> set[str]:
    """The job directories once the internal executions' jobs are gone (bounded wait)."""
    end = time.monotonic() + within_s
    while (left := job_directories(root) - {outer}) and time.monotonic() < end:
        time.sleep(0.1)
    return left


def maps_inside(n: int) -> list[int]:
    import dask_faas.compat as lithops

    inner = lithops.FunctionExecutor()
    inner.map(lambda x: x * 2, range(n))
    return inner.get_result()


def returns_futures(n: int) -> Any:
    import dask_faas.compat as lithops

    inner = lithops.FunctionExecutor()
    return inner.map(lambda x: x + 1, range(n))


def returns_one_future(n: int) -> Any:
    import dask_faas.compat as lithops

    return lithops.FunctionExecutor().call_async(lambda x: x * 100, n)


def test_internal_executions_leave_no_job_directory(executor: Any, storage_root: Path) -> None:
    fexec = lithops.FunctionExecutor(executor=executor)
    fexec.map(maps_inside, [1, 3])
    assert fexec.get_result() == [[0], [0, 2, 4]]
    fexec.call_async(returns_futures, 3)
    assert fexec.get_result() == [1, 2, 3]  # the returned futures' results
    fexec.call_async(returns_one_future, 4)
    assert fexec.get_result() == 400
    futures = fexec.map(returns_futures, [2, 1])
    assert fexec.get_result(futures) == [1, 2, 1]
    outer = executor.job_prefix.rsplit("/", 1)[-1]
    assert only_outer_job_left(storage_root, outer) == set()


def test_pickled_futures_are_waited_on_in_another_process(
    make_executor: Any, storage_root: Path, tmp_path: Path
):
    fexec = lithops.FunctionExecutor(executor=make_executor(signing_key=KEY))
    futures = fexec.map(lambda x: (time.sleep(0.5), x * x)[1], [1, 2, 3])
    failing = fexec.call_async(lambda x: 1 / x, 0)
    path = tmp_path / "futures.pickle"
    with open(path, "wb") as f:
        pickle.dump((futures, failing), f)
    code = (
        "import pickle, sys\n"
        "import dask_faas.compat as lithops\n"
        f"with lithops.FunctionExecutor(signing_key={KEY!r}, workers=1,\n"
        f"                              local_storage={{'root': {str(storage_root)!r}}}):\n"
        f"    futures, failing = pickle.load(open({str(path)!r}, 'rb'))\n"
        "    print(lithops.get_result(futures))\n"
        "    try:\n"
        "        failing.result()\n"
        "    except ZeroDivisionError as exc:\n"
        "        print('raised', type(exc).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.splitlines() == ["[1, 4, 9]", "raised ZeroDivisionError"]
    assert fexec.get_result(futures) == [1, 4, 9]  # still here too
    loaded, _ = pickle.loads(pickle.dumps((futures, failing)))
    assert lithops.get_result(loaded) == [1, 4, 9]  # FuturesList pickles without its executor


def test_a_future_of_no_executor_cannot_be_pickled() -> None:
    import concurrent.futures as cf

    from dask_faas.compat import ResponseFuture

    with pytest.raises(TypeError, match="belongs to no executor"):
        pickle.dumps(ResponseFuture(cf.Future(), "x", "M000", 0))


def test_chaining_and_futures_as_data(executor: Any) -> None:
    fexec = lithops.FunctionExecutor(executor=executor)
    assert fexec.map(lambda x: x + 1, [1, 2, 3]).map(lambda x: x * 2).map(str).get_result() == ["4", "6", "8"]
    total = fexec.map(lambda x: x * x, [1, 2, 3]).map_reduce(lambda x: x + 1, sum)
    assert fexec.get_result(total) == 2 + 5 + 10
    first = fexec.map(lambda x: x * 10, [1, 2])
    second = fexec.map(lambda x: -x, list(first))
    assert second.get_result() == [-10, -20]
    # the calls whose results no later call consumed (get_result(fs) reads without consuming)
    assert fexec.get_result() == ["4", "6", "8", 17, -10, -20]
    with lithops.FunctionExecutor(executor=executor) as fresh:
        base = fresh.map(lambda x: x, [7, 8])
        fresh.map(lambda x: x + 1, base[:1])
        assert fresh.get_result() == [8, 8]  # the unconsumed future of base, then the chained call


def test_cloudobjects_made_in_functions(executor: Any) -> None:
    def put(x: int, storage: Any) -> Any:
        return storage.put_cloudobject(pickle.dumps(x * 3))

    def read(cobjects: list[Any], storage: Any) -> int:
        return sum(pickle.loads(storage.get_cloudobject(co)) for co in cobjects)

    fexec = lithops.FunctionExecutor(executor=executor)
    cobjects = fexec.map(put, [1, 2, 3]).get_result()
    assert all(co.key.startswith(executor.job_prefix + "/") for co in cobjects)  # deleted with the job
    assert fexec.call_async(read, cobjects).result() == 18
    fexec.clean(cs=cobjects[:1])
    assert not executor.storage.exists(cobjects[0].key) and executor.storage.exists(cobjects[1].key)


def test_star_args_and_kwargs_functions_over_dicts(executor: Any) -> None:
    def both(*args: Any, **kwargs: Any) -> Any:
        return list(args), kwargs

    def some(a: int, b: int = 0, *rest: int, c: int = 1) -> int:
        return a + b + sum(rest) + c

    fexec = lithops.FunctionExecutor(executor=executor)
    got = fexec.map(
        both, [{"args": (1, 2), "k": 3}, {"a": 1}, {"args": [4], "kwargs": {"z": 5}}]
    ).get_result()
    assert got == [([1, 2], {"k": 3}), ([], {"a": 1}), ([4], {"z": 5})]
    assert fexec.map(some, [{"a": 1, "b": 2, "rest": (3, 4)}, (1, 2, 3), {"a": 5, "c": 0}]).get_result() == [
        11,
        7,
        5,
    ]


def test_local_urls_name_files_and_directories_of_local_storage(
    executor: Any, storage_root: Path, tmp_path: Path
):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.txt").write_text("one two\nthree\n")
    (data / "b.txt").write_text("four\n")
    under_root = storage_root / "bucket1"
    under_root.mkdir()
    (under_root / "c.txt").write_text("five six\n")

    def words(obj: Any) -> int:
        return len(obj.data_stream.read().split())

    fexec = lithops.FunctionExecutor(executor=executor)
    assert fexec.map(words, f"local://{data}/").get_result() == [3, 1]
    assert fexec.map(words, f"localhost://{data}/a.txt").get_result() == [3]
    assert fexec.map(words, "localhost://bucket1/").get_result() == [2]  # below the storage root
    co = lithops.storage.utils.CloudObject("localhost", str(data), "b.txt")
    assert fexec.map(words, [co]).get_result() == [1]
    os.remove(under_root / "c.txt")


PROGRAM = """
import dask_faas.compat as lithops

def inner(n):
    import dask_faas.compat as lithops
    fexec = lithops.FunctionExecutor()
    return fexec.map(lambda x: x + 7, range(n))

def inner_results(n):
    import dask_faas.compat as lithops
    fexec = lithops.FunctionExecutor()
    fexec.map(lambda x: x * 2, range(n))
    return fexec.get_result()

if __name__ == "__main__":
    fexec = lithops.FunctionExecutor()
    fexec.call_async(inner, 3)
    print(fexec.get_result())
    fexec.map(inner_results, [1, 2])
    print(fexec.get_result())
    # exits without closing the executor, as Lithops' examples do
"""


def test_a_program_of_internal_executions_prints_no_error(tmp_path: Path) -> None:
    script = tmp_path / "internal_execution.py"
    script.write_text(PROGRAM)
    root = tmp_path / "storage"
    env = {**os.environ, "DASK_FAAS__LOCAL_STORAGE__ROOT": str(root), "DASK_FAAS__WORKERS": "2"}
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines() == ["[7, 8, 9]", "[[0], [0, 2]]"]
    for symptom in ("Traceback", "Exception ignored", "BrokenPipeError", "cannot join"):
        assert symptom not in out.stderr, out.stderr[-3000:]
    assert job_directories(root) == set(), "a job directory was left in local storage"
