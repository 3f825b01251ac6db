"""``lithops.multiprocessing.Pool``: ``multiprocessing.Pool``'s API, each chunk one function call.

Work runs in functions of a :class:`~dask_faas.compat.FunctionExecutor` the pool owns (made with
``config.LITHOPS_CONFIG``); ``initializer(*initargs)`` runs once per invocation, before its chunk.
``processes`` and ``maxtasksperchild`` are accepted (concurrency is the executor's, every
invocation is a fresh call).
"""

from __future__ import annotations

import builtins
import concurrent.futures as cf
import itertools
import multiprocessing
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import config
from ._tasks import Chunk, run_chunk


class TimeoutError(multiprocessing.TimeoutError, builtins.TimeoutError):
    """A result not ready in time: both ``multiprocessing.TimeoutError`` and the builtin one."""


def _make_executor() -> Any:
    from .. import FunctionExecutor

    return FunctionExecutor(config=config.get_parameter(config.LITHOPS_CONFIG) or None)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class AsyncResult:
    """The result of ``apply_async`` / ``map_async`` (``multiprocessing.pool.AsyncResult``'s API)."""

    def __init__(
        self,
        futures: list[Any],
        single: bool,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> None:
        self._futures = futures
        self._single = single
        self._callback, self._error_callback = callback, error_callback
        self._pending = len(futures)
        self._lock = threading.Lock()
        self._all_done = threading.Event()
        if not futures:
            self._finish()
        for future in futures:
            future.future.add_done_callback(self._one_done)

    def _one_done(self, _: cf.Future[Any]) -> None:
        with self._lock:
            self._pending -= 1
            last = self._pending == 0
        if last:
            self._finish()

    def _finish(self) -> None:
        try:
            value = self._value(None)
        except BaseException as exc:
            if self._error_callback is not None:
                self._error_callback(exc)
        else:
            if self._callback is not None:
                self._callback(value)
        self._all_done.set()

    def _value(self, deadline: float | None) -> Any:
        chunks = [f.result(timeout=_left(deadline)) for f in self._futures]
        values = list(itertools.chain.from_iterable(chunks))
        return values[0] if self._single else values

    def ready(self) -> bool:
        """Whether every call is done."""
        return all(f.future.done() for f in self._futures)

    def successful(self) -> bool:
        """Whether every call succeeded (``ValueError`` if not ready yet, as ``multiprocessing``)."""
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return all(f.future.exception() is None for f in self._futures)

    def wait(self, timeout: float | None = None) -> None:
        """Wait until ready (and callbacks ran), at most ``timeout`` seconds."""
        self._all_done.wait(timeout)

    def get(self, timeout: float | None = None) -> Any:
        """The value (a list for maps); the first call's error is raised.

        Raises
        ------
        TimeoutError
            If not ready within ``timeout`` seconds (a ``multiprocessing.TimeoutError``).
        """
        deadline = _deadline(timeout)
        try:
            return self._value(deadline)
        except cf.TimeoutError:
            if any(not f.future.done() for f in self._futures):
                raise TimeoutError(f"result not ready after {timeout} s") from None
            raise


ApplyResult = AsyncResult
MapResult = AsyncResult


class IMapIterator:
    """The iterator of ``imap`` (call order) and ``imap_unordered`` (completion order)."""

    def __init__(self, futures: list[Any], ordered: bool) -> None:
        self._ordered = ordered
        self._values: list[Any] = []
        self._queue = list(futures)  # imap: in call order; imap_unordered: those not yielded yet

    def __iter__(self) -> IMapIterator:
        return self

    def _next_future(self, timeout: float | None) -> Any:
        if not self._queue:
            raise StopIteration
        if self._ordered:
            future = self._queue[0]
            done = cf.wait([future.future], timeout).done
        else:
            done = cf.wait([f.future for f in self._queue], timeout, cf.FIRST_COMPLETED).done
            future = next((f for f in self._queue if f.future in done), None)
        if not done:
            raise TimeoutError(f"no result after {timeout} s")
        self._queue.remove(future)
        return future

    def next(self, timeout: float | None = None) -> Any:
        """The next value (``TimeoutError`` after ``timeout`` seconds, ``StopIteration`` at the end)."""
        while not self._values:
            self._values = list(self._next_future(timeout).result())
        return self._values.pop(0)

    __next__ = next


class Pool:
    """``multiprocessing.Pool`` over FaaS invocations.

    Parameters
    ----------
    processes : int, optional
        Accepted (the executor's settings bound concurrency).
    initializer : callable, optional
        Run as ``initializer(*initargs)`` in each invocation before its work.
    initargs : tuple
        Its arguments.
    maxtasksperchild : int, optional
        Accepted (each invocation runs one chunk).
    context : optional
        Accepted (as ``multiprocessing``'s).
    """

    def __init__(
        self,
        processes: int | None = None,
        initializer: Callable[..., Any] | None = None,
        initargs: Iterable[Any] = (),
        maxtasksperchild: int | None = None,
        context: Any = None,
    ) -> None:
        if processes is not None and processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._processes = processes
        self._initializer, self._initargs = initializer, tuple(initargs)
        self._executor = _make_executor()
        # a pool closed without join (or dropped) still releases its executor, at the latest at exit
        self._release = weakref.finalize(self, self._executor.close)
        self._state = "RUN"
        self._results: list[AsyncResult] = []
        self._end_lock = threading.Lock()
        self._feed = None
        self._stream: str | None = None
        if config.get_parameter(config.STREAM_STDOUT):
            from .util import RemoteLoggingFeed

            self._stream = f"pool-{self._executor.executor_id}"
            self._feed = RemoteLoggingFeed(self._stream, self._executor.storage)
            self._feed.start()

    # -- submitting ------------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != "RUN":
            raise ValueError("Pool not running")

    def _chunk(self, func: Callable[..., Any], items: list[Any], star: bool, kwds: Any = None) -> Chunk:
        return Chunk(func, items, star, kwds, self._initializer, self._initargs, self._stream)

    def _submit(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None, star: bool
    ) -> list[Any]:
        self._check_running()
        items = list(iterable)
        size = max(1, int(chunksize or 1))
        chunks = [self._chunk(func, items[i : i + size], star) for i in range(0, len(items), size)]
        if not chunks:
            return []
        return list(self._executor.map(run_chunk, [(c,) for c in chunks]))

    def apply_async(
        self,
        func: Callable[..., Any],
        args: Iterable[Any] = (),
        kwds: dict[str, Any] | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """Run ``func(*args, **kwds)`` in one function; its :class:`AsyncResult`."""
        self._check_running()
        future = self._executor.call_async(run_chunk, (self._chunk(func, [tuple(args)], True, kwds),))
        result = AsyncResult([future], True, callback, error_callback)
        self._results.append(result)
        return result

    def apply(
        self, func: Callable[..., Any], args: Iterable[Any] = (), kwds: dict[str, Any] | None = None
    ) -> Any:
        """``func(*args, **kwds)`` run in one function."""
        return self.apply_async(func, args, kwds).get()

    def map_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Any],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """``func`` over ``iterable``, ``chunksize`` items per invocation; an :class:`AsyncResult`."""
        result = AsyncResult(self._submit(func, iterable, chunksize, False), False, callback, error_callback)
        self._results.append(result)
        return result

    def map(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(x) for x in iterable]`` run in functions, in order."""
        return self.map_async(func, iterable, chunksize).get()

    def starmap_async(
        self,
        func: Callable[..., Any],
        iterable: Iterable[Iterable[Any]],
        chunksize: int | None = None,
        callback: Callable[[Any], Any] | None = None,
        error_callback: Callable[[BaseException], Any] | None = None,
    ) -> AsyncResult:
        """``func(*args)`` for each ``args`` of ``iterable``; an :class:`AsyncResult`."""
        result = AsyncResult(self._submit(func, iterable, chunksize, True), False, callback, error_callback)
        self._results.append(result)
        return result

    def starmap(
        self, func: Callable[..., Any], iterable: Iterable[Iterable[Any]], chunksize: int | None = None
    ) -> list[Any]:
        """``[func(*args) for args in iterable]`` run in functions, in order."""
        return self.starmap_async(func, iterable, chunksize).get()

    def imap(self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1) -> Iterator[Any]:
        """Values of ``func`` over ``iterable`` in order, each as soon as it and those before are done."""
        return IMapIterator(self._submit(func, iterable, chunksize, False), ordered=True)

    def imap_unordered(
        self, func: Callable[..., Any], iterable: Iterable[Any], chunksize: int = 1
    ) -> Iterator[Any]:
        """Values of ``func`` over ``iterable`` as their invocations end."""
        return IMapIterator(self._submit(func, iterable, chunksize, False), ordered=False)

    # -- ending ------------------------------------------------------------------------------

    def close(self) -> None:
        """Accept no more work."""
        if self._state == "RUN":
            self._state = "CLOSE"

    def join(self) -> None:
        """Wait for the submitted work (after :meth:`close` or :meth:`terminate`), then release the
        executor (its job prefix is deleted)."""
        if self._state == "RUN":
            raise ValueError("Pool is still running")
        for result in self._results:
            result.wait()
        self._end()

    def terminate(self) -> None:
        """Accept no more work, as Lithops' ``Pool.terminate``: the calls already sent go on (a
        function is not interrupted) and their results stay available; the executor is released
        (its job prefix deleted) once the last of them has ended."""
        self._state = "TERMINATE"
        pending = [result for result in self._results if not result.ready()]
        if not pending:
            self._end()
            return
        threading.Thread(
            target=self._end_after, args=(pending,), name="dask-faas-pool-terminate", daemon=True
        ).start()

    def _end_after(self, results: list[AsyncResult]) -> None:
        for result in results:
            result.wait()
        self._end()

    def _end(self) -> None:
        with self._end_lock:  # join() and terminate()'s thread may both end the pool
            if self._executor is None:
                return
            self._executor = None
        try:
            self._release()
        finally:
            if self._feed is not None:
                self._feed.stop()

    def __enter__(self) -> Pool:
        self._check_running()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.terminate()
