"""``FaasExecutor``: a :class:`concurrent.futures.Executor` whose every call is a function invocation.

Built the way CPython's executors are: everything rests on one internal submit of a *batch* of calls
(``submit`` sends a batch of one, ``map`` batches of ``chunksize``), futures are real
:class:`concurrent.futures.Future` objects, and a remote exception is re-raised with its remote
traceback as ``__cause__``. Between the client and a function travel only signed payloads; the
function body is uploaded once per job, large arguments and results go through storage, and the
job's storage prefix is deleted when the executor shuts down (or the interpreter exits).
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import random
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from . import config, protocol, serialize
from .backends.compute import ComputeBackend, InvokeOptions
from .backends.compute import registry as compute_registry
from .backends.storage import Storage, storage_from_settings
from .exceptions import ConfigError, IntegrityError, PayloadTooLargeError
from .job import Job
from .protocol import Invocation, Ref, Response

__all__ = ["CallOptions", "FaasExecutor"]


@dataclass(frozen=True)
class CallOptions:
    """Limits and retry policy of the calls an executor (or one of its views) submits."""

    timeout_s: float
    memory_mb: int
    retries: int
    retry_backoff_s: float


@dataclass(eq=False)
class _Call:
    """One batch of calls on its way through invocations and retries."""

    id: str
    fn_name: str
    function: Ref
    args: bytes | Ref
    options: CallOptions
    future: cf.Future[Any]
    unwrap: bool
    attempt: int = 0
    started: bool = field(default=False)

    def label(self) -> str:
        return f"call {self.id} (attempt {self.attempt}) of {self.fn_name}"

    def start(self) -> bool:
        """Mark the user's future running; False if it was cancelled while queued."""
        if not self.started:
            self.started = True
            return self.future.set_running_or_notify_cancel()
        return True


class _Resources:
    """What an executor must release, apart from the executor (for ``weakref.finalize``)."""

    def __init__(self, backend: ComputeBackend, job: Job, owns_storage: bool) -> None:
        self.backend, self.job, self.owns_storage = backend, job, owns_storage
        self.released = threading.Event()

    def release(self) -> None:
        try:
            self.backend.close()
        finally:
            try:
                self.job.close()
                if self.owns_storage:
                    self.job.storage.close()
            finally:
                self.released.set()


class FaasExecutor(cf.Executor):
    """Run calls as FaaS invocations, with object storage as the only shared state.

    Parameters
    ----------
    backend : str, optional
        Compute backend (``faas.backend``); ``"local"`` is the embedded warm process pool.
    storage : str or Storage, optional
        Storage backend (``faas.storage``): ``"local"``, ``"s3"``, or a :class:`Storage` instance.
    **settings
        Any other ``faas`` setting as a keyword (``workers``, ``timeout_s``, ``memory_mb``,
        ``retries``, ``retry_backoff_s``, ``inline_limit``, ``prefix``, ``progress``,
        ``signing_key``, ``local_storage={...}``, ``s3={...}``); unset ones come from
        ``dask.config`` (see ``faas.yaml``).

    Raises
    ------
    ConfigError
        Before any invocation, for an unknown setting or backend, a missing bucket, and so on.
    PermissionError
        Before any invocation, when the storage refuses the credentials.

    Examples
    --------
    >>> with FaasExecutor() as ex:                              # doctest: +SKIP
    ...     list(ex.map(pow, [2, 3], [5, 2]))
    [32, 9]
    """

    def __init__(
        self, backend: str | None = None, storage: str | Storage | None = None, **settings: Any
    ) -> None:
        overrides = {k: v for k, v in (("backend", backend), ("storage", storage)) if v is not None}
        self._settings = s = config.resolve({**settings, **overrides})
        self._options = CallOptions(
            timeout_s=config.positive(s, "timeout-s"),
            memory_mb=config.positive(s, "memory-mb", int),
            retries=_non_negative_int(s, "retries"),
            retry_backoff_s=float(s["retry-backoff-s"]),
        )
        self._inline_limit = _non_negative_int(s, "inline-limit")
        self._progress = bool(s["progress"])
        backend_cls: type[ComputeBackend] = compute_registry.load(s["backend"])
        self._storage = storage_obj = storage_from_settings(s)
        if storage_obj.process_local:
            raise ConfigError(
                f"storage {storage_obj.name!r} lives in this process only, but functions run in "
                f"other processes: set 'faas.storage' to 'local' or 's3'"
            )
        storage_obj.check()
        self._key = bytes.fromhex(s["signing-key"]) if s["signing-key"] else protocol.new_key()
        environment = {
            **{name: str(value) for name, value in (s["environment"] or {}).items() if value is not None},
            **storage_obj.deployment_environment(),
            protocol.KEY_ENV: self._key.hex(),
        }
        self._backend = backend_cls.from_settings(environment, s)
        self._job = Job(storage_obj, self._key, s["prefix"])
        self._max_workers = self._backend.concurrency
        self._ids = itertools.count()
        self._futures: set[cf.Future[Any]] = set()
        self._lock = threading.Lock()
        self._shutdown = False
        self.stats = {"calls": 0, "invocations": 0, "retries": 0, "bytes_received": 0}
        #: The :class:`~dask_faas.scheduler.ComputeReport` of the latest Dask compute.
        self.last_report: Any = None
        self._resources = _Resources(self._backend, self._job, not isinstance(s["storage"], Storage))
        self._finalizer = weakref.finalize(self, self._resources.release)

    # -- public API ------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The effective ``faas`` settings of this executor (a copy)."""
        return dict(self._settings)

    @property
    def storage(self) -> Storage:
        """The storage this executor's functions share."""
        return self._storage

    @property
    def job_prefix(self) -> str:
        """Storage prefix of this executor's job (deleted at shutdown)."""
        return self._job.prefix

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Invoke ``fn(*args, **kwargs)`` as one function call; return its future.

        Raises
        ------
        SerializationError
            At once, naming the argument, when an argument cannot be pickled.
        RuntimeError
            After :meth:`shutdown`.
        """
        return self._submit(fn, self._job_function(fn), [(args, kwargs)], unwrap=True)

    def map(
        self,
        fn: Callable[..., Any],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        progress: bool | None = None,
    ) -> Iterator[Any]:
        """Lazily yield ``fn(*args)`` for args in ``zip(*iterables)``, in order.

        Parameters
        ----------
        timeout : float, optional
            Seconds from this call after which iterating raises ``TimeoutError``.
        chunksize : int
            Calls batched into one invocation.
        progress : bool, optional
            Show a tqdm progress bar (default: ``faas.progress``).
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else timeout + time.monotonic()
        ref = self._job_function(fn)
        futures = [
            self._submit(fn, ref, [(args, {}) for args in chunk], unwrap=False)
            for chunk in _batched(zip(*iterables), chunksize)  # noqa: B905 - zip semantics
        ]
        bar = _progress_bar(futures, self._progress if progress is None else progress, fn)
        return _results(futures, end, bar)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop accepting calls; release the pool and delete the job's storage prefix.

        Parameters
        ----------
        wait : bool
            Wait for the calls already submitted (then release at once); otherwise release in the
            background when they are done.
        cancel_futures : bool
            Cancel the calls that have not started.
        """
        with self._lock:
            self._shutdown = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()
        if wait:
            cf.wait(futures)
            self._finalizer()
            self._resources.released.wait()  # also when a shutdown(wait=False) started it
        else:
            threading.Thread(target=lambda: (cf.wait(futures), self._finalizer()), daemon=True).start()

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Dask's scheduler-get protocol: ``dask.compute(x, scheduler=executor)`` runs ``faas_get``."""
        from .scheduler import compute_with  # the scheduler builds on the executor, not the reverse

        return compute_with(self, dsk, keys, **kwargs)

    def persist(self, collections: Any, optimize_graph: bool = True, **kwargs: Any) -> list[Any]:
        """Dask's scheduler ``persist`` protocol: ``dask.persist(x, scheduler=executor)``.

        The partitions stay in object storage until the persisted collections are dropped or the
        executor shuts down.
        """
        from .scheduler import persist

        return persist(self, collections, optimize_graph, **kwargs)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None and not issubclass(exc_type, Exception):  # Ctrl-C, SystemExit
            self.shutdown(wait=False, cancel_futures=True)
            self._finalizer()
        else:
            self.shutdown(wait=True)
        return False

    # -- internals ---------------------------------------------------------------------------

    def _job_function(self, fn: Callable[..., Any]) -> Ref:
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        return self._job.function(fn)

    def _submit(
        self,
        fn: Any,
        function: Ref,
        calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
        unwrap: bool,
        options: CallOptions | None = None,
    ) -> cf.Future[Any]:
        """Invoke ``fn`` (uploaded as ``function``) over a batch of ``(args, kwargs)``."""
        call_id = str(next(self._ids))
        data = serialize.dumps_arguments(fn, calls)
        args = data if len(data) <= self._inline_limit else self._job.put(f"in/{call_id}", data)
        future: cf.Future[Any] = cf.Future()
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        call = _Call(call_id, name, function, args, options or self._options, future, unwrap)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._futures.add(future)
            self.stats["calls"] += len(calls)
        future.add_done_callback(self._forget)
        try:
            self._invoke(call)
        except BaseException:
            future.cancel()
            self._release_args(call)
            raise
        return future

    def _forget(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def _invoke(self, call: _Call) -> None:
        invocation = Invocation(
            job=self._job.id,
            call=call.id,
            attempt=call.attempt,
            function=call.function,
            args=call.args,
            storage=self._job.locator,
            prefix=self._job.prefix,
            inline_limit=self._inline_limit,
        )
        payload = protocol.seal(invocation, self._key)
        if len(payload) > self._backend.max_payload_bytes:
            raise PayloadTooLargeError(
                f"{call.label()}: payload of {len(payload)} bytes exceeds the {self._backend.name} "
                f"backend's {self._backend.max_payload_bytes}; lower 'faas.inline-limit'"
            )
        options = InvokeOptions(call.options.timeout_s, call.options.memory_mb, call.label(), call.start)
        with self._lock:
            self.stats["invocations"] += 1
        self._backend.invoke(payload, options).add_done_callback(partial(self._on_response, call))

    def _on_response(self, call: _Call, response: cf.Future[bytes]) -> None:
        if response.cancelled():
            self._release_args(call)
            return
        try:
            value = self._decode(call, response.result())
        except BaseException as exc:
            if call.attempt < call.options.retries and not call.future.done():
                self._retry(call)
                return
            self._release_args(call)
            call.future.set_exception(exc)
        else:
            self._release_args(call)
            call.future.set_result(value)

    def _decode(self, call: _Call, sealed: bytes) -> Any:
        reply: Response = protocol.unseal(sealed, self._key, what=f"response to {call.label()}")
        if (reply.call, reply.attempt) != (call.id, call.attempt):
            raise IntegrityError(f"response to {call.label()} answers call {reply.call} instead")
        data = reply.value
        self._count_received(len(sealed) + (data.size if isinstance(data, Ref) else 0))
        if isinstance(data, Ref):
            try:
                data = self._job.fetch(data)
            finally:
                self._job.delete(reply.value)
        if not reply.ok:
            raise serialize.loads_error(data)
        results = serialize.loads(data)
        return results[0] if call.unwrap else results

    def _count_received(self, nbytes: int) -> None:
        with self._lock:
            self.stats["bytes_received"] += nbytes

    def _retry(self, call: _Call) -> None:
        delay = call.options.retry_backoff_s * 2**call.attempt * random.uniform(0.5, 1.5)
        retried = replace(call, attempt=call.attempt + 1)
        with self._lock:
            self.stats["retries"] += 1
        timer = threading.Timer(delay, self._invoke_or_fail, (retried,))
        timer.daemon = True
        timer.start()

    def _invoke_or_fail(self, call: _Call) -> None:
        try:
            self._invoke(call)
        except BaseException as exc:  # e.g. the pool was closed meanwhile
            call.future.set_exception(exc)

    def _release_args(self, call: _Call) -> None:
        if isinstance(call.args, Ref):
            self._job.delete(call.args)


def _non_negative_int(settings: dict[str, Any], name: str) -> int:
    value = settings[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"setting 'faas.{name}' must be a non-negative integer, got {value!r}")
    return value


def _batched(iterable: Iterable[Any], n: int) -> Iterator[tuple[Any, ...]]:
    iterator = iter(iterable)
    while chunk := tuple(itertools.islice(iterator, n)):
        yield chunk


def _progress_bar(futures: list[cf.Future[Any]], enabled: bool, fn: Any) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError("progress bars need tqdm: pip install 'dask-faas[progress]'") from exc
    bar = tqdm(total=len(futures), desc=getattr(fn, "__name__", "map"), unit="inv")
    for future in futures:
        future.add_done_callback(lambda _: bar.update())
    return bar


def _results(futures: list[cf.Future[Any]], end: float | None, bar: Any) -> Iterator[Any]:
    """Yield the results of ``futures`` in order; cancel the rest if the consumer stops."""
    try:
        futures.reverse()
        while futures:
            future = futures.pop()
            if end is None:
                yield from future.result()
            else:
                yield from future.result(end - time.monotonic())
    finally:
        for future in futures:
            future.cancel()
        if bar is not None:
            bar.close()
