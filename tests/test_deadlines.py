"""Every wait has a deadline: a response the platform loses fails (or retries) the call, naming it;
and the straggler rule of speculative backups (a deadline relative to a call's siblings).

The platform here is the real local pool behind a test-side wrapper that swallows the response of
chosen invocations, as a remote platform may lose one: the function ran, its answer never arrives.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time

import dask
import pytest

from dask_faas import FunctionTimeoutError
from dask_faas.backends.compute import registry as compute_registry
from dask_faas.backends.compute.local import LocalBackend
from dask_faas.deadlines import BackupRule, Deadlines, Stragglers
from dask_faas.dispatch import deadline_grace_s


class LosingBackend(LocalBackend):
    """The local pool, except that the responses of the first ``lose`` invocations never arrive."""

    lose = 1
    lost: list[str] = []
    _lock = threading.Lock()

    def invoke(self, payload, options):
        response = super().invoke(payload, options)
        with self._lock:
            swallow = len(self.lost) < self.lose
            if swallow:
                self.lost.append(options.label)
        if not swallow:
            return response
        lost: cf.Future[bytes] = cf.Future()  # the platform accepted the call and never answers
        response.add_done_callback(lambda _: None)
        return lost


@pytest.fixture
def losing_backend():
    LosingBackend.lost = []
    compute_registry.register("losing-local", LosingBackend)
    return LosingBackend


def inc(x: int) -> int:
    return x + 1


def test_a_lost_response_fails_the_call_naming_it_after_its_deadline(make_executor, losing_backend):
    losing_backend.lose = 1
    ex = make_executor(backend="losing-local", timeout_s=1)
    started = time.monotonic()
    future = ex.submit(inc, 1)
    with pytest.raises(FunctionTimeoutError) as info:
        future.result(timeout=60)
    waited = time.monotonic() - started
    message = str(info.value)
    assert "call 0 (attempt 0) of inc" in message and "timeout_s=1" in message, message
    assert "no response" in message
    assert waited >= 1 + deadline_grace_s(1) - 0.5  # not before the deadline
    assert ex.submit(inc, 2).result(timeout=60) == 3  # the executor goes on


def test_a_lost_response_is_retried_within_the_retries(make_executor, losing_backend):
    losing_backend.lose = 1
    ex = make_executor(backend="losing-local", timeout_s=1, retries=1, retry_backoff_s=0.01)
    assert ex.submit(inc, 41).result(timeout=60) == 42
    assert ex.stats["retries"] == 1 and len(losing_backend.lost) == 1


def test_a_lost_response_under_faas_get_names_the_task(make_executor, losing_backend):
    losing_backend.lose = 1
    ex = make_executor(backend="losing-local", timeout_s=1)
    value = dask.delayed(inc)(1, dask_key_name="my-inc")
    with pytest.raises(FunctionTimeoutError, match=r"task 'my-inc' \(inc\).*timeout_s=1"):
        dask.compute(value, scheduler=ex)


def test_shutdown_waits_with_a_deadline_for_a_lost_call(make_executor, losing_backend):
    losing_backend.lose = 1
    ex = make_executor(backend="losing-local", timeout_s=1)
    future = ex.submit(inc, 1)
    ex.shutdown(wait=True)  # returns: the lost call fails at its deadline
    assert isinstance(future.exception(timeout=0), FunctionTimeoutError)


# -- the straggler rule ---------------------------------------------------------------------------


class Run:
    """A run as :class:`Stragglers` sees one: its group and a description."""

    def __init__(self, group: str, name: str) -> None:
        self.group, self.name = group, name

    def describe(self) -> str:
        return self.name


def test_backup_rule_caps_backups_at_a_share_of_the_calls():
    rule = BackupRule()
    assert (rule.min_siblings, rule.min_done, rule.slowdown) == (10, 0.5, 3.0)  # cubed's rule
    assert [rule.most_backups(n) for n in (1, 10, 19, 20, 1000)] == [1, 1, 1, 2, 100]


def test_stragglers_are_called_once_half_the_group_finished_longest_running_first():
    deadlines = Deadlines()
    called: list[tuple[Run, float | None]] = []
    done = threading.Event()

    def on_straggler(run: Run) -> None:
        called.append((run, stragglers.take(run)))
        if len(called) == 5:
            done.set()

    stragglers = Stragglers(BackupRule(min_s=0.2), deadlines, on_straggler)
    try:
        runs = [Run("g", f"run {i}") for i in range(10)]
        for run in runs:
            stragglers.join("g")
            stragglers.sent(run)
        for run in runs[:4]:
            stragglers.stopped(run)
            stragglers.finished(run, 0.01)
        # 4 of 10 finished: not yet half, so no run is a straggler, however long it runs
        time.sleep(0.3)
        assert stragglers.take(runs[5]) is None and not called
        stragglers.stopped(runs[4])
        stragglers.finished(runs[4], 0.01)
        assert done.wait(30), f"the 5 running calls did not reach their straggler deadline: {called}"
        # one backup for a group of 10 (a tenth, at least one): the longest-running run gets it
        assert [run for run, ran in called if ran is not None] == [runs[5]], called
        assert called[0][0] is runs[5] and called[0][1] >= 0.2
    finally:
        deadlines.close()


def test_a_group_under_min_siblings_has_no_stragglers_and_leaves_when_done():
    deadlines = Deadlines()
    stragglers = Stragglers(BackupRule(min_s=0.0), deadlines, lambda run: None)
    try:
        runs = [Run("small", f"run {i}") for i in range(9)]
        for run in runs:
            stragglers.join("small")
            stragglers.sent(run)
        for run in runs[:8]:
            stragglers.stopped(run)
            stragglers.finished(run, 0.001)
        time.sleep(0.05)
        assert stragglers.take(runs[8]) is None, "9 calls are fewer than min_siblings=10"
        stragglers.join("small")  # a tenth call: the group qualifies (8 of 10 finished)
        late = Run("small", "run 9")
        stragglers.sent(late)
        time.sleep(0.05)
        assert stragglers.take(runs[8]) is not None
        for _ in range(10):
            stragglers.leave("small")
        assert stragglers.take(late) is None, "a group whose calls are all done is forgotten"
    finally:
        deadlines.close()
