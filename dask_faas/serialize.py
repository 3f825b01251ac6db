"""Pickling of functions, arguments, results and errors, with errors that name the culprit.

Functions and arguments go through cloudpickle (so lambdas and ``__main__`` functions travel);
exceptions raised inside a function come back with their formatted remote traceback, re-attached on
the client as ``__cause__`` the way :mod:`concurrent.futures.process` does.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Sequence
from typing import Any

import cloudpickle

from .exceptions import RemoteTraceback, SerializationError

__all__ = [
    "WarningRecorder",
    "dumps",
    "dumps_arguments",
    "dumps_error",
    "dumps_function",
    "loads",
    "loads_error",
    "loads_warnings",
]

PROTOCOL = 5


def dumps(obj: Any) -> bytes:
    """Cloudpickle ``obj``."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes | memoryview) -> Any:
    """Unpickle ``data`` (only ever called on signed data)."""
    return pickle.loads(data)


def _describe(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(obj).__module__}.{type(obj).__qualname__} {text}"


def dumps_function(fn: Any) -> bytes:
    """Cloudpickle a function, or raise :class:`SerializationError` naming it."""
    try:
        return dumps(fn)
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or _describe(fn)
        raise SerializationError(f"function {name} cannot be pickled: {exc}") from exc


def dumps_arguments(
    name: str, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]], first_index: int | None = None
) -> bytes:
    """Cloudpickle a batch of ``(args, kwargs)``; on failure name the item and the argument.

    Parameters
    ----------
    name : str
        The function's name, for the error message.
    calls : sequence of (args, kwargs)
        The batch.
    first_index : int, optional
        Index of the batch's first call among the items of a ``map``; the error then names the item.

    Raises
    ------
    SerializationError
        Naming the argument (position or keyword), the item of a map and the function.
    """
    try:
        return dumps(list(calls))
    except Exception as exc:
        raise _unpicklable_argument(name, calls, first_index, exc) from exc


def _unpicklable_argument(
    name: str, calls: Sequence[Any], first_index: int | None, exc: Exception
) -> SerializationError:
    for index, (args, kwargs) in enumerate(calls):
        named = [(f"argument {i}", value) for i, value in enumerate(args)]
        named += [(f"keyword argument {k!r}", value) for k, value in kwargs.items()]
        for label, value in named:
            try:
                dumps(value)
            except Exception as inner:
                if first_index is not None:
                    where = f" of item {first_index + index} of map({name})"
                else:
                    where = (f" of call {index}" if len(calls) > 1 else "") + f" of {name}()"
                return SerializationError(f"{label}{where} cannot be pickled ({_describe(value)}): {inner}")
    return SerializationError(f"the arguments of {name}() cannot be pickled: {exc}")


def dumps_error(exc: BaseException) -> bytes:
    """Pickle a remote exception with its formatted traceback.

    An exception that cannot be pickled (or unpickled) is replaced by a ``RuntimeError`` carrying
    its type and message, so the client always learns what happened.
    """
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    exc.__traceback__ = None
    try:
        data = dumps(exc)
        pickle.loads(data)
    except Exception:
        stand_in = RuntimeError(f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
        data = dumps(stand_in)
    return dumps((data, tb))


def loads_error(data: bytes | memoryview) -> BaseException:
    """The exception of :func:`dumps_error`, with the remote traceback as ``__cause__``."""
    exc_data, tb = loads(data)
    exc = loads(exc_data)
    exc.__cause__ = RemoteTraceback(f'\n"""\n{tb}"""')
    return exc


#: Most distinct warnings one invocation reports (the rest are counted in one last warning).
MAX_WARNINGS = 100


class WarningRecorder:
    """Collects the warnings a function raises, once per ``(category, message, file, line)``.

    Used as ``warnings.showwarning`` inside a function: memory stays bounded however many times a
    loop warns, and :meth:`dumps` pickles what the client issues again.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], None] = {}
        self._dropped = 0

    def record(self, message: Any, category: type[Warning], filename: str, lineno: int, *_: Any) -> None:
        """The ``warnings.showwarning`` signature."""
        entry = (category, str(message), filename, lineno)
        if entry in self._seen:
            return
        if len(self._seen) < MAX_WARNINGS:
            self._seen[entry] = None
        else:
            self._dropped += 1

    def dumps(self) -> bytes:
        """The recorded warnings, pickled (``b""`` for none).

        Categories that cannot be pickled travel as ``UserWarning`` with their name in the message.
        """
        kept = list(self._seen)
        if self._dropped:
            kept.append((RuntimeWarning, f"{self._dropped} more distinct warnings in this function", "", 0))
        if not kept:
            return b""
        try:
            return dumps(kept)
        except Exception:
            named = [(UserWarning, f"{c.__module__}.{c.__qualname__}: {m}", f, n) for c, m, f, n in kept]
            return dumps(named)


def loads_warnings(data: bytes) -> list[tuple[type[Warning], str, str, int]]:
    """The warnings of :meth:`WarningRecorder.dumps` (``[]`` for none)."""
    if not data:
        return []
    try:
        return loads(data)
    except Exception as exc:  # a category class the client cannot import
        return [(UserWarning, f"a function raised warnings that cannot be unpickled here: {exc}", "", 0)]
