"""What runs inside a function: verify, fetch, run, answer.

Every platform entry point in ``function_runtime/`` turns its event into payload bytes and calls
:meth:`Runtime.handle`, which

1. checks the payload's signature (the key comes from the deployment's environment, never from the
   payload) and protocol version;
2. fetches the function body (content-addressed, cached for the life of a warm process) and any
   arguments kept in storage, checking their signatures;
3. runs the function over its batch of argument tuples;
4. answers with the results inline, or writes them to a per-attempt key when they are large.

This module imports neither pandas nor a cloud SDK by itself: storage backends are loaded from the
payload's locator, and only the one named there is imported.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import os
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from . import protocol, serialize
from .backends.storage import Storage, storage_from_locator
from .exceptions import SerializationError
from .protocol import Invocation, Ref, Response
from .store import SignedStore

__all__ = ["Context", "Runtime", "current", "warm_runtime"]


@dataclass(frozen=True)
class Context:
    """What a running function knows about its invocation.

    Parameters
    ----------
    store : SignedStore
        The job's signed objects (``store.storage`` is the raw storage client).
    call : str
        The call id.
    attempt : int
        The attempt number.
    delivery : str
        The nonce of this delivery of the attempt, chosen by the client (it sends an attempt again
        when it never started).
    execution : str
        A nonce of this execution, chosen by the function: a platform may run one delivery twice
        (at-least-once), with the same payload and so the same ``delivery``.
    """

    store: SignedStore
    call: str
    attempt: int
    delivery: str = "0"
    execution: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def tag(self) -> str:
        """``<call>.<attempt>.<delivery>-<execution>``: end every name this invocation writes with
        it, so that no retry, re-delivery or duplicated execution ever overwrites what another wrote."""
        return f"{self.call}.{self.attempt}.{self.delivery}-{self.execution}"

    @property
    def storage(self) -> Storage:
        """The storage client of the job (credentials from this function's deployment)."""
        return self.store.storage


_current: contextvars.ContextVar[Context] = contextvars.ContextVar("dask_faas_context")


def current() -> Context:
    """The :class:`Context` of the invocation running in this function.

    Raises
    ------
    RuntimeError
        Outside a function invocation.
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("dask_faas.worker.current() is only available inside a function") from None


class Runtime:
    """The state of one (warm) function instance.

    Parameters
    ----------
    key : bytes
        The signing key shared with the client through the deployment's configuration.
    max_cached_functions : int
        How many unpickled functions a warm instance keeps, keyed by their storage key.
    """

    def __init__(self, key: bytes, max_cached_functions: int = 64) -> None:
        self._key = key
        self._functions: OrderedDict[str, Any] = OrderedDict()
        self._max_cached = max_cached_functions
        self.invocations = 0

    @classmethod
    def from_environ(cls) -> Runtime:
        """A runtime whose signing key comes from ``DASK_FAAS_SIGNING_KEY``."""
        return cls(protocol.key_from_environ())

    def handle(self, payload: bytes | memoryview) -> bytes:
        """Run one invocation payload and return the sealed response.

        A payload that fails its signature or version check raises (the platform reports the
        failure); everything that goes wrong after that is answered as an error response.
        """
        started = time.perf_counter()
        inv: Invocation = protocol.unseal(payload, self._key, what="invocation payload")
        warm = self.invocations > 0
        self.invocations += 1
        token = None
        mark: _StartMark | None = None
        # warnings pass this process's filters (catch_warnings starts their "once per location"
        # memory afresh), are kept once per location, and are issued again on the client
        caught = serialize.WarningRecorder()
        with warnings.catch_warnings():
            warnings.showwarning = caught.record
            try:
                store = SignedStore(storage_from_locator(inv.storage), self._key, inv.prefix)
                context = Context(store, inv.call, inv.attempt, inv.delivery)
                token = _current.set(context)
                mark = _StartMark(store, inv)
                fn = self._function(store, inv.function)
                calls = serialize.loads(self._read(store, inv.args))
                results = [fn(*args, **kwargs) for args, kwargs in calls]
                ok, value = True, self._output(context, inv.inline_limit, _dumps_results(results))
            except BaseException as exc:  # report everything, KeyboardInterrupt included
                if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, Exception):
                    exc = RuntimeError(f"function raised {type(exc).__name__}({exc})")
                ok, value = False, serialize.dumps_error(exc)
            finally:
                if token is not None:
                    _current.reset(token)
                marked = mark.cancel() if mark is not None else False
        stats = {"pid": os.getpid(), "warm": warm, "seconds": time.perf_counter() - started}
        stats.update(delivery=inv.delivery, marked=marked)
        response = Response(inv.call, inv.attempt, ok, value, stats, caught.dumps())
        return protocol.seal(response, self._key)

    def handle_json(self, event: Any) -> dict[str, str]:
        """:meth:`handle` for platforms whose events are JSON (Lambda, OpenWhisk):
        ``{"dask_faas": "<base64 payload>"}`` -> ``{"dask_faas": "<base64 response>"}``.

        Raises
        ------
        ValueError
            For an event that holds no base64 payload under ``"dask_faas"``.
        IntegrityError, ProtocolError
            For a payload the runtime refuses (as :meth:`handle`).
        """
        encoded = event.get(protocol.JSON_FIELD) if isinstance(event, dict) else None
        if not isinstance(encoded, str):
            raise ValueError(
                f"the event is not a dask-faas invocation: expected {{'{protocol.JSON_FIELD}': '<base64>'}}"
            )
        try:
            payload = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"the event's {protocol.JSON_FIELD!r} is not base64: {exc}") from None
        return {protocol.JSON_FIELD: base64.b64encode(self.handle(payload)).decode("ascii")}

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _read(store: SignedStore, value: bytes | Ref) -> bytes | memoryview:
        return store.fetch(value) if isinstance(value, Ref) else value

    def _function(self, store: SignedStore, ref: Ref) -> Any:
        fn = self._functions.get(ref.key)
        if fn is None:
            fn = serialize.loads(self._read(store, ref))
            self._functions[ref.key] = fn
            if len(self._functions) > self._max_cached:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(ref.key)
        return fn

    @staticmethod
    def _output(context: Context, inline_limit: int, data: bytes) -> bytes | Ref:
        if len(data) <= inline_limit:
            return data
        return context.store.put(f"out/{context.tag}", data)


class _StartMark:
    """Writes the invocation's start mark if the call is still running ``start_mark_s`` after it began.

    Short calls (most of them) write nothing; a long one writes one small object, which tells the
    client at its start deadline that this delivery did start (see :attr:`Invocation.start_mark_s`).
    """

    def __init__(self, store: SignedStore, inv: Invocation) -> None:
        self._store, self._name = store, protocol.start_mark_name(inv.call, inv.attempt, inv.delivery)
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "written" or "cancelled"
        self._timer: threading.Timer | None = None
        if inv.start_mark_s is not None:
            self._timer = threading.Timer(inv.start_mark_s, self._write)
            self._timer.daemon = True
            self._timer.start()

    def _write(self) -> None:
        with self._lock:
            if self._state != "waiting":
                return
            try:
                self._store.put(self._name, b"")
            except Exception:  # a mark that cannot be written costs a re-delivery at most
                return
            self._state = "written"

    def cancel(self) -> bool:
        """Stop the timer; return whether the mark was written (the client then deletes it)."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            written = self._state == "written"
            self._state = "cancelled"
        return written


_warm: Runtime | None = None
_warm_lock = threading.Lock()


def warm_runtime() -> Runtime:
    """This process's :class:`Runtime`, made from the environment at the first call and kept for
    the life of the (warm) function instance."""
    global _warm
    with _warm_lock:
        if _warm is None:
            _warm = Runtime.from_environ()
        return _warm


def _dumps_results(results: list[Any]) -> bytes:
    try:
        return serialize.dumps(results)
    except Exception as exc:
        for index, value in enumerate(results):
            try:
                serialize.dumps(value)
            except Exception:
                raise SerializationError(
                    f"the result of call {index} cannot be pickled ({type(value).__qualname__}): {exc}"
                ) from exc
        raise
