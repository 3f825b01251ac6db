"""The compute seam: invoke one function call on a FaaS platform.

A :class:`ComputeBackend` has one required method, :meth:`~ComputeBackend.invoke`, which sends
payload bytes to the deployed function and returns a future of the response bytes. Class attributes
state the platform's limits. Deployment (creating or updating the function) lives apart from
invocation, and a backend never touches storage: what a function needs to reach storage is part of
its deployment ``environment``.

The contract every backend keeps (``tests/test_compute_contract.py`` checks it for each one):

- the future resolves to the function's sealed response, or fails with
  :class:`~dask_faas.exceptions.FunctionTimeoutError`, :class:`~dask_faas.exceptions.FunctionMemoryError`
  or :class:`~dask_faas.exceptions.WorkerDiedError` whose message names the call's ``label`` (and
  the limit, ``timeout_s=`` or ``memory_mb=``); a failed call leaves the backend usable;
- ``on_start`` returning False cancels the future, and the payload is never sent;
- :meth:`~ComputeBackend.close` cancels what was not sent, fails what is running, leaves no local
  process or thread running, and returns only when every future it gave out is done; ``invoke``
  afterwards raises ``RuntimeError``.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["ENVELOPE_BYTES", "ComputeBackend", "InvokeOptions", "begin"]

#: Room kept in every payload and response for what is not arguments or results.
ENVELOPE_BYTES = 64 * 2**10


@dataclass(frozen=True)
class InvokeOptions:
    """Per-invocation limits and hooks.

    Parameters
    ----------
    timeout_s : float
        Wall-clock limit of the call; the platform stops it and fails the future with
        :class:`~dask_faas.exceptions.FunctionTimeoutError` past it.
    memory_mb : int
        Memory limit; :class:`~dask_faas.exceptions.FunctionMemoryError` past it.
    label : str
        What the call is, for error messages (``"call 12 (attempt 0) of f"``).
    on_start : callable, optional
        Called right before the payload is sent (and again before each resend after the platform
        refused it for now); returning False means the call is no longer wanted (its future was
        cancelled), and the backend cancels the invocation instead of sending it.
    on_backoff : callable, optional
        Called with the seconds the backend will wait before sending again, when the platform
        throttled the call or was unavailable: the call is not running meanwhile.
    """

    timeout_s: float
    memory_mb: int
    label: str = "call"
    on_start: Callable[[], bool] | None = None
    on_backoff: Callable[[float], None] | None = None


class ComputeBackend(abc.ABC):
    """A FaaS platform, seen from the client."""

    #: Registry name.
    name: ClassVar[str]
    #: Largest payload (and inline response) the platform accepts, in bytes.
    max_payload_bytes: ClassVar[int] = 6 * 2**20
    #: Longest timeout the platform allows, in seconds.
    max_timeout_s: ClassVar[float] = 900.0
    #: Largest memory setting the platform allows, in MB.
    max_memory_mb: ClassVar[int] = 10240

    #: Whether the backend knows that a call it sent has started (the local pool writes it to a live
    #: process). When False, the client sends an attempt again if no delivery of it started within
    #: ``faas.start-deadline-s`` (platforms deliver at least once and may lose a call they accepted).
    confirms_start: ClassVar[bool] = False
    #: Whether the functions were deployed beforehand (``dask-faas runtime deploy``) with their own
    #: environment and signing key, rather than started by the backend with the ``environment``
    #: it is given (the local pool).
    deployed_beforehand: ClassVar[bool] = False
    #: How long a call may wait, backed off, while the platform throttles it (0: never throttled).
    throttle_deadline_s: float = 0.0
    #: How long past its ``timeout_s`` a call's answer may legitimately take (a remote platform's
    #: cold start is not part of the call's timeout).
    answer_grace_s: ClassVar[float] = 0.0

    #: How many invocations may run at once (an instance attribute: it may depend on settings).
    concurrency: int = 1000

    @classmethod
    def inline_capacity(cls) -> int:
        """Most bytes of arguments or results that fit inline in one payload or response.

        The envelope (signature, call ids, storage locator) is deducted from
        :attr:`max_payload_bytes`; backends that encode payloads (base64 in JSON) deduct that too.
        The executor lowers ``faas.inline-limit`` to this, so anything larger goes through storage.
        """
        return cls.max_payload_bytes - ENVELOPE_BYTES

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> ComputeBackend:
        """Build the backend from the deployment ``environment`` and the ``faas`` settings."""
        return cls(environment)  # type: ignore[call-arg]

    @abc.abstractmethod
    def invoke(self, payload: bytes, options: InvokeOptions) -> Future[bytes]:
        """Start one invocation; the future resolves to the function's response bytes.

        Parameters
        ----------
        payload : bytes
            A sealed :class:`~dask_faas.protocol.Invocation`, at most :attr:`max_payload_bytes`.
        options : InvokeOptions
            The call's limits, label and ``on_start`` hook.

        Returns
        -------
        Future of bytes
            The sealed response. It fails with an :class:`~dask_faas.exceptions.InvocationError`
            subclass, naming ``options.label``, when the platform could not run the call to its end
            (timeout, memory, crash); it is cancelled when ``on_start`` returned False.

        Raises
        ------
        RuntimeError
            After :meth:`close`.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Stop whatever the backend runs locally (threads, processes, sessions).

        Invocations not sent yet are cancelled and running ones fail; when this returns, every
        future of the backend is done. Closing again does nothing.
        """


def begin(future: Future[bytes], options: InvokeOptions, wanted: bool = True) -> bool:
    """What a backend does right before it sends a payload: ask ``on_start``, then mark ``future``
    running, or cancel it. Returns whether to send; False means the future is done (cancelled,
    or failed with what ``on_start`` raised).

    Parameters
    ----------
    wanted : bool
        False when the backend itself no longer sends (it is closing): the future is cancelled.
    """
    try:
        if wanted and options.on_start is not None:
            wanted = options.on_start()
    except BaseException as exc:  # the hook's failure is the call's, not the backend's
        if future.set_running_or_notify_cancel():
            future.set_exception(exc)
        return False
    if not wanted:
        future.cancel()
    return future.set_running_or_notify_cancel()
