"""The proxies of :mod:`.managers`' objects: each reads and changes one :class:`~.state.Register`.

``DictProxy``, ``ListProxy``, ``NamespaceProxy``, ``ValueProxy`` and ``ArrayProxy`` hold a whole
value in their register (a read reads it, every change is one compare-and-swap); an
``ObjectProxy`` holds a registered class's instance, cloudpickled, and runs each method call as
one compare-and-swap of the instance (see :mod:`.managers`).
"""

from __future__ import annotations

import array
import builtins
import pickle
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import cloudpickle

from .state import Register

__all__ = [
    "ArrayProxy",
    "BaseProxy",
    "DictProxy",
    "ListProxy",
    "NamespaceProxy",
    "ObjectProxy",
    "ValueProxy",
    "public_methods",
]


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
