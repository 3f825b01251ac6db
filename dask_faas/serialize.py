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
    "dumps",
    "dumps_arguments",
    "dumps_error",
    "dumps_function",
    "loads",
    "loads_error",
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


def dumps_arguments(fn: Any, calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> bytes:
    """Cloudpickle a batch of ``(args, kwargs)``; on failure name the call and the argument.

    Raises
    ------
    SerializationError
        Naming the argument (position or keyword) that cannot be pickled, and the function.
    """
    try:
        return dumps(list(calls))
    except Exception as exc:
        raise _unpicklable_argument(fn, calls, exc) from exc


def _unpicklable_argument(fn: Any, calls: Sequence[Any], exc: Exception) -> SerializationError:
    name = getattr(fn, "__qualname__", repr(fn))
    for index, (args, kwargs) in enumerate(calls):
        named = [(f"argument {i}", value) for i, value in enumerate(args)]
        named += [(f"keyword argument {k!r}", value) for k, value in kwargs.items()]
        for label, value in named:
            try:
                dumps(value)
            except Exception as inner:
                where = f" of call {index}" if len(calls) > 1 else ""
                return SerializationError(
                    f"{label}{where} of {name}() cannot be pickled ({_describe(value)}): {inner}"
                )
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
