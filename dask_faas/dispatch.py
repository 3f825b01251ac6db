"""Calls on their way through invocations, retries and deadlines (the core of ``FaasExecutor``).

A :class:`Dispatcher` turns one batch of calls into signed invocation payloads, hands them to the
compute backend, decodes the responses and settles the caller's :class:`concurrent.futures.Future`.
Failed invocations are invoked again up to the call's ``retries``. Every started invocation has a
deadline, its ``timeout_s`` plus a grace: a platform that never answers (a lost response) fails the
call with a :class:`~dask_faas.exceptions.FunctionTimeoutError` naming it, instead of hanging the
client. Warnings raised inside the function are issued again here, with the function-side location.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import heapq
import itertools
import logging
import random
import secrets
import threading
import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from . import protocol, serialize
from .backends.compute import ComputeBackend, InvokeOptions
from .exceptions import (
    ConfigError,
    FunctionTimeoutError,
    IntegrityError,
    InvocationError,
    PayloadTooLargeError,
)
from .job import Job
from .protocol import Invocation, Ref, Response
from .session import CallOptions, Calls, JobFunction

__all__ = ["MAX_REDELIVERIES", "Dispatcher", "deadline_grace_s", "longest_call_s"]

#: How many times one attempt is delivered again because it did not start within its start deadline.
MAX_REDELIVERIES = 3
#: Threads that look for start marks in storage at calls' start deadlines.
START_CHECKERS = 8

logger = logging.getLogger("dask_faas")


def deadline_grace_s(timeout_s: float) -> float:
    """How long past its ``timeout_s`` a started invocation may stay unanswered before it is failed."""
    return max(5.0, 0.1 * timeout_s)


def longest_call_s(
    options: CallOptions,
    answer_grace_s: float = 0.0,
    start_deadline_s: float = 0.0,
    throttle_deadline_s: float = 0.0,
) -> float:
    """How long a waiter may wait for a call once started: every attempt up to its deadline (with
    the platform's ``answer_grace_s``, the re-deliveries after a missed ``start_deadline_s`` and the
    time it may be throttled), the backoffs between them, and one more grace for the outcome to
    reach the waiter."""
    grace = deadline_grace_s(options.timeout_s)
    backoff = sum(options.retry_backoff_s * 2**a * 1.5 for a in range(options.retries))
    attempt = options.timeout_s + answer_grace_s + grace + MAX_REDELIVERIES * start_deadline_s
    attempt += throttle_deadline_s
    return (options.retries + 1) * attempt + backoff + grace


@dataclass(eq=False)
class _Call:
    """One batch of calls in one invocation, at one attempt (a retry is a copy with the next
    attempt; ``started`` and the future are shared by every attempt)."""

    id: str
    label: str
    function: Ref
    args: bytes | Ref
    options: CallOptions
    future: cf.Future[Any]
    unwrap: bool
    attempt: int = 0
    #: Nonces of this attempt's deliveries, the latest last (a call that never started is sent again).
    deliveries: list[str] = field(default_factory=list)
    started: bool = False
    #: Set once this attempt's outcome was taken (response, failure or missed deadline).
    settled: bool = field(default=False)
    #: The deadline watcher's numbers for this attempt: its answer deadline and its start deadline.
    watch: int | None = None
    start_watch: int | None = None

    def describe(self) -> str:
        return f"call {self.id} (attempt {self.attempt}) of {self.label}"


class _Deadlines:
    """One thread that fails started invocations still unanswered past their deadline.

    The heap holds only times and numbers; the calls being watched are in a dict that an answered
    call leaves at once, so a finished call's future and arguments are never kept alive here.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, tuple[_Call, Any]] = {}
        self._numbers = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, call: _Call, seconds: float, action: Any) -> int:
        """Call ``action(call)`` in ``seconds`` unless :meth:`discard` is called first with the number
        this returns."""
        number = next(self._numbers)
        deadline = time.monotonic() + seconds
        with self._cond:
            if self._closed:
                return number
            self._watched[number] = (call, action)
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, number))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dask-faas-deadlines", daemon=True)
                self._thread.start()
            elif earliest:
                self._cond.notify()
        return number

    def discard(self, number: int | None) -> None:
        if number is not None:
            with self._cond:
                self._watched.pop(number, None)
                if len(self._heap) > 2 * len(self._watched) + 1024:  # drop answered calls' entries
                    self._heap = [entry for entry in self._heap if entry[1] in self._watched]
                    heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][1] not in self._watched or self._heap[0][0] <= now):
                    _, number = heapq.heappop(self._heap)
                    watched = self._watched.pop(number, None)
                    if watched is not None:
                        call, action = watched
                        self._cond.release()
                        try:
                            action(call)
                        except Exception:  # the watcher must outlive any one call
                            logger.exception("dask-faas: deadline of %s", call.describe())
                        finally:
                            self._cond.acquire()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._watched.clear()
            self._cond.notify()


class Dispatcher:
    """Submit batches of calls as invocations of ``backend``, with retries and deadlines.

    Parameters
    ----------
    backend : ComputeBackend
        Where invocations run.
    job : Job
        The job's signed store: function bodies, large arguments and results.
    key : bytes
        The signing key of payloads and responses.
    inline_limit : int
        Arguments and results up to this many bytes travel inside messages.
    options : CallOptions
        Default limits of a call.
    start_deadline_s : float, optional
        For a backend that cannot confirm that a call started (``confirms_start`` False): an attempt
        with no answer this long after it was sent, and no start mark from any of its deliveries, is
        delivered again (at most :data:`MAX_REDELIVERIES` times).
    """

    def __init__(
        self,
        backend: ComputeBackend,
        job: Job,
        key: bytes,
        inline_limit: int,
        options: CallOptions,
        start_deadline_s: float | None = None,
    ) -> None:
        self.backend, self.job, self.options, self.inline_limit = backend, job, options, inline_limit
        self.start_deadline_s = None if backend.confirms_start else start_deadline_s
        self._key = key
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._futures: set[cf.Future[Any]] = set()
        self._deadlines = _Deadlines()
        self._checks: cf.ThreadPoolExecutor | None = None  # looks for start marks (see _start_check)
        self._warned: dict[Any, Any] = {}  # warnings' "once per location" registry
        self.closed = False
        self._stopped = False
        #: How long a waiter may wait for any call submitted so far (see :func:`longest_call_s`).
        self.wait_bound_s = self.longest_call_s(options)
        self.stats = {"calls": 0, "invocations": 0, "retries": 0, "redeliveries": 0, "bytes_received": 0}

    def submit(
        self,
        function: JobFunction,
        calls: Calls,
        unwrap: bool = False,
        options: CallOptions | None = None,
        label: str | None = None,
        first_index: int | None = None,
    ) -> cf.Future[Any]:
        """Invoke ``function`` over ``calls`` in one invocation (see :meth:`Session.submit`)."""
        if options is not None:
            self._check_limits(options, label or function.name)
        call_id = str(next(self._ids))
        data = serialize.dumps_arguments(function.name, calls, first_index, ship=self.job.ship_modules)
        args = data if len(data) <= self.inline_limit else self.job.put(f"in/{call_id}", data)
        future: cf.Future[Any] = cf.Future()
        call = _Call(
            call_id, label or function.name, function.ref, args, options or self.options, future, unwrap
        )
        with self._lock:
            if self.closed:
                self._release_args(call)
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(future)
            self.stats["calls"] += len(calls)
            self.wait_bound_s = max(self.wait_bound_s, self.longest_call_s(call.options))
        future.add_done_callback(self._forget)
        try:
            self._invoke(call)
        except BaseException:
            future.cancel()
            self._release_args(call)
            raise
        return future

    def longest_call_s(self, options: CallOptions) -> float:
        """See :func:`longest_call_s`, with this backend's answer grace and start deadline."""
        backend = self.backend
        return longest_call_s(
            options, backend.answer_grace_s, self.start_deadline_s or 0.0, backend.throttle_deadline_s
        )

    def _check_limits(self, options: CallOptions, label: str) -> None:
        """Refuse per-call limits (Dask annotations) the platform cannot grant."""
        backend = self.backend
        if options.timeout_s > backend.max_timeout_s or options.memory_mb > backend.max_memory_mb:
            raise ConfigError(
                f"{label}: timeout_s={options.timeout_s:g}, memory_mb={options.memory_mb} exceed the "
                f"{backend.name} backend's max_timeout_s={backend.max_timeout_s:g} or "
                f"max_memory_mb={backend.max_memory_mb}"
            )

    def pending(self) -> list[cf.Future[Any]]:
        """The futures not done yet."""
        with self._lock:
            return list(self._futures)

    def close(self) -> None:
        """Accept no more calls; those already submitted go on (with their retries and deadlines)."""
        with self._lock:
            self.closed = True

    def stop(self) -> None:
        """Stop retrying and watching deadlines: the backend is being closed."""
        self.close()
        with self._lock:
            self._stopped = True
        self._deadlines.close()
        with self._lock:
            checks, self._checks = self._checks, None
        if checks is not None:
            checks.shutdown(wait=False, cancel_futures=True)

    def count_received(self, nbytes: int) -> None:
        with self._lock:
            self.stats["bytes_received"] += nbytes

    # -- one attempt -------------------------------------------------------------------------

    def _forget(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _invoke(self, call: _Call) -> None:
        call.deliveries.append(secrets.token_hex(4))
        start_deadline = self.start_deadline_s
        invocation = Invocation(
            job=self.job.id,
            call=call.id,
            attempt=call.attempt,
            function=call.function,
            args=call.args,
            storage=self.job.locator,
            prefix=self.job.prefix,
            inline_limit=self.inline_limit,
            delivery=call.deliveries[-1],
            start_mark_s=None if start_deadline is None else start_deadline / 3,
        )
        payload = protocol.seal(invocation, self._key)
        if len(payload) > self.backend.max_payload_bytes:
            raise PayloadTooLargeError(
                f"{call.describe()}: payload of {len(payload)} bytes exceeds the {self.backend.name} "
                f"backend's {self.backend.max_payload_bytes}; lower 'faas.inline-limit'"
            )
        options = InvokeOptions(
            call.options.timeout_s,
            call.options.memory_mb,
            call.describe(),
            partial(self._start, call),
            partial(self._backing_off, call),
        )
        with self._lock:
            self.stats["invocations"] += 1
        delivery = call.deliveries[-1]
        self.backend.invoke(payload, options).add_done_callback(partial(self._on_response, call, delivery))

    def _start(self, call: _Call) -> bool:
        """The backend is about to send ``call``: mark the future running and start its deadline."""
        if not call.started:
            call.started = True
            if not call.future.set_running_or_notify_cancel():
                return False
        elif call.future.done() or call.settled:  # a retry settled meanwhile, or this attempt was
            return False
        timeout = call.options.timeout_s
        # a re-delivery or a send after a backoff: the deadlines count from this send
        self._backing_off(call)
        answer_by = timeout + self.backend.answer_grace_s + deadline_grace_s(timeout)
        call.watch = self._deadlines.add(call, answer_by, self._expire)
        if self.start_deadline_s is not None and len(call.deliveries) <= MAX_REDELIVERIES:
            call.start_watch = self._deadlines.add(call, self.start_deadline_s, self._start_check)
        return True

    def _backing_off(self, call: _Call, delay: float = 0.0) -> None:
        """The backend holds ``call`` back (throttled) or sends it again: no deadline runs meanwhile
        (the backend's ``throttle_deadline_s`` bounds the wait); :meth:`_start` arms them again."""
        self._deadlines.discard(call.watch)
        self._deadlines.discard(call.start_watch)
        call.watch = call.start_watch = None

    def _start_check(self, call: _Call) -> None:
        """From the deadline thread: look for the call's start marks on the checking pool, so that
        storage requests never hold up the deadlines of other calls."""
        with self._lock:
            if self._stopped:
                return
            if self._checks is None:
                self._checks = cf.ThreadPoolExecutor(
                    START_CHECKERS, thread_name_prefix="dask-faas-start-check"
                )
            checks = self._checks
        checks.submit(self._check_started, call)

    def _check_started(self, call: _Call) -> None:
        """At the start deadline of an unanswered attempt: deliver it again unless a delivery started."""
        if call.settled or call.future.done() or self._stopped or len(call.deliveries) > MAX_REDELIVERIES:
            return
        names = [protocol.start_mark_name(call.id, call.attempt, d) for d in call.deliveries]
        if any(self.job.exists(name) for name in names):
            return  # running: its answer deadline applies
        logger.info(
            "dask-faas: %s did not start within faas.start-deadline-s=%g; delivering it again",
            call.describe(),
            self.start_deadline_s,
        )
        with self._lock:
            self.stats["redeliveries"] += 1
        self._invoke_or_fail(call)

    def _settle(self, call: _Call) -> bool:
        """Take the outcome of this attempt once (a response and a missed deadline may race)."""
        with self._lock:
            if call.settled:
                return False
            call.settled = True
        self._deadlines.discard(call.watch)
        self._deadlines.discard(call.start_watch)
        return True

    def _expire(self, call: _Call) -> None:
        if not self._settle(call):
            return
        limit = call.options.timeout_s
        self._fail(
            call,
            FunctionTimeoutError(
                f"{call.describe()}: no response within its time limit timeout_s={limit:g} plus "
                f"{self.backend.answer_grace_s + deadline_grace_s(limit):g} s; the {self.backend.name} "
                "platform lost the response or did not stop the call"
            ),
        )

    def _on_response(self, call: _Call, delivery: str, response: cf.Future[bytes]) -> None:
        if delivery != call.deliveries[-1] and (response.cancelled() or response.exception() is not None):
            return  # a delivery given up on (it never started) failed: the latest one decides
        if not self._settle(call):  # past its deadline, or another delivery answered first
            if not response.cancelled() and response.exception() is None:
                self._discard_outputs(call, response.result())
            return
        if response.cancelled():  # the backend closed before sending it
            self._release_args(call)
            if not call.future.cancel():  # a retry's future is already running
                self._finish(call, exc=InvocationError(f"{call.describe()}: not sent, the backend closed"))
            return
        try:
            reply = self._reply(call, response.result())
        except BaseException as exc:
            self._fail(call, exc)
            return
        try:
            value = self._value(call, reply)
        except BaseException as exc:
            with contextlib.suppress(Warning):  # the call's own error wins over an escalated warning
                self._reissue_warnings(reply.warnings)
            self._fail(call, exc)
            return
        # arguments go before the future settles: a waiter that wakes finds nothing of the call left
        self._release_args(call)
        try:
            self._reissue_warnings(reply.warnings)
        except Warning as escalated:  # a client filter turned a function's warning into an error
            self._finish(call, exc=escalated)
        else:
            self._finish(call, value)

    def _fail(self, call: _Call, exc: BaseException) -> None:
        if call.attempt < call.options.retries and not call.future.done() and not self._stopped:
            self._retry(call)
            return
        self._release_args(call)
        self._finish(call, exc=exc)

    @staticmethod
    def _finish(call: _Call, value: Any = None, exc: BaseException | None = None) -> None:
        if call.future.done():
            return
        if exc is None:
            call.future.set_result(value)
        else:
            call.future.set_exception(exc)

    def _reply(self, call: _Call, sealed: bytes) -> Response:
        reply: Response = protocol.unseal(sealed, self._key, what=f"response to {call.describe()}")
        if (reply.call, reply.attempt) != (call.id, call.attempt):
            raise IntegrityError(f"response to {call.describe()} answers call {reply.call} instead")
        self.count_received(len(sealed))
        self._delete_start_mark(reply)
        return reply

    def _delete_start_mark(self, reply: Response) -> None:
        if reply.stats.get("marked") and reply.stats.get("delivery") is not None:
            name = protocol.start_mark_name(reply.call, reply.attempt, reply.stats["delivery"])
            with contextlib.suppress(Exception):  # the job's prefix goes at the end anyway
                self.job.delete(Ref(f"{self.job.prefix}/{name}", 0))

    def _value(self, call: _Call, reply: Response) -> Any:
        """The results of ``reply`` (fetched from storage when large), or the function's error."""
        data = reply.value
        if isinstance(data, Ref):
            self.count_received(data.size)
            try:
                data = self.job.fetch(data)
            finally:
                self.job.delete(reply.value)
        if not reply.ok:
            raise serialize.loads_error(data)
        results = serialize.loads(data)
        return results[0] if call.unwrap else results

    def _reissue_warnings(self, records: bytes) -> None:
        for category, message, filename, lineno in serialize.loads_warnings(records):
            try:
                warnings.warn_explicit(message, category, filename, lineno, registry=self._warned)
            except Warning:
                raise
            except Exception:  # a category that cannot be built from a message alone
                name = f"{category.__module__}.{category.__qualname__}"
                warnings.warn_explicit(
                    f"{name}: {message}", UserWarning, filename, lineno, registry=self._warned
                )

    def _discard_outputs(self, call: _Call, sealed: bytes) -> None:
        """A late response of an attempt given up on: delete the result it stored."""
        try:
            reply: Response = protocol.unseal(sealed, self._key, what=f"late response to {call.describe()}")
        except Exception:
            return
        self._delete_start_mark(reply)
        if isinstance(reply.value, Ref):
            self.job.delete(reply.value)

    def _retry(self, call: _Call) -> None:
        delay = call.options.retry_backoff_s * 2**call.attempt * random.uniform(0.5, 1.5)
        retried = replace(
            call, attempt=call.attempt + 1, deliveries=[], settled=False, watch=None, start_watch=None
        )
        with self._lock:
            self.stats["retries"] += 1
        timer = threading.Timer(delay, self._invoke_or_fail, (retried,))
        timer.daemon = True
        timer.start()

    def _invoke_or_fail(self, call: _Call) -> None:
        try:
            self._invoke(call)
        except BaseException as exc:  # e.g. the pool was closed meanwhile
            self._finish(call, exc=exc)
            self._release_args(call)

    def _release_args(self, call: _Call) -> None:
        """Delete arguments kept in storage (best effort: the job's prefix goes at the end anyway)."""
        if isinstance(call.args, Ref):
            try:
                self.job.delete(call.args)
            except Exception:
                logger.warning(
                    "dask-faas: could not delete the arguments of %s", call.describe(), exc_info=True
                )
