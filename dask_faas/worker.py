"""What runs inside a function: verify, fetch, run, answer.

Every platform entry point in ``function_runtime/`` turns its event into payload bytes and calls
:meth:`Runtime.handle`, which

1. checks the payload's signature (the key comes from the deployment's environment, never from the
   payload) and protocol version;
2. fetches the function body (content-addressed, cached for the life of a warm process) and any
   arguments kept in storage, checking their signatures;
3. runs the function over its batch of argument tuples;
4. answers with the results inline, or writes them to a per-attempt key when they are large.

This module imports neither pandas nor a cloud SDK by itself: storage backends are loaded from the
payload's locator, and only the one named there is imported.

Memory limits are enforced inside the function process itself (:class:`MemoryLimit`): a soft
``RLIMIT_DATA``, so that an allocation beyond the limit fails at once with ``MemoryError`` instead of
the process being killed by a platform that saw it too late. Either per call (the local pool sends
each call's ``memory_mb`` with its payload) or for the whole instance (the container's memory, from
``DASK_FAAS_MEMORY_MB`` or a readable cgroup limit, see :func:`container_memory_mb`). A
``MemoryError`` that escapes a call under such a limit is answered as a
:class:`~dask_faas.exceptions.FunctionMemoryError` naming the call and ``memory_mb=``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import gc
import os
import resource
import secrets
import threading
import time
import types
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from . import capture, protocol, serialize
from .backends.storage import Storage, storage_from_locator
from .exceptions import FunctionMemoryError, SerializationError
from .protocol import Invocation, Ref, Response
from .store import CountedStorage, SignedStore

__all__ = [
    "MEMORY_ENV",
    "Context",
    "MemoryLimit",
    "Runtime",
    "container_memory_mb",
    "current",
    "warm_runtime",
]

#: The variable holding the function instance's memory in MiB (``dask-faas runtime deploy`` writes
#: it from the memory it deploys with).
MEMORY_ENV = "DASK_FAAS_MEMORY_MB"


@dataclass(frozen=True)
class Context:
    """What a running function knows about its invocation.

    Parameters
    ----------
    store : SignedStore
        The job's signed objects (``store.storage`` is the raw storage client).
    call : str
        The call id.
    attempt : int
        The attempt number.
    delivery : str
        The nonce of this delivery of the attempt, chosen by the client (it sends an attempt again
        when it never started).
    execution : str
        A nonce of this execution, chosen by the function: a platform may run one delivery twice
        (at-least-once), with the same payload and so the same ``delivery``.
    """

    store: SignedStore
    call: str
    attempt: int
    delivery: str = "0"
    execution: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def tag(self) -> str:
        """``<call>.<attempt>.<delivery>-<execution>``: end every name this invocation writes with
        it, so that no retry, re-delivery or duplicated execution ever overwrites what another wrote."""
        return f"{self.call}.{self.attempt}.{self.delivery}-{self.execution}"

    @property
    def storage(self) -> Storage:
        """The storage client of the job (credentials from this function's deployment).

        The storage itself, not the counting view of :attr:`store` (whose requests go into the
        invocation's record), so that code which asks for its type finds it.
        """
        storage = self.store.storage
        return storage.inner if isinstance(storage, CountedStorage) else storage


_current: contextvars.ContextVar[Context] = contextvars.ContextVar("dask_faas_context")


def current() -> Context:
    """The :class:`Context` of the invocation running in this function.

    Raises
    ------
    RuntimeError
        Outside a function invocation.
    """
    try:
        return _current.get()
    except LookupError:
        raise RuntimeError("dask_faas.worker.current() is only available inside a function") from None


class Runtime:
    """The state of one (warm) function instance.

    Parameters
    ----------
    key : bytes
        The signing key shared with the client through the deployment's configuration.
    max_cached_functions : int
        How many unpickled functions a warm instance keeps, keyed by their storage key.
    """

    def __init__(self, key: bytes, max_cached_functions: int = 64, memory_mb: int | None = None) -> None:
        self._key = key
        self._functions: OrderedDict[str, Any] = OrderedDict()
        self._max_cached = max_cached_functions
        self.invocations = 0
        #: The instance's memory (MiB), enforced on this whole process from the start; None: none known.
        self.memory_mb = memory_mb
        if memory_mb is not None:
            MemoryLimit(memory_mb, whole_instance=True).apply()

    @classmethod
    def from_environ(cls) -> Runtime:
        """A runtime whose signing key comes from ``DASK_FAAS_SIGNING_KEY`` and whose memory is
        :func:`container_memory_mb` (enforced on this process from now on, when known)."""
        return cls(protocol.key_from_environ(), memory_mb=container_memory_mb())

    def handle(
        self, payload: bytes | memoryview, memory_mb: int | None = None, request_id: str | None = None
    ) -> bytes:
        """Run one invocation payload and return the sealed response.

        A payload that fails its signature or version check raises (the platform reports the
        failure); everything that goes wrong after that is answered as an error response.

        Parameters
        ----------
        payload : bytes
            The sealed invocation.
        memory_mb : int, optional
            A limit of this call alone (the local pool's per-call ``memory_mb``): what the call may
            allocate on top of the process as it is when the call begins, enforced while it runs.
            For one call at a time: the limit is the whole process's.
        request_id : str, optional
            The platform's id of this invocation (returned in the response's stats).
        """
        began, started = time.time(), time.perf_counter()
        inv: Invocation = protocol.unseal(payload, self._key, what="invocation payload")
        warm = self.invocations > 0
        self.invocations += 1
        token = None
        mark: _StartMark | None = None
        fn: Any = None
        running_s = 0.0
        limits = [mb for mb in (memory_mb, self.memory_mb) if mb is not None]
        limit_mb = min(limits) if limits else None  # the one a MemoryError is reported against
        storage = CountedStorage(storage_from_locator(inv.storage))
        capture.reset_peak_memory()
        output = capture.OutputCapture(inv.log_bytes)
        # warnings pass this process's filters (catch_warnings starts their "once per location"
        # memory afresh), are kept once per location, and are issued again on the client
        caught = serialize.WarningRecorder()
        with warnings.catch_warnings(), output:
            warnings.showwarning = caught.record
            try:
                with MemoryLimit(memory_mb) if memory_mb is not None else contextlib.nullcontext():
                    store = SignedStore(storage, self._key, inv.prefix)
                    context = Context(store, inv.call, inv.attempt, inv.delivery)
                    token = _current.set(context)
                    mark = _StartMark(store, inv)
                    fn = self._function(store, inv.function)
                    calls = serialize.loads(self._read(store, inv.args))
                    running = time.perf_counter()
                    try:
                        results = [fn(*args, **kwargs) for args, kwargs in calls]
                    finally:
                        running_s = time.perf_counter() - running
                    value = self._output(context, inv.inline_limit, _dumps_results(results))
                ok = True
            except BaseException as exc:  # report everything, KeyboardInterrupt included
                if isinstance(exc, SystemExit | KeyboardInterrupt) and not isinstance(exc, Exception):
                    exc = RuntimeError(f"function raised {type(exc).__name__}({exc})")
                elif isinstance(exc, MemoryError) and limit_mb is not None:
                    exc = _over_the_limit(exc, inv, fn, limit_mb)
                ok, value = False, serialize.dumps_error(exc)
                del exc
                if limit_mb is not None:
                    gc.collect()  # what the failed call held goes before the next call
            finally:
                if token is not None:
                    _current.reset(token)
                marked = mark.cancel() if mark is not None else False
        if storage.bytes_written or marked:
            _clean_up_if_the_job_ended(storage, inv)
        inline = 0 if isinstance(value, Ref) else len(value)
        stats = {
            "pid": os.getpid(),
            "warm": warm,
            "seconds": time.perf_counter() - started,
            "delivery": inv.delivery,
            "marked": marked,
            "started": began,
            "ended": time.time(),
            "running_s": running_s,
            "bytes_in": len(payload) + storage.bytes_read,
            "bytes_out": inline + storage.bytes_written,
            "peak_memory_mb": capture.peak_memory_mb(),
            "request_id": request_id,
            "requests": storage.counts(),
        }
        response = Response(inv.call, inv.attempt, ok, value, stats, caught.dumps(), output.text)
        return protocol.seal(response, self._key)

    def handle_json(self, event: Any, request_id: str | None = None) -> dict[str, str]:
        """:meth:`handle` for platforms whose events are JSON (Lambda, OpenWhisk):
        ``{"dask_faas": "<base64 payload>"}`` -> ``{"dask_faas": "<base64 response>"}``;
        ``request_id`` is the platform's id of the invocation.

        Raises
        ------
        ValueError
            For an event that holds no base64 payload under ``"dask_faas"``.
        IntegrityError, ProtocolError
            For a payload the runtime refuses (as :meth:`handle`).
        """
        encoded = event.get(protocol.JSON_FIELD) if isinstance(event, dict) else None
        if not isinstance(encoded, str):
            raise ValueError(
                f"the event is not a dask-faas invocation: expected {{'{protocol.JSON_FIELD}': '<base64>'}}"
            )
        try:
            payload = base64.b64decode(encoded, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"the event's {protocol.JSON_FIELD!r} is not base64: {exc}") from None
        reply = self.handle(payload, request_id=request_id)
        return {protocol.JSON_FIELD: base64.b64encode(reply).decode("ascii")}

    # -- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _read(store: SignedStore, value: bytes | Ref) -> bytes | memoryview:
        return store.fetch(value) if isinstance(value, Ref) else value

    def _function(self, store: SignedStore, ref: Ref) -> Any:
        fn = self._functions.get(ref.key)
        if fn is None:
            fn = serialize.loads(self._read(store, ref))
            self._functions[ref.key] = fn
            if len(self._functions) > self._max_cached:
                self._functions.popitem(last=False)
        else:
            self._functions.move_to_end(ref.key)
        return fn

    @staticmethod
    def _output(context: Context, inline_limit: int, data: bytes) -> bytes | Ref:
        if len(data) <= inline_limit:
            return data
        return context.store.put(f"out/{context.tag}", data)


def _clean_up_if_the_job_ended(storage: Storage, inv: Invocation) -> None:
    """Delete the job's prefix again if the job ended while this delivery ran and wrote.

    A platform's duplicate, or a delivery the client stopped waiting for, can outlive its job, and
    its writes can land after the client deleted the prefix. The client deletes the job's function
    objects before it lists the rest of the prefix (:meth:`dask_faas.job.Job.close`): a delivery
    that finds its function there after its writes wrote before that listing (which deletes them);
    one that finds it gone may have been missed, and deletes the prefix itself.
    """
    try:
        if not storage.exists(inv.function.key):
            storage.delete_prefix(inv.prefix + "/")
    except OSError:  # storage unreachable now: the response fails the same way, the client's cleanup stands
        pass


class _StartMark:
    """Writes the invocation's start mark if the call is still running ``start_mark_s`` after it began.

    Short calls (most of them) write nothing; a long one writes one small object, which tells the
    client at its start deadline that this delivery did start (see :attr:`Invocation.start_mark_s`).
    """

    def __init__(self, store: SignedStore, inv: Invocation) -> None:
        self._store, self._name = store, protocol.start_mark_name(inv.call, inv.attempt, inv.delivery)
        self._lock = threading.Lock()
        self._state = "waiting"  # -> "written" or "cancelled"
        self._timer: threading.Timer | None = None
        if inv.start_mark_s is not None:
            self._timer = threading.Timer(inv.start_mark_s, self._write)
            self._timer.daemon = True
            self._timer.start()

    def _write(self) -> None:
        with self._lock:
            if self._state != "waiting":
                return
            try:
                self._store.put(self._name, b"")
            except Exception:  # a mark that cannot be written costs a re-delivery at most
                return
            self._state = "written"

    def cancel(self) -> bool:
        """Stop the timer; return whether the mark was written (the client then deletes it)."""
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            written = self._state == "written"
            self._state = "cancelled"
        return written


_warm: Runtime | None = None
_warm_lock = threading.Lock()


def warm_runtime() -> Runtime:
    """This process's :class:`Runtime`, made from the environment at the first call and kept for
    the life of the (warm) function instance."""
    global _warm
    with _warm_lock:
        if _warm is None:
            _warm = Runtime.from_environ()
        return _warm


def _dumps_results(results: list[Any]) -> bytes:
    try:
        return serialize.dumps(results)
    except Exception as exc:
        for index, value in enumerate(results):
            try:
                serialize.dumps(value)
            except Exception:
                raise SerializationError(
                    f"the result of call {index} cannot be pickled ({type(value).__qualname__}): {exc}"
                ) from exc
        raise


# -- memory limits --------------------------------------------------------------------------

#: Share of an instance's memory kept out of its in-process limit (at least what a platform counts
#: and ``RLIMIT_DATA`` does not: pages of shared libraries loaded later, the kernel's own), so that
#: the process's own limit comes before the platform's kill.
INSTANCE_RESERVE = 1 / 8
#: Where a container's memory limit can be read (cgroup v2, then v1).
_CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def container_memory_mb(environ: Mapping[str, str] | None = None) -> int | None:
    """The memory of this function instance in MiB, or None where it is not known.

    ``DASK_FAAS_MEMORY_MB`` when set (``dask-faas runtime deploy`` writes it for Knative from the
    Service's memory limit), else the limit of the container's cgroup when one is readable
    (``memory.max`` of cgroup v2, ``memory.limit_in_bytes`` of v1; "max" or a v1 value of
    2**60 or more is no limit).

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default: this process's).

    Returns
    -------
    int or None

    Raises
    ------
    ValueError
        When ``DASK_FAAS_MEMORY_MB`` is not a positive integer.
    """
    environ = os.environ if environ is None else environ
    text = environ.get(MEMORY_ENV, "").strip()
    if text:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{MEMORY_ENV} must be a positive integer (MiB), got {text!r}")
        return int(text)
    for path in _CGROUP_LIMITS:
        try:
            with open(path) as f:
                raw = f.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) < 2**60:
            return max(1, int(raw) // 2**20)
        return None
    return None


class MemoryLimit:
    """A memory limit enforced by this process on itself: a soft ``RLIMIT_DATA``.

    An allocation past it fails at once with ``MemoryError`` (the kernel refuses the mapping), where
    a platform sampling the resident memory would see it late or kill the process. ``RLIMIT_DATA``
    (private writable mappings, Linux >= 4.7) rather than ``RLIMIT_AS``: measured with Python 3.11
    on Linux 6, the address space counts every reservation that is never written, 64 MiB per
    thread's malloc arena and the shared libraries (8 threads after ``import dask.dataframe``: 2 GB
    of address space for 150 MB resident), while the data size follows what is written (1.3 GB
    there, most of it one reservation of pyarrow's mimalloc, which :meth:`apply` makes 64 MiB by
    setting ``MIMALLOC_ARENA_RESERVE`` when it is not set). Only the soft limit is set: the hard one
    stays, so the limit can be lifted after a call.

    Parameters
    ----------
    memory_mb : int
        The limit, as the platform or the call states it.
    whole_instance : bool
        False (per call): the process may add ``memory_mb`` of data to what it had at :meth:`apply`.
        True (an instance's memory, applied once): what the process has resident at :meth:`apply`
        and :data:`INSTANCE_RESERVE` of ``memory_mb`` count against it.

    A ``with`` block applies the limit and lifts it (to what it was before) at its end.
    """

    def __init__(self, memory_mb: int, whole_instance: bool = False) -> None:
        self.memory_mb = memory_mb
        self.whole_instance = whole_instance
        self._previous: tuple[int, int] | None = None

    def apply(self) -> bool:
        """Set the limit (never above one already in force).

        Returns
        -------
        bool
            False where this system cannot tell the process's data size (no ``/proc``): then
            nothing is set and the platform's own limit is the only one.
        """
        data = capture.data_bytes()
        if data is None:
            return False
        allowance = self.memory_mb * 2**20
        if self.whole_instance:
            allowance -= (capture.status_bytes("VmRSS") or 0) + int(allowance * INSTANCE_RESERVE)
        os.environ.setdefault("MIMALLOC_ARENA_RESERVE", "64MiB")  # read when pyarrow loads
        soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
        self._previous = (soft, hard)
        limit = data + max(0, allowance)
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        return True

    def lift(self) -> None:
        """Put back the limit that was in force before :meth:`apply`."""
        if self._previous is not None:
            resource.setrlimit(resource.RLIMIT_DATA, self._previous)
            self._previous = None

    def __enter__(self) -> MemoryLimit:
        self.apply()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.lift()


def _over_the_limit(exc: MemoryError, inv: Invocation, fn: Any, memory_mb: int) -> FunctionMemoryError:
    """The :class:`FunctionMemoryError` answered for a ``MemoryError`` under a limit: it names the
    call and the limit, keeps the original (its traceback is the remote one) and its attributes
    (the task that raised, notes)."""
    name = ""
    if isinstance(fn, types.FunctionType) and not fn.__module__.startswith("dask_faas."):
        name = f" of {fn.__qualname__}"  # a submitted function (a graph's task is named by its key)
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error = FunctionMemoryError(
        f"call {inv.call} (attempt {inv.attempt}){name} exceeded its memory limit memory_mb={memory_mb}: "
        f"an allocation failed inside the function process ({detail}); the process stays usable"
    )
    error.__dict__.update(exc.__dict__)
    error.__cause__ = exc
    return error
