"""``multiprocessing.Pipe`` in object storage: two :class:`Connection` objects over storage queues.

A pipe is a :class:`~.state.Space` (``dask-faas-mp/pipe-<id>/``) holding one
:class:`~.queues.Queue` per direction (one in all for ``duplex=False``) and, per end, a
:class:`~.state.Register` counting the open copies of that end. ``multiprocessing`` raises
``EOFError`` in ``recv`` once every copy of the other end's file descriptor is closed; here a
copy is counted when it is pickled (into a Process' or a Pool's arguments) and uncounted when it
is closed or garbage-collected (a function's copy, when its call ends): so the usual
``child_conn.close()`` in the parent after starting the child does not end the pipe while the
child's copy is open. A copy pickled but never unpickled keeps counting: ``recv`` then waits rather
than raising ``EOFError``.

The state is deleted when both connections made by :func:`Pipe` are garbage-collected, or at
exit; copies never delete it.
"""

from __future__ import annotations

import errno
import logging
import pickle
import queue
import weakref
from multiprocessing import BufferTooShort
from typing import Any

import cloudpickle

from .queues import Queue
from .state import Register, Space, poll

__all__ = ["Connection", "Pipe"]

logger = logging.getLogger("dask_faas.compat.multiprocessing")

_EOF = object()


def _add_copy(count: int) -> tuple[int, None]:
    return count + 1, None


def _release_copy(opened: Register) -> None:
    try:
        opened.update(lambda count: (max(0, count - 1), None))
    except FileNotFoundError:  # the pipe's state is deleted already: no reader left to tell
        logger.debug("pipe end %s closed after its state was deleted", opened.key)


class Connection:
    """One end of a :func:`Pipe` (``multiprocessing.connection.Connection``'s API).

    Made by :func:`Pipe`, not directly.

    Parameters
    ----------
    inbox : Queue or None
        Where this end receives from (``None``: not readable).
    outbox : Queue or None
        Where this end sends to (``None``: not writable).
    mine : Register
        The count of this end's open copies.
    theirs : Register
        The count of the other end's open copies.
    """

    def __init__(self, inbox: Queue | None, outbox: Queue | None, mine: Register, theirs: Register) -> None:
        if inbox is None and outbox is None:
            raise ValueError("at least one of `readable` and `writable` must be True")
        self._inbox, self._outbox = inbox, outbox
        self._mine, self._theirs = mine, theirs
        self._closed = False
        self._release = weakref.finalize(self, _release_copy, mine)

    def __reduce__(self) -> tuple[Any, ...]:
        self._check_closed()
        self._mine.update(_add_copy)  # counted now: the copy uncounts itself when closed
        return Connection, (self._inbox, self._outbox, self._mine, self._theirs)

    # -- state -----------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True if the connection is closed."""
        return self._closed

    @property
    def readable(self) -> bool:
        """True if the connection is readable."""
        return self._inbox is not None

    @property
    def writable(self) -> bool:
        """True if the connection is writable."""
        return self._outbox is not None

    def _check_closed(self) -> None:
        if self._closed:
            raise OSError("handle is closed")

    def _check_readable(self) -> Queue:
        self._check_closed()
        if self._inbox is None:
            raise OSError("connection is write-only")
        return self._inbox

    def _check_writable(self) -> Queue:
        self._check_closed()
        if self._outbox is None:
            raise OSError("connection is read-only")
        if self._theirs.read() == 0:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")  # every copy of the other end is closed
        return self._outbox

    def close(self) -> None:
        """Close this copy of the connection (the other end sees ``EOFError`` once every copy of
        this end is closed and it has received everything)."""
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- sending ---------------------------------------------------------------------------------

    def send(self, obj: Any) -> None:
        """Send a picklable object."""
        outbox = self._check_writable()
        outbox.put(cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def send_bytes(self, buf: Any, offset: int = 0, size: int | None = None) -> None:
        """Send the bytes ``buf[offset:offset + size]`` of a bytes-like object as one message."""
        outbox = self._check_writable()
        view = memoryview(buf).cast("B")
        if offset < 0:
            raise ValueError("offset is negative")
        if len(view) < offset:
            raise ValueError("buffer length < offset")
        if size is None:
            size = len(view) - offset
        elif size < 0:
            raise ValueError("size is negative")
        elif offset + size > len(view):
            raise ValueError("buffer length < offset + size")
        outbox.put(bytes(view[offset : offset + size]))

    # -- receiving -------------------------------------------------------------------------------

    def _look(self) -> tuple[Any] | None:
        """``(message,)``, ``(_EOF,)`` if none will come, ``None`` if none is there yet."""
        inbox = self._check_readable()
        other_end_gone = self._theirs.read() == 0  # first: what was sent before it closed is there
        try:
            return (inbox.get(block=False),)
        except queue.Empty:
            return (_EOF,) if other_end_gone else None

    def _receive(self) -> bytes:
        message = poll(self._look)[0]
        if message is _EOF:
            raise EOFError
        return message

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        """Receive one message's bytes (``OSError`` if longer than ``maxlength``; the message is lost
        and the connection no longer reads, as ``multiprocessing``'s)."""
        self._check_readable()
        if maxlength is not None and maxlength < 0:
            raise ValueError("negative maxlength")
        data = self._receive()
        if maxlength is not None and len(data) > maxlength:
            if self._outbox is not None:
                self._inbox = None
            else:
                self.close()
            raise OSError("bad message length")
        return data

    def recv_bytes_into(self, buf: Any, offset: int = 0) -> int:
        """Receive one message into the writable buffer ``buf`` at byte ``offset``; return its size
        (``BufferTooShort`` holding the message if it does not fit)."""
        self._check_readable()
        with memoryview(buf) as view:
            target = view.cast("B")
            if offset < 0:
                raise ValueError("negative offset")
            if offset > len(target):
                raise ValueError("offset too large")
            data = self._receive()
            if len(target) < offset + len(data):
                raise BufferTooShort(data)
            target[offset : offset + len(data)] = data
            return len(data)

    def recv(self) -> Any:
        """Receive one object sent with :meth:`send` (``EOFError`` if the other end is closed and
        nothing is left)."""
        self._check_readable()
        return pickle.loads(self._receive())

    def poll(self, timeout: float | None = 0.0) -> bool:
        """Whether :meth:`recv` would not wait (a message, or the other end closed), waiting up to
        ``timeout`` seconds (``None``: for ever)."""
        inbox = self._check_readable()
        return bool(poll(lambda: not inbox.empty() or self._theirs.read() == 0, timeout))

    def __repr__(self) -> str:
        mode = "rw" if self.readable and self.writable else ("r" if self.readable else "w")
        return f"<Connection {self._mine.key} {mode}{' closed' if self._closed else ''}>"


def Pipe(duplex: bool = True, *, space: Space | None = None) -> tuple[Connection, Connection]:
    """A pair of connected :class:`Connection` objects (``multiprocessing.Pipe``).

    Parameters
    ----------
    duplex : bool, optional
        Both ends send and receive (default); ``False``: the first only receives, the second
        only sends.
    space : Space, optional
        Where to keep the pipe (default: a fresh one in the default storage, deleted when both
        connections are garbage-collected).
    """
    space = space if space is not None else Space("pipe")
    opened = {end: Register(space, f"open-{end}") for end in ("a", "b")}
    for register in opened.values():
        register.create(1)
    a_to_b = Queue(space=space.child("a2b"))
    if not duplex:
        return Connection(a_to_b, None, opened["a"], opened["b"]), Connection(
            None, a_to_b, opened["b"], opened["a"]
        )
    b_to_a = Queue(space=space.child("b2a"))
    return Connection(b_to_a, a_to_b, opened["a"], opened["b"]), Connection(
        a_to_b, b_to_a, opened["b"], opened["a"]
    )
