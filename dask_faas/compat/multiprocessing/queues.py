"""``multiprocessing``'s queues kept in object storage: Queue, SimpleQueue and JoinableQueue.

A queue is a :class:`~.state.Space` (``dask-faas-mp/queue-<id>/``) holding

- ``tail``, a :class:`~.state.Register`: the next sequence number to give out. A producer reserves
  number ``n`` by moving ``tail`` from ``n`` to ``n + 1`` (compare-and-swap; with a ``maxsize``
  only while fewer than ``maxsize`` items are in the queue), then writes the item ``item-<n>``
  (12 digits): each number is written by one producer only.
- ``head``, a :class:`~.state.Register`: the next number to deliver. A getter that finds
  ``item-<head>`` written moves ``head`` from ``n`` to ``n + 1``; the one whose swap wins owns item
  ``n``: it has read it and deletes it. Every item goes to exactly one getter, in the order of the
  numbers (FIFO for each producer).
- ``unfinished`` (:class:`JoinableQueue` only), a :class:`~.state.Register`: puts not yet
  confirmed by :meth:`JoinableQueue.task_done`.

Object storage has no notifications: a blocking :meth:`Queue.get` polls
(:func:`~.state.poll`), backing off up to :data:`~.state.POLL_MAX_S`.

Differences from ``multiprocessing``: a queue pickles anywhere (into a Pool's arguments too, as
in Lithops), a copy reaching the same storage state. :meth:`Queue.close` is local (this object puts
and gets no more), as in ``multiprocessing``; the state is deleted when the queue that made it is
garbage-collected or at exit (copies never delete it). A producer that dies between reserving a
number and writing its item stops the queue at that number (``multiprocessing``'s queue is
corrupted too by a process killed while it uses it).
"""

from __future__ import annotations

import pickle
import queue
from typing import Any

import cloudpickle

from .state import Register, Space, poll

__all__ = ["JoinableQueue", "Queue", "SimpleQueue"]

#: How many times a non-blocking look for an item starts again when another getter took the one it
#: looked at (each time, that getter made progress).
_LOOK_AGAIN = 8


def _item_name(number: int) -> str:
    return f"item-{number:012d}"


def _check_maxsize(maxsize: Any) -> int:
    if isinstance(maxsize, bool) or not isinstance(maxsize, int):
        raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
    return maxsize


class Queue:
    """A FIFO queue between functions and the client, kept in object storage.

    Parameters
    ----------
    maxsize : int, optional
        At most this many items (``<= 0``: unbounded); a full queue makes :meth:`put` wait.
    space : Space, optional
        The storage prefix to keep the queue in (default: a fresh one in the default storage,
        deleted when this queue is garbage-collected); a given one is deleted by its owner.

    Attributes
    ----------
    Empty, Full : type
        ``queue.Empty`` and ``queue.Full``, as Lithops' programs catch them (``except q.Empty``).
    """

    Empty = queue.Empty
    Full = queue.Full

    def __init__(self, maxsize: int = 0, *, space: Space | None = None) -> None:
        self._maxsize = _check_maxsize(maxsize)
        self._space = space if space is not None else Space("queue")
        self._head = Register(self._space, "head")
        self._tail = Register(self._space, "tail")
        self._head.create(0)
        self._tail.create(0)
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {"_maxsize": self._maxsize, "_space": self._space, "_head": self._head, "_tail": self._tail}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._closed = False

    @property
    def space(self) -> Space:
        """The storage prefix the queue is kept in."""
        return self._space

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"Queue {self!r} is closed")

    # -- putting ---------------------------------------------------------------------------------

    def _reserve(self) -> int | None:
        """A number of one's own for the next item, or ``None`` while the queue is full."""

        def take(tail: int) -> tuple[int, int | None]:
            if self._maxsize > 0 and tail - self._head.read() >= self._maxsize:
                return tail, None
            return tail + 1, tail

        return self._tail.update(take)

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """Put ``obj`` at the end; if the queue is full, wait (at most ``timeout`` seconds, not at
        all if not ``block``) and raise ``queue.Full`` if it stays full."""
        self._check_open()
        data = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        number = self._reserve()
        if number is None and block:
            found = poll(lambda: None if (reserved := self._reserve()) is None else (reserved,), timeout)
            number = None if found is None else found[0]
        if number is None:
            raise queue.Full
        self._space.storage.put(self._space.key(_item_name(number)), data)

    def put_nowait(self, obj: Any) -> None:
        """``put(obj, block=False)``."""
        self.put(obj, False)

    # -- getting ---------------------------------------------------------------------------------

    def _take(self) -> tuple[Any] | None:
        """Claim the first item if it is written: ``(obj,)``, or ``None`` if there is none."""
        storage = self._space.storage

        def claim(head: int) -> tuple[int, tuple[int, bytes | None]]:
            try:
                data = storage.get(self._space.key(_item_name(head)))
            except FileNotFoundError:
                return head, (head, None)
            return head + 1, (head, data)

        for _ in range(_LOOK_AGAIN):
            number, data = self._head.update(claim)
            if data is not None:
                storage.delete([self._space.key(_item_name(number))])
                return (pickle.loads(data),)
            if self._head.read() == number:  # nobody took item `number` meanwhile: none is there
                return None
        return None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the first item; if there is none, wait (at most ``timeout`` seconds,
        not at all if not ``block``) and raise ``queue.Empty`` if none came."""
        self._check_open()
        found = poll(self._take, timeout if block else 0)
        if found is None:
            raise queue.Empty
        return found[0]

    def get_nowait(self) -> Any:
        """``get(block=False)``."""
        return self.get(False)

    # -- size ------------------------------------------------------------------------------------

    def qsize(self) -> int:
        """The approximate number of items (puts under way included)."""
        head = self._head.read()
        return max(0, self._tail.read() - head)

    def empty(self) -> bool:
        """Whether no item is ready to get (approximate, as ``multiprocessing``'s)."""
        return not self._space.storage.exists(self._space.key(_item_name(self._head.read())))

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never, unbounded)."""
        return self._maxsize > 0 and self.qsize() >= self._maxsize

    # -- closing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """This object puts and gets no more (other copies still do); the state stays."""
        self._closed = True

    def join_thread(self) -> None:
        """Nothing to wait for (puts are written when :meth:`put` returns); only after :meth:`close`."""
        if not self._closed:
            raise AssertionError(f"Queue {self!r} not closed")

    def cancel_join_thread(self) -> None:
        """Nothing to cancel (there is no feeder thread)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} at {self._space.prefix}>"


class SimpleQueue:
    """``multiprocessing.SimpleQueue``: ``put``, ``get``, ``empty`` and ``close`` of an unbounded queue.

    Parameters
    ----------
    space : Space, optional
        As :class:`Queue`'s.
    """

    def __init__(self, *, space: Space | None = None) -> None:
        self._queue = Queue(space=space)
        self._closed = False

    def __getstate__(self) -> dict[str, Any]:
        return {"_queue": self._queue}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._closed = False

    def _open_queue(self) -> Queue:
        if self._closed:
            raise OSError("handle is closed")
        return self._queue

    def put(self, obj: Any) -> None:
        """Put ``obj`` at the end."""
        self._open_queue().put(obj)

    def get(self) -> Any:
        """Remove and return the first item, waiting for one."""
        return self._open_queue().get()

    def empty(self) -> bool:
        """Whether no item is ready to get."""
        return self._open_queue().empty()

    def close(self) -> None:
        """This object puts and gets no more (``OSError`` then, as ``multiprocessing``'s)."""
        self._closed = True

    def __repr__(self) -> str:
        return f"<SimpleQueue at {self._queue.space.prefix}>"


class JoinableQueue(Queue):
    """A :class:`Queue` whose :meth:`join` waits until every item put was confirmed by :meth:`task_done`.

    Parameters
    ----------
    maxsize : int, optional
        As :class:`Queue`'s.
    space : Space, optional
        As :class:`Queue`'s.
    """

    def __init__(self, maxsize: int = 0, *, space: Space | None = None) -> None:
        super().__init__(maxsize, space=space)
        self._unfinished = Register(self._space, "unfinished")
        self._unfinished.create(0)

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_unfinished": self._unfinished}

    def put(self, obj: Any, block: bool = True, timeout: float | None = None) -> None:
        """As :meth:`Queue.put`; the item counts as unfinished until a :meth:`task_done`."""
        self._check_open()
        self._unfinished.update(lambda count: (count + 1, None))  # before a getter can see the item
        try:
            super().put(obj, block, timeout)
        except BaseException:
            self._unfinished.update(lambda count: (count - 1, None))
            raise

    def task_done(self) -> None:
        """Confirm one item got is processed (``ValueError`` if there are more confirmations than
        items)."""

        def confirm(count: int) -> tuple[int, None]:
            if count <= 0:
                raise ValueError("task_done() called too many times")
            return count - 1, None

        self._unfinished.update(confirm)

    def join(self, timeout: float | None = None) -> None:
        """Wait until every item put is confirmed by :meth:`task_done`.

        ``timeout`` (not in ``multiprocessing``, whose join waits for ever) bounds the wait:
        ``TimeoutError`` if items are still unfinished then.
        """
        if not poll(lambda: self._unfinished.read() == 0, timeout):
            raise TimeoutError(f"{self!r}: items still unfinished after {timeout} s")
