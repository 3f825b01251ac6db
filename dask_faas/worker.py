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

import os
import time
from collections import OrderedDict
from typing import Any

from . import protocol, serialize
from .backends.storage import Storage, storage_from_locator
from .protocol import Invocation, Ref, Response

__all__ = ["Runtime"]


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
        self._storages: dict[tuple[tuple[str, Any], ...], Storage] = {}
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
        try:
            storage = self._storage(inv.storage)
            fn = self._function(storage, inv.function)
            calls = serialize.loads(self._read(storage, inv.args))
            results = [fn(*args, **kwargs) for args, kwargs in calls]
            ok, value = True, self._output(storage, inv, serialize.dumps(results))
        except BaseException as exc:  # report everything, KeyboardInterrupt included
            if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, Exception):
                exc = RuntimeError(f"function raised {type(exc).__name__}({exc})")
            ok, value = False, serialize.dumps_error(exc)
        stats = {"pid": os.getpid(), "warm": warm, "seconds": time.perf_counter() - started}
        response = Response(inv.call, inv.attempt, ok, value, stats)
        return protocol.seal(response, self._key)

    # -- helpers ---------------------------------------------------------------------------

    def _storage(self, locator: dict[str, Any]) -> Storage:
        marker = tuple(sorted(locator.items()))
        storage = self._storages.get(marker)
        if storage is None:
            storage = self._storages[marker] = storage_from_locator(locator)
        return storage

    def _read(self, storage: Storage, value: bytes | Ref) -> bytes | memoryview:
        if isinstance(value, Ref):
            return protocol.verify_blob(storage.get(value.key), self._key, value.key)
        return value

    def _function(self, storage: Storage, ref: Ref) -> Any:
        fn = self._functions.get(ref.key)
        if fn is None:
            fn = serialize.loads(self._read(storage, ref))
            self._functions[ref.key] = fn
            if len(self._functions) > self._max_cached:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(ref.key)
        return fn

    def _output(self, storage: Storage, inv: Invocation, data: bytes) -> bytes | Ref:
        if len(data) <= inv.inline_limit:
            return data
        key = inv.result_key()
        storage.put(key, protocol.sign_blob(data, self._key, key))
        return Ref(key, len(data))
