"""Start methods and contexts (``multiprocessing``'s API: every process runs in a function)."""

from __future__ import annotations

from typing import Any

#: The one start method: each process is a FaaS invocation (``"cloud"`` as in Lithops).
START_METHODS = ["cloud"]
_method: str | None = None


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
