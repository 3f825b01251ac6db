"""Shared state in object storage: what the storage-backed primitives (locks, queues, values) are made of.

Lithops keeps ``multiprocessing``'s shared state in Redis; dask-faas keeps it where everything
else is, in the job's object storage, built on its conditional writes
(:meth:`~dask_faas.backends.storage.Storage.put_if`):

- a :class:`Space` is the storage prefix one shared object owns (``dask-faas-mp/<kind>-<id>/``).
  It travels pickled as the storage's locator and the prefix, never a credential: a copy
  unpickled in a function reaches the same objects. The process that made it deletes the prefix
  when it is garbage-collected, at :meth:`Space.close` or at exit; copies never delete anything.
- a :class:`Register` is one object whose value (any picklable) changes only by compare-and-swap:
  :meth:`Register.update` reads the value and its version, computes the new value and writes it
  only if nobody wrote in between, else reads again. Every write carries a fresh nonce, so a
  version (an ETag: a digest of the bytes) is never seen twice. Values are cloudpickled and, like
  Lithops' Redis values, not signed: whoever may write the storage prefix is trusted.
- :func:`poll` waits for a condition with a backoff from :data:`POLL_FIRST_S` to
  :data:`POLL_MAX_S`, within a timeout: object storage has no notifications, so waiting is polling.
"""

from __future__ import annotations

import atexit
import logging
import pickle
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import cloudpickle

from .util import resolve_storage

logger = logging.getLogger("dask_faas.compat.multiprocessing")

__all__ = ["POLL_FIRST_S", "POLL_MAX_S", "ROOT", "Register", "Space", "poll"]

#: The storage prefix under which every shared object keeps its state.
ROOT = "dask-faas-mp"
#: The first wait of :func:`poll`, in seconds; it doubles up to :data:`POLL_MAX_S`.
POLL_FIRST_S = 0.002
#: The longest wait of :func:`poll` between two looks, in seconds.
POLL_MAX_S = 0.1

T = TypeVar("T")
R = TypeVar("R")

_owned: weakref.WeakSet[Space] = weakref.WeakSet()
_owned_lock = threading.Lock()


def poll(ready: Callable[[], T], timeout: float | None = None) -> T | None:
    """Call ``ready()`` until it returns something true, and return that; ``None`` on timeout.

    Between two calls it sleeps :data:`POLL_FIRST_S`, doubling up to :data:`POLL_MAX_S`;
    ``timeout=None`` waits for ever, ``0`` looks once.
    """
    deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
    wait = POLL_FIRST_S
    while True:
        found = ready()
        if found:
            return found
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(wait, left))
        else:
            time.sleep(wait)
        wait = min(wait * 2, POLL_MAX_S)


def _delete_prefix(storage: Any, prefix: str) -> None:
    try:
        storage.delete_prefix(prefix)
    except Exception:  # at exit or in a finalizer: say it, never raise
        logger.warning("could not delete the shared state under %s", prefix, exc_info=True)


class Space:
    """The storage prefix of one shared object, and the storage it is in.

    Parameters
    ----------
    kind : str
        What the object is (``"lock"``, ``"queue"``): the first part of the prefix's last segment.
    storage : dask_faas Storage, optional
        Where the state goes (default: :func:`~.util.resolve_storage`'s). It must be reachable
        from other processes: a ``memory`` storage raises ``NotImplementedError`` saying so.

    Attributes
    ----------
    storage : Storage
        The storage.
    prefix : str
        ``dask-faas-mp/<kind>-<id>/``; every key of the object starts with it.
    owner : bool
        Whether this is the object that deletes the prefix (the one made, not a copy).
    """

    def __init__(self, kind: str, storage: Any = None) -> None:
        self.storage = resolve_storage(storage)
        self._locator = self.storage.locator()  # raises for a process-local storage, saying why
        self.prefix = f"{ROOT}/{kind}-{secrets.token_hex(8)}/"
        self.owner = True
        self._finalizer = weakref.finalize(self, _delete_prefix, self.storage, self.prefix)
        with _owned_lock:
            _owned.add(self)

    def key(self, name: str) -> str:
        """The key ``name`` of this object (``<prefix><name>``)."""
        return self.prefix + name

    def child(self, kind: str) -> Space:
        """A space inside this one (deleted with it, never on its own): a manager's objects."""
        return Space._not_owned(self.storage, self._locator, f"{self.prefix}{kind}-{secrets.token_hex(8)}/")

    @classmethod
    def _not_owned(cls, storage: Any, locator: dict[str, Any], prefix: str) -> Space:
        """A space of ``prefix`` that never deletes it (a child, or a copy unpickled elsewhere)."""
        space = cls.__new__(cls)
        space.storage, space._locator, space.prefix = storage, locator, prefix
        space.owner, space._finalizer = False, None
        return space

    def close(self) -> None:
        """Delete the prefix now (the owner only; a copy's close does nothing)."""
        if self._finalizer is not None:
            self._finalizer()

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild_space, (self._locator, self.prefix)

    def __repr__(self) -> str:
        return f"<Space {self.prefix} of {self.storage!r}{' (owner)' if self.owner else ''}>"


def _rebuild_space(locator: dict[str, Any], prefix: str) -> Space:
    from ...backends.storage import storage_from_locator

    return Space._not_owned(storage_from_locator(locator), locator, prefix)


@atexit.register
def _close_owned() -> None:
    with _owned_lock:
        spaces = list(_owned)
    for space in spaces:
        space.close()


class Register:
    """One object of ``space`` whose value changes only by compare-and-swap.

    Parameters
    ----------
    space : Space
        Where it is.
    name : str
        Its key within the space.
    """

    def __init__(self, space: Space, name: str) -> None:
        self.space = space
        self.key = space.key(name)

    def __reduce__(self) -> tuple[Any, ...]:
        return Register, (self.space, self.key[len(self.space.prefix) :])

    def create(self, value: Any) -> bool:
        """Write ``value`` if the register does not exist; whether it was written."""
        return self.space.storage.put_if(self.key, _encode(value), version=None) is not None

    def read(self) -> Any:
        """The current value (``FileNotFoundError`` naming the key if it was never created)."""
        return _decode(self.space.storage.get_versioned(self.key)[0], self.key)

    def write(self, value: Any) -> None:
        """Set the value unconditionally."""
        self.space.storage.put(self.key, _encode(value))

    def update(self, change: Callable[[Any], tuple[Any, R]]) -> R:
        """Apply ``change(value) -> (new value, result)`` atomically; return ``result``.

        ``change`` may run several times (once per conflicting writer): it must not have other
        effects. Returning the value itself unchanged (``new is value``) writes nothing.
        """
        storage = self.space.storage
        wait = POLL_FIRST_S
        while True:
            data, version = storage.get_versioned(self.key)
            value = _decode(data, self.key)
            new, result = change(value)
            if new is value or storage.put_if(self.key, _encode(new), version=version) is not None:
                return result
            time.sleep(wait * secrets.randbelow(1000) / 1000)  # jittered: conflicting writers part
            wait = min(wait * 2, POLL_MAX_S)

    def delete(self) -> None:
        """Delete the register's object."""
        self.space.storage.delete([self.key])


def _encode(value: Any) -> bytes:
    return cloudpickle.dumps((secrets.token_bytes(8), value), protocol=pickle.HIGHEST_PROTOCOL)


def _decode(data: bytes, key: str) -> Any:
    try:
        _, value = pickle.loads(data)
    except Exception as err:
        raise ValueError(f"shared state object {key} holds no register value ({err})") from None
    return value
