"""The engine seam: what an executor hands to the graph engine and the Lithops facade.

:class:`Session` is the one public object through which code built on a
:class:`~dask_faas.FaasExecutor` reaches its job, the way :func:`dask.local.get_async` takes
``submit`` and ``num_workers`` explicitly: the job's signed store, the resolved settings and limits,
a batch submit, and the byte counter. Nothing outside ``executor.py`` touches the executor itself.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .protocol import Ref

if TYPE_CHECKING:
    from .job import Job

__all__ = ["CallOptions", "JobFunction", "Session"]

#: A batch of calls: one ``(args, kwargs)`` pair per call.
Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


@dataclass(frozen=True)
class CallOptions:
    """Limits and retry policy of the calls an executor (or one of its views) submits."""

    timeout_s: float
    memory_mb: int
    retries: int
    retry_backoff_s: float


@dataclass(frozen=True)
class JobFunction:
    """A function uploaded once to the job's storage (content-addressed), ready to be submitted."""

    ref: Ref
    name: str


@dataclass(frozen=True, eq=False)
class Session:
    """An executor's job, as the graph engine and the facade see it.

    Attributes
    ----------
    store : Job
        The job's signed store (``put``, ``fetch``, ``delete``, ``child``, ``prefix``).
    settings : Mapping
        The executor's effective ``faas`` settings (read-only).
    options : CallOptions
        The default limits and retry policy of a call.
    num_workers : int
        How many invocations the platform runs at once.
    inline_limit : int
        Arguments and results up to this many bytes travel inside messages.
    """

    store: Job = field(repr=False)
    settings: Mapping[str, Any] = field(repr=False)  # holds credentials: never in a repr
    options: CallOptions
    num_workers: int
    inline_limit: int
    _submit: Callable[..., cf.Future[Any]] = field(repr=False)
    _count_received: Callable[[int], None] = field(repr=False)
    _closed: Callable[[], bool] = field(repr=False)
    _longest_call: Callable[[CallOptions], float] = field(repr=False)

    def function(self, fn: Callable[..., Any]) -> JobFunction:
        """Upload ``fn`` once for the job (content-addressed); the handle to submit it with.

        Raises
        ------
        RuntimeError
            After the executor has shut down.
        """
        if self.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        return JobFunction(self.store.function(fn), name)

    def submit(
        self,
        function: JobFunction,
        calls: Calls,
        *,
        unwrap: bool = False,
        options: CallOptions | None = None,
        label: str | None = None,
        first_index: int | None = None,
    ) -> cf.Future[Any]:
        """Invoke ``function`` over a batch of calls in ONE invocation; the future of its results.

        Parameters
        ----------
        function : JobFunction
            From :meth:`function`.
        calls : list of (args, kwargs)
            The batch; the future resolves to the list of their results (or the only one with
            ``unwrap``).
        options : CallOptions, optional
            Limits of this invocation (default :attr:`options`).
        label : str, optional
            What the invocation runs, for error messages (default: the function's name).
        first_index : int
            Index of the first call in its ``map``, so an unpicklable item is named by its index.

        Raises
        ------
        SerializationError
            At once, naming the argument and the item, when an argument cannot be pickled.
        """
        return self._submit(function, calls, unwrap, options, label, first_index)

    def longest_call_s(self, options: CallOptions) -> float:
        """How long a call with these limits may take from its send to its outcome, on this platform
        (every attempt, re-delivery and backoff; see :func:`~dask_faas.dispatch.longest_call_s`)."""
        return self._longest_call(options)

    def count_received(self, nbytes: int) -> None:
        """Count bytes that reached the client (for the compute report)."""
        self._count_received(nbytes)

    @property
    def closed(self) -> bool:
        """True once the executor has shut down."""
        return self._closed()
