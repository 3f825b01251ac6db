"""The shared-state names of ``multiprocessing`` that dask-faas does not provide (yet).

Lithops builds them on Redis (or RabbitMQ); dask-faas keeps object storage as the only shared
state, and these are not built on it yet. Using one raises one clear ``NotImplementedError``
naming it, never a silent wrong answer.
"""

from __future__ import annotations

from typing import Any, NoReturn

#: The names, each raising when called (or made).
NAMES = (
    "Queue",
    "SimpleQueue",
    "JoinableQueue",
    "Pipe",
    "Lock",
    "RLock",
    "Semaphore",
    "BoundedSemaphore",
    "Event",
    "Condition",
    "Barrier",
    "Value",
    "Array",
    "RawValue",
    "RawArray",
    "Manager",
)


def unsupported(name: str) -> Any:
    """A callable standing for ``multiprocessing.<name>`` that raises ``NotImplementedError``."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(
            f"lithops.multiprocessing.{name} is not provided by dask-faas: it is shared state between "
            "processes, which Lithops keeps in Redis; dask-faas keeps object storage as the only "
            f"shared state and has no storage-backed {name} yet (Pool, Process, util.RemoteLogIOBuffer "
            "and util.RemoteLoggingFeed are provided)"
        )

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = f"Not provided: raises ``NotImplementedError`` (see {__name__})."
    return refuse
