"""Futures that travel: the outcome of a pickled future is kept in storage, signed, until its job ends.

Lithops programs return futures from functions (a function that itself maps) and ``pickle.dump``
futures to wait on them elsewhere. A :class:`~dask_faas.compat.ResponseFuture` pickled before or
after its call ends has its outcome written, signed with the writing job's key, under that job's
prefix (``<job>/lithops-futures/<id>``, deleted with the job). The unpickled future is resolved by
one poller thread per process, which reads the outcome with a store holding the same key: the
job of a :class:`~dask_faas.compat.FunctionExecutor` of this process (or of the function running
here), found by the key's fingerprint (an HMAC of a constant, never the key). Another process
waits on such futures with an executor made with the same ``signing_key``.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

import cloudpickle

from .. import serialize
from ..protocol import Ref

logger = logging.getLogger("dask_faas.compat")

#: Seconds an unpickled future waits for its outcome to appear in storage by default.
DEFAULT_DEADLINE_S = 3600.0
_FINGERPRINT = b"dask-faas compat: stored futures"
_stores: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_lock = threading.Lock()


def fingerprint(store: Any) -> str:
    """The fingerprint of a signed store's key (an HMAC of a constant: it reveals nothing of it)."""
    return store.mac(_FINGERPRINT).hex()[:16]


def register(store: Any) -> None:
    """Let futures of this process be read with ``store`` (a job's signed store), while it lives."""
    with _lock:
        _stores[fingerprint(store)] = store


@dataclass(frozen=True)
class StoredOutcome:
    """Where a future's outcome is (or will be) kept, and the fingerprint of the key it is signed with."""

    ref: Ref
    key_fingerprint: str


def persist(future: cf.Future[Any], value_of: Any, store: Any) -> StoredOutcome:
    """Write ``future``'s outcome to ``store`` when it is known (at once if it is done).

    Parameters
    ----------
    future : concurrent.futures.Future
        The call's future.
    value_of : callable
        ``value_of()`` -> the call's value, raising its error (run once the future is done).
    store : SignedStore
        The job that keeps the outcome (registered for reading in this process too).
    """
    register(store)
    name = f"lithops-futures/{uuid.uuid4().hex}"
    outcome = StoredOutcome(Ref(f"{store.prefix}/{name}", 0), fingerprint(store))

    def write(_: cf.Future[Any]) -> None:
        try:
            data = cloudpickle.dumps((True, value_of()))
        except Exception as exc:
            data = cloudpickle.dumps((False, serialize.dumps_error(exc)))
        try:
            store.put(name, data)
        except Exception as exc:  # the job ended first: the outcome has nowhere to go
            logger.warning(
                "the outcome of a pickled future could not be stored at %s: %s", outcome.ref.key, exc
            )

    future.add_done_callback(write)
    return outcome


def restore(outcome: StoredOutcome, deadline_s: float = DEFAULT_DEADLINE_S) -> cf.Future[Any]:
    """A future resolved from ``outcome`` when it appears in storage (polled), or failed after
    ``deadline_s`` seconds naming the object and the key it needs."""
    target: cf.Future[Any] = cf.Future()
    target.set_running_or_notify_cancel()
    _poller().add(outcome, target, time.monotonic() + deadline_s)
    return target


class _Poller:
    """One thread per process reading the outcomes of unpickled futures."""

    def __init__(self) -> None:
        self._pending: list[tuple[StoredOutcome, cf.Future[Any], float]] = []
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="dask-faas-compat-futures", daemon=True)
        self._thread.start()

    def add(self, outcome: StoredOutcome, target: cf.Future[Any], deadline: float) -> None:
        with self._wake:
            self._pending.append((outcome, target, deadline))
            self._wake.notify()

    def _run(self) -> None:
        pause = 0.02
        while True:
            with self._wake:
                while not self._pending:
                    self._wake.wait()
                    pause = 0.02
                pending, self._pending = self._pending, []
            left = [entry for entry in pending if not _try(*entry)]
            with self._wake:
                self._pending = left + self._pending
            if left:
                time.sleep(pause)
                pause = min(pause * 1.5, 0.5)


def _try(outcome: StoredOutcome, target: cf.Future[Any], deadline: float) -> bool:
    """Resolve ``target`` if its outcome can be read (or its deadline passed); whether it is done."""
    with _lock:
        store = _stores.get(outcome.key_fingerprint)
    try:
        if store is not None and store.storage.exists(outcome.ref.key):
            ok, value = cloudpickle.loads(store.fetch(outcome.ref))
            if ok:
                target.set_result(value)
            else:
                target.set_exception(serialize.loads_error(value))
            return True
    except Exception as exc:  # unreadable or altered: the caller gets the cause
        target.set_exception(exc)
        return True
    if time.monotonic() > deadline:
        needs = "" if store is not None else " (no executor of this process holds the key it is signed with)"
        target.set_exception(
            TimeoutError(f"the outcome of a pickled future never appeared at {outcome.ref.key}{needs}")
        )
        return True
    return False


_the_poller: _Poller | None = None


def _poller() -> _Poller:
    global _the_poller
    with _lock:
        if _the_poller is None:
            _the_poller = _Poller()
        return _the_poller
