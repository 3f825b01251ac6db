"""Contract suite for ``concurrent.futures.Executor`` semantics.

Every test runs against these executors:

* ``process``: the standard :class:`concurrent.futures.ProcessPoolExecutor` (``max_workers=2``),
  which proves that the suite tests standard semantics and nothing peculiar to dask-faas;
* ``local``: :class:`dask_faas.FaasExecutor` with its local warm pool and local directory storage;
* ``aws_lambda``, ``openwhisk``, ``knative`` (slow): FaasExecutor on each platform's emulator
  (``tests/fixtures_platforms.py``), with the S3 test server as storage.

Functions run by the executors are defined at module level so that both executors can pickle them.
Nothing here asserts on elapsed time: calls that must stay busy wait on a *gate* file that the test
creates when it is done with them, and concurrency is proven by a rendezvous between two calls.
Every wait in a remote call or on a future has a generous deadline, so a broken executor fails the
test instead of hanging it.
"""

from __future__ import annotations

import collections.abc
import concurrent.futures as cf
import os
import pickle
import threading
import time
from pathlib import Path

import pytest
from fixtures_platforms import EXECUTOR_KINDS, executor_settings

pytestmark = pytest.mark.timeout(60)

#: Generous bound for anything that should finish promptly (result(), wait(), remote gate waits).
WAIT = 30.0
#: Short timeout for the tests in which a timeout is *meant* to expire.
SHORT = 0.5
#: The size of the "large" argument/result (2 MiB).
BIG = 2 * 1024 * 1024
#: ProcessPoolExecutor moves up to max_workers + EXTRA_QUEUED_CALLS (= 1) items into its call
#: queue eagerly (they become RUNNING and cannot be cancelled), so queue this many calls behind
#: the blockers.
EXTRA = 6


# --------------------------------------------------------------------------------------------------
# Functions run remotely (module level, so both executors can pickle them)
# --------------------------------------------------------------------------------------------------


class ContractError(Exception):
    """A custom exception type that must round-trip with its type."""


def square(x):
    return x * x


def add(x, y):
    return x + y


def combine(a, b, *, scale=1, offset=0):
    return (a + b) * scale + offset


def return_none():
    return None


def reverse_bytes(data):
    return data[::-1]


def make_bytes(n):
    return bytes(range(256)) * (n // 256) + bytes(n % 256)


def contract_remote_raiser(message):
    raise ValueError(message)


def raise_contract_error(message):
    raise ContractError(message)


def fail_at(i, bad):
    if i == bad:
        raise ValueError(f"call {i} failed")
    return i * 10


def _wait_for_path(path, timeout=WAIT):
    """Wait (bounded) until *path* exists; return whether it does."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def gated(value, release, started=None):
    """Mark *started* (if given), wait until the *release* file exists, return *value*."""
    if started is not None:
        Path(started).touch()
    if not _wait_for_path(release):
        raise TimeoutError(f"gate {release} was never opened")
    return value


def maybe_gated(value, release):
    """Return *value* at once when *release* is None, else after the gate opens."""
    if release is None:
        return value
    return gated(value, release)


def rendezvous(directory, me, other):
    """Announce *me* and wait (bounded) for *other*: only succeeds if both calls run at once."""
    Path(directory, me).touch()
    return _wait_for_path(os.path.join(directory, other))


# --------------------------------------------------------------------------------------------------
# Fixtures and client-side helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(params=["process", *EXECUTOR_KINDS])
def executor(request, tmp_path):
    if request.param == "process":
        ex = cf.ProcessPoolExecutor(max_workers=2)
    else:
        from dask_faas import FaasExecutor

        ex = FaasExecutor(**executor_settings(request, request.param, str(tmp_path / "storage")))
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
    if request.param != "process":
        assert not list(ex.storage.list(ex.job_prefix)), "the job left objects behind"


class Gate:
    """A file that gated calls wait for; opening it releases them."""

    def __init__(self, directory: Path, name: str = "gate"):
        self.directory = directory
        self.release = str(directory / f"{name}.open")
        self._name = name
        self._count = 0

    def started_path(self) -> str:
        self._count += 1
        return str(self.directory / f"{self._name}.started.{self._count}")

    def open(self) -> None:
        Path(self.release).touch()


@pytest.fixture
def gate(executor, tmp_path):  # depends on executor so it is torn down (opened) before the executor
    g = Gate(tmp_path)
    try:
        yield g
    finally:
        # Never leave a call blocked, whatever the test did; runs before the executor shuts down.
        g.open()


def wait_until(predicate, timeout=WAIT):
    """Poll *predicate* (bounded); return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return predicate()
        time.sleep(0.01)
    return True


def occupy_workers(ex, gate, n=2):
    """Submit *n* gated calls and wait until all of them are running on a worker."""
    started = [gate.started_path() for _ in range(n)]
    blockers = [ex.submit(gated, f"blocker{i}", gate.release, s) for i, s in enumerate(started)]
    assert wait_until(lambda: all(os.path.exists(s) for s in started)), "blockers never started"
    return blockers


# --------------------------------------------------------------------------------------------------
# submit
# --------------------------------------------------------------------------------------------------


def test_submit_returns_concurrent_future(executor):
    fut = executor.submit(square, 3)
    assert isinstance(fut, cf.Future)
    assert fut.result(timeout=WAIT) == 9


def test_submit_result_value(executor):
    assert executor.submit(add, 2, 40).result(timeout=WAIT) == 42


def test_submit_args_and_kwargs(executor):
    fut = executor.submit(combine, 1, 2, scale=10, offset=5)
    assert fut.result(timeout=WAIT) == 35


def test_submit_none_result(executor):
    fut = executor.submit(return_none)
    assert fut.result(timeout=WAIT) is None
    assert fut.exception(timeout=WAIT) is None


def test_submit_large_argument(executor):
    data = os.urandom(BIG)
    assert executor.submit(reverse_bytes, data).result(timeout=WAIT) == data[::-1]


def test_submit_large_result(executor):
    result = executor.submit(make_bytes, BIG + 7).result(timeout=WAIT)
    assert result == make_bytes(BIG + 7)
    assert len(result) == BIG + 7


def test_unpicklable_argument_raises_type_error(executor):
    # Either submit() refuses the argument or result() reports it; both must be a TypeError
    # (or pickle.PicklingError) that names the lock.
    with pytest.raises((TypeError, pickle.PicklingError)) as info:
        executor.submit(square, threading.Lock()).result(timeout=WAIT)
    assert "lock" in str(info.value).lower()


# --------------------------------------------------------------------------------------------------
# map
# --------------------------------------------------------------------------------------------------


def test_map_results_in_order(executor):
    assert list(executor.map(square, range(10))) == [x * x for x in range(10)]


def test_map_multiple_iterables_shortest_wins(executor):
    assert list(executor.map(add, [1, 2, 3, 4], [10, 20, 30])) == [11, 22, 33]


def test_map_empty_iterable(executor):
    assert list(executor.map(square, [])) == []


def test_map_returns_lazy_iterator(executor, gate):
    it = executor.map(maybe_gated, [0, 1], [None, gate.release])
    assert isinstance(it, collections.abc.Iterator)
    assert not isinstance(it, (list, tuple))
    # The first result is delivered while the second call is still blocked on the gate.
    assert next(it) == 0
    gate.open()
    assert next(it) == 1
    with pytest.raises(StopIteration):
        next(it)


@pytest.mark.parametrize("n", [0, 1, 6, 7, 11])
@pytest.mark.parametrize("chunksize", [2, 3])
def test_map_chunksize_same_results(executor, n, chunksize):
    expected = list(executor.map(square, range(n), chunksize=1))
    assert expected == [x * x for x in range(n)]
    assert list(executor.map(square, range(n), chunksize=chunksize)) == expected


@pytest.mark.parametrize("chunksize", [0, -1])
def test_map_chunksize_below_one_raises(executor, chunksize):
    with pytest.raises(ValueError):
        list(executor.map(square, range(3), chunksize=chunksize))


def test_map_timeout(executor, gate):
    it = executor.map(gated, ["never"], [gate.release], timeout=SHORT)
    with pytest.raises(TimeoutError):
        next(it)


def test_map_exception_raised_in_order(executor):
    it = executor.map(fail_at, range(6), [3] * 6)
    got = []
    with pytest.raises(ValueError, match="call 3 failed"):
        for value in it:
            got.append(value)
    assert got == [0, 10, 20]


# --------------------------------------------------------------------------------------------------
# exceptions
# --------------------------------------------------------------------------------------------------


def test_exception_reraised_with_type_and_message(executor):
    fut = executor.submit(contract_remote_raiser, "boom 123")
    with pytest.raises(ValueError, match="boom 123") as info:
        fut.result(timeout=WAIT)
    assert type(info.value) is ValueError


def test_future_exception_returns_it(executor):
    fut = executor.submit(contract_remote_raiser, "boom 456")
    exc = fut.exception(timeout=WAIT)
    assert type(exc) is ValueError
    assert str(exc) == "boom 456"
    assert fut.done() and not fut.cancelled()


def test_exception_cause_holds_remote_traceback(executor):
    exc = executor.submit(contract_remote_raiser, "boom 789").exception(timeout=WAIT)
    assert exc is not None
    assert exc.__cause__ is not None
    remote = str(exc.__cause__)
    assert "contract_remote_raiser" in remote
    assert "Traceback" in remote


def test_custom_exception_round_trips(executor):
    fut = executor.submit(raise_contract_error, "custom failure")
    with pytest.raises(ContractError, match="custom failure") as info:
        fut.result(timeout=WAIT)
    assert type(info.value) is ContractError


# --------------------------------------------------------------------------------------------------
# cancel
# --------------------------------------------------------------------------------------------------


def test_cancel_queued_future(executor, gate):
    blockers = occupy_workers(executor, gate)
    queued = [executor.submit(square, i) for i in range(EXTRA)]
    last = queued[-1]
    assert last.cancel() is True
    assert last.cancelled()
    assert last.done()
    with pytest.raises(cf.CancelledError):
        last.result(timeout=WAIT)
    gate.open()
    assert [b.result(timeout=WAIT) for b in blockers] == ["blocker0", "blocker1"]
    for i, fut in enumerate(queued[:-1]):
        if not fut.cancelled():
            assert fut.result(timeout=WAIT) == i * i


def test_finished_future_cannot_be_cancelled(executor):
    fut = executor.submit(square, 5)
    assert fut.result(timeout=WAIT) == 25
    assert fut.cancel() is False
    assert not fut.cancelled()
    assert fut.result() == 25


# --------------------------------------------------------------------------------------------------
# shutdown
# --------------------------------------------------------------------------------------------------


def test_submit_after_shutdown_raises(executor):
    executor.shutdown(wait=True)
    with pytest.raises(RuntimeError):
        executor.submit(square, 2)


def test_shutdown_wait_finishes_pending_calls(executor, gate):
    blockers = occupy_workers(executor, gate)
    pending = [executor.submit(square, i) for i in range(4)]
    gate.open()
    executor.shutdown(wait=True)
    assert all(f.done() for f in blockers + pending)
    assert [b.result(timeout=0) for b in blockers] == ["blocker0", "blocker1"]
    assert [f.result(timeout=0) for f in pending] == [0, 1, 4, 9]


def test_shutdown_cancel_futures(executor, gate):
    blockers = occupy_workers(executor, gate)
    queued = [executor.submit(square, i) for i in range(EXTRA)]
    executor.shutdown(wait=False, cancel_futures=True)
    # Cancellation may happen on a background thread: wait (bounded) until the last one is cancelled
    # before the running calls are allowed to finish.
    # (Futures cancelled by shutdown are not waited for with cf.wait: ProcessPoolExecutor leaves
    # them CANCELLED, not CANCELLED_AND_NOTIFIED, so cf.wait would not count them as done.)
    assert wait_until(queued[-1].cancelled), "queued future was not cancelled by shutdown"
    gate.open()
    # No second shutdown(wait=True) here: after shutdown(wait=False), ProcessPoolExecutor's
    # next shutdown() no longer waits, so wait on the futures themselves.
    # Running calls complete normally ...
    assert [b.result(timeout=WAIT) for b in blockers] == ["blocker0", "blocker1"]
    # ... queued ones are cancelled, except those the executor had already started.
    for i, fut in enumerate(queued):
        if not fut.cancelled():
            assert fut.result(timeout=WAIT) == i * i
    with pytest.raises(cf.CancelledError):
        queued[-1].result(timeout=0)


def test_context_manager_shuts_down(executor):
    with executor as ex:
        assert ex is executor
        fut = ex.submit(square, 6)
    assert fut.done()
    assert fut.result(timeout=0) == 36
    with pytest.raises(RuntimeError):
        executor.submit(square, 2)


def test_shutdown_twice_is_fine(executor):
    assert executor.submit(square, 4).result(timeout=WAIT) == 16
    executor.shutdown(wait=True)
    executor.shutdown(wait=True)
    executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------------
# wait / as_completed
# --------------------------------------------------------------------------------------------------


def test_wait_first_completed(executor, gate):
    slow = executor.submit(gated, "slow", gate.release)
    fast = executor.submit(square, 3)
    done, not_done = cf.wait([slow, fast], timeout=WAIT, return_when=cf.FIRST_COMPLETED)
    assert fast in done
    assert slow in not_done
    gate.open()
    assert slow.result(timeout=WAIT) == "slow"


def test_wait_first_exception(executor, gate):
    slow = executor.submit(gated, "slow", gate.release)
    bad = executor.submit(contract_remote_raiser, "first exception")
    done, not_done = cf.wait([slow, bad], timeout=WAIT, return_when=cf.FIRST_EXCEPTION)
    assert bad in done
    assert slow in not_done
    assert isinstance(bad.exception(timeout=0), ValueError)
    gate.open()
    assert slow.result(timeout=WAIT) == "slow"


def test_wait_all_completed(executor):
    futures = [executor.submit(square, i) for i in range(5)]
    done, not_done = cf.wait(futures, timeout=WAIT, return_when=cf.ALL_COMPLETED)
    assert done == set(futures)
    assert not not_done
    assert [f.result(timeout=0) for f in futures] == [0, 1, 4, 9, 16]


def test_wait_timeout_expires(executor, gate):
    slow = executor.submit(gated, "slow", gate.release)
    done, not_done = cf.wait([slow], timeout=SHORT)
    assert slow in not_done
    assert not done


def test_as_completed_yields_each_future_once(executor):
    futures = [executor.submit(square, i) for i in range(6)]
    seen = list(cf.as_completed(futures, timeout=WAIT))
    assert len(seen) == len(futures)
    assert set(seen) == set(futures)
    assert sorted(f.result(timeout=0) for f in seen) == [0, 1, 4, 9, 16, 25]


def test_as_completed_timeout(executor, gate):
    slow = executor.submit(gated, "slow", gate.release)
    with pytest.raises(TimeoutError):
        list(cf.as_completed([slow], timeout=SHORT))


# --------------------------------------------------------------------------------------------------
# concurrency and callbacks
# --------------------------------------------------------------------------------------------------


def test_two_calls_run_concurrently(executor, tmp_path):
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    a = executor.submit(rendezvous, str(meeting), "a", "b")
    b = executor.submit(rendezvous, str(meeting), "b", "a")
    assert a.result(timeout=WAIT + 10) is True
    assert b.result(timeout=WAIT + 10) is True


def test_add_done_callback_called_once(executor):
    calls = []
    called = threading.Event()

    def callback(fut):
        calls.append(fut)
        called.set()

    fut = executor.submit(square, 7)
    fut.add_done_callback(callback)
    assert fut.result(timeout=WAIT) == 49
    assert called.wait(WAIT)  # callbacks may run just after result() is released
    assert calls == [fut]
    assert calls[0] is fut

    # A callback added to an already finished future is called at once, in the caller's thread.
    late = []
    fut.add_done_callback(late.append)
    assert late == [fut]
    assert calls == [fut]
