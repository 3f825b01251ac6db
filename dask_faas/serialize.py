"""Pickling of functions, arguments, results and errors, with errors that name the culprit.

Functions and arguments go through cloudpickle (so lambdas and ``__main__`` functions travel);
exceptions raised inside a function come back with their formatted remote traceback, re-attached on
the client as ``__cause__`` the way :mod:`concurrent.futures.process` does.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import site
import sys
import sysconfig
import threading
import traceback
from collections.abc import Iterator, Sequence
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
    "shipping_user_modules",
    "user_modules",
]

PROTOCOL = 5


def dumps(obj: Any) -> bytes:
    """Cloudpickle ``obj``."""
    return cloudpickle.dumps(obj, protocol=PROTOCOL)


def loads(data: bytes | memoryview) -> Any:
    """Unpickle ``data`` (only ever called on signed data)."""
    return pickle.loads(data)


def _installed_roots() -> tuple[str, ...]:
    """Directories of what a runtime image has: the standard library, site-packages, dask-faas."""
    paths = {sysconfig.get_paths()[name] for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    paths.update(site.getsitepackages() if hasattr(site, "getsitepackages") else ())
    paths.add(site.getusersitepackages())
    here = os.path.dirname(os.path.abspath(__file__))
    paths.update((here, os.path.join(os.path.dirname(here), "function_runtime")))
    return tuple(os.path.join(os.path.realpath(p), "") for p in paths if p)


_ROOTS: tuple[str, ...] | None = None
#: module name -> (its file, whether it is the user's), so each file is resolved once
_classified: dict[str, tuple[str, bool]] = {}
_ship_lock = threading.RLock()
#: ((len(sys.modules), the last module's name), user modules) of the last scan: an import appends
_listed: tuple[tuple[int, str | None], list[str]] = ((-1, None), [])


def user_modules() -> list[str]:
    """Names of the imported modules a runtime image does not have: the user's own.

    The rule: a module loaded from a file outside the standard library, every site-packages
    directory and dask-faas itself (a script's folder, a project checkout, an editable install, a
    notebook's neighbours). Built-in and frozen modules, and ``__main__`` (which cloudpickle ships
    by value anyway), are not counted.
    """
    global _ROOTS, _listed
    if _ROOTS is None:
        _ROOTS = _installed_roots()
    state = (len(sys.modules), next(reversed(sys.modules), None))  # a new import changes both
    if _listed[0] == state:
        return list(_listed[1])
    names = []
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if not isinstance(path, str) or name == "__main__":
            continue
        known = _classified.get(name)
        if known is None or known[0] != path:
            known = _classified[name] = (path, not os.path.realpath(path).startswith(_ROOTS))
        if known[1]:
            names.append(name)
    _listed = (state, names)
    return list(names)


@contextlib.contextmanager
def shipping_user_modules(enabled: bool = True) -> Iterator[None]:
    """Inside the block, cloudpickle pickles the user's own modules (:func:`user_modules`) by value.

    Their functions and classes then travel with whatever refers to them, so a function the runtime
    image cannot import still runs there (``faas.ship-modules``). The registration is undone when
    the block ends; blocks of different threads take turns. Pickling outside such a block may also
    pickle those modules by value meanwhile.
    """
    if not enabled:
        yield
        return
    with _ship_lock:
        registered = []
        already = cloudpickle.list_registry_pickle_by_value()
        for name in user_modules():
            module = sys.modules.get(name)
            if module is not None and name not in already:
                cloudpickle.register_pickle_by_value(module)
                registered.append(module)
        try:
            yield
        finally:
            for module in registered:
                with contextlib.suppress(ValueError):
                    cloudpickle.unregister_pickle_by_value(module)


def _describe(obj: Any) -> str:
    text = repr(obj)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(obj).__module__}.{type(obj).__qualname__} {text}"


def _shipped(dump: Any, ship: bool) -> bytes:
    """``dump()`` with the user's modules by value; by reference if that fails (a module-level lock,
    say, pickles by reference only): the runtime image may then have the module after all."""
    if ship:
        try:
            with shipping_user_modules():
                return dump()
        except SerializationError:
            pass
    return dump()


def dumps_function(fn: Any, ship: bool = False) -> bytes:
    """Cloudpickle a function (``ship``: with the user's modules by value, see
    :func:`shipping_user_modules`), or raise :class:`SerializationError` naming it."""
    return _shipped(lambda: _dumps_function(fn), ship)


def _dumps_function(fn: Any) -> bytes:
    try:
        return dumps(fn)
    except Exception as exc:
        name = getattr(fn, "__qualname__", None) or _describe(fn)
        raise SerializationError(f"function {name} cannot be pickled: {exc}") from exc


def dumps_arguments(
    name: str,
    calls: Sequence[tuple[tuple[Any, ...], dict[str, Any]]],
    first_index: int | None = None,
    ship: bool = False,
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
    ship : bool
        Pickle the user's modules by value (:func:`shipping_user_modules`).

    Raises
    ------
    SerializationError
        Naming the argument (position or keyword), the item of a map and the function.
    """

    def dump() -> bytes:
        try:
            return dumps(list(calls))
        except Exception as exc:
            raise _unpicklable_argument(name, calls, first_index, exc) from exc

    return _shipped(dump, ship)


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
