"""What a function does with a batch of Dask graph tasks: fetch inputs, run, keep outputs.

The client (:mod:`dask_faas.scheduler`) holds references, not data: a task's inputs arrive as
:class:`~dask_faas.protocol.Ref` (a signed object in storage, fetched here) or :class:`Inline` (a small
pickled value carried in the payload). Each output is pickled once and either returned inline, when
small, or written to storage under a per-call, per-attempt, per-delivery name, so a retried or duplicated
invocation never overwrites what another attempt wrote.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from graphlib import TopologicalSorter
from typing import Any

from . import serialize, worker
from .exceptions import SerializationError
from .protocol import Ref
from .store import SignedStore

__all__ = ["Inline", "key_name", "load", "run_tasks"]

#: Parallel reads of a function's stored inputs.
FETCH_THREADS = 8


@dataclass(frozen=True)
class Inline:
    """A small pickled value that travels inside messages instead of through storage."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def key_name(key: Hashable) -> str:
    """A storage-safe, fixed-length name for a Dask key."""
    return hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest()


def load(value: Any, store: SignedStore) -> Any:
    """The Python value behind a reference (plain values pass through)."""
    if isinstance(value, Inline):
        return serialize.loads(value.data)
    if isinstance(value, Ref):
        return serialize.loads(store.fetch(value))
    return value


def run_tasks(
    batch: list[tuple[Hashable, Any, dict[Hashable, Any]]], compute: str, inline_limit: int
) -> list[tuple[Hashable, Inline | Ref]]:
    """Run ``(key, task, inputs)`` triples inside a function; return a reference to each output.

    Parameters
    ----------
    batch : list
        Independent tasks (``dask._task_spec`` nodes) with references to their inputs.
    compute : str
        Name of the compute under the job prefix; outputs are written below it.
    inline_limit : int
        Outputs up to this many pickled bytes come back inline; larger ones go to storage.

    Raises
    ------
    Exception
        The first failing task's exception, with its key in the ``dask_faas_key`` attribute and,
        when that task is a fused chain, the key and function of the inner task that raised in
        ``dask_faas_raised_by``.
    SerializationError
        Naming the task whose result cannot be pickled.
    """
    context = worker.current()
    store = context.store.child(compute)
    loaded = _load_inputs(batch, context.store)
    outputs = []
    for key, task, inputs in batch:
        try:
            value = _execute(key, task, {dep: loaded[dep] for dep in inputs})
            pickled = _pickled_output(key, value)
        except Exception as exc:
            exc.dask_faas_key = key  # type: ignore[attr-defined]
            raise
        if len(pickled) <= inline_limit:
            outputs.append((key, Inline(pickled)))
        else:
            name = f"{key_name(key)}.{context.tag}"
            outputs.append((key, store.put(name, pickled)))
    return outputs


def _execute(key: Hashable, node: Any, data: dict[Hashable, Any]) -> Any:
    """Run one task; a fused chain runs task by task, so a failure names the inner task that raised."""
    from dask import _task_spec  # here, not at import: the Lithops facade's futures import this module
    from dask.utils import funcname

    try:
        if isinstance(node, _task_spec.Task) and node.has_subgraph():
            node = _task_spec.Task(node.key, _run_subgraph, *node.args, **node.kwargs)
        return node(data)
    except Exception as exc:
        if not hasattr(exc, "dask_faas_raised_by"):
            name = funcname(node.func) if isinstance(node, _task_spec.Task) else type(node).__name__
            exc.dask_faas_raised_by = (key, name)  # type: ignore[attr-defined]
        raise


def _run_subgraph(inner: dict[Hashable, Any], outkey: Hashable, inkeys: tuple, *dependencies: Any) -> Any:
    """``dask._task_spec._execute_subgraph``, with each inner task run through :func:`_execute`."""
    cache = dict(zip(inkeys, dependencies, strict=True))
    deps = {k: n.dependencies & inner.keys() for k, n in inner.items()}
    users = Counter(dep for ds in deps.values() for dep in ds)
    for key in TopologicalSorter(deps).static_order():
        cache[key] = _execute(key, inner[key], cache)
        for dep in deps[key]:  # an intermediate is dropped once its last user ran
            users[dep] -= 1
            if not users[dep]:
                del cache[dep]
    return cache[outkey]


def _pickled_output(key: Hashable, value: Any) -> bytes:
    try:
        return serialize.dumps(value)
    except Exception as exc:
        raise SerializationError(
            f"the result of task {key!r} cannot be pickled ({type(value).__qualname__}): {exc}"
        ) from exc


def _load_inputs(batch: list[tuple[Hashable, Any, dict[Hashable, Any]]], store: SignedStore) -> dict:
    """Every input of the batch, each loaded once; stored ones fetched in parallel."""
    refs: dict[Hashable, Any] = {}
    for _, _, inputs in batch:
        refs.update(inputs)
    stored = [(dep, ref) for dep, ref in refs.items() if isinstance(ref, Ref)]
    if len(stored) > 1:
        fetched = dict(
            zip([d for d, _ in stored], _pool().map(store.fetch, [r for _, r in stored]), strict=True)
        )
    else:
        fetched = {dep: store.fetch(ref) for dep, ref in stored}
    return {
        dep: serialize.loads(fetched[dep]) if dep in fetched else load(ref, store)
        for dep, ref in refs.items()
    }


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """Threads of this (warm) function process for parallel reads from storage."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="dask-faas-fetch")
    return _POOL
