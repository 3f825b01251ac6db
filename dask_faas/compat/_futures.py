"""Lithops' futures of calls (:class:`ResponseFuture`, :class:`FuturesList`) and waiting on them."""

from __future__ import annotations

import concurrent.futures as cf
import math
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .. import serialize, worker
from ..persisted import FaasFuture
from ._stored import StoredOutcome, persist, restore

if TYPE_CHECKING:
    from ._executor import FunctionExecutor

#: ``return_when`` of :meth:`FunctionExecutor.wait`, as in ``lithops.wait`` (other ints: percent done).
ALWAYS, ANY_COMPLETED, ALL_COMPLETED = 0, -1, 100


class ResponseFuture:
    """The future of one call, as Lithops' ``ResponseFuture`` (``done``/``success``/``error``/``result``,
    ``stats``).

    Parameters
    ----------
    future : concurrent.futures.Future
        The underlying future (attribute ``future``).
    executor_id, job_id : str
        The ids of the executor and the job.
    call_id : int
        The call's number in its job.
    """

    def __init__(
        self,
        future: cf.Future[Any],
        executor_id: str,
        job_id: str,
        call_id: int | str,
        owner: FunctionExecutor | None = None,
        task: str | None = None,
    ) -> None:
        self.future = future
        #: The call's task name in the invocation records of the executor.
        self.task = task
        self.executor_id, self.job_id, self.call_id = executor_id, job_id, str(call_id).zfill(5)
        self._produce_output = True  # False for the map calls of map_reduce
        self._read = False  # returned by a get_result() without futures
        self._value: Any = None  # a map_reduce output fetched from storage
        self._fetched = False
        self._owner = None if owner is None else weakref.ref(owner)
        self._stats: dict[str, Any] = {}
        self._persisted: tuple[Any, StoredOutcome] | None = None

    @property
    def stats(self) -> dict[str, Any]:
        """Lithops' execution statistics of the call, once it is done (see
        :func:`dask_faas.compat.future.call_stats`): ``host_submit_tstamp``,
        ``worker_start_tstamp``, ``worker_end_tstamp``, ``worker_exec_time``, ... ."""
        owner = self._owner() if self._owner is not None else None
        if not self._stats and owner is not None and self.done and self.task is not None:
            self._stats = owner.call_stats(self)
        return self._stats

    def __reduce__(self) -> Any:
        """Pickled, a future keeps its outcome in storage (:mod:`dask_faas.compat._stored`)."""
        owner = self._owner() if self._owner is not None else None
        try:
            store = worker.current().store  # inside a function: the job that called it
        except RuntimeError:
            if owner is None:
                raise TypeError(
                    f"{self!r} belongs to no executor of this process: it cannot be pickled"
                ) from None
            store = owner.executor.session.store
        outcome = self._outcome(store)
        return (_restored, (outcome, self.executor_id, self.job_id, self.call_id, self._produce_output))

    def _outcome(self, store: Any) -> StoredOutcome:
        with _PERSIST_LOCK:
            known = self._persisted
            if known is None or known[0] is not store:
                known = (store, persist(self.future, lambda: self.result(throw_except=True), store))
                self._persisted = known
        return known[1]

    @property
    def done(self) -> bool:
        return self.future.done()

    ready = done

    @property
    def running(self) -> bool:
        return self.future.running()

    @property
    def success(self) -> bool:
        return self.future.done() and not self.future.cancelled() and self.future.exception() is None

    @property
    def error(self) -> bool:
        return self.future.done() and (self.future.cancelled() or self.future.exception() is not None)

    def result(self, throw_except: bool = True, timeout: float | None = None, **_: Any) -> Any:
        """The call's value; its exception is raised (``None`` returned with ``throw_except=False``).

        Raises
        ------
        TimeoutError
            If the call is not done after ``timeout`` seconds (whatever ``throw_except``).
        """
        try:
            value = self.future.result(timeout)
            if isinstance(value, FaasFuture):  # a map_reduce output kept in storage: fetched once
                if not self._fetched:
                    self._value, self._fetched = value.result(), True
                value = self._value
        except cf.TimeoutError:
            raise
        except Exception:
            if throw_except:
                raise
            return None
        return value

    def status(self, throw_except: bool = True, **kwargs: Any) -> str:
        """``"success"``, ``"error"``, ``"running"`` or ``"pending"``; raises the error if asked."""
        if self.error and throw_except:
            self.result()
        if self.success:
            return "success"
        if self.error:
            return "error"
        return "running" if self.running else "pending"

    def cancel(self) -> bool:
        return self.future.cancel()

    def mark_read(self) -> None:
        """Leave this call's result out of a later ``get_result()`` without futures."""
        self._read = True

    def _release(self, force: bool = False) -> None:
        """Forget the value of a done call (any call, cancelled first, with ``force``).

        A stored output is released; the call keeps its error, or its value becomes ``None``.
        """
        if not (self.done or force):
            return
        self.cancel()
        self._value = None
        stand_in: cf.Future[Any] = cf.Future()
        if self.future.done() and not self.future.cancelled() and self.future.exception() is not None:
            stand_in.set_exception(self.future.exception())  # type: ignore[arg-type]
        else:
            stand_in.set_result(None)
        self.future = stand_in

    def __repr__(self) -> str:
        return f"<ResponseFuture {self.executor_id}/{self.job_id}/{self.call_id} {self.status(False)}>"


_PERSIST_LOCK = threading.Lock()
#: Executors kept alive while futures pickled out of them (returned by a function) still run.
_KEPT: dict[int, tuple[Any, set[cf.Future[Any]]]] = {}


def keep_alive(owner: Any, future: cf.Future[Any]) -> None:
    """Keep ``owner`` (a FunctionExecutor) referenced until ``future`` is done: an executor that a
    program (or a function that returns futures) let go of finishes its calls first."""
    key = id(owner)  # the callback holds no reference to the owner: no cycle through its futures
    with _PERSIST_LOCK:
        _, running = _KEPT.setdefault(key, (owner, set()))
        running.add(future)

    def release(done: cf.Future[Any]) -> None:
        with _PERSIST_LOCK:
            entry = _KEPT.get(key)
            if entry is None:
                return
            entry[1].discard(done)
            if entry[1]:
                return
            del _KEPT[key]
        # the last reference may go here: the executor is then released, which joins the threads
        # of its backend, one of which runs this callback; so it goes in a thread of its own
        holder = [entry]
        del entry
        threading.Thread(target=holder.clear, daemon=True, name="dask-faas-compat-release").start()

    future.add_done_callback(release)


def _restored(
    outcome: StoredOutcome, executor_id: str, job_id: str, call_id: str, produce_output: bool
) -> ResponseFuture:
    future = ResponseFuture(restore(outcome), executor_id, job_id, call_id)
    future._produce_output = produce_output
    return future


class FuturesList(list):  # type: ignore[type-arg]
    """A list of :class:`ResponseFuture` (Lithops' ``FuturesList``): wait, results and chaining.

    ``fexec.map(f1, data).map(f2).get_result()`` runs ``f2`` over the results of ``f1``.

    Parameters
    ----------
    futures : iterable of ResponseFuture
        The futures.
    executor : FunctionExecutor, optional
        The executor that :meth:`wait`, :meth:`get_result` and the chained calls go to (without
        one, as after unpickling, the futures are waited on by themselves).
    """

    def __init__(self, futures: Any = (), executor: FunctionExecutor | None = None) -> None:
        super().__init__(futures)
        self.executor = executor

    def wait(self, **kwargs: Any) -> Any:
        if self.executor is None:
            done, not_done = wait_for(
                list(self),
                kwargs.get("return_when", ALL_COMPLETED),
                kwargs.get("timeout"),
                kwargs.get("throw_except", True),
            )
            return FuturesList(done), FuturesList(not_done)
        return self.executor.wait(self, **kwargs)

    def get_result(self, **kwargs: Any) -> Any:
        if self.executor is None:
            return results_of(list(self), kwargs.get("throw_except", True), kwargs.get("timeout"))
        return self.executor.get_result(self, **kwargs)

    def map(self, map_function: Any, **kwargs: Any) -> FuturesList:
        """``map_function`` over the results of these futures (chaining)."""
        return self._executor().map(map_function, self, **kwargs)

    def map_reduce(self, map_function: Any, reduce_function: Any, **kwargs: Any) -> FuturesList:
        """``map_reduce`` over the results of these futures (chaining)."""
        return self._executor().map_reduce(map_function, self, reduce_function, **kwargs)

    def __reduce__(self) -> Any:
        return (FuturesList, (list(self),))

    def _executor(self) -> FunctionExecutor:
        if self.executor is None:
            raise RuntimeError("this FuturesList belongs to no executor: chain on the executor's own")
        return self.executor


def is_futures(value: Any) -> bool:
    """Whether ``value`` is a future, or a non-empty list or tuple of them (Lithops' new futures)."""
    if isinstance(value, ResponseFuture):
        return True
    return (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(v, ResponseFuture) for v in value)
    )


def results_of(
    futures: list[ResponseFuture], throw_except: bool = True, timeout: float | None = None
) -> list[Any]:
    """The results of ``futures`` in order; a call that returned futures (a function that itself
    called an executor) contributes their results instead, waited for in turn."""
    wait_for(futures, ALL_COMPLETED, timeout, throw_except)
    out: list[Any] = []
    for future in futures:
        if not future._produce_output:
            continue
        value = future.result(throw_except=throw_except)
        if is_futures(value):
            inner = [value] if isinstance(value, ResponseFuture) else list(value)
            out.extend(results_of(inner, throw_except, timeout))
        else:
            out.append(value)
    return out


def wait_for(
    futures: list[ResponseFuture], return_when: int, timeout: float | None, throw_except: bool
) -> tuple[list[ResponseFuture], list[ResponseFuture]]:
    """Wait until ``return_when`` is met (see :data:`ALWAYS`); return ``(done, not_done)``.

    Raises
    ------
    TimeoutError
        After ``timeout`` seconds.
    Exception
        The error of the first failed call, with ``throw_except`` (cancelled calls are not raised).
    """
    if futures and return_when != ALWAYS:
        need = 1 if return_when == ANY_COMPLETED else math.ceil(len(futures) * min(return_when, 100) / 100)
        pending = {f.future for f in futures if not f.done}
        end = None if timeout is None else time.monotonic() + timeout
        while len(futures) - len(pending) < need:
            left = None if end is None else max(0.0, end - time.monotonic())
            finished, pending = cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
            if not finished:
                raise TimeoutError(f"Timeout of {timeout} seconds exceeded waiting for the calls")
    done = [f for f in futures if f.done]
    if throw_except:
        for future in done:
            if future.error and not future.future.cancelled():
                raise future.future.exception()  # type: ignore[misc]
    return done, [f for f in futures if not f.done]


def fan_out(whole: cf.Future[Any], targets: list[cf.Future[Any]]) -> None:
    """The outcomes of a batch of calls (``chunksize``) onto the futures of its calls."""
    try:
        outcomes = whole.result()
    except BaseException as exc:
        for target in targets:
            target.set_exception(exc)
        return
    for target, (ok, value) in zip(targets, outcomes, strict=False):
        if ok:
            target.set_result(value)
        else:
            target.set_exception(serialize.loads_error(value))
