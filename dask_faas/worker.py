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

import contextvars
import os
import time
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from . import protocol, serialize
from .backends.storage import Storage, storage_from_locator
from .exceptions import SerializationError
from .protocol import Invocation, Ref, Response
from .store import SignedStore

__all__ = ["Context", "Runtime", "current"]


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
        The attempt number; outputs written under per-attempt names never collide with a retry's.
    """

    store: SignedStore
    call: str
    attempt: int

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
        # warnings pass this process's filters (catch_warnings starts their "once per location"
        # memory afresh), are kept once per location, and are issued again on the client
        caught = serialize.WarningRecorder()
        with warnings.catch_warnings():
            warnings.showwarning = caught.record
            try:
                store = SignedStore(storage_from_locator(inv.storage), self._key, inv.prefix)
                token = _current.set(Context(store, inv.call, inv.attempt))
                fn = self._function(store, inv.function)
                calls = serialize.loads(self._read(store, inv.args))
                results = [fn(*args, **kwargs) for args, kwargs in calls]
                ok, value = True, self._output(store, inv, _dumps_results(results))
            except BaseException as exc:  # report everything, KeyboardInterrupt included
                if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, Exception):
                    exc = RuntimeError(f"function raised {type(exc).__name__}({exc})")
                ok, value = False, serialize.dumps_error(exc)
            finally:
                if token is not None:
                    _current.reset(token)
        stats = {"pid": os.getpid(), "warm": warm, "seconds": time.perf_counter() - started}
        response = Response(inv.call, inv.attempt, ok, value, stats, caught.dumps())
        return protocol.seal(response, self._key)

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
    def _output(store: SignedStore, inv: Invocation, data: bytes) -> bytes | Ref:
        if len(data) <= inv.inline_limit:
            return data
        return store.put(f"out/{inv.call}.{inv.attempt}", data)


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
