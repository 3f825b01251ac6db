"""The one exception hierarchy of dask-faas.

Every error is also a builtin, so ``except TimeoutError`` or ``except ValueError`` keeps working::

    FaasError(Exception)
     ├── ConfigError(FaasError, ValueError)             a setting is wrong; names the setting
     ├── SerializationError(FaasError, TypeError)       an argument/result cannot be pickled; names it
     ├── PayloadTooLargeError(FaasError, ValueError)    a payload exceeds the platform's limit
     ├── IntegrityError(FaasError, PermissionError)     a payload or stored object failed its signature
     ├── ProtocolError(FaasError, RuntimeError)         client and function speak different versions
     ├── StorageError(FaasError, OSError)               storage kept failing a request, or an object
     │                                                  was written again after it was listed
     └── InvocationError(FaasError, RuntimeError)       the platform could not run a call to its end
          ├── FunctionTimeoutError(InvocationError, TimeoutError)   over ``timeout_s``
          ├── FunctionMemoryError(InvocationError, MemoryError)     over ``memory_mb``
          └── WorkerDiedError(InvocationError)                      the function process died

Other storage errors are the builtins themselves: ``FileNotFoundError`` for a missing object or
bucket, ``PermissionError`` for refused credentials; each names ``s3://bucket/key``.

An exception raised *by the user's function* is re-raised on the client as itself, with the remote
traceback attached as its ``__cause__`` (a :class:`RemoteTraceback`), as
:mod:`concurrent.futures.process` does.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FaasError",
    "FunctionMemoryError",
    "FunctionTimeoutError",
    "IntegrityError",
    "InvocationError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RemoteTraceback",
    "SerializationError",
    "StorageError",
    "WorkerDiedError",
]


class FaasError(Exception):
    """Base class of every dask-faas error."""


class ConfigError(FaasError, ValueError):
    """A configuration value is missing or wrong; the message names the setting."""


class SerializationError(FaasError, TypeError):
    """An argument, function or result cannot be pickled; the message names which."""


class PayloadTooLargeError(FaasError, ValueError):
    """A payload is larger than the compute backend accepts."""


class IntegrityError(FaasError, PermissionError):
    """A payload, response or stored object is unsigned or its signature does not match."""


class ProtocolError(FaasError, RuntimeError):
    """The client and the function runtime do not speak the same protocol version."""


class InvocationError(FaasError, RuntimeError):
    """The platform could not run a call to its end (as opposed to the call raising)."""


class FunctionTimeoutError(InvocationError, TimeoutError):
    """A call ran longer than its ``timeout_s`` limit and was stopped."""


class FunctionMemoryError(InvocationError, MemoryError):
    """A call used more memory than its ``memory_mb`` limit and was stopped."""


class WorkerDiedError(InvocationError):
    """The function process died while running a call."""


class StorageError(FaasError, OSError):
    """The storage kept failing a request (after its retries); the message names the bucket, the
    key, the error code and the HTTP status."""


class RemoteTraceback(Exception):
    """Carries the formatted traceback of an exception raised inside a function.

    Attached as ``__cause__`` of the re-raised exception, so the remote frames print after
    the local ones ("The above exception was the direct cause of ...").
    """

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb
