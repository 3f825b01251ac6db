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


def message(name: str) -> str:
    """Why ``lithops.multiprocessing.<name>`` is not provided."""
    return (
        f"lithops.multiprocessing.{name} is not provided by dask-faas: it is shared state between "
        "processes, which Lithops keeps in Redis; dask-faas keeps object storage as the only "
        f"shared state and has no storage-backed {name} yet (Pool, Process, util.RemoteLogIOBuffer "
        "and util.RemoteLoggingFeed are provided)"
    )


class Refusing(type):
    """The type of the stand-ins: making one, or using one of its class attributes (a manager's
    ``register``), raises ``NotImplementedError``."""

    def __call__(cls, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError(message(cls.__qualname__))

    def __getattr__(cls, attr: str) -> NoReturn:
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise NotImplementedError(message(f"{cls.__qualname__}.{attr}"))


def unsupported(name: str) -> Any:
    """A stand-in for ``multiprocessing.<name>`` that raises ``NotImplementedError`` when used."""
    doc = f"Not provided: raises ``NotImplementedError`` (see {__name__})."
    return Refusing(
        name.rsplit(".", 1)[-1], (), {"__qualname__": name, "__doc__": doc, "__module__": __name__}
    )
