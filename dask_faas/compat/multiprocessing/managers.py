"""``lithops.multiprocessing.managers``: ``BaseManager`` and ``SyncManager`` with their objects in storage.

``multiprocessing``'s manager runs a server process holding the objects and hands out proxies
that call it; Lithops keeps the objects in Redis. Here there is no server: a started manager is
a :class:`~.state.Space` (``dask-faas-mp/manager-<id>/``), every object it makes lives in a
space inside it, and :meth:`BaseManager.shutdown` (or the manager's garbage collection, or exit)
deletes them all. Proxies pickle into functions and act on the same state.

- ``dict``, ``list``, ``Namespace``, ``Value``, ``Array``: the whole value is one
  :class:`~.state.Register`; a read reads it, every change (``d[k] = v``, ``del``, ``update``,
  ``append``, ``sort``, ``+=``, ...) is one compare-and-swap :meth:`~.state.Register.update`:
  two functions changing it at once lose no update.
- registered classes (``SyncManager.register("ParameterServer", ParameterServer)``): the instance
  lives cloudpickled in a :class:`~.state.Register`. A method call through the proxy reads the
  instance, calls the method on it, and writes the instance back if its pickle changed, as one
  :meth:`~.state.Register.update`: a concurrent call in between makes the write fail and the call
  run again on the new state (optimistic concurrency, chosen over a storage lock: no lock
  holder can die holding it, and reads never wait). So a method may run more than once per call:
  its only effect should be on the instance (and its result).
- ``Queue``, ``JoinableQueue``: :mod:`.queues`' queues; ``Lock``, ``RLock``, ``Semaphore``,
  ``BoundedSemaphore``, ``Condition``, ``Event``, ``Barrier``: :mod:`.synchronize`'s.
"""

from __future__ import annotations

import array
import builtins
import enum
from collections.abc import Callable, Iterable, Sequence
from multiprocessing import ProcessError
from typing import Any, ClassVar

from .proxies import (
    ArrayProxy,
    BaseProxy,
    DictProxy,
    ListProxy,
    NamespaceProxy,
    ObjectProxy,
    ValueProxy,
    public_methods,
)
from .queues import JoinableQueue, Queue
from .state import Register, Space
from .synchronize import Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore

__all__ = [
    "ArrayProxy",
    "BaseManager",
    "BaseProxy",
    "DictProxy",
    "ListProxy",
    "Manager",
    "NamespaceProxy",
    "ObjectProxy",
    "SyncManager",
    "ValueProxy",
]


# -- managers ----------------------------------------------------------------------------------


class State(enum.Enum):
    """Where a manager is in its life."""

    INITIAL = "initial"
    STARTED = "started"
    SHUTDOWN = "shutdown"


class BaseManager:
    """A manager of shared objects kept in object storage (``multiprocessing.managers.BaseManager``).

    Parameters
    ----------
    address, authkey, serializer, ctx, shutdown_timeout
        ``multiprocessing``'s; not used (there is no server to reach).
    space : Space, optional
        Where to keep the objects: a space made inside it at :meth:`start` (default: a fresh
        space in the default storage, see :class:`~.state.Space`).
    """

    _registry: ClassVar[dict[str, tuple[Callable[..., Any] | None, tuple[str, ...] | None]]] = {}

    def __init__(
        self,
        address: Any = None,
        authkey: bytes | None = None,
        serializer: str = "pickle",
        ctx: Any = None,
        *,
        shutdown_timeout: float = 1.0,
        space: Space | None = None,
    ) -> None:
        self._parent_space = space
        self._space: Space | None = None
        self._state = State.INITIAL

    @property
    def address(self) -> str | None:
        """The storage prefix of the objects (``None`` before :meth:`start`)."""
        return None if self._space is None else self._space.prefix

    def start(self, initializer: Callable[..., Any] | None = None, initargs: Iterable[Any] = ()) -> None:
        """Make the manager's space; ``initializer(*initargs)`` runs here (there is no server
        process to run it in)."""
        if self._state is State.STARTED:
            raise ProcessError("Already started server")
        if self._state is State.SHUTDOWN:
            raise ProcessError("Manager has shut down")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        parent = self._parent_space
        self._space = Space("manager") if parent is None else parent.child("manager")
        self._state = State.STARTED
        if initializer is not None:
            initializer(*initargs)

    def connect(self) -> None:
        """Nothing to connect to (the objects are in storage): kept for ``multiprocessing``'s API."""

    def join(self, timeout: float | None = None) -> None:
        """Nothing to wait for (there is no server process)."""

    def shutdown(self) -> None:
        """Delete every object the manager made (their proxies no longer work)."""
        space, self._space = self._space, None
        if self._state is State.STARTED:
            self._state = State.SHUTDOWN
        if space is None:
            return
        if space.owner:
            space.close()
        else:
            space.storage.delete_prefix(space.prefix)

    def __enter__(self) -> BaseManager:
        if self._state is State.INITIAL:
            self.start()
        if self._state is State.SHUTDOWN:
            raise ProcessError("Manager has shut down")
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.shutdown()

    def _child(self, kind: str) -> Space:
        """A fresh space for a new object (``AssertionError`` unless started, as ``multiprocessing``)."""
        if self._state is not State.STARTED or self._space is None:
            raise AssertionError(
                f"manager {'has shut down' if self._state is State.SHUTDOWN else 'not yet started'}: "
                "call start() first (or use it in a with statement)"
            )
        return self._space.child(kind)

    def _register_of(self, kind: str, value: Any) -> Register:
        register = Register(self._child(kind), "value")
        register.create(value)
        return register

    @classmethod
    def register(
        cls,
        typeid: str,
        callable: Callable[..., Any] | None = None,
        proxytype: Any = None,
        exposed: Sequence[str] | None = None,
        method_to_typeid: dict[str, str] | None = None,
        create_method: bool = True,
    ) -> None:
        """Register ``typeid``: ``manager.<typeid>(*args, **kwargs)`` makes ``callable(*args,
        **kwargs)``, keeps it in storage and returns an :class:`ObjectProxy` of it.

        ``exposed`` limits the proxy's methods (default: the public ones); ``proxytype`` and
        ``method_to_typeid`` (proxies talking to a server) are not supported.
        """
        if not isinstance(typeid, str) or not typeid.isidentifier():
            raise ValueError(f"typeid must be a name usable as an attribute, not {typeid!r}")
        if proxytype is not None:
            raise NotImplementedError(
                f"managers.{cls.__name__}.register(proxytype=...) is not supported by dask-faas: its "
                "objects live in storage behind its own proxies, with no server for a proxy type to call"
            )
        if method_to_typeid:
            raise NotImplementedError(
                f"managers.{cls.__name__}.register(method_to_typeid=...) is not supported by dask-faas: "
                "a method's result is returned as a value, never as a proxy of another shared object"
            )
        if "_registry" not in cls.__dict__:
            cls._registry = builtins.dict(cls._registry)
        cls._registry[typeid] = (callable, None if exposed is None else tuple(exposed))
        if create_method:

            def create(self: BaseManager, /, *args: Any, **kwargs: Any) -> ObjectProxy:
                return self._create(typeid, *args, **kwargs)

            create.__name__ = create.__qualname__ = typeid
            create.__doc__ = f"A shared ``{typeid}`` made with the given arguments; its proxy."
            setattr(cls, typeid, create)

    def _create(self, typeid: str, /, *args: Any, **kwargs: Any) -> ObjectProxy:
        made, exposed = self._registry[typeid]
        if made is None:
            raise ValueError(f"{typeid!r} was registered without a callable: there is nothing to make")
        space = self._child(typeid.lower())
        instance = made(*args, **kwargs)
        register = Register(space, "value")
        register.create((instance,))
        return ObjectProxy(register, typeid, exposed if exposed is not None else public_methods(instance))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._state.value} {self.address or ''}>".replace(" >", ">")


class SyncManager(BaseManager):
    """A manager of ``dict``, ``list``, ``Namespace``, ``Value``, ``Array``, queues and locks
    (``multiprocessing.managers.SyncManager``), each kept in storage."""

    def dict(self, *args: Any, **kwargs: Any) -> DictProxy:
        """A shared ``dict(*args, **kwargs)``."""
        return DictProxy(self._register_of("dict", builtins.dict(*args, **kwargs)), "dict")

    def list(self, sequence: Iterable[Any] = ()) -> ListProxy:
        """A shared ``list(sequence)``."""
        return ListProxy(self._register_of("list", builtins.list(sequence)), "list")

    def Namespace(self, **kwargs: Any) -> NamespaceProxy:
        """A shared namespace with the given attributes."""
        return NamespaceProxy(self._register_of("namespace", builtins.dict(kwargs)), "Namespace")

    def Value(self, typecode: Any, value: Any, lock: bool = True) -> ValueProxy:
        """A shared value (``typecode`` is kept, not checked: as ``multiprocessing``'s manager)."""
        return ValueProxy(self._register_of("value", (typecode, value)), "Value")

    def Array(self, typecode: str, sequence: Iterable[Any], lock: bool = True) -> ArrayProxy:
        """A shared ``array.array(typecode, sequence)``."""
        return ArrayProxy(self._register_of("array", array.array(typecode, sequence)), "Array")

    def Queue(self, maxsize: int = 0) -> Any:
        """A shared :class:`~.queues.Queue`."""
        return Queue(maxsize, space=self._child("queue"))

    def JoinableQueue(self, maxsize: int = 0) -> Any:
        """A shared :class:`~.queues.JoinableQueue`."""
        return JoinableQueue(maxsize, space=self._child("joinablequeue"))

    def Pool(self, *args: Any, **kwargs: Any) -> Any:
        """A :class:`~.pool.Pool` (not kept in storage: as Lithops', not managed)."""
        from .pool import Pool

        return Pool(*args, **kwargs)

    def Lock(self) -> Any:
        """A shared ``synchronize.Lock``."""
        return Lock(space=self._child("lock"))

    def RLock(self) -> Any:
        """A shared ``synchronize.RLock``."""
        return RLock(space=self._child("rlock"))

    def Semaphore(self, value: int = 1) -> Any:
        """A shared ``synchronize.Semaphore``."""
        return Semaphore(value, space=self._child("semaphore"))

    def BoundedSemaphore(self, value: int = 1) -> Any:
        """A shared ``synchronize.BoundedSemaphore``."""
        return BoundedSemaphore(value, space=self._child("boundedsemaphore"))

    def Condition(self, lock: Any = None) -> Any:
        """A shared ``synchronize.Condition`` (of ``lock``, or of a new lock)."""
        return Condition(lock, space=self._child("condition"))

    def Event(self) -> Any:
        """A shared ``synchronize.Event``."""
        return Event(space=self._child("event"))

    def Barrier(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> Any:
        """A shared ``synchronize.Barrier``."""
        return Barrier(parties, action, timeout, space=self._child("barrier"))


def Manager() -> SyncManager:
    """A started :class:`SyncManager` (``multiprocessing.Manager()``)."""
    manager = SyncManager()
    manager.start()
    return manager
