"""Lithops' futures of calls (:class:`ResponseFuture`, :class:`FuturesList`) and waiting on them."""

from __future__ import annotations

import concurrent.futures as cf
import math
import time
from typing import TYPE_CHECKING, Any

from .. import serialize
from ..persisted import FaasFuture

if TYPE_CHECKING:
    from ._executor import FunctionExecutor

#: ``return_when`` of :meth:`FunctionExecutor.wait`, as in ``lithops.wait`` (other ints: percent done).
ALWAYS, ANY_COMPLETED, ALL_COMPLETED = 0, -1, 100


class ResponseFuture:
    """The future of one call, as Lithops' ``ResponseFuture`` (``done``/``success``/``error``/``result``).

    Parameters
    ----------
    future : concurrent.futures.Future
        The underlying future (attribute ``future``).
    executor_id, job_id : str
        The ids of the executor and the job.
    call_id : int
        The call's number in its job.
    """

    def __init__(self, future: cf.Future[Any], executor_id: str, job_id: str, call_id: int) -> None:
        self.future = future
        self.executor_id, self.job_id, self.call_id = executor_id, job_id, str(call_id).zfill(5)
        self._produce_output = True  # False for the map calls of map_reduce
        self._read = False  # returned by a get_result() without futures
        self._value: Any = None  # a map_reduce output fetched from storage
        self._fetched = False

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


class FuturesList(list):  # type: ignore[type-arg]
    """A list of :class:`ResponseFuture` (Lithops' ``FuturesList``) with ``wait`` and ``get_result``.

    Parameters
    ----------
    futures : iterable of ResponseFuture
        The futures.
    executor : FunctionExecutor, optional
        The executor that :meth:`wait` and :meth:`get_result` go to.
    """

    def __init__(self, futures: Any = (), executor: FunctionExecutor | None = None) -> None:
        super().__init__(futures)
        self.executor = executor

    def wait(self, **kwargs: Any) -> Any:
        return self._executor().wait(self, **kwargs)

    def get_result(self, **kwargs: Any) -> Any:
        return self._executor().get_result(self, **kwargs)

    def _executor(self) -> FunctionExecutor:
        if self.executor is None:
            raise RuntimeError("this FuturesList belongs to no executor")
        return self.executor


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
