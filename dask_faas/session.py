"""The engine seam: what an executor hands to the graph engine and the Lithops facade.

:class:`Session` is the one public object through which code built on a
:class:`~dask_faas.FaasExecutor` reaches its job, the way :func:`dask.local.get_async` takes
``submit`` and ``num_workers`` explicitly: the job's signed store, the resolved settings and limits,
a batch submit, and the byte counter. Nothing outside ``executor.py`` touches the executor itself.
"""

from __future__ import annotations

import concurrent.futures as cf
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .exceptions import (
    ConfigError,
    IntegrityError,
    InvocationError,
    PayloadTooLargeError,
    ProtocolError,
    SerializationError,
    StorageError,
)
from .protocol import Ref

if TYPE_CHECKING:
    from .job import Job

__all__ = ["INFRASTRUCTURE", "NEVER_RETRIED", "CallOptions", "JobFunction", "Session"]

#: A batch of calls: one ``(args, kwargs)`` pair per call.
Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


#: Failures that would happen again, identically, however often the call ran: never retried.
NEVER_RETRIED: tuple[type[BaseException], ...] = (
    IntegrityError,
    ProtocolError,
    SerializationError,
    ConfigError,
    PayloadTooLargeError,
)
#: Failures of the platform or the storage, not of the call's code: retried whatever ``retry_on``.
INFRASTRUCTURE: tuple[type[BaseException], ...] = (InvocationError, StorageError)


@dataclass(frozen=True)
class CallOptions:
    """Limits and retry policy of the calls an executor (or one of its views) submits.

    The retry policy (:meth:`retried`): a failed call is invoked again, up to ``retries`` times
    (waiting ``retry_backoff_s * 2**attempt``, jittered, in between), when it failed

    - on the platform or the storage (:class:`~dask_faas.exceptions.InvocationError` and its
      subclasses: past its time or memory limit, its process died, its response was lost;
      :class:`~dask_faas.exceptions.StorageError`): always;
    - with an exception of the user's function: as Dask's ``retries=`` does, unless ``retry_on``
      is set, and then only for instances of those types;

    and never for a failure that would only repeat itself (:data:`NEVER_RETRIED`): a payload,
    response or stored object that fails its signature (:class:`~dask_faas.exceptions.IntegrityError`),
    a protocol version mismatch, something that cannot be pickled, a wrong setting, a payload
    above the platform's limit -- whoever raised it.

    Attributes
    ----------
    timeout_s : float
        Time limit of one invocation.
    memory_mb : int
        Memory limit of one invocation.
    retries : int
        How many times a failed call is invoked again.
    retry_backoff_s : float
        Base of the exponential backoff between attempts.
    retry_on : tuple of exception types, optional
        The user's exceptions that are retried (None: all of them).
    """

    timeout_s: float
    memory_mb: int
    retries: int
    retry_backoff_s: float
    retry_on: tuple[type[BaseException], ...] | None = None

    def retried(self, exc: BaseException, raised_by_function: bool) -> bool:
        """Whether a call that failed with ``exc`` is invoked again (attempts left aside).

        Parameters
        ----------
        exc : BaseException
            The failure.
        raised_by_function : bool
            True when the function answered with ``exc`` (the user's code, or the runtime around
            it), False when the platform, the storage or the client's handling of the answer failed.
        """
        if isinstance(exc, NEVER_RETRIED):
            return False
        if not raised_by_function or isinstance(exc, INFRASTRUCTURE) or self.retry_on is None:
            return True
        return isinstance(exc, self.retry_on)


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
        group: Hashable | None = None,
        tasks: list[Hashable] | None = None,
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
        group : hashable, optional
            The invocation's siblings, for speculative backups (``faas.backups``): invocations
            submitted with the same group are expected to take about as long as each other, and
            one that runs far longer than the median of its finished siblings is invoked again.
            Default: the invocations of the same function with the same ``label`` (the
            invocations of one ``map``, the ``submit`` calls of one function).
        tasks : list of hashable, optional
            The Dask task keys the invocation runs, for its record and logs (default: the
            function's name).

        Raises
        ------
        SerializationError
            At once, naming the argument and the item, when an argument cannot be pickled.
        """
        return self._submit(function, calls, unwrap, options, label, first_index, group, tasks)

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
