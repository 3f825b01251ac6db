"""FaasExecutor behaviour beyond the concurrent.futures contract (see test_executor_contract.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import dask
import pytest

from dask_faas import SerializationError


def add(x: int, y: int = 0) -> int:
    return x + y


def test_an_unpicklable_argument_fails_at_submit_naming_it(executor):
    with pytest.raises(SerializationError, match=r"keyword argument 'y' of add\(\).*lock"):
        executor.submit(add, 1, y=threading.Lock())
    with pytest.raises(SerializationError, match=r"argument 1 of item 0 of map\(add\)"):
        list(executor.map(add, [1, 2], [threading.Lock(), 3], chunksize=2))
    # the item is named by its index in the map, with one invocation per item or per chunk
    for chunksize in (1, 2):
        with pytest.raises(SerializationError, match=r"argument 0 of item 3 of map\(add\).*lock"):
            list(executor.map(add, [0, 1, 2, threading.Lock(), 4], chunksize=chunksize))


def test_the_function_is_uploaded_once_per_job(executor, storage_root):
    assert list(executor.map(add, range(50), range(50))) == list(range(0, 100, 2))
    assert executor.submit(add, 1).result() == 1
    functions = [key for key, _ in executor.storage.list(f"{executor.job_prefix}/fn/")]
    assert len(functions) == 1
    assert executor.stats["invocations"] == 51


def test_large_arguments_and_results_go_through_storage_and_are_deleted(make_executor):
    ex = make_executor(inline_limit=1000)
    blobs = [os.urandom(5000) for _ in range(4)]
    assert list(ex.map(bytes, blobs)) == blobs
    left = [k for k, _ in ex.storage.list(ex.job_prefix) if "/fn/" not in k]
    assert left == []  # inputs and outputs are deleted as soon as they are read


def test_progress_bar_reaches_the_total(executor, capsys):
    assert sum(executor.map(add, range(30), progress=True)) == sum(range(30))
    err = capsys.readouterr().err
    assert "30/30" in err


def test_dask_compute_runs_through_the_executor(executor):
    total = dask.delayed(sum)([dask.delayed(add)(i, 1) for i in range(20)])
    assert dask.compute(total, scheduler=executor)[0] == sum(range(1, 21))
    assert executor.stats["invocations"] >= 2


def test_ctrl_c_removes_the_job_prefix_and_the_function_processes(storage_root, tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(
        textwrap.dedent(f"""
        import time, sys
        from dask_faas import FaasExecutor
        def slow(x):
            time.sleep(60)
        with FaasExecutor(workers=2, local_storage={{"root": {str(storage_root)!r}}}) as ex:
            futures = [ex.submit(slow, i) for i in range(4)]
            print(ex.job_prefix, *ex.backend.pids, flush=True)
            futures[0].result()
    """)
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    _prefix, *pids = proc.stdout.readline().split()
    assert list(storage_root.rglob("*")), "the job stored nothing"
    time.sleep(0.5)  # let the calls start
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) != 0
    proc.stdout.close()
    assert not [p for p in storage_root.rglob("*") if p.is_file()]
    for pid in map(int, pids):
        assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid), f"process {pid} survived"


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
