"""Lithops' ``FunctionExecutor`` (and PyWren-IBM's constructors) on a :class:`~dask_faas.FaasExecutor`."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._binding import as_list, bind, parameter_names
from ._calls import call_keywords, data_of, internal_execution, options_for, submit_calls
from ._config import config_from_files, faas_settings, s3_storage_options, split_ignored, warn_ignored
from ._futures import ALL_COMPLETED, FuturesList, ResponseFuture, keep_alive, results_of, wait_for
from ._map_reduce import groups_by_object, map_reduce_graph, run_graph
from ._objects import expand_objects
from ._storage import LITHOPS_NAMES, StorageClient
from ._stored import register

if TYPE_CHECKING:
    from ..executor import FaasExecutor

_Calls = tuple[list[dict[str, Any]], list[int], list[dict[str, Any]]]


class FunctionExecutor:
    """Lithops' ``FunctionExecutor`` on a :class:`~dask_faas.FaasExecutor`.

    Parameters
    ----------
    config : dict, optional
        A Lithops configuration: ``lithops.backend``/``lithops.storage`` and an ``aws_s3``,
        ``ibm_cos``, ``minio`` or ``ceph`` section (``endpoint``, ``access_key_id``,
        ``secret_access_key``, ``region``, ``storage_bucket``) become ``faas`` settings.
    backend, storage : str, optional
        Lithops names (``localhost``, ``aws_s3``, ``ibm_cos``, ...) or dask-faas ones.
    executor : FaasExecutor, optional
        Run on this executor (it is not shut down by :meth:`close`).
    storage_options : dict, optional
        Options for listing ``s3://`` data on the client (default: the executor's ``faas.s3``).
    **settings
        ``faas`` settings (``workers``, ``timeout_s``, ``s3={...}``, ...); Lithops'
        ``runtime_memory``, ``runtime_timeout`` and ``max_workers`` are understood.

    Attributes
    ----------
    executor_id : str
        The executor's id (the last segment of its job prefix).
    backend : str
        The name of the compute backend.
    futures : list of ResponseFuture
        The futures of every call not cleaned yet.
    last_call : str or None
        ``"call_async"``, ``"map"`` or ``"map_reduce"``.
    config : dict
        The Lithops configuration it was made with (``lithops.retries`` is read by
        :class:`~dask_faas.compat.RetryingFunctionExecutor`).
    url_inputs : bool
        PyWren-IBM's rule, set by its constructors: a ``url`` parameter takes HTTP(S) inputs.
    """

    def __init__(
        self,
        mode: str | None = None,
        config: dict[str, Any] | None = None,
        config_file: str | None = None,
        backend: str | None = None,
        storage: str | None = None,
        monitoring: str | None = None,
        log_level: Any = False,
        *,
        executor: FaasExecutor | None = None,
        storage_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        if mode == "localhost" and backend is None:
            backend = "localhost"
        mode = None if mode in ("localhost", "serverless") else mode
        settings, ignored = split_ignored({**settings, "mode": mode, "monitoring": monitoring})
        warn_ignored(ignored, "FunctionExecutor")
        backend = backend or settings.pop("compute_backend", None)
        storage = storage or settings.pop("storage_backend", None)
        if config_file is not None:
            from .config import load_yaml_config

            config = load_yaml_config(config_file)
        elif config is None and executor is None:
            config = config_from_files()
        self.config: dict[str, Any] = config or {"lithops": {}}
        self._owned = executor is None
        if executor is None:
            from ..executor import FaasExecutor  # not at import: functions import this package light

            faas = faas_settings(config, backend, storage, settings)
            if "storage" not in faas:
                faas.update(internal_execution())
            executor = FaasExecutor(**{k: v for k, v in faas.items() if v is not None})
        self._ex = executor
        register(executor.session.store)
        self.executor_id = executor.job_prefix.rsplit("/", 1)[-1]
        self.backend = executor.settings["backend"]
        self.futures: list[ResponseFuture] = []
        self.last_call: str | None = None
        self._jobs = itertools.count()
        self._graphs = cf.ThreadPoolExecutor(4, thread_name_prefix="dask-faas-compat")
        if storage_options is None:
            storage_options = s3_storage_options(executor.settings.get("s3") or {})
        self._storage_options = storage_options
        self._warned: set[str] = set()
        #: PyWren-IBM's rule (its constructors set it): a ``url`` parameter takes HTTP inputs,
        #: chunked as ``obj`` ones are.
        self.url_inputs = False

    @property
    def executor(self) -> FaasExecutor:
        """The :class:`~dask_faas.FaasExecutor` the calls run on."""
        return self._ex

    @property
    def storage(self) -> StorageClient:
        """A Lithops-style storage client of the executor's storage, on the client (its
        cloudobjects live under the executor's job prefix, deleted with it)."""
        backend = (self.config.get("lithops") or {}).get("storage")
        storage = self._ex.storage
        name = backend if backend and backend != storage.name else LITHOPS_NAMES.get(storage.name)
        return StorageClient(storage, backend=name, cloudobject_prefix=self._ex.job_prefix)

    # -- submitting ------------------------------------------------------------------------

    def call_async(
        self,
        func: Callable[..., Any],
        data: Any,
        extra_env: Any = None,
        runtime_memory: int | None = None,
        timeout: float | None = None,
        include_modules: Any = None,
        exclude_modules: Any = None,
        **pywren: Any,
    ) -> ResponseFuture:
        """Run ``func`` once over ``data`` (tuple: positional, dict: by name, else the first parameter).

        ``runtime_memory`` (MiB) and ``timeout`` (s) set this call's limits.
        """
        self.last_call = "call_async"
        kw = self._keywords(
            pywren, extra_env=extra_env, include_modules=include_modules, exclude_modules=exclude_modules
        )
        calls = self._calls(func, [data_of(data)], kw.get("extra_args"), None, None, "\n")
        return self._map(
            "A", func, calls, None, options_for(self._ex.session.options, runtime_memory, timeout)
        )[0]

    def map(
        self,
        map_function: Callable[..., Any],
        map_iterdata: Any,
        chunksize: int | None = None,
        extra_args: Any = None,
        extra_env: Any = None,
        runtime_memory: int | None = None,
        obj_chunk_size: int | None = None,
        obj_chunk_number: int | None = None,
        obj_newline: str | None = "\n",
        timeout: float | None = None,
        include_modules: Any = None,
        exclude_modules: Any = None,
        **pywren: Any,
    ) -> FuturesList:
        """One call per element of ``map_iterdata`` (or per object/chunk for an ``obj`` function).

        Futures in ``map_iterdata`` are replaced by their results. ``runtime_memory`` (MiB) and
        ``timeout`` (s) set the limits of these calls; PyWren-IBM's ``extra_params``,
        ``chunk_size`` and ``chunk_n`` are understood.
        """
        self.last_call = "map"
        kw = self._keywords(
            pywren, extra_env=extra_env, include_modules=include_modules, exclude_modules=exclude_modules
        )
        calls = self._calls(
            map_function,
            data_of(map_iterdata),
            kw.get("extra_args", extra_args),
            kw.get("obj_chunk_size", obj_chunk_size),
            kw.get("obj_chunk_number", obj_chunk_number),
            obj_newline,
        )
        options = options_for(self._ex.session.options, runtime_memory, timeout)
        return FuturesList(self._map("M", map_function, calls, chunksize, options), self)

    def map_reduce(
        self,
        map_function: Callable[..., Any],
        map_iterdata: Any,
        reduce_function: Callable[..., Any],
        chunksize: int | None = None,
        extra_args: Any = None,
        extra_args_reduce: Any = None,
        extra_env: Any = None,
        map_runtime_memory: int | None = None,
        reduce_runtime_memory: int | None = None,
        timeout: float | None = None,
        obj_chunk_size: int | None = None,
        obj_chunk_number: int | None = None,
        obj_newline: str | None = "\n",
        obj_reduce_by_key: bool = False,
        spawn_reducer: int = 20,
        include_modules: Any = None,
        exclude_modules: Any = None,
        **pywren: Any,
    ) -> FuturesList:
        """Map, then call ``reduce_function`` once over the list of map results (in order).

        The map results reach the reducer through object storage, as one Dask graph on the
        executor; ``obj_reduce_by_key=True`` (PyWren-IBM: ``reducer_one_per_object``) runs one
        reducer per object. Its calls run with the executor's limits.
        """
        self.last_call = "map_reduce"
        kw = self._keywords(
            pywren,
            extra_env=extra_env,
            include_modules=include_modules,
            exclude_modules=exclude_modules,
            map_runtime_memory=map_runtime_memory,
            reduce_runtime_memory=reduce_runtime_memory,
            timeout=timeout,
        )
        calls, parts, locators = self._calls(
            map_function,
            data_of(map_iterdata),
            kw.get("extra_args", extra_args),
            kw.get("obj_chunk_size", obj_chunk_size),
            kw.get("obj_chunk_number", obj_chunk_number),
            obj_newline,
        )
        by_key = kw.get("obj_reduce_by_key", obj_reduce_by_key)
        job = f"{next(self._jobs):03d}"
        groups = groups_by_object(parts) if by_key and parts else [range(len(calls))]
        graph, map_keys, reduce_keys = map_reduce_graph(
            job, map_function, calls, locators, reduce_function, extra_args_reduce, groups
        )
        map_futures = [self._future(cf.Future(), f"M{job}", i, str(k)) for i, k in enumerate(map_keys)]
        reduce_futures = [self._future(cf.Future(), f"R{job}", i, str(k)) for i, k in enumerate(reduce_keys)]
        for future in map_futures:
            future._produce_output = False
        targets = [f.future for f in map_futures + reduce_futures]
        for target in targets:
            target.set_running_or_notify_cancel()
        self._graphs.submit(run_graph, self._ex, graph, map_keys + reduce_keys, targets)
        return FuturesList(map_futures + reduce_futures, self)

    # -- waiting ---------------------------------------------------------------------------

    def wait(
        self,
        fs: Any = None,
        throw_except: bool = True,
        return_when: int = ALL_COMPLETED,
        download_results: bool = False,
        timeout: float | None = None,
        threadpool_size: int = 64,
        wait_dur_sec: float | None = None,
        show_progressbar: bool = True,
        clean_jobs: bool | None = None,
    ) -> tuple[FuturesList, FuturesList]:
        """Wait for ``fs`` (default: every future of this executor); return ``(done, not_done)``.

        ``return_when``: ``ALL_COMPLETED``, ``ANY_COMPLETED``, ``ALWAYS`` or a percentage of done
        futures. ``TimeoutError`` after ``timeout`` seconds; with ``throw_except``, the error of the
        first failed call is raised.
        """
        futures = as_list(fs if fs is not None else self.futures)
        done, not_done = wait_for(futures, return_when, timeout, throw_except)
        return FuturesList(done, self), FuturesList(not_done, self)

    def get_result(
        self,
        fs: Any = None,
        throw_except: bool = True,
        timeout: float | None = None,
        threadpool_size: int = 64,
        wait_dur_sec: float | None = None,
        show_progressbar: bool = True,
    ) -> Any:
        """The results of ``fs`` (default: every call not read yet), in call order.

        A call that returned futures (a function that itself called an executor) gives their
        results. A single value when there is one result and the last call was not ``map``.
        """
        futures = as_list(fs) if fs is not None else [f for f in self.futures if not f._read]
        results = results_of(futures, throw_except, timeout)
        if fs is None:
            for future in futures:
                future.mark_read()
        if len(results) == 1 and self.last_call != "map":
            return results[0]
        return results

    def clean(
        self,
        fs: Any = None,
        cs: Any = None,
        clean_cloudobjects: bool = True,
        clean_fn: bool = False,
        force: bool = False,
        on_exit: bool = False,
    ) -> None:
        """Forget finished futures (``fs`` or all; unfinished ones too with ``force``).

        Their map results kept in storage are deleted.
        """
        if cs:
            self.storage.delete_cloudobjects(as_list(cs))
        futures = as_list(fs) if fs is not None else list(self.futures)
        for future in futures:
            future._release(force)
        released = {id(f) for f in futures if f.done}
        self.futures = [f for f in self.futures if id(f) not in released]

    def close(self) -> None:
        """Stop; shut the executor down if this facade made it."""
        self._graphs.shutdown(wait=True)
        if self._owned:
            self._ex.shutdown(wait=True)

    def __enter__(self) -> FunctionExecutor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def plot(self, fs: Any = None, dst: str | None = None, figsize: Any = None) -> list[Any]:
        """Lithops' ``plot``: the timeline and the histogram of the calls ``fs`` (default: all of this
        executor's), drawn with matplotlib (the ``plot`` extra) into ``<dst>-timeline.png`` and
        ``<dst>-histogram.png`` (default ``dst``: ``plots/<executor id>``); the files written.

        See :func:`dask_faas.plot.timeline`.
        """
        from .. import plot
        from ._summary import records_of

        target = dst or os.path.join("plots", self.executor_id)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        frame = records_of(self._ex.invocations(), None if fs is None else as_list(fs))
        return plot.timeline(frame, f"{target}.png", separate=True)

    def job_summary(self, cloud_objects_n: int = 0) -> Any:
        """One row per job (function): calls, invocations, errors, time span and GB-s, a pandas
        DataFrame from :meth:`dask_faas.FaasExecutor.invocations`."""
        from ._summary import job_summary

        return job_summary(self._ex.invocations())

    def call_stats(self, future: ResponseFuture) -> dict[str, Any]:
        """Lithops' statistics of one call, from its invocation records (empty if it has none)."""
        from ._summary import call_stats

        return call_stats(self._ex.invocations(), future.task)

    # -- internals -------------------------------------------------------------------------

    def _calls(
        self,
        fn: Callable[..., Any],
        iterdata: Any,
        extra_args: Any,
        chunk_size: int | None,
        chunk_number: int | None,
        newline: str | None,
    ) -> _Calls:
        """The keyword arguments of each call, the chunks of each object and the data's locators.

        For an ``obj`` function (PyWren-IBM: ``url`` for HTTP inputs) each call is expanded into
        one call per chunk of the objects.
        """
        params = parameter_names(fn)
        if "rabbitmq" in params:
            raise NotImplementedError(
                f"{getattr(fn, '__qualname__', fn)!r} takes a 'rabbitmq' argument (a pika connection to "
                "the RabbitMQ broker of Lithops' configuration): dask-faas does not provide it; pass "
                "data between calls through object storage (the 'storage' argument) instead"
            )
        calls = bind(fn, iterdata, extra_args)
        name = "obj" if "obj" in params else "url" if self.url_inputs and "url" in params else None
        if name is None:
            return calls, [], []
        return expand_objects(
            calls, self._ex.storage, self._storage_options, chunk_size, chunk_number, newline, name
        )

    def _map(
        self, prefix: str, fn: Callable[..., Any], calls: _Calls, chunksize: int | None, options: Any
    ) -> list[ResponseFuture]:
        """Submit the calls, ``chunksize`` calls per invocation; their futures, in call order."""
        data, _, locators = calls
        job = f"{prefix}{next(self._jobs):03d}"
        submitted = submit_calls(self._ex.session, fn, data, locators, chunksize, options, job)
        return [self._future(future, job, i, task) for i, (future, task) in enumerate(submitted)]

    def _keywords(self, pywren: dict[str, Any], **given: Any) -> dict[str, Any]:
        """Lithops' keywords of one call; the ignored ones are named in one warning per executor."""
        return call_keywords({**pywren, **given}, self._warned)

    def _future(self, future: cf.Future[Any], job_id: str, call_id: int, task: str) -> ResponseFuture:
        response = ResponseFuture(future, self.executor_id, job_id, call_id, owner=self, task=task)
        keep_alive(self, future)
        self.futures.append(response)
        return response
