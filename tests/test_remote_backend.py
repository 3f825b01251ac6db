"""RemoteBackend's machinery and the dispatcher's deadlines around it, on a platform scripted here.

:class:`Scripted` is a remote platform whose function runs in this process, through the real
:class:`dask_faas.worker.Runtime`, and which refuses sends ("429") as a test tells it: what is under
test is the shared machinery (threads, backoff, deadlines, re-delivery), not a platform's API (the
emulator suites cover those). It is loaded by import path, as any third-party backend can be.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from dask_faas import FaasExecutor, protocol, serialize
from dask_faas.backends.compute import InvokeOptions
from dask_faas.backends.compute.remote import RemoteBackend, Retryable
from dask_faas.exceptions import SerializationError
from dask_faas.worker import Runtime


class Scripted(RemoteBackend):
    """Runs calls in this process; the first ``refusals`` sends are refused with ``Retry-After``."""

    name = "scripted"
    #: Set by a test before it makes its executor.
    refusals: ClassVar[int] = 0
    retry_after_s: ClassVar[float | None] = None
    barrier: ClassVar[threading.Barrier | None] = None

    def __init__(self, environment: dict[str, str], concurrency: int) -> None:
        super().__init__(concurrency, throttle_deadline_s=60)
        self.runtime = Runtime(bytes.fromhex(environment[protocol.KEY_ENV]))
        self.lock = threading.Lock()
        self.sends = self.runs = 0

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> Scripted:
        return cls(environment, concurrency=8)

    def send(self, payload: bytes, options: InvokeOptions) -> bytes:
        with self.lock:
            self.sends += 1
            refuse = type(self).refusals > 0
            if refuse:
                type(self).refusals -= 1
            else:
                self.runs += 1
        if refuse:
            raise Retryable("429 scripted", type(self).retry_after_s)
        if type(self).barrier is not None:
            type(self).barrier.wait()
        return self.runtime.handle(payload)


@pytest.fixture
def scripted(make_executor: Any) -> Iterator[Any]:
    def make(**settings: Any) -> FaasExecutor:
        return make_executor(backend=f"{__name__}:Scripted", signing_key=protocol.new_key().hex(), **settings)

    yield make
    Scripted.refusals, Scripted.retry_after_s, Scripted.barrier = 0, None, None


def square(x: int) -> int:
    return x * x


def test_a_burst_gets_a_thread_per_call_up_to_the_concurrency(scripted):
    ex = scripted()
    assert ex.submit(square, 2).result(timeout=30) == 4  # one thread now idle
    Scripted.barrier = threading.Barrier(8, timeout=20)  # passes only if 8 sends are in flight at once
    assert list(ex.map(square, range(8), timeout=60)) == [x * x for x in range(8)]


def test_throttling_longer_than_the_deadlines_runs_the_call_once(scripted):
    ex = scripted(timeout_s=1, start_deadline_s=1)
    Scripted.refusals, Scripted.retry_after_s = 6, 0.5  # ~3 s of 429s: past the start and answer deadlines
    assert ex.submit(square, 9).result(timeout=60) == 81
    backend = ex.backend
    assert (backend.sends, backend.runs) == (7, 1), "throttled sends must not start re-deliveries"
    assert ex.stats["redeliveries"] == 0 and ex.stats["invocations"] == 1, ex.stats


def test_user_modules_are_the_ones_outside_the_installation(tmp_path: Path):
    (tmp_path / "mine_for_rule.py").write_text("def f(x):\n    return x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("mine_for_rule")
        names = serialize.user_modules()
        assert "mine_for_rule" in names
        assert not {"json", "dask", "dask_faas", "dask_faas.worker", "pytest", "numpy"} & set(names)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("mine_for_rule", None)


def test_a_module_that_pickles_by_reference_only_is_not_shipped(tmp_path: Path):
    (tmp_path / "locked_module.py").write_text(
        textwrap.dedent(
            """
            import threading

            LOCK = threading.Lock()

            def guarded(x):
                with LOCK:
                    return x
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("locked_module")
        with pytest.raises(SerializationError), serialize.shipping_user_modules():
            serialize.dumps_function(module.guarded)  # by value, the lock cannot be pickled
        data = serialize.dumps_function(module.guarded, ship=True)  # falls back to by reference
        assert serialize.loads(data) is module.guarded
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("locked_module", None)
