"""A Lithops / PyWren-IBM facade: Lithops programs run on dask-faas by changing the import.

::

    import dask_faas.compat as lithops          # instead of: import lithops

    fexec = lithops.FunctionExecutor()
    fexec.map(lambda x: x + 7, [1, 2, 3, 4])
    fexec.get_result()                           # [8, 9, 10, 11]

    def names(obj, storage):                     # one call per object under the prefix
        return obj.key
    fexec.map(names, "s3://bucket/year=2019/")

Semantics follow Lithops 3 (``lithops/executors.py``, ``job/partitioner.py``, ``utils.py``):

- Each element of ``map_iterdata`` is one call: a tuple binds positionally, a dict by name, any other
  value (a list too) binds to the first parameter. ``extra_args`` is appended (tuple) or merged (dict).
- Parameters are injected by NAME: ``storage`` (a small Lithops-style storage client),
  ``ibm_cos`` / ``boto3_client`` (a boto3 S3 client), ``id`` (the call's number in its job).
- A function with an ``obj`` parameter processes objects: ``obj`` given as ``s3://bucket/prefix/``,
  ``cos://...``, a glob, a local path (or a list of them; ``bucket/key`` without scheme means the
  executor's storage) expands into one call per object, or per chunk with ``obj_chunk_size`` /
  ``obj_chunk_number``. Chunks are aligned to whole lines as in Lithops (``obj_newline=None``: exact
  byte ranges); empty objects get no call. ``obj.data_stream`` streams the chunk's bytes (raw, not
  decompressed, no header added: a chunk holds exactly the lines that start in its byte range);
  an object that is not chunked is its whole content.
- ``get_result`` returns results in call order, a single value after ``call_async`` or
  ``map_reduce``; ``map_reduce`` calls the reducer once over the list of map results (one per
  object with ``obj_reduce_by_key=True``). Its map results go to the reducer through object
  storage: they never pass through the client.

Credentials never travel to functions: they reach data with their own environment (for the local
pool, the client's environment and the executor's storage credentials).
"""

from __future__ import annotations

import concurrent.futures as cf
import inspect
import io
import itertools
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cloudpickle

from . import partition, serialize, worker
from .backends.storage import Storage, storage_from_locator
from .persisted import FaasFuture

if TYPE_CHECKING:
    from .executor import FaasExecutor

__all__ = [
    "ALL_COMPLETED",
    "ALWAYS",
    "ANY_COMPLETED",
    "CloudObject",
    "FunctionExecutor",
    "FuturesList",
    "LocalhostExecutor",
    "ResponseFuture",
    "ServerlessExecutor",
    "function_executor",
    "ibm_cf_executor",
    "local_executor",
]

logger = logging.getLogger("dask_faas.compat")

#: ``return_when`` of :meth:`FunctionExecutor.wait`, as in ``lithops.wait`` (other ints: percent done).
ALWAYS, ANY_COMPLETED, ALL_COMPLETED = 0, -1, 100
#: Parameters filled in at invocation time, never taken from the iterdata.
INJECTED = frozenset({"ibm_cos", "boto3_client", "storage", "id", "rabbitmq"})
_POSITIONAL = "*"  # the key of the positional arguments of a function without a signature

_BACKENDS = {"localhost": "local", "ibm_cf": "openwhisk", "code_engine": "knative", "k8s": "knative"}
_STORAGES = {"localhost": "local", "aws_s3": "s3", "ibm_cos": "s3", "minio": "s3", "ceph": "s3"}
_SETTINGS = {"runtime_memory": "memory_mb", "runtime_timeout": "timeout_s", "max_workers": "workers"}
_S3_KEYS = {
    "endpoint": "endpoint_url",
    "region": "region_name",
    "region_name": "region_name",
    "access_key_id": "key",
    "access_key": "key",
    "secret_access_key": "secret",
    "secret_key": "secret",
    "session_token": "token",
    "storage_bucket": "bucket",
}


# -- futures -----------------------------------------------------------------------------------


class ResponseFuture:
    """The future of one call, as Lithops' ``ResponseFuture`` (``done``/``success``/``error``/``result``).

    ``future`` is the underlying :class:`concurrent.futures.Future`.
    """

    def __init__(self, future: cf.Future[Any], executor_id: str, job_id: str, call_id: int) -> None:
        self.future = future
        self.executor_id, self.job_id, self.call_id = executor_id, job_id, str(call_id).zfill(5)
        self._produce_output = True
        self._read = False
        self._value: Any = None
        self._fetched = False

    @property
    def done(self) -> bool:
        return self.future.done()

    ready = done

    @property
    def running(self) -> bool:
        return self.future.running()

    @property
    def success(self) -> bool:
        return self.future.done() and not self.future.cancelled() and self.future.exception() is None

    @property
    def error(self) -> bool:
        return self.future.done() and (self.future.cancelled() or self.future.exception() is not None)

    def result(self, throw_except: bool = True, timeout: float | None = None, **_: Any) -> Any:
        """The call's value; its exception is raised (``None`` returned with ``throw_except=False``)."""
        try:
            value = self.future.result(timeout)
            if isinstance(value, FaasFuture):  # a map_reduce output kept in storage: fetched once
                if not self._fetched:
                    self._value, self._fetched = value.result(), True
                value = self._value
        except cf.TimeoutError:
            raise
        except Exception:
            if throw_except:
                raise
            return None
        return value

    def status(self, throw_except: bool = True, **kwargs: Any) -> str:
        """``"success"``, ``"error"``, ``"running"`` or ``"pending"``; raises the error if asked."""
        if self.error and throw_except:
            self.result()
        return (
            "success" if self.success else "error" if self.error else "running" if self.running else "pending"
        )

    def cancel(self) -> bool:
        return self.future.cancel()

    def __repr__(self) -> str:
        return f"<ResponseFuture {self.executor_id}/{self.job_id}/{self.call_id} {self.status(False)}>"


class FuturesList(list):  # type: ignore[type-arg]
    """A list of :class:`ResponseFuture` (Lithops' ``FuturesList``) with ``wait`` and ``get_result``."""

    executor: FunctionExecutor | None = None

    def wait(self, **kwargs: Any) -> Any:
        return self._executor().wait(self, **kwargs)

    def get_result(self, **kwargs: Any) -> Any:
        return self._executor().get_result(self, **kwargs)

    def _executor(self) -> FunctionExecutor:
        if self.executor is None:
            raise RuntimeError("this FuturesList belongs to no executor")
        return self.executor


# -- objects and storage inside functions ------------------------------------------------------

_storages: dict[tuple[tuple[str, Any], ...], Storage] = {}
_storages_lock = threading.Lock()


def _storage(locator: dict[str, Any]) -> Storage:
    """The storage of ``locator``, built once per process (credentials from the environment)."""
    marker = tuple(sorted(locator.items()))
    with _storages_lock:
        if marker not in _storages:
            _storages[marker] = storage_from_locator(locator)
        return _storages[marker]


@dataclass(frozen=True)
class _Chunk:
    """What the client sends for one ``obj`` argument: a planned range of one object."""

    rng: partition.ByteRange
    scheme: str
    part: int
    total_parts: int
    chunked: bool
    newline: str | None


class CloudObject:
    """The ``obj`` argument: one object, or one chunk of it (Lithops' ``CloudObject``).

    Attributes
    ----------
    backend, bucket, key : str
        ``"s3"``/``"cos"``/``"local"``, the bucket and key; for a local file as Lithops does: its
        directory and file name.
    url, path : str
        The object's URL (``s3://bucket/key``) or local path.
    name : str
        The last segment of the key (the PyWren-IBM talk's ``obj.name``).
    data_byte_range : tuple of int
        First and last byte (inclusive) of the chunk as planned; lines are completed past it.
    chunk_size, part, total_parts, newline
        Planned size of the chunk, its number (from 1) and the object's number of chunks.
    data_stream : file-like
        The chunk's bytes, streamed: whole lines (``newline="\\n"``), exact bytes (``None``), or the
        whole raw object when it is not chunked.
    """

    def __init__(self, chunk: _Chunk) -> None:
        rng = chunk.rng
        self._chunk = chunk
        self.backend = chunk.scheme
        self.url = self.path = rng.url
        if chunk.scheme == "local":
            self.bucket, self.key = os.path.split(rng.url)
        else:
            self.bucket, self.key = rng.locator["bucket"], rng.key
        self.name = rng.key.rsplit("/", 1)[-1]
        self.size = rng.size
        self.data_byte_range = (rng.start, rng.end - 1)
        self.chunk_size = rng.end - rng.start
        self.part, self.total_parts, self.newline = chunk.part, chunk.total_parts, chunk.newline
        self._stream: io.BufferedReader | None = None

    @property
    def data_stream(self) -> io.BufferedReader:
        if self._stream is None:
            self._stream = io.BufferedReader(_IterStream(self._chunks()), buffer_size=1 << 16)
        return self._stream

    def read(self, n: int = -1) -> bytes:
        """Read from :attr:`data_stream`."""
        return self.data_stream.read(n)

    def _chunks(self) -> Iterator[bytes]:
        chunk, storage = self._chunk, _storage(self._chunk.rng.locator)
        rng = chunk.rng
        if not chunk.chunked:
            yield storage.get(rng.key)
        elif chunk.newline is None:
            yield storage.get(rng.key, rng.start, rng.end)
        else:
            yield from partition.iter_lines(storage, rng)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_stream": None}

    def __repr__(self) -> str:
        return f"<CloudObject {self.url} part {self.part}/{self.total_parts}>"


class _IterStream(io.RawIOBase):
    """A readable raw stream over an iterator of byte strings."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks, self._buffer = chunks, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view, filled = memoryview(b).cast("B"), 0
        while filled < len(view):
            if not self._buffer:
                self._buffer = next(self._chunks, b"")
                if not self._buffer:
                    break
            n = min(len(view) - filled, len(self._buffer))
            view[filled : filled + n] = self._buffer[:n]
            self._buffer, filled = self._buffer[n:], filled + n
        return filled


class StorageClient:
    """The ``storage`` argument: Lithops' ``Storage`` calls mapped onto dask-faas storage.

    A bucket is an S3 bucket (of the endpoint of the executor's or the data's storage), or for local
    storage a directory (absolute, or relative to the local storage root). ``bucket`` is the
    executor's own bucket (or local root).
    """

    def __init__(self, storage: Storage, locators: Iterable[dict[str, Any]] = ()) -> None:
        self._default = storage
        self._known: dict[str, Storage] = {}
        self._s3: dict[str, Any] | None = None
        for candidate in [storage, *(_storage(loc) for loc in locators)]:
            name = _bucket_of(candidate)
            self._known.setdefault(name, candidate)
            if candidate.name in ("s3", "cos") and self._s3 is None:
                self._s3 = candidate.locator()
        self.bucket = _bucket_of(storage)
        self.backend = storage.name

    def _at(self, bucket: str | None) -> Storage:
        if not bucket or bucket in self._known:
            return self._known.get(bucket or "", self._default)
        if self._s3 is not None:
            return _storage({**self._s3, "bucket": bucket})
        root = getattr(self._default, "root", None)
        return _storage({"backend": "local", "root": os.path.join(root or "", bucket)})

    def get_object(
        self, bucket: str, key: str, stream: bool = False, extra_get_args: dict[str, Any] | None = None
    ) -> Any:
        """The object's bytes (a file-like with ``stream=True``); ``extra_get_args={"Range": ...}``."""
        start = end = None
        spec = (extra_get_args or {}).get("Range")
        if spec:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, end = int(first or 0), int(last) + 1 if last else None
        data = self._at(bucket).get(key, start, end)
        return io.BytesIO(data) if stream else data

    def put_object(self, bucket: str, key: str, body: Any) -> None:
        if hasattr(body, "read"):
            body = body.read()
        self._at(bucket).put(key, body.encode() if isinstance(body, str) else body)

    def head_object(self, bucket: str, key: str) -> dict[str, str]:
        return {"content-length": str(self._at(bucket).size(key))}

    def delete_object(self, bucket: str, key: str) -> None:
        self._at(bucket).delete([key])

    def delete_objects(self, bucket: str, key_list: list[str]) -> None:
        self._at(bucket).delete(key_list)

    def list_objects(self, bucket: str, prefix: str | None = None, match_pattern: str | None = None) -> list:
        import fnmatch

        found = self._at(bucket).list(prefix or "")
        return [
            {"Key": k, "Size": s} for k, s in found if not match_pattern or fnmatch.fnmatch(k, match_pattern)
        ]

    def list_keys(self, bucket: str, prefix: str | None = None) -> list[str]:
        return [key for key, _ in self._at(bucket).list(prefix or "")]

    def get_client(self) -> Any:
        """The boto3 S3 client of the executor's storage (S3 only)."""
        return _boto3_client(self._default)

    def __repr__(self) -> str:
        return f"<StorageClient bucket={self.bucket!r}>"


def _bucket_of(storage: Storage) -> str:
    return getattr(storage, "bucket", None) or getattr(storage, "root", "")


def _boto3_client(storage: Storage) -> Any:
    client = getattr(storage, "_client", None)
    if storage.name not in ("s3", "cos") or client is None:
        raise TypeError(f"a boto3 client needs S3 storage, not {storage!r}: use the 'storage' argument")
    return client


class _Function:
    """The user's function with Lithops' argument injection, as it runs inside a function."""

    def __init__(self, fn: Callable[..., Any], results_param: str | None = None) -> None:
        self.fn = fn
        self.results_param = results_param  # the reducer's parameter for the list of map results
        signature = _signature(fn)
        self.params = set() if signature is None else set(signature.parameters)

    def __call__(self, data: Any, call_id: int, locators: list[dict[str, Any]], results: Any = None) -> Any:
        data = cloudpickle.loads(data) if isinstance(data, bytes) else dict(data)
        if self.results_param is not None:
            if self.results_param == _POSITIONAL:
                data[_POSITIONAL] = (list(results), *data[_POSITIONAL][1:])
            else:
                data[self.results_param] = list(results)
        obj = data.get("obj")
        if isinstance(obj, _Chunk):
            data["obj"] = obj = CloudObject(obj)
            locators = [*locators, obj._chunk.rng.locator]
        try:
            job_storage = worker.current().storage
        except RuntimeError:  # not in a function (a local executor): the data's own storage
            job_storage = _storage(locators[0]) if locators else None
        if "storage" in self.params:
            data["storage"] = StorageClient(job_storage, locators)
        for name in ("ibm_cos", "boto3_client"):
            if name in self.params:
                data[name] = _boto3_client(
                    _storage(obj._chunk.rng.locator) if obj is not None else job_storage
                )
        if "id" in self.params:
            data["id"] = call_id
        return self.fn(*data.pop(_POSITIONAL, ()), **data)

    def batch(self, calls: list[tuple[Any, int]], locators: list[dict[str, Any]]) -> list[tuple[bool, Any]]:
        """Run several calls in one invocation (``chunksize``); each outcome on its own."""
        outcomes = []
        for data, call_id in calls:
            try:
                outcomes.append((True, self(data, call_id, locators)))
            except Exception as exc:
                outcomes.append((False, serialize.dumps_error(exc)))
        return outcomes


# -- the executor -------------------------------------------------------------------------------


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
        if config_file is not None:
            raise NotImplementedError("config_file: use dask's config files (faas: section) instead")
        if executor is None:
            from .executor import FaasExecutor  # not in functions: they import this module light

            executor = FaasExecutor(**_settings(config, backend, storage, settings))
            self._owned = True
        else:
            self._owned = False
        self._ex = executor
        self.executor_id = executor.job_prefix.rsplit("/", 1)[-1]
        self.backend = executor._settings["backend"]
        self.futures: list[ResponseFuture] = []
        self.last_call: str | None = None
        self._jobs = itertools.count()
        self._graphs = cf.ThreadPoolExecutor(4, thread_name_prefix="dask-faas-compat")
        if storage_options is None:
            s3 = executor._settings.get("s3") or {}
            names = {"endpoint-url": "endpoint_url", "region-name": "region_name", "key": "key"}
            names.update({"secret": "secret", "token": "token"})
            storage_options = {names[k]: v for k, v in s3.items() if k in names and v is not None}
        self._storage_options = storage_options

    @property
    def storage(self) -> StorageClient:
        """A Lithops-style storage client of the executor's storage, on the client."""
        return StorageClient(self._ex.storage)

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
    ) -> ResponseFuture:
        """Run ``func`` once over ``data`` (tuple: positional, dict: by name, else the first parameter)."""
        self.last_call = "call_async"
        _ignored(extra_env=extra_env, runtime_memory=runtime_memory, timeout=timeout)
        return self._map("A", func, [data], None, None, None, None, "\n")[0][0]

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
    ) -> FuturesList:
        """One call per element of ``map_iterdata`` (or per object/chunk for an ``obj`` function)."""
        self.last_call = "map"
        _ignored(extra_env=extra_env, runtime_memory=runtime_memory, timeout=timeout)
        futures, _ = self._map(
            "M",
            map_function,
            map_iterdata,
            chunksize,
            extra_args,
            obj_chunk_size,
            obj_chunk_number,
            obj_newline,
        )
        return self._list(futures)

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
    ) -> FuturesList:
        """Map, then call ``reduce_function`` once over the list of map results (in order).

        The map results reach the reducer through object storage, as one Dask graph on the
        executor; ``obj_reduce_by_key=True`` runs one reducer per object.
        """
        self.last_call = "map_reduce"
        _ignored(
            extra_env=extra_env,
            map_runtime_memory=map_runtime_memory,
            reduce_runtime_memory=reduce_runtime_memory,
            timeout=timeout,
        )
        calls, parts, locators = self._calls(
            map_function, map_iterdata, extra_args, obj_chunk_size, obj_chunk_number, obj_newline
        )
        job = f"{next(self._jobs):03d}"
        mapper = _Function(map_function)
        reducer_params = _user_parameters(reduce_function)
        if not reducer_params:
            raise TypeError(f"{_name(reduce_function)} takes no parameter for the map results")
        reducer = _Function(reduce_function, results_param=reducer_params[0])
        reduce_data = _bind(reduce_function, [(None,)], extra_args_reduce)[0]
        if reducer_params[0] != _POSITIONAL:
            reduce_data.pop(reducer_params[0])
        groups = _groups(parts, len(calls)) if obj_reduce_by_key and parts else [range(len(calls))]
        dsk, map_keys, reduce_keys = _graph(job, mapper, calls, reducer, reduce_data, groups, locators)
        map_futures = [self._future(cf.Future(), f"M{job}", i) for i in range(len(calls))]
        reduce_futures = [self._future(cf.Future(), f"R{job}", i) for i in range(len(groups))]
        for future in map_futures:
            future._produce_output = False
        targets = [f.future for f in map_futures + reduce_futures]
        for target in targets:
            target.set_running_or_notify_cancel()
        self._graphs.submit(self._run_graph, dsk, map_keys + reduce_keys, targets)
        return self._list(map_futures + reduce_futures)

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
        futures. ``TimeoutError`` after ``timeout`` seconds.
        """
        futures = _as_list(fs if fs is not None else self.futures)
        if futures and return_when != ALWAYS:
            need = (
                1 if return_when == ANY_COMPLETED else math.ceil(len(futures) * min(return_when, 100) / 100)
            )
            pending = {f.future for f in futures if not f.done}
            end = None if timeout is None else time.monotonic() + timeout
            while len(futures) - len(pending) < need:
                left = None if end is None else max(0.0, end - time.monotonic())
                finished, pending = cf.wait(pending, timeout=left, return_when=cf.FIRST_COMPLETED)
                if not finished:
                    raise TimeoutError(f"Timeout of {timeout} seconds exceeded waiting for the calls")
        done = [f for f in futures if f.done]
        if throw_except:
            for future in done:
                if future.error and not future.future.cancelled():
                    raise future.future.exception()  # type: ignore[misc]
        return self._list(done), self._list([f for f in futures if not f.done])

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

        A single value when there is one result and the last call was not ``map``.
        """
        futures = _as_list(fs) if fs is not None else [f for f in self.futures if not f._read]
        self.wait(futures, throw_except=throw_except, timeout=timeout)
        results = []
        for future in futures:
            if future._produce_output:
                results.append(future.result(throw_except=throw_except))
                if fs is None:
                    future._read = True
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
        """Forget finished futures (``fs`` or all): their map results kept in storage are deleted."""
        futures = _as_list(fs) if fs is not None else list(self.futures)
        for future in futures:
            if future.done or force:
                future.cancel()
                future._value = None
                future.future = _dropped(future.future)
        ids = {id(f) for f in futures if f.done}
        self.futures = [f for f in self.futures if id(f) not in ids]

    def close(self) -> None:
        """Stop; shut the executor down if this facade made it."""
        self._graphs.shutdown(wait=True)
        if self._owned:
            self._ex.shutdown(wait=True)

    def __enter__(self) -> FunctionExecutor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    def plot(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("plot: use executor.last_report or dask.diagnostics instead")

    # -- internals -------------------------------------------------------------------------

    def _future(self, future: cf.Future[Any], job_id: str, call_id: int) -> ResponseFuture:
        response = ResponseFuture(future, self.executor_id, job_id, call_id)
        self.futures.append(response)
        return response

    def _list(self, futures: list[ResponseFuture]) -> FuturesList:
        result = FuturesList(futures)
        result.executor = self
        return result

    def _map(
        self,
        prefix: str,
        fn: Callable[..., Any],
        iterdata: Any,
        chunksize: int | None,
        extra_args: Any,
        chunk_size: int | None,
        chunk_number: int | None,
        newline: str | None,
    ) -> tuple[list[ResponseFuture], Any]:
        calls, parts, locators = self._calls(fn, iterdata, extra_args, chunk_size, chunk_number, newline)
        job = f"{prefix}{next(self._jobs):03d}"
        mapper = _Function(fn)
        futures: list[ResponseFuture] = []
        size = max(1, chunksize or 1)
        for start in range(0, len(calls), size):
            batch = [(data, start + i) for i, data in enumerate(calls[start : start + size])]
            if size == 1:
                futures.append(
                    self._future(self._ex.submit(mapper, batch[0][0], start, locators), job, start)
                )
                continue
            whole = self._ex.submit(mapper.batch, batch, locators)
            parts_of = [cf.Future() for _ in batch]
            whole.add_done_callback(lambda f, targets=parts_of: _fan_out(f, targets))
            futures += [
                self._future(target, job, call_id)
                for target, (_, call_id) in zip(parts_of, batch, strict=False)
            ]
        return futures, parts

    def _calls(
        self,
        fn: Callable[..., Any],
        iterdata: Any,
        extra_args: Any,
        chunk_size: int | None,
        chunk_number: int | None,
        newline: str | None,
    ) -> tuple[list[Any], list[int], list[Any]]:
        """The keyword arguments of each call; objects expanded to chunks for an ``obj`` function."""
        params = getattr(_signature(fn), "parameters", {})
        if "rabbitmq" in params:
            raise NotImplementedError("the 'rabbitmq' argument is not supported by dask-faas")
        calls = _bind(fn, iterdata, extra_args)
        if "obj" not in params:
            return calls, [], []
        if newline not in ("\n", None):
            raise NotImplementedError(f"obj_newline={newline!r}: chunks align to '\\n' (or None)")
        expanded, parts, locators = [], [], {}
        for data in calls:
            for url in _as_list(data["obj"]):
                storage, objects = partition.discover(self._url(url), self._storage_options)
                locators[repr(storage.locator())] = storage.locator()
                scheme = _scheme(url, storage)
                for info in objects:
                    if info.size == 0:
                        continue
                    ranges = _ranges(storage, info, chunk_size, chunk_number)
                    for rng in ranges:
                        chunk = _Chunk(rng, scheme, rng.index + 1, len(ranges), len(ranges) > 1, newline)
                        expanded.append({**data, "obj": chunk})
                    parts.append(len(ranges))
        return expanded, parts, list(locators.values())

    def _url(self, obj: Any) -> str:
        if isinstance(obj, CloudObject):
            return obj.url
        url = os.fspath(obj)
        if url.startswith(("http://", "https://")):
            raise NotImplementedError(f"{url}: HTTP URLs are not supported; use s3://, cos:// or a path")
        if "://" in url or os.path.isabs(url):
            return url
        storage = self._ex.storage  # "bucket/key": the executor's storage, as in Lithops
        if storage.name in ("s3", "cos"):
            return f"s3://{url}"
        return os.path.join(getattr(storage, "root", ""), url)

    def _run_graph(self, dsk: dict[Any, Any], keys: list[Any], targets: list[cf.Future[Any]]) -> None:
        from .scheduler import compute_with

        try:
            values = compute_with(self._ex, dsk, keys, keep=True)
        except BaseException as exc:
            for target in targets:
                if not target.done():
                    target.set_exception(exc)
            return
        for target, value in zip(targets, values, strict=False):
            target.set_result(value)


# -- helpers -----------------------------------------------------------------------------------


def _settings(
    config: dict[str, Any] | None, backend: str | None, storage: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """``faas`` settings from Lithops' configuration and names."""
    config = config or {}
    lithops = config.get("lithops") or {}
    backend = backend or lithops.get("backend")
    storage = storage or lithops.get("storage")
    out = {_SETTINGS.get(k, k): v for k, v in settings.items()}
    if backend:
        out["backend"] = _BACKENDS.get(backend, backend)
    if storage:
        out["storage"] = _STORAGES.get(storage, storage)
    for section in ("aws", "aws_s3", "ibm_cos", "minio", "ceph"):
        values = config.get(section) or {}
        s3 = {_S3_KEYS[k]: v for k, v in values.items() if k in _S3_KEYS}
        if lithops.get("storage_bucket"):
            s3.setdefault("bucket", lithops["storage_bucket"])
        if s3:
            out["s3"] = {**out.get("s3", {}), **s3}
            if storage is None and section != "aws":
                out.setdefault("storage", "s3")
    return out


def _ignored(**options: Any) -> None:
    given = [name for name, value in options.items() if value]
    if given:
        logger.warning(
            "dask-faas ignores %s per call: set memory_mb / timeout_s on the executor", ", ".join(given)
        )


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _user_parameters(fn: Callable[..., Any]) -> list[str]:
    signature = _signature(fn)
    return ["*"] if signature is None else [n for n in signature.parameters if n not in INJECTED]


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, list | tuple | range | set):
        return list(value)
    return [value]


def _bind(fn: Callable[..., Any], iterdata: Any, extra_args: Any) -> list[dict[str, Any]]:
    """Lithops' ``verify_args``: one keyword dict per element of ``iterdata``."""
    data = list(iterdata) if isinstance(iterdata, list | range | set) else [iterdata]
    signature = _signature(fn)
    if signature is None:  # a builtin without a signature: positional arguments
        data = [_with_extra_args(e, extra_args) if extra_args else e for e in data]
        return [
            e if isinstance(e, dict) else {_POSITIONAL: e if isinstance(e, tuple) else (e,)} for e in data
        ]
    user = signature.replace(parameters=[p for n, p in signature.parameters.items() if n not in INJECTED])
    var_keyword = any(p.kind is p.VAR_KEYWORD for p in user.parameters.values())
    calls = []
    for elem in data:
        if extra_args:
            elem = _with_extra_args(elem, extra_args)
        if isinstance(elem, dict):
            if not var_keyword and not set(user.parameters) <= set(elem):
                raise ValueError(
                    f"Check the args names in the data. You provided these args: {list(elem)}, "
                    f"and the args must be: {list(user.parameters)}"
                )
            calls.append(dict(elem))
        elif isinstance(elem, tuple):
            calls.append(dict(user.bind(*elem).arguments))
        else:
            calls.append(dict(user.bind(elem).arguments))
    return calls


def _with_extra_args(elem: Any, extra_args: Any) -> Any:
    """Lithops' ``format_data``: tuples are concatenated, dicts merged, single values extended."""
    if isinstance(elem, tuple):
        if not isinstance(extra_args, tuple):
            raise TypeError("extra_args must contain args in a tuple")
        return elem + extra_args
    if isinstance(elem, dict):
        if not isinstance(extra_args, dict):
            raise TypeError("extra_args must contain kwargs in a dictionary")
        return {**elem, **extra_args}
    return (elem, *extra_args)


def _scheme(url: Any, storage: Storage) -> str:
    text = url.url if isinstance(url, CloudObject) else os.fspath(url)
    if storage.name == "local":
        return "local"
    return text.partition("://")[0] if "://" in text else "s3"


def _ranges(
    storage: Storage, info: partition.ObjectInfo, chunk_size: int | None, chunk_number: int | None
) -> list[partition.ByteRange]:
    """Lithops' chunking of one object: ``obj_chunk_number`` wins over ``obj_chunk_size``."""
    size = None
    if chunk_number:
        size = info.size // chunk_number + round((info.size % chunk_number) / chunk_number + 0.5)
    elif chunk_size:
        size = int(chunk_size)
    if size is not None and size >= info.size:
        size = None
    return partition.plan(storage, [info], size, compression=None, header=False)


def _groups(parts: list[int], total: int) -> list[range]:
    groups, start = [], 0
    for count in parts:
        groups.append(range(start, start + count))
        start += count
    return groups


def _graph(
    job: str,
    mapper: _Function,
    calls: list[Any],
    reducer: _Function,
    reduce_data: dict[str, Any],
    groups: list[range],
    locators: list[Any],
) -> tuple[dict[Any, Any], list[Any], list[Any]]:
    """A Dask graph: the map calls, and the reducers over lists of their outputs."""
    from dask._task_spec import List, Task, TaskRef

    dsk: dict[Any, Any] = {}
    map_keys = [(f"lithops-map-{job}-{uuid.uuid4().hex[:8]}", i) for i in range(len(calls))]
    for i, (key, data) in enumerate(zip(map_keys, calls, strict=False)):
        dsk[key] = Task(key, mapper, cloudpickle.dumps(data), i, locators)
    reduce_name = f"lithops-reduce-{job}-{uuid.uuid4().hex[:8]}"
    reduce_keys = [(reduce_name, j) for j in range(len(groups))]
    blob = cloudpickle.dumps(reduce_data)
    for j, (key, group) in enumerate(zip(reduce_keys, groups, strict=False)):
        inputs = List(*(TaskRef(map_keys[i]) for i in group))
        dsk[key] = Task(key, reducer, blob, j, locators, inputs)
    return dsk, map_keys, reduce_keys


def _fan_out(whole: cf.Future[Any], targets: list[cf.Future[Any]]) -> None:
    """Results of a batch of calls (``chunksize``) onto the futures of its calls."""
    try:
        outcomes = whole.result()
    except BaseException as exc:
        for target in targets:
            target.set_exception(exc)
        return
    for target, (ok, value) in zip(targets, outcomes, strict=False):
        if ok:
            target.set_result(value)
        else:
            target.set_exception(serialize.loads_error(value))


def _dropped(future: cf.Future[Any]) -> cf.Future[Any]:
    """A finished stand-in for a cleaned future: its stored output is released."""
    stand_in: cf.Future[Any] = cf.Future()
    if future.done() and not future.cancelled() and future.exception() is not None:
        stand_in.set_exception(future.exception())  # type: ignore[arg-type]
    else:
        stand_in.set_result(None)
    return stand_in


def ibm_cf_executor(**kwargs: Any) -> FunctionExecutor:
    """PyWren-IBM's ``ibm_cf_executor()``: a :class:`FunctionExecutor` on the configured backend."""
    return FunctionExecutor(**kwargs)


function_executor = ServerlessExecutor = ibm_cf_executor


def LocalhostExecutor(**kwargs: Any) -> FunctionExecutor:
    """Lithops' ``LocalhostExecutor``: the local function pool and local storage."""
    kwargs.setdefault("backend", "local")
    if kwargs.get("executor") is None and "s3" not in kwargs:
        kwargs.setdefault("storage", "local")
    return FunctionExecutor(**kwargs)


local_executor = LocalhostExecutor
