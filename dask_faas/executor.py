"""``FaasExecutor``: a :class:`concurrent.futures.Executor` whose every call is a function invocation.

Built the way CPython's executors are: everything rests on one submit of a *batch* of calls
(``submit`` sends a batch of one, ``map`` batches of ``chunksize``, through
:class:`~dask_faas.dispatch.Dispatcher`), futures are real :class:`concurrent.futures.Future`
objects, and a remote exception is re-raised with its remote traceback as ``__cause__``. Between the
client and a function travel only signed payloads; the function body is uploaded once per job, large
arguments and results go through storage, and the job's storage prefix is deleted when the executor
shuts down (or the interpreter exits, or Ctrl-C interrupts a ``with`` block).

The graph engine and the Lithops facade use the executor through :attr:`FaasExecutor.session`
(:class:`~dask_faas.session.Session`) only.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas

from . import config, protocol, records
from .backends.compute import ComputeBackend
from .backends.compute import registry as compute_registry
from .backends.storage import Storage, storage_from_settings
from .deadlines import BackupRule
from .dispatch import Dispatcher
from .exceptions import ConfigError
from .job import Job
from .session import CallOptions, Session
from .store import CountedStorage

__all__ = ["CallOptions", "FaasExecutor", "function_environment"]

logger = logging.getLogger("dask_faas")


class _Resources:
    """What an executor must release, apart from the executor (for ``weakref.finalize``).

    :meth:`release` runs once; a second caller waits until the first one has finished, so the
    interpreter's exit (``weakref.finalize``'s atexit hook) never cuts a release short.
    """

    def __init__(self, dispatcher: Dispatcher, job: Job, owns_storage: bool) -> None:
        self.dispatcher, self.job, self.owns_storage = dispatcher, job, owns_storage
        self._lock = threading.Lock()
        self.released = False

    def release(self) -> None:
        with self._lock:
            if self.released:
                return
            try:
                self.dispatcher.stop()
                self.dispatcher.backend.close()
            finally:
                try:
                    self.job.close()
                    if self.owns_storage:
                        self.job.storage.close()
                finally:
                    self.released = True


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
        ``retries``, ``retry_backoff_s``, ``retry_on``, ``backups``, ``inline_limit``, ``prefix``,
        ``progress``, ``signing_key``, ``local_storage={...}``, ``s3={...}``); unset ones come
        from ``dask.config`` (see ``faas.yaml``).

    Notes
    -----
    Retries: a call that failed on the platform or the storage (time or memory limit, a dead
    process, a lost call) is invoked again up to ``retries`` times; so is one that raised, as with
    Dask's ``retries=``, unless ``retry_on`` (a tuple of exception types) leaves its exception out.
    An :class:`~dask_faas.exceptions.IntegrityError` (a payload, response or stored object failing
    its signature) is never retried, nor is a protocol, serialization or configuration error
    (:meth:`CallOptions.retried <dask_faas.session.CallOptions.retried>`).

    Backups (``backups``, on by default for remote platforms): a call running over 3 times the
    median of its finished siblings (the calls of one ``map``, or of one function) is invoked
    once more while it runs; the first result wins (:class:`~dask_faas.deadlines.BackupRule`).

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
        options = CallOptions(
            timeout_s=config.positive(s, "timeout-s"),
            memory_mb=config.positive(s, "memory-mb", int),
            retries=_non_negative_int(s, "retries"),
            retry_backoff_s=float(s["retry-backoff-s"]),
            retry_on=config.exception_types(s, "retry-on"),
        )
        self._progress = bool(s["progress"])
        logs = s["logs"] or {}
        log_bytes = _non_negative_int(logs, "max-bytes", "logs.max-bytes")
        keep_jobs = config.positive(logs, "keep-jobs", int, "logs.keep-jobs")
        forward = _boolean(logs, "forward", "logs.forward")
        #: The invocation records of this executor (see :meth:`invocations`).
        self.records = records.Recorder(
            config.positive(s, "records-kept", int), enabled=_boolean(s, "records", "records")
        )
        backend_cls: type[ComputeBackend] = compute_registry.load(s["backend"])
        _check_limits(backend_cls, options)
        backups = BackupRule() if _backups(s, backend_cls) else None
        # what does not fit in the platform's payloads goes through storage
        inline_limit = min(_non_negative_int(s, "inline-limit"), backend_cls.inline_capacity())
        if backend_cls.deployed_beforehand and not s["signing-key"]:
            raise ConfigError(
                f"the {backend_cls.name} backend runs a function deployed beforehand, which holds its "
                "signing key: set 'faas.signing-key' to that key (dask-faas runtime deploy prints it)"
            )
        self._storage = storage_obj = storage_from_settings(s)
        if storage_obj.process_local:
            raise ConfigError(
                f"storage {storage_obj.name!r} lives in this process only, but functions run in "
                f"other processes: set 'faas.storage' to 'local' or 's3'"
            )
        storage_obj.check()
        key = bytes.fromhex(s["signing-key"]) if s["signing-key"] else protocol.new_key()
        environment = function_environment(s, storage_obj, key)
        backend_obj = backend_cls.from_settings(environment, s)
        # the job's requests are counted by kind (ComputeReport.storage_requests)
        self._counted = CountedStorage(storage_obj)
        self._job = job = Job(self._counted, key, s["prefix"], _ship_modules(s, backend_cls))
        start_deadline = config.positive(s, "start-deadline-s")
        writer = records.LogWriter(records.log_directory(s), job.id, keep_jobs)
        observer = records.Observer(job.id, backend_cls.name, self.records, writer, forward)
        self._calls = calls = Dispatcher(
            backend_obj, job, key, inline_limit, options, start_deadline, backups, observer, log_bytes
        )
        #: Counters of this executor: ``calls``, ``invocations`` (retries, re-deliveries and
        #: backups included), ``retries``, ``redeliveries`` (attempts sent again because they did
        #: not start), ``backups`` (stragglers invoked again), ``backups_won`` (calls whose result
        #: came from the backup), ``bytes_received``.
        self.stats = calls.stats
        #: The :class:`~dask_faas.scheduler.ComputeReport` of the latest Dask compute.
        self.last_report: Any = None
        #: What the graph engine and the facade use of this executor (the engine seam).
        self.session = Session(
            store=job,
            settings=types.MappingProxyType(s),
            options=options,
            num_workers=backend_obj.concurrency,
            inline_limit=inline_limit,
            _submit=calls.submit,
            _count_received=calls.count_received,
            _closed=lambda: calls.closed,
            _longest_call=calls.longest_call_s,
        )
        self._resources = _Resources(calls, job, not isinstance(s["storage"], Storage))
        weakref.finalize(self, self._resources.release)

    # -- public API ------------------------------------------------------------------------

    @property
    def settings(self) -> dict[str, Any]:
        """The effective ``faas`` settings of this executor (a copy)."""
        return dict(self._settings)

    @property
    def backend(self) -> ComputeBackend:
        """The compute backend (FaaS platform) this executor's calls run on."""
        return self._calls.backend

    @property
    def storage(self) -> Storage:
        """The storage this executor's functions share."""
        return self._storage

    @property
    def job_prefix(self) -> str:
        """Storage prefix of this executor's job (deleted at shutdown)."""
        return self._job.prefix

    @property
    def job_id(self) -> str:
        """This executor's job id (its logs are under ``faas.logs.directory/<job id>``)."""
        return self._job.id

    def invocations(self) -> pandas.DataFrame:
        """Every invocation of this executor so far (the latest ``faas.records-kept``), one row
        each, retries, re-deliveries and backups included: :func:`dask_faas.records.frame`."""
        return records.frame(self.records.records())

    def logs(self, call_or_future: str | cf.Future[Any] | None = None) -> str:
        """What this executor's functions printed and logged (capped at ``faas.logs.max-bytes``
        per invocation), each invocation's part headed by its call, attempt and tasks.

        Parameters
        ----------
        call_or_future : str or Future, optional
            One call (its id, as in :meth:`invocations`) or the future ``submit`` returned;
            default: every call of the executor.

        Raises
        ------
        FileNotFoundError
            When that call (or no call) printed anything.
        """
        call = call_or_future
        if isinstance(call_or_future, cf.Future):
            call = self._calls.call_ids.get(call_or_future)
            if call is None:
                raise ValueError("the future was not returned by this executor's submit or map")
        return records.read_logs(self._job.id, call, self._settings)

    def storage_requests(self) -> dict[str, int]:
        """The storage requests this executor's client made so far, by kind (put, get, head,
        list, delete); its functions' requests are in their records' totals
        (``records.function_requests``)."""
        return self._counted.counts()

    def plot(self, filename: str) -> None:
        """Draw the invocation timeline to ``filename`` (an image, with matplotlib: the ``plot``
        extra), see :func:`dask_faas.plot.timeline`."""
        from . import plot

        plot.timeline(self.invocations(), filename)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future[Any]:
        """Invoke ``fn(*args, **kwargs)`` as one function call; return its future.

        Raises
        ------
        SerializationError
            At once, naming the argument, when an argument cannot be pickled.
        RuntimeError
            After :meth:`shutdown`.
        """
        return self.session.submit(self.session.function(fn), [(args, kwargs)], unwrap=True)

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

        Raises
        ------
        SerializationError
            At once, naming the item and the argument, when an argument cannot be pickled.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        end = None if timeout is None else timeout + time.monotonic()
        function = self.session.function(fn)
        futures: list[cf.Future[Any]] = []
        try:
            for index, chunk in enumerate(_batched(zip(*iterables), chunksize)):  # noqa: B905 - zip's
                calls = [(args, {}) for args in chunk]
                futures.append(self.session.submit(function, calls, first_index=index * chunksize))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
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

        Raises
        ------
        TimeoutError
            With ``wait``, when no submitted call has finished for longer than the longest one call
            may take (its limits, retries included); the pool is released all the same.
        """
        futures = self._stop_accepting(cancel_futures)
        if wait:
            self._release_when_done(futures, log=False)
        else:
            threading.Thread(target=self._release_when_done, args=(futures,), daemon=True).start()

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        """Dask's scheduler-get protocol: ``dask.compute(x, scheduler=executor)`` runs ``faas_get``.

        This and :meth:`persist` are the one lazy hook from the executor up to the scheduler,
        which is built on the executor's :attr:`session`.
        """
        from .scheduler import compute_with

        return compute_with(self, dsk, keys, **kwargs)

    def persist(self, collections: Any, optimize_graph: bool = True, **kwargs: Any) -> list[Any]:
        """Dask's scheduler ``persist`` protocol: ``dask.persist(x, scheduler=executor)``.

        The partitions stay in object storage until the persisted collections are dropped or the
        executor shuts down.
        """
        from .scheduler import persist

        return persist(self, collections, optimize_graph, **kwargs)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is not None and not issubclass(exc_type, Exception):
            # Ctrl-C, SystemExit: stop the running calls and delete the job's objects now, in this
            # thread, before the interpreter exits
            self._stop_accepting(cancel_futures=True)
            self._resources.release()
        else:
            self.shutdown(wait=True)
        return False

    # -- internals ---------------------------------------------------------------------------

    def _stop_accepting(self, cancel_futures: bool) -> list[cf.Future[Any]]:
        self._calls.close()
        futures = self._calls.pending()
        if cancel_futures:
            for future in futures:
                future.cancel()
        return futures

    def _release_when_done(self, futures: list[cf.Future[Any]], log: bool = True) -> None:
        """Wait for ``futures`` within their deadlines, then release (whatever happened)."""
        try:
            _wait_with_deadline(futures, self._calls.wait_bound_s)
        except TimeoutError:
            if not log:
                raise
            logger.exception("dask-faas: shutdown(wait=False) released the executor with calls unfinished")
        finally:
            self._resources.release()


def function_environment(settings: dict[str, Any], storage: Storage, key: bytes) -> dict[str, str]:
    """The environment of a deployed function: what the storage's functions need
    (:meth:`~dask_faas.backends.storage.base.Storage.deployment_environment`, the client's storage
    credentials), then ``faas.environment``, which wins (functions given credentials of their own,
    e.g. confined to the job prefix), then the signing key. The local pool starts its processes
    with it; ``dask-faas runtime deploy`` writes it into a platform's function."""
    variables = settings.get("environment") or {}
    return {
        **storage.deployment_environment(),
        **{name: str(value) for name, value in variables.items() if value is not None},
        protocol.KEY_ENV: key.hex(),
    }


def _ship_modules(settings: dict[str, Any], backend: type[ComputeBackend]) -> bool:
    """``faas.ship-modules``: true, false, or "auto" (for functions deployed beforehand)."""
    value = settings["ship-modules"]
    if value == "auto":
        return backend.deployed_beforehand
    if not isinstance(value, bool):
        raise ConfigError(f"setting 'faas.ship-modules' must be true, false or 'auto', got {value!r}")
    return value


def _backups(settings: dict[str, Any], backend: type[ComputeBackend]) -> bool:
    """``faas.backups``: true, false, or "auto" (for functions deployed beforehand: remote platforms)."""
    value = settings["backups"]
    if value == "auto":
        return backend.deployed_beforehand
    if not isinstance(value, bool):
        raise ConfigError(f"setting 'faas.backups' must be true, false or 'auto', got {value!r}")
    return value


def _check_limits(backend: type[ComputeBackend], options: CallOptions) -> None:
    """Refuse limits the platform cannot grant, naming the setting and the platform's limit."""
    if options.timeout_s > backend.max_timeout_s:
        raise ConfigError(
            f"setting 'faas.timeout-s' = {options.timeout_s:g} exceeds the {backend.name} backend's "
            f"limit of {backend.max_timeout_s:g} s (max_timeout_s)"
        )
    if options.memory_mb > backend.max_memory_mb:
        raise ConfigError(
            f"setting 'faas.memory-mb' = {options.memory_mb} exceeds the {backend.name} backend's "
            f"limit of {backend.max_memory_mb} MB (max_memory_mb)"
        )


def _wait_with_deadline(futures: list[cf.Future[Any]], longest_s: float) -> None:
    """Wait for ``futures``; TimeoutError when none finishes within ``longest_s`` of the last one."""
    pending = set(futures)
    while pending:
        done, pending = cf.wait(pending, timeout=longest_s, return_when=cf.FIRST_COMPLETED)
        if not done:
            raise TimeoutError(
                f"{len(pending)} calls still unfinished after {longest_s:g} s without any call "
                "finishing, longer than one call may take with its limits and retries"
            )


def _non_negative_int(settings: dict[str, Any], name: str, setting: str | None = None) -> int:
    value = settings[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"setting 'faas.{setting or name}' must be a non-negative integer, got {value!r}")
    return value


def _boolean(settings: dict[str, Any], name: str, setting: str) -> bool:
    value = settings[name]
    if not isinstance(value, bool):
        raise ConfigError(f"setting 'faas.{setting}' must be true or false, got {value!r}")
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
