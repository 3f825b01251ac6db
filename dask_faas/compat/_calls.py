"""What one ``call_async`` / ``map`` / ``map_reduce`` asks for: Lithops' and PyWren-IBM's keywords,
futures given as data, and the limits of its invocations."""

from __future__ import annotations

import dataclasses
from typing import Any

from ._futures import FuturesList, ResponseFuture, is_futures, results_of

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
