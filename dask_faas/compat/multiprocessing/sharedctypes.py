"""``multiprocessing.sharedctypes`` with the values in object storage.

:func:`RawValue`, :func:`RawArray`, :func:`Value` and :func:`Array` take what the standard
library takes and keep the ctypes object's raw bytes in one
:class:`~dask_faas.compat.multiprocessing.state.Register`, so every conversion, overflow and
error is ctypes' own. Each read of ``.value`` or of an item reads the storage and each write
writes it: ``v.value += 1`` is a read, then a write, and concurrent increments of a raw value can
be lost exactly as in shared memory; under ``with v.get_lock():`` none are. An item or slice
write changes only its items (compare-and-swap of the register), so processes writing different
items never undo each other's writes.

The synchronized kinds (``lock=True``, the default) take a storage
:class:`~dask_faas.compat.multiprocessing.synchronize.RLock` (or the
:class:`~.synchronize.Lock` / :class:`~.synchronize.RLock` given) around every access, as the
standard library's wrappers do. The simple ctypes types are provided (the typecodes of
:data:`typecode_to_type`, ``c_bool`` and the sized integers); structures and pointers are not
(a pointer means nothing in another process).
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator, Sequence
from typing import Any

from .state import Register, Space
from .synchronize import RLock, StorageLock

__all__ = [
    "Array",
    "RawArray",
    "RawValue",
    "SharedArray",
    "SharedString",
    "SharedValue",
    "Synchronized",
    "SynchronizedArray",
    "SynchronizedBase",
    "SynchronizedString",
    "Value",
    "typecode_to_type",
]

#: The typecodes of the ``array`` module and their ctypes types (as the standard library's).
typecode_to_type: dict[str, type[Any]] = {
    "c": ctypes.c_char,
    "u": ctypes.c_wchar,
    "b": ctypes.c_byte,
    "B": ctypes.c_ubyte,
    "h": ctypes.c_short,
    "H": ctypes.c_ushort,
    "i": ctypes.c_int,
    "I": ctypes.c_uint,
    "l": ctypes.c_long,
    "L": ctypes.c_ulong,
    "q": ctypes.c_longlong,
    "Q": ctypes.c_ulonglong,
    "f": ctypes.c_float,
    "d": ctypes.c_double,
}
_SIMPLE_TYPES = frozenset(typecode_to_type.values()) | {
    ctypes.c_bool,
    ctypes.c_int8,
    ctypes.c_uint8,
    ctypes.c_int16,
    ctypes.c_uint16,
    ctypes.c_int32,
    ctypes.c_uint32,
    ctypes.c_int64,
    ctypes.c_uint64,
    ctypes.c_size_t,
    ctypes.c_ssize_t,
    ctypes.c_longdouble,
}
_STRING_TYPES = (ctypes.c_char, ctypes.c_wchar)


def _ctype(typecode_or_type: Any) -> type[Any]:
    """The ctypes type of a typecode or type; ``TypeError`` naming what is neither."""
    type_ = typecode_to_type.get(typecode_or_type, typecode_or_type)
    try:
        ctypes.sizeof(type_)
    except TypeError:
        raise TypeError(
            f"{typecode_or_type!r} is neither a typecode ({''.join(typecode_to_type)}) nor a ctypes "
            "type: this type has no size"
        ) from None
    if type_ not in _SIMPLE_TYPES:
        raise NotImplementedError(
            f"storage-backed shared values hold simple ctypes types only (typecodes "
            f"{''.join(typecode_to_type)}, c_bool, sized integers), not {type_.__name__}"
        )
    return type_


def _space(space: Space | None, kind: str) -> Space:
    return space if space is not None else Space(kind)


class SharedValue:
    """A shared ctypes value (what :func:`RawValue` returns): ``.value`` reads and writes storage.

    Parameters
    ----------
    ctype : ctypes type
        Its type.
    space : Space
        Where its register is (it is made by :func:`RawValue`; this only attaches to it).
    """

    def __init__(self, ctype: type[Any], space: Space) -> None:
        self._ctype, self._space = ctype, space
        self._data = Register(space, "data")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self._ctype, self._space)

    @property
    def value(self) -> Any:
        """The value (one read of the storage)."""
        return self._ctype.from_buffer_copy(self._data.read()).value

    @value.setter
    def value(self, value: Any) -> None:
        obj = self._ctype()
        obj.value = value  # ctypes' conversion and errors
        self._data.write(bytes(obj))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._ctype.__name__} at {self._space.prefix}>"


class SharedArray:
    """A shared ctypes array (what :func:`RawArray` returns): items and slices read and write
    storage, ``len`` does not.

    Parameters
    ----------
    ctype : ctypes type
        The type of the items.
    length : int
        How many there are.
    space : Space
        Where its register is (it is made by :func:`RawArray`; this only attaches to it).
    """

    def __init__(self, ctype: type[Any], length: int, space: Space) -> None:
        self._ctype, self._length, self._space = ctype, length, space
        self._array_type = ctype * length
        self._data = Register(space, "data")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self._ctype, self._length, self._space)

    def _read(self) -> Any:
        return self._array_type.from_buffer_copy(self._data.read())

    def _change(self, name: str | None, index: Any, value: Any) -> None:
        def change(data: bytes) -> tuple[bytes, None]:
            array = self._array_type.from_buffer_copy(data)
            if name is None:
                array[index] = value
            else:
                setattr(array, name, value)
            return bytes(array), None

        self._data.update(change)

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index: int | slice) -> Any:
        return self._read()[index]

    def __setitem__(self, index: int | slice, value: Any) -> None:
        self._change(None, index, value)

    def __iter__(self) -> Iterator[Any]:
        """The items as they are now (one read)."""
        return iter(list(self._read()))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._length} {self._ctype.__name__} at {self._space.prefix}>"


class SharedString(SharedArray):
    """A shared ``c_char`` (or ``c_wchar``) array: also ``.value`` (up to the first NUL) and, for
    ``c_char``, ``.raw`` (every byte), as ctypes' character arrays."""

    @property
    def value(self) -> Any:
        """The characters up to the first NUL."""
        return self._read().value

    @value.setter
    def value(self, value: Any) -> None:
        self._change("value", None, value)

    @property
    def raw(self) -> bytes:
        """Every byte (``c_char`` arrays only)."""
        return bytes(self._read().raw)

    @raw.setter
    def raw(self, value: bytes) -> None:
        self._change("raw", None, value)


def RawValue(typecode_or_type: Any, *args: Any, space: Space | None = None) -> SharedValue:
    """A shared value of ``typecode_or_type`` made as ``ctype(*args)`` (zero without ``args``).

    Parameters
    ----------
    typecode_or_type : str or ctypes type
        A typecode of :data:`typecode_to_type` or a simple ctypes type.
    *args
        What the ctypes type is made with.
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).

    Raises
    ------
    TypeError
        For something that is no ctypes type, or ``args`` that ctypes refuses.
    NotImplementedError
        For a structure, array or pointer type.
    """
    type_ = _ctype(typecode_or_type)
    initial = type_(*args)
    space = _space(space, "value")
    Register(space, "data").write(bytes(initial))
    return SharedValue(type_, space)


def RawArray(
    typecode_or_type: Any, size_or_initializer: int | Sequence[Any], *, space: Space | None = None
) -> SharedArray:
    """A shared array of ``typecode_or_type``: ``size_or_initializer`` zeros, or those items.

    Parameters
    ----------
    typecode_or_type : str or ctypes type
        A typecode of :data:`typecode_to_type` or a simple ctypes type.
    size_or_initializer : int or sequence
        The length (items zero) or the items (``bytes`` for ``'c'``).
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).

    Raises
    ------
    TypeError, ValueError
        As ctypes raises them for the type, the length or the items.
    """
    type_ = _ctype(typecode_or_type)
    if isinstance(size_or_initializer, int):
        initial = (type_ * size_or_initializer)()
    else:
        initial = (type_ * len(size_or_initializer))(*size_or_initializer)
    space = _space(space, "array")
    Register(space, "data").write(bytes(initial))
    kind = SharedString if type_ in _STRING_TYPES else SharedArray
    return kind(type_, len(initial), space)


class SynchronizedBase:
    """A shared object with a storage lock: ``get_lock``, ``get_obj``, ``acquire``, ``release`` and
    ``with``.

    Parameters
    ----------
    obj : SharedValue or SharedArray
        What it wraps.
    lock : Lock or RLock
        The storage lock.
    """

    def __init__(self, obj: Any, lock: StorageLock) -> None:
        self._obj, self._lock = obj, lock
        self.acquire = lock.acquire
        self.release = lock.release

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self._obj, self._lock)

    def __enter__(self) -> bool:
        return self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def get_obj(self) -> Any:
        """The unsynchronized shared object (the same storage state)."""
        return self._obj

    def get_lock(self) -> StorageLock:
        """The lock."""
        return self._lock

    def __repr__(self) -> str:
        return f"<{type(self).__name__} wrapper for {self._obj!r}>"


class Synchronized(SynchronizedBase):
    """A :class:`SharedValue` whose ``.value`` is read and written with the lock held."""

    @property
    def value(self) -> Any:
        """The value, read with the lock held."""
        with self._lock:
            return self._obj.value

    @value.setter
    def value(self, value: Any) -> None:
        with self._lock:
            self._obj.value = value


class SynchronizedArray(SynchronizedBase):
    """A :class:`SharedArray` whose items are read and written with the lock held."""

    def __len__(self) -> int:
        return len(self._obj)

    def __getitem__(self, index: int | slice) -> Any:
        with self._lock:
            return self._obj[index]

    def __setitem__(self, index: int | slice, value: Any) -> None:
        with self._lock:
            self._obj[index] = value

    def __iter__(self) -> Iterator[Any]:
        """The items as they are now (one read, with the lock held)."""
        with self._lock:
            return iter(self._obj)


class SynchronizedString(SynchronizedArray):
    """A synchronized ``c_char`` array: also ``.value`` and ``.raw``, with the lock held."""

    @property
    def value(self) -> bytes:
        """The bytes up to the first NUL."""
        with self._lock:
            return bytes(self._obj.value)

    @value.setter
    def value(self, value: bytes) -> None:
        with self._lock:
            self._obj.value = value

    @property
    def raw(self) -> bytes:
        """Every byte."""
        with self._lock:
            return bytes(self._obj.raw)

    @raw.setter
    def raw(self, value: bytes) -> None:
        with self._lock:
            self._obj.raw = value


def _lock_for(lock: Any, space: Space | None) -> StorageLock:
    if lock is True or lock is None:
        return RLock(space=space.child("rlock") if space is not None else None)
    if isinstance(lock, StorageLock):
        return lock
    if callable(getattr(lock, "acquire", None)):
        raise TypeError(
            f"{lock!r} is not a storage-backed Lock or RLock of dask_faas.compat.multiprocessing: "
            "functions cannot share a process-local lock"
        )
    raise AttributeError(f"{lock!r} has no method 'acquire'")


def Value(
    typecode_or_type: Any, *args: Any, lock: Any = True, ctx: Any = None, space: Space | None = None
) -> Synchronized | SharedValue:
    """A shared value like :func:`RawValue`, with a lock (``multiprocessing.Value``).

    Parameters
    ----------
    typecode_or_type, *args
        As :func:`RawValue`.
    lock : bool or Lock or RLock
        ``True`` (default): a new storage :class:`~.synchronize.RLock`; ``False``: no lock (the
        raw value); a storage lock: that one.
    ctx : object, optional
        Accepted as the standard library's; storage state needs no start-method context.
    space : Space, optional
        Where its state goes (default: spaces of their own in the default storage).

    Raises
    ------
    AttributeError
        For a ``lock`` without ``acquire`` (as the standard library).
    TypeError
        For a process-local lock (a ``threading`` or ``multiprocessing`` one), or bad arguments.
    """
    obj = RawValue(typecode_or_type, *args, space=space)
    if lock is False:
        return obj
    return Synchronized(obj, _lock_for(lock, space))


def Array(
    typecode_or_type: Any,
    size_or_initializer: int | Sequence[Any],
    *,
    lock: Any = True,
    ctx: Any = None,
    space: Space | None = None,
) -> SynchronizedArray | SharedArray:
    """A shared array like :func:`RawArray`, with a lock (``multiprocessing.Array``).

    Parameters
    ----------
    typecode_or_type, size_or_initializer
        As :func:`RawArray`.
    lock, ctx, space
        As :func:`Value`.
    """
    is_bytes = _ctype(typecode_or_type) is ctypes.c_char
    obj = RawArray(typecode_or_type, size_or_initializer, space=space)
    if lock is False:
        return obj
    return (SynchronizedString if is_bytes else SynchronizedArray)(obj, _lock_for(lock, space))
