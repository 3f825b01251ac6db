"""The embedded warm pool behaves like a platform: limits enforced, dead workers replaced, retries."""

from __future__ import annotations

import mmap
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import hold_memory

from dask_faas import FunctionMemoryError, FunctionTimeoutError, InvocationError, WorkerDiedError
from dask_faas.backends.compute import InvokeOptions
from dask_faas.backends.compute.local import LocalBackend


def pid_then_wait(marker: str, value: int) -> int:
    """On the first attempt, publish this process's pid and hang until killed; later, answer."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(60)
    return value * 2


def wait_for_pid(marker: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if marker.exists() and (text := marker.read_text()):
            return int(text)
        time.sleep(0.01)
    raise AssertionError("the call never started")


def getpid(_: object = None) -> int:
    return os.getpid()


def sleep_for(seconds: float) -> str:
    time.sleep(seconds)
    return "done"


def test_killed_worker_is_replaced_and_retried_call_is_exact(make_executor, tmp_path):
    ex = make_executor(retries=1, retry_backoff_s=0.01)
    marker = tmp_path / "pid"
    future = ex.submit(pid_then_wait, str(marker), 21)
    victim = wait_for_pid(marker)
    os.kill(victim, signal.SIGKILL)
    assert future.result(timeout=60) == 42
    assert ex.stats["retries"] == 1
    pids = set(ex.map(getpid, range(20)))
    assert victim not in pids


def test_killed_worker_fails_only_its_call(make_executor, tmp_path):
    ex = make_executor(workers=1)
    marker = tmp_path / "pid"
    doomed = ex.submit(pid_then_wait, str(marker), 1)
    victim = wait_for_pid(marker)
    queued = ex.submit(pow, 2, 8)
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerDiedError, match=r"call 0 \(attempt 0\) of pid_then_wait.*SIGKILL"):
        doomed.result(timeout=60)
    assert queued.result(timeout=60) == 256
    assert ex.submit(getpid).result(timeout=60) != victim


def test_call_over_its_timeout_fails_naming_the_limit(make_executor):
    ex = make_executor(workers=1, timeout_s=0.5)
    before = ex.submit(getpid).result(timeout=60)
    with pytest.raises(FunctionTimeoutError, match=r"timeout_s=0.5") as info:
        ex.submit(sleep_for, 30).result(timeout=60)
    assert isinstance(info.value, TimeoutError)
    assert ex.submit(getpid).result(timeout=60) != before  # the process was replaced


def test_call_over_its_memory_limit_fails_naming_the_limit(make_executor):
    ex = make_executor(workers=1, memory_mb=200)
    before = ex.submit(getpid).result(timeout=60)
    with pytest.raises(
        FunctionMemoryError, match=r"of hold_memory exceeded its memory limit memory_mb=200"
    ) as info:
        ex.submit(hold_memory, 400).result(timeout=60)
    assert isinstance(info.value, MemoryError)
    # the process enforced the limit on itself: the allocation failed, the process stays warm
    assert ex.submit(getpid).result(timeout=60) == before


def hold_shared_memory(megabytes: int) -> int:
    """Inside a function: keep ``megabytes`` of a shared anonymous mapping resident for 30 s (memory
    that ``RLIMIT_DATA`` does not count)."""
    block = mmap.mmap(-1, megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(30)
    return len(block)


def test_memory_the_process_does_not_count_is_stopped_by_the_pools_backstop(make_executor):
    ex = make_executor(workers=1, memory_mb=200)
    before = ex.submit(getpid).result(timeout=60)
    with pytest.raises(FunctionMemoryError, match=r"memory_mb=200 \(resident \d+ MB") as info:
        ex.submit(hold_shared_memory, 400).result(timeout=60)
    assert isinstance(info.value, MemoryError)
    assert ex.submit(getpid).result(timeout=60) != before  # killed and replaced


def flaky(marker: str, attempts_to_fail: int) -> str:
    path = Path(marker)
    failures = int(path.read_text()) if path.exists() else 0
    if failures < attempts_to_fail:
        path.write_text(str(failures + 1))
        raise ConnectionError(f"transient failure {failures + 1}")
    return "ok"


def test_retries_reinvoke_failed_calls_with_backoff(make_executor, tmp_path):
    ex = make_executor(retries=2, retry_backoff_s=0.05)
    assert ex.submit(flaky, str(tmp_path / "n"), 2).result(timeout=60) == "ok"
    assert ex.stats["retries"] == 2
    assert ex.stats["invocations"] == 3


def test_retries_exhausted_raise_the_last_error(make_executor, tmp_path):
    ex = make_executor(retries=1, retry_backoff_s=0.01)
    with pytest.raises(ConnectionError, match="transient failure 2"):
        ex.submit(flaky, str(tmp_path / "n"), 5).result(timeout=60)


def noisy(x: int) -> int:
    print("x" * 100_000)  # prints go to stderr and cannot corrupt the protocol
    return x + 1


def test_prints_inside_functions_do_not_corrupt_replies(executor):
    assert list(executor.map(noisy, range(4))) == [1, 2, 3, 4]


def test_pool_refuses_a_payload_it_cannot_verify():
    backend = LocalBackend({"DASK_FAAS_SIGNING_KEY": "00" * 32}, workers=1)
    try:
        future = backend.invoke(b"not a payload", InvokeOptions(10, 256, "forged call"))
        with pytest.raises(InvocationError, match=r"forged call.*refused.*magic"):
            future.result(timeout=60)
        assert backend.pids and all(os.path.exists(f"/proc/{pid}") for pid in backend.pids)
    finally:
        backend.close()


def test_a_terminals_sigint_does_not_reach_the_functions(make_executor):
    """Ctrl-C goes to the whole foreground process group, the pool included; only the client acts on it."""
    ex = make_executor(workers=1)
    pid = ex.submit(getpid).result(timeout=60)
    os.kill(pid, signal.SIGINT)
    assert ex.submit(getpid).result(timeout=60) == pid


def test_the_pool_closed_from_a_callback_on_its_own_thread_closes_without_an_error(make_executor):
    """A callback of a call's future runs on one of the pool's threads; closing the pool from it
    (an executor released when its last future is done) must not try to join that thread."""
    ex = make_executor(workers=1)
    errors: list[BaseException] = []
    closed = threading.Event()

    def close_here(_: object) -> None:
        try:
            ex.backend.close()
        except BaseException as exc:  # collected: the callback's own errors are only logged
            errors.append(exc)
        finally:
            closed.set()

    ex.submit(getpid).add_done_callback(close_here)
    assert closed.wait(60), "the callback did not run"
    assert not errors, f"closing the pool from its own thread failed: {errors!r}"


def test_a_slow_start_of_the_function_process_is_not_counted_in_the_first_calls_time_limit(
    make_executor, tmp_path
):
    """A process that takes 2 s to start (its imports) still runs a first call of 1 s's limit: as
    on a platform, the instance's initialisation is not the call's."""
    (tmp_path / "sitecustomize.py").write_text("import time\ntime.sleep(2)\n")
    ex = make_executor(workers=1, timeout_s=1, environment={"PYTHONPATH": str(tmp_path)})
    # functions of the standard library: this module is not on the PYTHONPATH given here
    assert isinstance(ex.submit(os.getpid).result(timeout=60), int)
    with pytest.raises(FunctionTimeoutError, match=r"timeout_s=1\b"):
        ex.submit(time.sleep, 30).result(timeout=60)


def test_a_function_process_whose_pool_closed_before_it_started_exits_quietly():
    """Its ready byte finds no reader (the pool closed at once): no BrokenPipeError printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "function_runtime.local"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "DASK_FAAS_SIGNING_KEY": "00" * 32},
    )
    process.stdout.close()  # type: ignore[union-attr]
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and b"Traceback" not in err, err.decode()
