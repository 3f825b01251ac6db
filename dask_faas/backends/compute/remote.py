"""What the backends that invoke a platform over the network share: one place, not three copies.

:class:`RemoteBackend` keeps up to ``concurrency`` invocations in flight, each on a thread that
blocks in the platform's synchronous invoke (the answer arrives on the connection: no polling of
storage to learn that a call ended). Queued invocations wait in a queue, not on threads; threads
start as invocations arrive and end after a while idle. A subclass implements one method,
:meth:`RemoteBackend.send`, which delivers a payload once and returns the response bytes.

Throttling and an unavailable platform (HTTP 429, 502/503 from a gateway, a refused connection) are
signalled by :class:`Retryable` from ``send`` and backed off here: exponential with full jitter,
honouring ``Retry-After``, without a limit of attempts but within ``throttle_deadline_s``; they never
fail a call before that. ``on_backoff`` tells the client that the call waits (its answer deadline
stops), and before every new send ``on_start`` is called again, so the deadline counts from the send
that went through, and a call no longer wanted is not sent. Only failures that happen before the
request reached the platform are :class:`Retryable`: a connection lost while waiting for the answer
fails the call (a resend would run the same delivery twice, with the same names).

Payloads travel base64 in JSON on every remote platform; :func:`encode` and :func:`decode` do it,
and :meth:`RemoteBackend.inline_capacity` deducts the encoding from the platform's limit, so that
arguments and results above it go through storage.
"""

from __future__ import annotations

import abc
import base64
import binascii
import collections
import email.utils
import random
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any, ClassVar

from ... import protocol
from ...exceptions import InvocationError
from .base import ENVELOPE_BYTES, ComputeBackend, InvokeOptions, begin

__all__ = [
    "PAYLOAD_FIELD",
    "RemoteBackend",
    "Retryable",
    "backoff_delay",
    "decode",
    "encode",
    "lost_connection",
    "requests_never_sent",
    "retry_after_s",
]

#: The JSON field that carries the base64 payload and response (docs/platforms-wire.md).
PAYLOAD_FIELD = protocol.JSON_FIELD
#: First and largest backoff after a throttled or failed send, in seconds.
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.05, 5.0
#: How long an idle sending thread waits for work before it ends.
IDLE_THREAD_S = 30.0


class Retryable(Exception):
    """Raised by :meth:`RemoteBackend.send`: the platform did not take the call now; send it again.

    Parameters
    ----------
    reason : str
        What happened (``"429 TooManyRequestsException"``), for the error raised if it lasts.
    retry_after_s : float, optional
        The platform's ``Retry-After``.
    """

    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.retry_after_s = reason, retry_after_s


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """Seconds to wait before send number ``attempt + 1``: full jitter, at least ``Retry-After``."""
    delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2**attempt))
    return max(delay, retry_after or 0.0)


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header as seconds (a number or an HTTP date), or None."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - time.time())


def lost_connection(label: str, where: str, exc: BaseException) -> InvocationError:
    """The error of a call whose connection broke after the request was sent: it may have run, and
    sending the same delivery again could run it twice under the same names, so the call fails
    (and the client's ``retries`` send a new attempt)."""
    from ...exceptions import WorkerDiedError

    return WorkerDiedError(f"{label}: the connection to {where} broke while waiting for the answer: {exc}")


def requests_never_sent(exc: BaseException) -> bool:
    """Whether a ``requests`` error happened before the request reached the server (connecting)."""
    import requests
    import urllib3.exceptions

    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def encode(payload: bytes) -> dict[str, str]:
    """The JSON event of a payload: ``{"dask_faas": "<base64>"}``."""
    return {PAYLOAD_FIELD: base64.b64encode(payload).decode("ascii")}


def decode(result: Any, label: str) -> bytes:
    """The response bytes of an entry point's JSON result.

    Raises
    ------
    InvocationError
        Naming ``label``, when the result is not ``{"dask_faas": "<base64>"}``: the runtime refused
        the payload (its ``error``), or something else answered.
    """
    if isinstance(result, Mapping) and isinstance(result.get(PAYLOAD_FIELD), str):
        try:
            return base64.b64decode(result[PAYLOAD_FIELD], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvocationError(f"{label}: the function's answer is not base64: {exc}") from None
    if isinstance(result, Mapping) and "error" in result:
        raise InvocationError(f"{label}: the function runtime refused it: {result['error']}")
    raise InvocationError(f"{label}: the answer is no dask-faas response: {result!r:.200}")


class RemoteBackend(ComputeBackend):
    """A platform invoked over the network, with up to ``concurrency`` calls in flight.

    Parameters
    ----------
    concurrency : int
        Most invocations in flight at once (and threads sending them).
    throttle_deadline_s : float
        How long one invocation is backed off and sent again while the platform throttles it or is
        unavailable, before it fails.
    """

    deployed_beforehand = True
    #: How long past ``timeout_s`` an answer may take (a cold start is not part of the timeout).
    answer_grace_s: ClassVar[float] = 10.0

    def __init__(self, concurrency: int, throttle_deadline_s: float = 900.0) -> None:
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive integer, got {concurrency!r}")
        self.concurrency = concurrency
        self.throttle_deadline_s = float(throttle_deadline_s)
        self._queue: collections.deque[tuple[Future[bytes], bytes, InvokeOptions]] = collections.deque()
        self._cond = threading.Condition(threading.Lock())  # not an RLock: taken twice per call
        self._threads = 0
        self._idle = 0
        self._running: dict[Future[bytes], InvokeOptions] = {}
        self._closed = False
        self._stop = threading.Event()

    @classmethod
    def inline_capacity(cls) -> int:
        """The platform's limit less the envelope, and less a third for base64."""
        return (cls.max_payload_bytes - ENVELOPE_BYTES) * 3 // 4

    @abc.abstractmethod
    def send(self, payload: bytes, options: InvokeOptions) -> bytes:
        """Deliver ``payload`` once and wait for its answer; return the response bytes.

        Waits at most ``options.timeout_s + answer_grace_s`` for the answer.

        Raises
        ------
        Retryable
            When the platform did not take the call (throttled, unavailable): it is sent again.
        InvocationError
            (a subclass where one fits) naming ``options.label``, when the call failed on the
            platform: timeout, memory, a dead instance, a refused payload.
        """

    def close_transport(self) -> None:
        """Close the HTTP sessions (called once by :meth:`close`)."""

    # -- the machinery ---------------------------------------------------------------------

    def invoke(self, payload: bytes, options: InvokeOptions) -> Future[bytes]:
        """Queue one invocation; a thread sends it as soon as fewer than ``concurrency`` are in flight.

        Raises
        ------
        RuntimeError
            After :meth:`close`.
        """
        future: Future[bytes] = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"cannot invoke {options.label}: the {self.name} backend is closed")
            self._queue.append((future, payload, options))
            if self._idle:
                self._cond.notify()
            # an idle thread counts as idle until it holds the lock again: every queued call beyond
            # the idle threads gets a thread of its own, up to the concurrency
            if len(self._queue) > self._idle and self._threads < self.concurrency:
                self._threads += 1
                threading.Thread(target=self._serve, name=f"dask-faas-{self.name}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._idle += 1
                    woken = self._cond.wait(IDLE_THREAD_S)
                    self._idle -= 1
                    if not woken and not self._queue:
                        break
                if not self._queue:  # closed, or idle too long
                    self._threads -= 1
                    return
                future, payload, options = self._queue.popleft()
                wanted = not self._closed
            if not begin(future, options, wanted):
                continue
            with self._cond:
                if self._closed:  # close() came between on_start and here: not sent
                    closed = InvocationError(f"{options.label}: not sent, the backend was closed")
                    future.set_exception(closed)
                    continue
                self._running[future] = options
            try:
                response = self._deliver(payload, options)
            except BaseException as exc:
                error = exc
                if not isinstance(exc, InvocationError):
                    error = InvocationError(f"{options.label}: {type(exc).__name__}: {exc}")
                    error.__cause__ = exc
                self._settle(future, exc=error)
                if not isinstance(exc, Exception):
                    raise
            else:
                self._settle(future, response)

    def _settle(
        self, future: Future[bytes], response: bytes | None = None, exc: BaseException | None = None
    ) -> None:
        with self._cond:
            if self._running.pop(future, None) is None:
                return  # close() failed it already
        if exc is None:
            future.set_result(response)  # type: ignore[arg-type]
        else:
            future.set_exception(exc)

    def _deliver(self, payload: bytes, options: InvokeOptions) -> bytes:
        give_up = time.monotonic() + self.throttle_deadline_s
        for attempt in range(1 << 62):
            try:
                return self.send(payload, options)
            except Retryable as exc:
                delay = backoff_delay(attempt, exc.retry_after_s)
                if options.on_backoff is not None:
                    options.on_backoff(delay)
                if time.monotonic() + delay > give_up:
                    raise InvocationError(
                        f"{options.label}: the {self.name} platform did not take it for "
                        f"faas.throttle-deadline-s={self.throttle_deadline_s:g} s ({attempt + 1} sends; "
                        f"last: {exc.reason})"
                    ) from None
                if self._stop.wait(delay):
                    closed = f"{options.label}: not sent, the {self.name} backend was closed"
                    raise InvocationError(closed) from None
                if options.on_start is not None and not options.on_start():
                    raise InvocationError(f"{options.label}: no longer wanted") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Cancel queued invocations, fail the ones in flight, stop the sending threads.

        The platform may still finish a call that was in flight; its answer is dropped. A thread
        waiting on such an answer ends when it comes or at its read timeout.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            running = dict(self._running)
            self._running.clear()
            self._cond.notify_all()
        self._stop.set()
        for future, _, _ in queued:
            future.cancel()
        for future, options in running.items():
            future.set_exception(
                InvocationError(
                    f"{options.label}: stopped waiting for it, the {self.name} backend was closed "
                    "(the platform may still finish it)"
                )
            )
        self.close_transport()
