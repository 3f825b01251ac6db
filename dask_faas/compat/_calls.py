"""What one ``call_async`` / ``map`` / ``map_reduce`` asks for: Lithops' and PyWren-IBM's keywords,
futures given as data, and the limits of its invocations."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from .. import worker
from ._config import warn_ignored
from ._function import UserFunction
from ._futures import FuturesList, ResponseFuture, fan_out, is_futures, results_of

#: PyWren-IBM's keywords -> Lithops' (``map`` and ``map_reduce``).
PYWREN_NAMES = {
    "extra_params": "extra_args",
    "chunk_size": "obj_chunk_size",
    "chunk_n": "obj_chunk_number",
    "reducer_one_per_object": "obj_reduce_by_key",
}
#: Per-call keywords accepted and ignored (named in one warning per executor).
IGNORED_PER_CALL = frozenset(
    {
        "extra_env",
        "include_modules",
        "exclude_modules",
        "remote_invocation",
        "remote_invocation_groups",
        "invoke_pool_threads",
        "reducer_wait_local",
        "spawn_reducer",
    }
)


def lithops_keywords(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``kwargs`` with PyWren-IBM's names replaced by Lithops', the ignored ones left out, and the
    names of those given a value.

    Raises
    ------
    TypeError
        For a keyword that neither Lithops nor PyWren-IBM knows (as Python would).
    """
    out: dict[str, Any] = {}
    ignored = []
    for name, value in kwargs.items():
        if name in IGNORED_PER_CALL:
            if value not in (None, False, [], {}, 20, 128):  # the defaults
                ignored.append(name)
            continue
        out[PYWREN_NAMES.get(name, name)] = value
    return out, ignored


def data_of(iterdata: Any) -> Any:
    """``iterdata``, with futures (a FuturesList, or a list or tuple of futures) replaced by their
    results, waited for here; those futures count as read (``get_result()`` leaves them out)."""
    if isinstance(iterdata, FuturesList) or is_futures(iterdata):
        futures = [iterdata] if isinstance(iterdata, ResponseFuture) else list(iterdata)
        values = results_of(futures)
        for future in futures:
            future.mark_read()
        return values
    return iterdata


def options_for(defaults: Any, runtime_memory: int | None, timeout: float | None) -> Any:
    """The :class:`~dask_faas.session.CallOptions` of a call: ``runtime_memory`` (MiB) and
    ``timeout`` (seconds) override the executor's limits (None: the executor's)."""
    changes: dict[str, Any] = {}
    if runtime_memory:
        changes["memory_mb"] = int(runtime_memory)
    if timeout:
        changes["timeout_s"] = float(timeout)
    return dataclasses.replace(defaults, **changes) if changes else defaults


def call_keywords(given: dict[str, Any], warned: set[str]) -> dict[str, Any]:
    """:func:`lithops_keywords` of one call; the ignored ones not in ``warned`` yet are named in
    one warning (and added to it). ``map_reduce`` runs with the executor's limits."""
    kw, ignored = lithops_keywords(given)
    for name in ("map_runtime_memory", "reduce_runtime_memory", "timeout"):
        if kw.pop(name, None):
            ignored.append(f"map_reduce's {name}")
    new = [name for name in ignored if name not in warned]
    warned.update(new)
    in_map_reduce = any("map_reduce" in n for n in new)
    warn_ignored(new, "set memory_mb / timeout_s on the executor" if in_map_reduce else "per call")
    return kw


def task_key(label: str, job: str, call: int) -> str:
    """The task name of one call in the invocation records: ``<function>-<job>-<call>``."""
    return f"{label}-{job}-{call:05d}"


def submit_calls(
    session: Any,
    fn: Callable[..., Any],
    data: list[dict[str, Any]],
    locators: list[dict[str, Any]],
    chunksize: int | None,
    options: Any,
    job: str,
) -> list[tuple[cf.Future[Any], str]]:
    """Invoke ``fn`` over the calls' keyword arguments ``data``, ``chunksize`` calls per invocation,
    with these limits (:class:`~dask_faas.session.CallOptions`); the future of each call, in order,
    with its task name (:func:`task_key`) in the invocation records."""
    mapper = UserFunction(fn)
    size = max(1, chunksize or 1)
    label = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    if size == 1:
        function = session.function(mapper)
        out = []
        for i, kwargs in enumerate(data):
            key = task_key(label, job, i)
            call = [((kwargs, i, locators), {})]
            out.append(
                (session.submit(function, call, unwrap=True, options=options, label=label, tasks=[key]), key)
            )
        return out
    function = session.function(mapper.batch)
    futures: list[tuple[cf.Future[Any], str]] = []
    for start in range(0, len(data), size):
        batch = [(kwargs, start + i) for i, kwargs in enumerate(data[start : start + size])]
        keys = [task_key(label, job, i) for _, i in batch]
        targets: list[cf.Future[Any]] = [cf.Future() for _ in batch]
        call = [((batch, locators), {})]
        whole = session.submit(function, call, unwrap=True, options=options, label=label, tasks=keys)
        whole.add_done_callback(functools.partial(fan_out, targets=targets))
        futures += zip(targets, keys, strict=True)
    return futures


def internal_execution() -> dict[str, Any]:
    """Inside a function, the settings of an executor made there (Lithops' internal execution):
    the storage of the job that runs the function, and a job prefix below that job's, so that
    whatever the internal execution leaves is deleted with the job. Outside a function: none."""
    try:
        context = worker.current()
    except RuntimeError:
        return {}
    from ..backends.storage import storage_from_locator

    return {
        "storage": storage_from_locator(context.storage.locator()),
        "prefix": f"{context.store.prefix}/internal",
    }
