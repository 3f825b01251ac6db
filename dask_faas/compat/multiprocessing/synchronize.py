"""``multiprocessing``'s synchronisation primitives with their state in object storage.

Lithops keeps them in Redis; here each one is a few objects under its own
:class:`~dask_faas.compat.multiprocessing.state.Space`, so that the copies that travel to functions
(as arguments, or as globals of a pickled ``__main__`` function) work on the same state:

- :class:`Lock` / :class:`RLock`: a ``held`` object names the owner, one thread of one process in
  one function invocation. An :class:`RLock` is held while the object exists: acquiring creates it
  if absent (:meth:`~dask_faas.backends.storage.Storage.put_if` with ``version=None``), the owner's
  last release deletes it, and its recursion levels, known to the owner alone, are counted in the
  owner's process at no request. Any process may release a :class:`Lock`, so after its first
  acquisition (a create-if-absent) it changes by compare-and-swap between an owner and ``None``.
- :class:`Semaphore` / :class:`BoundedSemaphore`, :class:`Event` and :class:`Barrier` (of
  :mod:`.barrier`, also named here as Lithops names it): one
  :class:`~dask_faas.compat.multiprocessing.state.Register` each, changed by compare-and-swap.
- :class:`Condition`: its lock plus one waiter object per waiting call; ``notify`` turns the
  oldest waiting ones into "notified" by compare-and-swap, and a waiter that times out withdraws
  its own the same way, so that a notification is never lost to a timeout nor counted twice.

Object storage has no notifications: every wait polls (:func:`~.state.poll`), within its timeout,
and no waiter is served before another (as with the standard library's semaphores). What differs:
a lock whose holder dies stays held until its space is deleted (as a ``multiprocessing.Lock``
whose holder is killed stays held), and the "oldest" waiters of a :class:`Condition` are ordered by
their own clocks. The errors are the standard library's: releasing an unheld lock raises
``ValueError``, releasing an :class:`RLock` one does not own or waiting on a :class:`Condition`
without its lock ``AssertionError``, a broken :class:`Barrier` :class:`threading.BrokenBarrierError`.
"""

from __future__ import annotations

import abc
import operator
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .barrier import Barrier, BrokenBarrierError
from .state import Register, Space, poll

__all__ = [
    "Barrier",
    "BoundedSemaphore",
    "BrokenBarrierError",
    "Condition",
    "Event",
    "Lock",
    "RLock",
    "Semaphore",
    "StorageLock",
]

T = TypeVar("T")

_PROCESS_TOKEN = secrets.token_hex(6)
#: Recursion levels of the RLocks held here: (held key, owner) -> levels. Only the owner thread
#: changes its entry.
_levels: dict[tuple[str, str], int] = {}


def _owner() -> str:
    """Who acquires: this thread of this process, in this function invocation (if in one)."""
    from ... import worker

    try:
        invocation = worker.current().tag
    except RuntimeError:
        invocation = "client"
    return f"{_PROCESS_TOKEN}.{os.getpid()}.{invocation}.{threading.get_ident()}"


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _rebuild(cls: type[T], space: Space, params: dict[str, Any]) -> T:
    obj = cls.__new__(cls)
    obj._attach(space, **params)  # type: ignore[attr-defined]
    return obj


class _Acquired(abc.ABC):
    """``with`` acquires and releases (locks and semaphores); the repr names the space."""

    _space: Space

    @abc.abstractmethod
    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire, waiting up to ``timeout`` seconds if ``block``; whether it was acquired."""

    @abc.abstractmethod
    def release(self) -> None:
        """Release."""

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {self._space.prefix}>"


class StorageLock(_Acquired):
    """What :class:`Lock` and :class:`RLock` share: a ``held`` object naming the owner.

    :class:`Condition` and the synchronized values of :mod:`.sharedctypes` take either.
    """

    kind = "lock"

    def __init__(self, *, space: Space | None = None) -> None:
        self._attach(space if space is not None else Space(self.kind))

    def _attach(self, space: Space) -> None:
        self._space = space
        self._held = Register(space, "held")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self._space, {})

    def _take(self, owner: str, block: bool, timeout: float | None) -> bool:
        if not block:
            return self._try(owner)
        return poll(lambda: self._try(owner), timeout) is not None

    @abc.abstractmethod
    def _try(self, owner: str) -> bool:
        """Take the lock for ``owner`` if it is free (one look); whether it was taken."""

    @abc.abstractmethod
    def _is_mine(self) -> bool:
        """Whether the calling thread holds the lock."""

    @abc.abstractmethod
    def _release_save(self) -> int:
        """Release every level the calling thread holds; how many (for :meth:`_acquire_restore`)."""

    @abc.abstractmethod
    def _acquire_restore(self, levels: int) -> None:
        """Acquire again the ``levels`` that :meth:`_release_save` released."""


class Lock(StorageLock):
    """A non-recursive lock (``multiprocessing.Lock``); any process may release it.

    Parameters
    ----------
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).
    """

    def _try(self, owner: str) -> bool:
        try:  # held or free (None) since its first acquisition: one read while it is held
            return self._held.update(lambda held: (owner, True) if held is None else (held, False))
        except FileNotFoundError:  # never acquired yet
            return self._held.create(owner)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire, waiting up to ``timeout`` seconds if ``block`` (for ever if ``None``); whether
        it was acquired."""
        return self._take(_owner(), block, timeout)

    def release(self) -> None:
        """Release (``ValueError`` if the lock is not held).

        A compare-and-swap to free, not a delete: of two processes releasing one acquisition at
        once, one raises, and neither frees an acquisition made after it looked.
        """
        try:
            released = self._held.update(lambda held: (None, True) if held is not None else (held, False))
        except FileNotFoundError:
            released = False
        if not released:
            raise ValueError(f"semaphore or lock released too many times: {self!r} is not held")

    def _is_mine(self) -> bool:
        try:
            return bool(self._held.read() == _owner())
        except FileNotFoundError:
            return False

    def _release_save(self) -> int:
        self.release()
        return 1

    def _acquire_restore(self, levels: int) -> None:
        self.acquire()


class RLock(StorageLock):
    """A recursive lock (``multiprocessing.RLock``): its owner may acquire it again, and only the
    owner may release it.

    Parameters
    ----------
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).
    """

    kind = "rlock"

    def _try(self, owner: str) -> bool:
        return self._held.create(owner)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire (again, if this thread owns it), waiting up to ``timeout`` seconds if ``block``;
        whether it was acquired."""
        slot = (self._held.key, _owner())
        if _levels.get(slot):
            _levels[slot] += 1
            return True
        if not self._take(slot[1], block, timeout):
            return False
        _levels[slot] = 1
        return True

    def release(self) -> None:
        """Release one level (``AssertionError`` if this thread does not own the lock)."""
        slot = (self._held.key, _owner())
        levels = _levels.get(slot, 0)
        if levels == 0:
            raise AssertionError(f"attempt to release recursive lock not owned by thread: {self!r}")
        if levels > 1:
            _levels[slot] = levels - 1
            return
        del _levels[slot]
        self._held.delete()

    def _is_mine(self) -> bool:
        return _levels.get((self._held.key, _owner()), 0) > 0

    def _release_save(self) -> int:
        slot = (self._held.key, _owner())
        levels = _levels.pop(slot)
        self._held.delete()
        return levels

    def _acquire_restore(self, levels: int) -> None:
        owner = _owner()
        self._take(owner, True, None)
        _levels[(self._held.key, owner)] = levels


class Semaphore(_Acquired):
    """A counting semaphore (``multiprocessing.Semaphore``).

    Parameters
    ----------
    value : int
        The initial count (``>= 0``).
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).
    """

    kind = "semaphore"

    def __init__(self, value: int = 1, *, space: Space | None = None) -> None:
        value = operator.index(value)
        if value < 0:
            raise ValueError(f"semaphore initial value must be >= 0, not {value}")
        self._attach(space if space is not None else Space(self.kind), bound=self._bound_for(value))
        self._count.write(value)

    def _bound_for(self, value: int) -> int | None:
        return None

    def _attach(self, space: Space, bound: int | None) -> None:
        self._space, self._bound = space, bound
        self._count = Register(space, "count")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self._space, {"bound": self._bound})

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Decrement the count, waiting up to ``timeout`` seconds (if ``block``) while it is 0;
        whether it was decremented."""

        def take() -> bool:
            return self._count.update(lambda n: (n - 1, True) if n > 0 else (n, False))

        if not block:
            return take()
        return poll(take, timeout) is not None

    def release(self) -> None:
        """Increment the count (``ValueError`` past a :class:`BoundedSemaphore`'s initial value)."""
        bound = self._bound

        def give(n: int) -> tuple[int, bool]:
            return (n, False) if bound is not None and n >= bound else (n + 1, True)

        if not self._count.update(give):
            raise ValueError(
                f"semaphore or lock released too many times: {self!r} is at its initial value {bound}"
            )

    def get_value(self) -> int:
        """The current count."""
        return int(self._count.read())


class BoundedSemaphore(Semaphore):
    """A semaphore whose count never exceeds its initial value (``multiprocessing.BoundedSemaphore``)."""

    kind = "bsemaphore"

    def _bound_for(self, value: int) -> int | None:
        return value


class Event:
    """A flag that processes wait for (``multiprocessing.Event``).

    Its register holds ``(flag, times set)``: a waiter returns ``True`` once it sees the flag set
    or set again since it began, even if it was cleared before the waiter looked.

    Parameters
    ----------
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).
    """

    kind = "event"

    def __init__(self, *, space: Space | None = None) -> None:
        self._attach(space if space is not None else Space(self.kind))
        self._flag.write((False, 0))

    def _attach(self, space: Space) -> None:
        self._space = space
        self._flag = Register(space, "flag")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self._space, {})

    def is_set(self) -> bool:
        """Whether the flag is set."""
        return bool(self._flag.read()[0])

    def set(self) -> None:
        """Set the flag: waiters return ``True``."""
        self._flag.update(lambda s: (s, None) if s[0] else ((True, s[1] + 1), None))

    def clear(self) -> None:
        """Clear the flag."""
        self._flag.update(lambda s: ((False, s[1]), None) if s[0] else (s, None))

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds (for ever if ``None``) for the flag; whether it was set."""
        flag, sets = self._flag.read()
        if flag:
            return True

        def seen() -> bool:
            now = self._flag.read()
            return bool(now[0] or now[1] != sets)

        return poll(seen, timeout) is not None

    def __repr__(self) -> str:
        return f"<Event at {self._space.prefix}>"


_WAITING, _NOTIFIED, _WITHDRAWN = "waiting", "notified", "withdrawn"


class Condition:
    """A condition variable (``multiprocessing.Condition``) over a storage lock.

    Parameters
    ----------
    lock : Lock or RLock, optional
        Its lock (default: a new :class:`RLock`, as in the standard library).
    space : Space, optional
        Where its waiters go (default: a new space of its own in the default storage).
    """

    kind = "condition"

    def __init__(self, lock: StorageLock | None = None, *, space: Space | None = None) -> None:
        if lock is None:
            lock = RLock(space=space.child("rlock") if space is not None else None)
        elif not isinstance(lock, StorageLock):
            raise TypeError(
                f"Condition needs a storage-backed Lock or RLock of {__name__}, not {lock!r}: "
                "functions cannot share a process-local lock"
            )
        self._attach(space if space is not None else Space(self.kind), lock)

    def _attach(self, space: Space, lock: StorageLock) -> None:
        self._space, self._lock = space, lock

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self._space, {"lock": self._lock})

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Acquire the lock (see :meth:`Lock.acquire`)."""
        return self._lock.acquire(block, timeout)

    def release(self) -> None:
        """Release the lock."""
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock, wait up to ``timeout`` seconds for a notification, re-acquire the lock;
        whether it was notified (``AssertionError`` without the lock)."""
        if not self._lock._is_mine():
            raise AssertionError("must acquire() condition before using wait()")
        waiter = Register(self._space, f"waiters/{time.time_ns():020d}-{secrets.token_hex(4)}")
        waiter.write(_WAITING)  # before the release: a notifier holding the lock sees it
        levels = self._lock._release_save()
        try:
            if poll(lambda: waiter.read() == _NOTIFIED, timeout) is not None:
                return True
            return waiter.update(lambda s: (_WITHDRAWN, False) if s == _WAITING else (s, True))
        finally:
            waiter.delete()
            self._lock._acquire_restore(levels)

    def wait_for(self, predicate: Callable[[], T], timeout: float | None = None) -> T:
        """Wait until ``predicate()`` is true, up to ``timeout`` seconds; its last result."""
        result = predicate()
        deadline = None if timeout is None else time.monotonic() + timeout
        while not result:
            left = _remaining(deadline)
            if left == 0:
                break
            self.wait(left)
            result = predicate()
        return result

    def notify(self, n: int = 1) -> None:
        """Wake up to ``n`` of the waiters, the oldest first (``AssertionError`` without the lock)."""
        if not self._lock._is_mine():
            raise AssertionError("lock is not owned")
        prefix = self._space.key("waiters/")
        woken = 0
        for key, _ in list(self._space.storage.list(prefix)):
            if woken >= n:
                break
            waiter = Register(self._space, key[len(self._space.prefix) :])
            try:
                if waiter.update(lambda s: (_NOTIFIED, True) if s == _WAITING else (s, False)):
                    woken += 1
            except FileNotFoundError:  # it withdrew and left in between: not a waiter any more
                continue

    def notify_all(self) -> None:
        """Wake all the waiters."""
        self.notify(sys.maxsize)

    def __repr__(self) -> str:
        return f"<Condition({self._lock!r}) at {self._space.prefix}>"
