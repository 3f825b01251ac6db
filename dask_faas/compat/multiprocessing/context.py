"""Start methods and contexts (``multiprocessing``'s API: every process runs in a function), and
the module-level helpers of ``multiprocessing`` that functions have nothing to do for."""

from __future__ import annotations

import logging
from typing import Any

#: The one start method: each process is a FaaS invocation (``"cloud"`` as in Lithops).
START_METHODS = ["cloud"]
_method: str | None = None


#: ``multiprocessing.reducer``: the reduction module of the default context. Nothing here reduces
#: objects that way (arguments travel cloudpickled), so it is None, as in Lithops.
reducer = None
_LOGGER = "dask_faas.compat.multiprocessing"
_stderr_handler: logging.Handler | None = None


def freeze_support() -> None:
    """Nothing to do: no function re-runs the program's main module (as Lithops)."""


def allow_connection_pickling() -> None:
    """Nothing to do: connections pickle to begin with."""


def set_executable(executable: str) -> None:
    """Nothing to do: a function's interpreter is its runtime's, not one of the client."""


def set_forkserver_preload(module_names: list[str]) -> None:
    """Nothing to do: there is no fork server."""


def get_logger() -> logging.Logger:
    """The logger of this package (``multiprocessing.get_logger()``)."""
    return logging.getLogger(_LOGGER)


def log_to_stderr(level: int | str | None = None) -> logging.Logger:
    """Send this package's log to stderr (once, however often it is called) and return the logger."""
    global _stderr_handler
    logger = get_logger()
    if _stderr_handler is None:
        _stderr_handler = logging.StreamHandler()
        _stderr_handler.setFormatter(logging.Formatter("[%(levelname)s/%(processName)s] %(message)s"))
        logger.addHandler(_stderr_handler)
    if level is not None:
        logger.setLevel(level)
    return logger


class FaasContext:
    """What ``get_context()`` returns: this package's names as attributes."""

    def __getattr__(self, name: str) -> Any:
        from .. import multiprocessing

        try:
            return getattr(multiprocessing, name)
        except AttributeError:
            raise AttributeError(f"lithops.multiprocessing context has no attribute {name!r}") from None

    def get_start_method(self, allow_none: bool = False) -> str | None:
        return get_start_method(allow_none)


def _check(method: str | None) -> None:
    if method not in (None, *START_METHODS, "spawn", "fork", "forkserver"):
        raise ValueError(f"cannot find context for {method!r}")


def get_context(method: str | None = None) -> FaasContext:
    """The context (``ValueError`` for an unknown method; every known one means a function)."""
    _check(method)
    return FaasContext()


def set_start_method(method: str | None, force: bool = False) -> None:
    """Accepted (``RuntimeError`` if set twice without ``force``, as ``multiprocessing``)."""
    global _method
    _check(method)
    if _method is not None and not force:
        raise RuntimeError("context has already been set")
    _method = method


def get_start_method(allow_none: bool = False) -> str | None:
    """``"cloud"`` (None with ``allow_none`` before any was set)."""
    if _method is None and allow_none:
        return None
    return START_METHODS[0]


def get_all_start_methods() -> list[str]:
    """The start methods: only ``"cloud"``."""
    return list(START_METHODS)
