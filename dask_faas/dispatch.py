"""Calls on their way through invocations, retries, deadlines and backups (the core of ``FaasExecutor``).

A :class:`Dispatcher` turns one batch of calls into signed invocation payloads, hands them to the
compute backend, decodes the responses and settles the caller's :class:`concurrent.futures.Future`.

- Retries: a failed call is invoked again up to its ``retries`` by the policy of
  :meth:`CallOptions.retried <dask_faas.session.CallOptions.retried>`: failures of the platform
  and the storage always; the user's exceptions unless ``retry_on`` leaves them out; never a
  failure that would repeat itself (a signature that does not match, a protocol mismatch,
  something that cannot be pickled, a wrong setting).
- Deadlines: every started invocation has one, its ``timeout_s`` plus a grace: a platform that
  never answers (a lost response) fails the call with a
  :class:`~dask_faas.exceptions.FunctionTimeoutError` naming it, instead of hanging the client. An
  attempt that never started (no answer, no start mark) is delivered again.
- Backups (``faas.backups``): a call that runs far longer than its finished siblings (the calls
  of its group, see :class:`~dask_faas.deadlines.BackupRule`) is invoked once more while it goes on
  running: the backup is another run of the same attempt, with a delivery nonce and so names of its
  own, and a time limit and deadlines of its own counted from its own send. The first run to
  answer with a result wins; the other's answer is ignored and what it wrote is deleted. A run
  that fails while the other still runs does not fail the call; the last one to fail does (and is
  retried as any failure).

Warnings raised inside the function are issued again here, with the function-side location.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import itertools
import logging
import random
import secrets
import threading
import time
import warnings
import weakref
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from . import protocol, records, serialize
from .backends.compute import ComputeBackend, InvokeOptions
from .deadlines import MAX_REDELIVERIES, BackupRule, Deadlines, Stragglers, deadline_grace_s, longest_call_s
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

#: Threads that look for start marks in storage at calls' start deadlines.
START_CHECKERS = 8

logger = logging.getLogger("dask_faas")


@dataclass(eq=False)
class _Call:
    """One run of one attempt of a batch of calls in one invocation (a retry is a copy with the
    next attempt, a backup a copy of the same attempt; ``started`` and the future are shared by
    every attempt)."""

    id: str
    label: str
    function: Ref
    args: bytes | Ref
    options: CallOptions
    future: cf.Future[Any]
    unwrap: bool
    group: Hashable = None
    attempt: int = 0
    #: Nonces of this run's deliveries, the latest last (a call that never started is sent again).
    deliveries: list[str] = field(default_factory=list)
    started: bool = False
    #: Set once this run's outcome was taken (response, failure, missed deadline, lost the race).
    settled: bool = field(default=False)
    #: The deadline watcher's numbers for this run: its answer deadline and its start deadline.
    watch: int | None = None
    start_watch: int | None = None
    #: This run is the backup of its attempt.
    backup: bool = False
    #: The runs of this attempt, once it was backed up (shared by the original and the backup).
    race: _Race | None = None
    #: What it runs, for its records: the task keys (or the function's name) and their prefix.
    tasks: tuple[str, ...] = ()
    prefix: str = ""
    #: When each delivery was handed to the backend (client clock, epoch s), and those recorded
    #: (shared by the copies of the call: delivery nonces are unique).
    sent: dict[str, float] = field(default_factory=dict)
    recorded: set[str] = field(default_factory=set)

    def describe(self) -> str:
        run = ", backup" if self.backup else ""
        return f"call {self.id} (attempt {self.attempt}{run}) of {self.label}"


@dataclass(eq=False)
class _Race:
    """The original run of an attempt and its backup; the first to answer with a result wins."""

    runs: list[_Call]
    winner: _Call | None = None


class Dispatcher:
    """Submit batches of calls as invocations of ``backend``, with retries, deadlines and backups.

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
    backups : BackupRule, optional
        Back up stragglers by this rule (None: never).
    observer : records.Observer, optional
        Told the outcome of every invocation (its record, and what the function printed).
    log_bytes : int
        The functions capture their output up to this many bytes (``faas.logs.max-bytes``).
    """

    def __init__(
        self,
        backend: ComputeBackend,
        job: Job,
        key: bytes,
        inline_limit: int,
        options: CallOptions,
        start_deadline_s: float | None = None,
        backups: BackupRule | None = None,
        observer: records.Observer | None = None,
        log_bytes: int = 0,
    ) -> None:
        self.backend, self.job, self.options, self.inline_limit = backend, job, options, inline_limit
        self.observer, self.log_bytes = observer, log_bytes
        #: The call id of each future given out (for its records and logs).
        self.call_ids: weakref.WeakKeyDictionary[cf.Future[Any], str] = weakref.WeakKeyDictionary()
        self.start_deadline_s = None if backend.confirms_start else start_deadline_s
        self.backups = backups
        self._key = key
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._futures: set[cf.Future[Any]] = set()
        self._deadlines = Deadlines()
        self._stragglers = None if backups is None else Stragglers(backups, self._deadlines, self._back_up)
        self._checks: cf.ThreadPoolExecutor | None = None  # looks for start marks (see _start_check)
        self._warned: dict[Any, Any] = {}  # warnings' "once per location" registry
        self.closed = False
        self._stopped = False
        #: How long a waiter may wait for any call submitted so far (see :func:`longest_call_s`).
        self.wait_bound_s = self.longest_call_s(options)
        self.stats = dict.fromkeys(
            ("calls", "invocations", "retries", "redeliveries", "backups", "backups_won", "bytes_received"), 0
        )

    def submit(
        self,
        function: JobFunction,
        calls: Calls,
        unwrap: bool = False,
        options: CallOptions | None = None,
        label: str | None = None,
        first_index: int | None = None,
        group: Hashable | None = None,
        tasks: list[Hashable] | None = None,
    ) -> cf.Future[Any]:
        """Invoke ``function`` over ``calls`` in one invocation (see :meth:`Session.submit`)."""
        if options is not None:
            self._check_limits(options, label or function.name)
        call_id = str(next(self._ids))
        data = serialize.dumps_arguments(function.name, calls, first_index, ship=self.job.ship_modules)
        args = data if len(data) <= self.inline_limit else self.job.put(f"in/{call_id}", data)
        future: cf.Future[Any] = cf.Future()
        name = label or function.name
        group = (function.ref.key, name) if group is None else group
        call = _Call(call_id, name, function.ref, args, options or self.options, future, unwrap, group)
        if self.observer is not None:
            call.tasks, call.prefix = (
                records.task_names(tasks) if tasks else ((function.name,), function.name)
            )
        self.call_ids[future] = call_id
        with self._lock:
            if self.closed:
                self._release_args(call)
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(future)
            self.stats["calls"] += len(calls)
            self.wait_bound_s = max(self.wait_bound_s, self.longest_call_s(call.options))
        if self._stragglers is not None:
            self._stragglers.join(group)
        future.add_done_callback(partial(self._forget, group))
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
            options,
            backend.answer_grace_s,
            self.start_deadline_s or 0.0,
            backend.throttle_deadline_s,
            self.backups is not None,
        )

    def _check_limits(self, options: CallOptions, label: str) -> None:
        """Refuse per-call limits (Dask annotations) the platform cannot grant, and a ``retry_on``
        that is not a tuple of exception types."""
        backend = self.backend
        if options.timeout_s > backend.max_timeout_s or options.memory_mb > backend.max_memory_mb:
            raise ConfigError(
                f"{label}: timeout_s={options.timeout_s:g}, memory_mb={options.memory_mb} exceed the "
                f"{backend.name} backend's max_timeout_s={backend.max_timeout_s:g} or "
                f"max_memory_mb={backend.max_memory_mb}"
            )
        retry_on = options.retry_on
        if retry_on is not None and not (
            isinstance(retry_on, tuple)
            and all(isinstance(t, type) and issubclass(t, BaseException) for t in retry_on)
        ):
            raise ConfigError(f"{label}: retry_on must be a tuple of exception types, got {retry_on!r}")

    def pending(self) -> list[cf.Future[Any]]:
        """The futures not done yet."""
        with self._lock:
            return list(self._futures)

    def close(self) -> None:
        """Accept no more calls; those already submitted go on (with their retries and deadlines)."""
        with self._lock:
            self.closed = True

    def stop(self) -> None:
        """Stop retrying, backing up and watching deadlines: the backend is being closed."""
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

    # -- one run of one attempt --------------------------------------------------------------

    def _forget(self, group: Hashable, future: cf.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)
        if self._stragglers is not None:
            self._stragglers.leave(group)

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
            log_bytes=self.log_bytes,
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
        call.sent[delivery] = time.time()
        self.backend.invoke(payload, options).add_done_callback(partial(self._on_response, call, delivery))

    def _start(self, call: _Call) -> bool:
        """The backend is about to send ``call``: mark the future running and start its deadlines."""
        if not call.started:
            call.started = True
            if not call.future.set_running_or_notify_cancel():
                return False
        elif call.future.done() or call.settled:  # a retry or the other run settled meanwhile, or
            return False  # this run was given up on
        timeout = call.options.timeout_s
        # a re-delivery or a send after a backoff: the deadlines count from this send
        self._backing_off(call)
        answer_by = timeout + self.backend.answer_grace_s + deadline_grace_s(timeout)
        call.watch = self._deadlines.add(call, answer_by, self._expire)
        if self.start_deadline_s is not None and len(call.deliveries) <= MAX_REDELIVERIES:
            call.start_watch = self._deadlines.add(call, self.start_deadline_s, self._start_check)
        if self._stragglers is not None:  # an attempt is backed up once
            self._stragglers.sent(call, watch=call.race is None)
        return True

    def _backing_off(self, call: _Call, delay: float = 0.0) -> None:
        """The backend holds ``call`` back (throttled) or sends it again: no deadline runs meanwhile
        (the backend's ``throttle_deadline_s`` bounds the wait); :meth:`_start` arms them again."""
        self._deadlines.discard(call.watch)
        self._deadlines.discard(call.start_watch)
        call.watch = call.start_watch = None
        if self._stragglers is not None:
            self._stragglers.stopped(call)

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

    # -- stragglers ----------------------------------------------------------------------------

    def _back_up(self, call: _Call) -> None:
        """From the deadline thread, at ``call``'s straggler deadline: invoke it again while it runs."""
        stragglers = self._stragglers
        if stragglers is None or self._stopped or call.settled or call.future.done():
            return
        ran = stragglers.take(call)
        if ran is None:
            return
        with self._lock:
            if call.settled or call.race is not None:
                return
            self.stats["backups"] += 1
            call.race = race = _Race([call])
            backup = replace(call, deliveries=[], settled=False, watch=None, start_watch=None, backup=True)
            race.runs.append(backup)
        logger.info(
            "dask-faas: %s has run %.1f s, over %g times the median of its finished siblings; "
            "invoking it again",
            call.describe(),
            ran,
            stragglers.rule.slowdown,
        )
        self._invoke_or_fail(backup)

    def _others_running(self, call: _Call) -> bool:
        """Whether another run of ``call``'s attempt is still out (its outcome will decide)."""
        race = call.race
        if race is None:
            return False
        with self._lock:
            return any(run is not call and not run.settled for run in race.runs)

    def _claim(self, call: _Call) -> bool:
        """This run answered with a result: it wins its attempt unless the other run won first.
        The other run is given up on (its answer, when it comes, is discarded)."""
        race = call.race
        if race is None:
            return True
        with self._lock:
            if race.winner is not None:
                return False
            race.winner = call
            losers = [run for run in race.runs if run is not call and not run.settled]
            for run in losers:
                run.settled = True
            if call.backup:
                self.stats["backups_won"] += 1
        for run in losers:
            self._backing_off(run)  # discards its deadlines
        return True

    # -- outcomes --------------------------------------------------------------------------------

    def _settle(self, call: _Call) -> bool:
        """Take the outcome of this run once (a response and a missed deadline may race)."""
        with self._lock:
            if call.settled:
                return False
            call.settled = True
        self._deadlines.discard(call.watch)
        self._deadlines.discard(call.start_watch)
        if self._stragglers is not None:
            self._stragglers.stopped(call)
        return True

    def _expire(self, call: _Call) -> None:
        if not self._settle(call):
            return
        limit = call.options.timeout_s
        error = FunctionTimeoutError(
            f"{call.describe()}: no response within its time limit timeout_s={limit:g} plus "
            f"{self.backend.answer_grace_s + deadline_grace_s(limit):g} s; the {self.backend.name} "
            "platform lost the response or did not stop the call"
        )
        if call.deliveries:
            self._observe(call, call.deliveries[-1], "lost", error=error)
        self._fail(call, error)

    def _observe(
        self,
        call: _Call,
        delivery: str,
        outcome: str,
        received: float | None = None,
        reply: Response | None = None,
        error: BaseException | str | None = None,
    ) -> None:
        """Hand one invocation's outcome to the observer (its record and logs), once per delivery."""
        if self.observer is None:
            return
        with self._lock:
            if delivery in call.recorded:
                return
            # the deliveries sent before this one and never answered were given up on: lost
            earlier = (
                call.deliveries[: call.deliveries.index(delivery)] if delivery in call.deliveries else []
            )
            given_up = [d for d in earlier if d not in call.recorded]
            call.recorded.update([delivery, *given_up])
        outcomes = [
            (d, "lost", None, None, "no answer; delivered again (faas.start-deadline-s)") for d in given_up
        ]
        for sent_delivery, kind, answer, reply_of, failure in [
            *outcomes,
            (delivery, outcome, received, reply, error),
        ]:
            sent = records.Sent(
                call.id,
                call.attempt,
                sent_delivery,
                call.tasks,
                call.prefix,
                call.sent.get(sent_delivery, 0.0),
                call.options.memory_mb,
                call.backup,
            )
            stats, logs = (reply_of.stats, reply_of.logs) if reply_of is not None else (None, "")
            try:
                self.observer.observe(sent, kind, answer, stats, logs, failure)
            except Exception:  # a record that cannot be made never fails the call
                logger.warning(
                    "dask-faas: could not record the outcome of %s", call.describe(), exc_info=True
                )

    @staticmethod
    def _lost_or_error(exc: BaseException) -> str:
        """``lost`` when the platform did not answer (time limit, dead process, lost call)."""
        return "lost" if isinstance(exc, InvocationError) else "error"

    def _on_response(self, call: _Call, delivery: str, response: cf.Future[bytes]) -> None:
        received = time.time()
        if delivery != call.deliveries[-1] and (response.cancelled() or response.exception() is not None):
            if not response.cancelled():
                failure = response.exception()
                self._observe(call, delivery, self._lost_or_error(failure), received, error=failure)
            return  # a delivery given up on (it never started) failed: the latest one decides
        if not self._settle(call):  # past its deadline, or another delivery or run answered first
            if not response.cancelled() and response.exception() is None:
                self._discard_outputs(call, delivery, response.result(), received)
            return
        if response.cancelled():  # the backend closed before sending it, or the call was done
            if self._others_running(call):
                return
            self._release_args(call)
            if not call.future.cancel():  # a retry's future is already running
                self._finish(call, exc=InvocationError(f"{call.describe()}: not sent, the backend closed"))
            return
        reply: Response | None = None
        try:
            sealed = response.result()
        except BaseException as exc:  # the platform failed the call
            self._observe(call, delivery, self._lost_or_error(exc), received, error=exc)
            self._fail(call, exc)
            return
        try:
            reply = self._reply(call, sealed)
            data = self._data(reply)
        except BaseException as exc:  # the storage or the answer failed
            self._observe(call, delivery, "error", received, reply, error=exc)
            self._fail(call, exc)
            return
        if not reply.ok:
            try:
                error = serialize.loads_error(data)
            except BaseException as exc:  # the function's error cannot be rebuilt here
                self._observe(call, delivery, "error", received, reply, error=exc)
                self._fail(call, exc)
                return
            self._observe(call, delivery, "error", received, reply, error=error)
            with contextlib.suppress(Warning):  # the call's own error wins over an escalated warning
                self._reissue_warnings(reply.warnings)
            self._fail(call, error, raised_by_function=True)
            return
        if not self._claim(call):  # the other run of this attempt won meanwhile
            self._observe(call, delivery, "superseded", received, reply)
            self._discard_reply(call, delivery, reply, data)
            return
        try:
            results = serialize.loads(data)
        except BaseException as exc:
            self._observe(call, delivery, "error", received, reply, error=exc)
            self._fail(call, exc)
            return
        self._observe(call, delivery, "ok", received, reply)
        if self._stragglers is not None:
            # the function's own time: a platform's queue and cold start are not the call's work
            seconds = reply.stats.get("seconds")
            self._stragglers.finished(call, seconds if isinstance(seconds, int | float) else None)
        # arguments go before the future settles: a waiter that wakes finds nothing of the call left
        self._release_args(call)
        try:
            self._reissue_warnings(reply.warnings)
        except Warning as escalated:  # a client filter turned a function's warning into an error
            self._finish(call, exc=escalated)
        else:
            self._finish(call, results[0] if call.unwrap else results)

    def _fail(self, call: _Call, exc: BaseException, raised_by_function: bool = False) -> None:
        """This run failed: the other run of its attempt decides if it still runs; otherwise the
        call is retried by its policy while attempts are left, or fails with ``exc``."""
        if self._others_running(call):
            logger.info("dask-faas: %s failed while its other run goes on: %r", call.describe(), exc)
            return
        options = call.options
        if (
            call.attempt < options.retries
            and not call.future.done()
            and not self._stopped
            and options.retried(exc, raised_by_function)
        ):
            self._retry(call)
            return
        self._release_args(call)
        self._finish(call, exc=exc)

    @staticmethod
    def _finish(call: _Call, value: Any = None, exc: BaseException | None = None) -> None:
        if call.future.done():
            return
        with contextlib.suppress(cf.InvalidStateError):  # two runs of one call ended at once
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

    def _data(self, reply: Response) -> bytes | memoryview:
        """The pickled results or error of ``reply``, fetched from storage (and deleted) when large."""
        data = reply.value
        if not isinstance(data, Ref):
            return data
        self.count_received(data.size)
        try:
            return self.job.fetch(data)
        finally:
            self.job.delete(data)

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

    def _discard_outputs(self, call: _Call, delivery: str, sealed: bytes, received: float) -> None:
        """A late response of a run given up on (past its deadline, or it lost the race): delete
        what it stored."""
        try:
            reply: Response = protocol.unseal(sealed, self._key, what=f"late response to {call.describe()}")
        except Exception:  # not ours: nothing of it is deleted
            logger.warning("dask-faas: ignored a late response to %s", call.describe(), exc_info=True)
            return
        self._observe(call, delivery, "superseded", received, reply)
        self._delete_start_mark(reply)
        data = reply.value
        if isinstance(data, Ref):
            self._delete(call, data)
        elif reply.ok:
            self._discard_reply(call, delivery, reply, data)

    def _discard_reply(self, call: _Call, delivery: str, reply: Response, data: bytes | memoryview) -> None:
        """Delete what the run of ``delivery`` wrote: the objects its results refer to whose names
        end with its tag (every name an execution writes does, see ``worker.Context.tag``)."""
        if isinstance(reply.value, Ref):
            self._delete(call, reply.value)  # its results are the user's values, not references
            return
        try:
            results = serialize.loads(data)
        except Exception:
            logger.warning(
                "dask-faas: could not read the discarded answer of %s", call.describe(), exc_info=True
            )
            return
        written = f".{call.id}.{call.attempt}.{delivery}-"
        self._delete(call, *(ref for ref in _references(results) if written in ref.key))

    def _delete(self, call: _Call, *refs: Ref) -> None:
        if not refs:
            return
        try:
            self.job.delete(*refs)
        except Exception:  # the job's prefix goes at the end anyway
            logger.warning("dask-faas: could not delete the outputs of %s", call.describe(), exc_info=True)

    def _retry(self, call: _Call) -> None:
        delay = call.options.retry_backoff_s * 2**call.attempt * random.uniform(0.5, 1.5)
        retried = replace(
            call,
            attempt=call.attempt + 1,
            deliveries=[],
            settled=False,
            watch=None,
            start_watch=None,
            backup=False,
            race=None,
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
            if self._settle(call) and self._others_running(call):
                return  # a backup that could not be sent: the original goes on
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


def _references(value: Any, depth: int = 3) -> list[Ref]:
    """The :class:`~dask_faas.protocol.Ref` objects in ``value`` and the lists, tuples and dict
    values it holds, ``depth`` levels down (the graph engine's results are ``[(key, Ref), ...]``)."""
    if isinstance(value, Ref):
        return [value]
    if depth <= 0:
        return []
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [ref for item in value for ref in _references(item, depth - 1)]
    return []
