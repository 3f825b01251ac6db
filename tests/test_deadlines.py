"""Every wait has a deadline: a response the platform loses fails (or retries) the call, naming it.

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
