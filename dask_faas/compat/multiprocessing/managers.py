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
import importlib
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from multiprocessing import ProcessError
from typing import Any, ClassVar

import cloudpickle

from .state import Register, Space
from .unsupported import message

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


# -- proxies -----------------------------------------------------------------------------------


class BaseProxy:
    """A proxy of a value kept in a :class:`~.state.Register` (made by a manager, not directly).

    Parameters
    ----------
    register : Register
        Where the value is.
    typeid : str
        What the manager made (``"dict"``, a registered name).
    """

    def __init__(self, register: Register, typeid: str) -> None:
        object.__setattr__(self, "_register", register)
        object.__setattr__(self, "_typeid", typeid)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self._register, self._typeid)

    def _value(self) -> Any:
        return self._register.read()

    def _change(self, copy: Callable[[Any], Any], method: str, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` on a copy of the value and write the copy back, atomically."""

        def change(value: Any) -> tuple[Any, Any]:
            new = copy(value)
            return new, getattr(new, method)(*args, **kwargs)

        return self._register.update(change)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} object, typeid {self._typeid!r} at {self._register.key}>"

    def __str__(self) -> str:
        return repr(self._value())


class DictProxy(BaseProxy):
    """A shared ``dict`` (``multiprocessing.managers.DictProxy``'s methods)."""

    def _mutate(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._change(builtins.dict, method, *args, **kwargs)

    def __getitem__(self, key: Any) -> Any:
        return self._value()[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self._mutate("__setitem__", key, value)

    def __delitem__(self, key: Any) -> None:
        self._mutate("__delitem__", key)

    def __contains__(self, key: Any) -> bool:
        return key in self._value()

    def __len__(self) -> int:
        return len(self._value())

    def __iter__(self) -> Iterator[Any]:
        return iter(builtins.list(self._value()))

    def get(self, key: Any, default: Any = None) -> Any:
        """``d.get(key, default)``."""
        return self._value().get(key, default)

    def keys(self) -> list[Any]:
        """The keys (a list, as ``multiprocessing``'s proxy returns)."""
        return builtins.list(self._value().keys())

    def values(self) -> list[Any]:
        """The values (a list)."""
        return builtins.list(self._value().values())

    def items(self) -> list[tuple[Any, Any]]:
        """The ``(key, value)`` pairs (a list)."""
        return builtins.list(self._value().items())

    def copy(self) -> dict[Any, Any]:
        """A plain ``dict`` copy."""
        return self._value()

    def clear(self) -> None:
        """Remove every item."""
        self._register.update(lambda value: ({}, None))

    def pop(self, *args: Any) -> Any:
        """``d.pop(key[, default])``."""
        return self._mutate("pop", *args)

    def popitem(self) -> tuple[Any, Any]:
        """Remove and return the last inserted ``(key, value)``."""
        return self._mutate("popitem")

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``d.setdefault(key, default)``."""
        return self._mutate("setdefault", key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """``d.update(other, **kwargs)``."""
        self._mutate("update", *args, **kwargs)


class ListProxy(BaseProxy):
    """A shared ``list`` (``multiprocessing.managers.ListProxy``'s methods)."""

    def _mutate(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return self._change(builtins.list, method, *args, **kwargs)

    def __getitem__(self, index: Any) -> Any:
        return self._value()[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._mutate("__setitem__", index, value)

    def __delitem__(self, index: Any) -> None:
        self._mutate("__delitem__", index)

    def __contains__(self, value: Any) -> bool:
        return value in self._value()

    def __len__(self) -> int:
        return len(self._value())

    def __iter__(self) -> Iterator[Any]:
        return iter(self._value())

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._value())

    def __add__(self, other: Any) -> list[Any]:
        return self._value() + other

    def __mul__(self, times: int) -> list[Any]:
        return self._value() * times

    __rmul__ = __mul__

    def __iadd__(self, other: Iterable[Any]) -> ListProxy:
        self._mutate("extend", builtins.list(other))
        return self

    def __imul__(self, times: int) -> ListProxy:
        self._mutate("__imul__", times)
        return self

    def append(self, value: Any) -> None:
        """Add ``value`` at the end."""
        self._mutate("append", value)

    def extend(self, values: Iterable[Any]) -> None:
        """Add ``values`` at the end."""
        self._mutate("extend", builtins.list(values))

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index``."""
        self._mutate("insert", index, value)

    def remove(self, value: Any) -> None:
        """Remove the first ``value`` (``ValueError`` if there is none)."""
        self._mutate("remove", value)

    def pop(self, *args: Any) -> Any:
        """``l.pop([index])``."""
        return self._mutate("pop", *args)

    def reverse(self) -> None:
        """Reverse in place."""
        self._mutate("reverse")

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        """Sort in place."""
        self._mutate("sort", key=key, reverse=reverse)

    def index(self, *args: Any) -> int:
        """``l.index(value[, start[, stop]])``."""
        return self._value().index(*args)

    def count(self, value: Any) -> int:
        """How many items equal ``value``."""
        return self._value().count(value)


class NamespaceProxy(BaseProxy):
    """A shared ``Namespace``: attributes set, read and deleted in storage."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._value()[name]
        except KeyError:
            raise AttributeError(f"'Namespace' object has no attribute '{name}'") from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self._change(builtins.dict, "__setitem__", name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            object.__delattr__(self, name)
            return
        try:
            self._change(builtins.dict, "__delitem__", name)
        except KeyError:
            raise AttributeError(f"'Namespace' object has no attribute '{name}'") from None

    def __str__(self) -> str:
        shown = sorted(f"{name}={value!r}" for name, value in self._value().items())
        return f"Namespace({', '.join(shown)})"


class ValueProxy(BaseProxy):
    """A shared value (``manager.Value(typecode, value)``): ``get()``, ``set(v)``, ``.value``."""

    def get(self) -> Any:
        """The value."""
        return self._value()[1]

    def set(self, value: Any) -> None:
        """Set the value."""
        self._register.update(lambda held: ((held[0], value), None))

    value = property(get, set)

    def __str__(self) -> str:
        typecode, value = self._value()
        return f"Value({typecode!r}, {value!r})"


class ArrayProxy(BaseProxy):
    """A shared ``array.array`` (``manager.Array(typecode, sequence)``): length, items, slices."""

    def __len__(self) -> int:
        return len(self._value())

    def __getitem__(self, index: Any) -> Any:
        return self._value()[index]

    def __setitem__(self, index: Any, value: Any) -> None:
        self._change(lambda held: array.array(held.typecode, held), "__setitem__", index, value)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._value())


class ObjectProxy(BaseProxy):
    """A proxy of an instance of a registered class: its public methods, each call atomic.

    Parameters
    ----------
    register : Register
        Where the pickled instance is.
    typeid : str
        The registered name.
    exposed : sequence of str
        The method names the proxy has.
    """

    def __init__(self, register: Register, typeid: str, exposed: Sequence[str]) -> None:
        super().__init__(register, typeid)
        object.__setattr__(self, "_exposed", tuple(exposed))

    def __reduce__(self) -> tuple[Any, ...]:
        return ObjectProxy, (self._register, self._typeid, self._exposed)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._exposed:
            raise AttributeError(
                f"method {name!r} of {self._typeid!r} is not exposed (exposed: {self._exposed})"
            )

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._call(name, args, kwargs)

        call.__name__ = name
        return call

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        def change(held: tuple[Any]) -> tuple[tuple[Any], Any]:
            instance = held[0]
            before = cloudpickle.dumps(instance, protocol=pickle.HIGHEST_PROTOCOL)
            result = getattr(instance, name)(*args, **kwargs)
            changed = cloudpickle.dumps(instance, protocol=pickle.HIGHEST_PROTOCOL) != before
            return ((instance,) if changed else held), result

        return self._register.update(change)

    def __str__(self) -> str:
        return repr(self._value()[0])


def public_methods(obj: Any) -> list[str]:
    """The names of ``obj``'s public callable attributes (what a registered class' proxy exposes)."""
    return [name for name in dir(obj) if not name.startswith("_") and callable(getattr(obj, name))]


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
            raise NotImplementedError(message(f"managers.{cls.__name__}.register(proxytype=...)"))
        if method_to_typeid:
            raise NotImplementedError(message(f"managers.{cls.__name__}.register(method_to_typeid=...)"))
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


def _shared_type(module: str, name: str) -> Any:
    """``name`` of the sibling ``module`` (synchronize, ...), or ``NotImplementedError`` if that
    module is not there."""
    qualified = f"{__package__}.{module}"
    try:
        return getattr(importlib.import_module(qualified), name)
    except ModuleNotFoundError as err:
        if err.name != qualified:
            raise
        raise NotImplementedError(message(f"managers.SyncManager.{name}")) from None


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
        from .queues import Queue

        return Queue(maxsize, space=self._child("queue"))

    def JoinableQueue(self, maxsize: int = 0) -> Any:
        """A shared :class:`~.queues.JoinableQueue`."""
        from .queues import JoinableQueue

        return JoinableQueue(maxsize, space=self._child("joinablequeue"))

    def Pool(self, *args: Any, **kwargs: Any) -> Any:
        """A :class:`~.pool.Pool` (not kept in storage: as Lithops', not managed)."""
        from .pool import Pool

        return Pool(*args, **kwargs)

    def Lock(self) -> Any:
        """A shared ``synchronize.Lock``."""
        return _shared_type("synchronize", "Lock")(space=self._child("lock"))

    def RLock(self) -> Any:
        """A shared ``synchronize.RLock``."""
        return _shared_type("synchronize", "RLock")(space=self._child("rlock"))

    def Semaphore(self, value: int = 1) -> Any:
        """A shared ``synchronize.Semaphore``."""
        return _shared_type("synchronize", "Semaphore")(value, space=self._child("semaphore"))

    def BoundedSemaphore(self, value: int = 1) -> Any:
        """A shared ``synchronize.BoundedSemaphore``."""
        return _shared_type("synchronize", "BoundedSemaphore")(value, space=self._child("boundedsemaphore"))

    def Condition(self, lock: Any = None) -> Any:
        """A shared ``synchronize.Condition`` (of ``lock``, or of a new lock)."""
        return _shared_type("synchronize", "Condition")(lock, space=self._child("condition"))

    def Event(self) -> Any:
        """A shared ``synchronize.Event``."""
        return _shared_type("synchronize", "Event")(space=self._child("event"))

    def Barrier(
        self, parties: int, action: Callable[[], Any] | None = None, timeout: float | None = None
    ) -> Any:
        """A shared ``synchronize.Barrier``."""
        return _shared_type("synchronize", "Barrier")(parties, action, timeout, space=self._child("barrier"))


def Manager() -> SyncManager:
    """A started :class:`SyncManager` (``multiprocessing.Manager()``)."""
    manager = SyncManager()
    manager.start()
    return manager
