"""One Dask compute on a FaasExecutor: graph preparation and the get_async-style engine.

The engine is a close equivalent of :func:`dask.local.get_async`, built from the same parts
(``order``, ``start_state_from_dask``, ``finish_task`` and the callbacks protocol, so ``ProgressBar``,
``Profiler`` and custom ``Callback``s see every task), with three differences:

- its cache holds references (:class:`~dask_faas.protocol.Ref`, :class:`~dask_faas.tasks.Inline`),
  and releasing a key deletes its stored object;
- ready tasks are batched into invocations: ``ceil(ready / (4 * concurrency))`` tasks each, at most
  ``faas.batch-size``, and each invocation reports back on its own;
- :class:`~dask._task_spec.Alias` nodes are resolved on the client, without an invocation.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import queue
from collections.abc import Hashable, Mapping
from dataclasses import replace
from graphlib import TopologicalSorter
from typing import Any

import dask
from dask._task_spec import (
    Alias,
    DataNode,
    GraphNode,
    Task,
    convert_legacy_graph,
    cull,
    fuse_linear_task_spec,
    resolve_aliases,
)
from dask.core import flatten, reverse_dict
from dask.local import finish_task, local_callbacks, order, start_state_from_dask, unpack_callbacks
from dask.sizeof import sizeof

from . import persisted, serialize, shuffle
from .exceptions import ConfigError
from .executor import CallOptions, FaasExecutor
from .persisted import FaasFuture
from .protocol import Ref
from .tasks import Inline, key_name, load, run_tasks

__all__ = ["ANNOTATIONS", "GraphRun"]

#: Dask annotations that reach the invocations of the annotated tasks.
ANNOTATIONS = {"faas_memory_mb": "memory_mb", "faas_timeout_s": "timeout_s", "faas_retries": "retries"}
#: Ready tasks are split into about this many invocations per worker (each at most faas.batch-size).
BATCHES_PER_WORKER = 4
_run_ids = itertools.count()


class _Deleter:
    """Deletes released intermediates in the background, in batches."""

    def __init__(self, executor: FaasExecutor) -> None:
        self._store = executor._job
        self._pending: list[Ref] = []
        self._pool = cf.ThreadPoolExecutor(1, thread_name_prefix="dask-faas-delete")

    def add(self, ref: Ref) -> None:
        self._pending.append(ref)
        if len(self._pending) >= 64:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._pool.submit(self._store.delete, *self._pending)
            self._pending = []

    def close(self) -> None:
        self.flush()
        self._pool.shutdown(wait=True)


class GraphRun:
    """One compute: prepare the graph, run it through invocations, fetch or keep the results.

    Parameters
    ----------
    executor : FaasExecutor
        Runs the invocations; its job's storage holds the intermediates.
    keep : bool
        Leave the requested results in storage and return :class:`FaasFuture` objects (persist).
    callbacks : optional
        Dask callbacks for this compute, in addition to the active ones.
    rerun_exceptions_locally : bool, optional
        Re-run a failed task on the client, with its inputs, to debug it (``dask.config`` default).
    """

    def __init__(
        self, executor: FaasExecutor, keep: bool, callbacks: Any, rerun_exceptions_locally: bool | None
    ) -> None:
        self.ex = executor
        self.keep = keep
        self.callbacks = callbacks
        if rerun_exceptions_locally is None:
            rerun_exceptions_locally = dask.config.get("rerun_exceptions_locally", False)
        self.rerun = rerun_exceptions_locally
        self.name = f"c{next(_run_ids)}"
        self.batch_size = int(executor._settings["batch-size"])
        self.task_inline_limit = int(executor._settings["task-inline-limit"])
        self.function = executor._job_function(run_tasks)
        self.annotations: dict[str, dict[Hashable, Any]] = {}
        self.graph: dict[Hashable, GraphNode] = {}
        self.cache: dict[Hashable, Any] = {}
        self.protected: set[Hashable] = set()
        self.tasks = 0
        self._in_flight: set[cf.Future[Any]] = set()
        self._deleter = _Deleter(executor)

    @property
    def executed(self) -> int:
        """Tasks that run inside functions (after fusion and alias resolution)."""
        return sum(not isinstance(t, Alias | DataNode) for t in self.graph.values())

    def run(self, dsk: Any, keys: Any) -> Any:
        """Compute ``keys`` of ``dsk`` (a graph or an expression); results nest like ``keys``."""
        try:
            self._prepare(dsk, keys)
            self._execute(keys)
            if self.keep:
                return _map_nested(self._persisted, keys)
            return _map_nested(self._fetch_all(_key_set(keys)).__getitem__, keys)
        finally:
            self._finish()

    # -- preparation -----------------------------------------------------------------------

    def _prepare(self, dsk: Any, keys: Any) -> None:
        if not isinstance(dsk, Mapping):
            self.annotations = dsk.__dask_annotations__()
            dsk = shuffle.rewrite(dsk, dsk.__dask_graph__(), compute=self.name)
        graph = {}
        for key, node in dsk.items():
            value = node.value if isinstance(node, DataNode) else node
            if isinstance(value, FaasFuture):  # persisted earlier: its data is in storage
                self.cache[key] = value.reference(self.ex)
                self.protected.add(key)
            else:
                graph[key] = node
        self.tasks = len(graph)
        out = _key_set(keys)
        graph = convert_legacy_graph(graph, all_keys=set(graph) | set(self.cache))
        graph = {key: _keyed(key, node) for key, node in cull(graph, out).items()}
        _refuse_partd(graph)
        for node in list(graph.values()):  # dask's optimizations may have inlined persisted keys
            for dep in node.dependencies:
                if dep in graph or dep in self.cache:
                    continue
                if (ref := persisted.find(dep, self.ex)) is not None:
                    self.cache[dep] = ref
                    self.protected.add(dep)
        graph = fuse_partitionwise(graph, out | self.protected)
        graph = fuse_linear_task_spec(graph, out)
        dependents = reverse_dict({k: t.dependencies for k, t in graph.items()})
        self.graph = resolve_aliases(graph, out, dependents)
        limit = self.ex._inline_limit
        for key, node in list(self.graph.items()):
            if isinstance(node, DataNode) and sizeof(node.value) > limit:
                # graph-embedded data: into storage once, not into every dependent's payload
                data = serialize.dumps(node.value)
                self.cache[key] = self.ex._job.put(f"{self.name}/{key_name(key)}.data", data)
                del self.graph[key]

    # -- the engine --------------------------------------------------------------------------

    def _execute(self, keys: Any) -> None:
        dsk, results = self.graph, _key_set(keys)
        done: queue.SimpleQueue[list[tuple[Hashable, Any, BaseException | None]]] = queue.SimpleQueue()
        with local_callbacks(self.callbacks) as callbacks:
            _, _, pretask_cbs, posttask_cbs, _ = unpack_callbacks(callbacks)
            started_cbs: list[Any] = []
            state: dict[str, Any] = {}
            succeeded = False
            try:
                for cb in callbacks:
                    if cb[0]:
                        cb[0](dsk)
                    started_cbs.append(cb)
                keyorder = order(dsk)
                state = start_state_from_dask(dsk, cache=self.cache, keys=results, sortkey=keyorder.get)
                for _, start_state, _, _, _ in callbacks:
                    if start_state:
                        start_state(dsk, state)
                if state["waiting"] and not state["ready"]:
                    raise ValueError("Found no accessible jobs in dask")
                while state["waiting"] or state["ready"] or state["running"]:
                    self._fire(state, pretask_cbs, done)
                    for key, value, exc in done.get():
                        if exc is not None:
                            self._raise(key, exc)
                        state["cache"][key] = value
                        finish_task(dsk, key, state, results, keyorder.get, release_data=self._release)
                        for f in posttask_cbs:
                            f(key, value, dsk, state, "faas")
                succeeded = True
            finally:
                for _, _, _, _, finish in started_cbs:
                    if finish:
                        finish(dsk, state, not succeeded)

    def _fire(self, state: dict[str, Any], pretask_cbs: list[Any], done: queue.SimpleQueue[Any]) -> None:
        ready, remote, local = state["ready"], [], []
        while ready:
            key = ready.pop()
            state["running"].add(key)
            for f in pretask_cbs:
                f(key, self.graph, state)
            task = self.graph[key]
            inputs = {dep: state["cache"][dep] for dep in state["dependencies"][key]}
            if isinstance(task, Alias):
                local.append((key, inputs[task.target], None))
            else:
                remote.append((key, task, inputs))
        if local:
            done.put(local)
        if not remote:
            return
        # a few invocations per worker, so a worker that finishes early takes the next one
        size = min(self.batch_size, -(-len(remote) // (BATCHES_PER_WORKER * max(self.ex._max_workers, 1))))
        for start in range(0, len(remote), size):
            batch = remote[start : start + size]
            args = [((batch, self.name, self.task_inline_limit), {})]
            future = self.ex._submit(run_tasks, self.function, args, True, self._options(batch))
            self._in_flight.add(future)
            future.add_done_callback(lambda f, b=batch: done.put(self._outcome(f, b)))

    def _outcome(self, future: cf.Future[Any], batch: list[Any]) -> list[Any]:
        self._in_flight.discard(future)
        if future.cancelled():
            return [(batch[0][0], None, cf.CancelledError(f"invocation of {batch[0][0]!r} cancelled"))]
        exc = future.exception()
        if exc is not None:
            return [(getattr(exc, "dask_faas_key", batch[0][0]), None, exc)]
        return [(key, ref, None) for key, ref in future.result()]

    def _options(self, batch: list[tuple[Hashable, Any, Any]]) -> CallOptions:
        options = self.ex._options
        for annotation, field in ANNOTATIONS.items():
            values = [v for key, *_ in batch if (v := self.annotations.get(annotation, {}).get(key))]
            if values:
                options = replace(options, **{field: type(getattr(options, field))(max(values))})
        return options

    def _raise(self, key: Hashable, exc: BaseException) -> None:
        if self.rerun and key in self.graph:
            task = self.graph[key]
            task({dep: load(self.cache[dep], self.ex._job) for dep in task.dependencies})
        raise exc

    def _release(self, key: Hashable, state: dict[str, Any], delete: bool = True) -> None:
        """finish_task's release_data: forget the key and delete its stored object."""
        if key in state["waiting_data"]:
            del state["waiting_data"][key]
        state["released"].add(key)
        if delete:
            value = state["cache"].pop(key)
            if isinstance(value, Ref) and key not in self.protected:
                self._deleter.add(value)

    # -- results and cleanup -----------------------------------------------------------------

    def _fetch_all(self, keys: set[Hashable]) -> dict[Hashable, Any]:
        """The values of the requested keys, stored ones read in parallel."""
        refs = {key: self.cache[key] for key in keys}
        self.ex._count_received(sum(v.size for v in refs.values() if isinstance(v, Ref | Inline)))
        with cf.ThreadPoolExecutor(16, thread_name_prefix="dask-faas-fetch") as pool:
            values = pool.map(lambda v: load(v, self.ex._job), refs.values())
            return dict(zip(refs, values, strict=True))

    def _persisted(self, key: Hashable) -> Any:
        value = self.cache[key]
        return FaasFuture(key, value, self.ex) if isinstance(value, Ref | Inline) else value

    def _finish(self) -> None:
        """Delete what this compute wrote, apart from persisted results; outputs of invocations
        still running (after an error) are deleted when they arrive."""
        for future in list(self._in_flight):
            future.cancel()
            future.add_done_callback(self._delete_outputs)
        self._deleter.close()
        prefix = f"{self.ex._job.prefix}/{self.name}/"
        kept = {v.key for v in self.cache.values() if isinstance(v, Ref)} if self.keep else set()
        doomed = [key for key, _ in self.ex.storage.list(prefix) if key not in kept]
        for start in range(0, len(doomed), 1000):
            self.ex.storage.delete(doomed[start : start + 1000])

    def _delete_outputs(self, future: cf.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.ex._job.delete(*(ref for _, ref in future.result() if isinstance(ref, Ref)))


def fuse_partitionwise(graph: dict[Hashable, GraphNode], keep: set[Hashable]) -> dict[Hashable, GraphNode]:
    """Fuse each task into its dependents when they all belong to one group of the same partition.

    ``dask.compute`` hands dataframe graphs over without dask's blockwise fusion, and a column
    projection makes diamonds (one ``read-csv`` partition feeding three ``getitem`` tasks) that linear
    fusion cannot merge. A task joins its dependents' group when it is not requested, all its
    dependents are in one group and share its partition index (``key[1:]``); each group becomes one
    task under the key of its root, so no output key changes and the partition's intermediates stay
    inside one function.
    """
    dependents: dict[Hashable, list[Hashable]] = {key: [] for key in graph}
    for key, node in graph.items():
        for dep in node.dependencies:
            if dep in dependents:
                dependents[dep].append(key)
    group: dict[Hashable, Hashable] = {}
    for key in reversed(list(TopologicalSorter({k: n.dependencies & graph.keys() for k, n in graph.items()})
                              .static_order())):  # fmt: skip
        node, users = graph[key], dependents[key]
        roots = {group[user] for user in users}
        if (
            key not in keep
            and len(roots) == 1
            and isinstance(node, Task)
            and not node.block_fusion
            and isinstance(key, tuple)
            and all(isinstance(user, tuple) and user[1:] == key[1:] for user in users)
        ):
            group[key] = roots.pop()
        else:
            group[key] = key
    members: dict[Hashable, list[GraphNode]] = {}
    for key, root in group.items():
        members.setdefault(root, []).append(graph[key])
    return {
        root: nodes[0] if len(nodes) == 1 else Task.fuse(*nodes, key=root) for root, nodes in members.items()
    }


def _keyed(key: Hashable, node: GraphNode) -> GraphNode:
    """``node`` under its graph key: dask-expr stores some nodes (``FromDelayed``'s aliases) under
    another key than their own, which linear fusion cannot handle."""
    if node.key == key:
        return node
    if isinstance(node, Alias):
        return Alias(key, node.target)
    return node.substitute({}, key=key)


def _key_set(keys: Any) -> set[Hashable]:
    return set(flatten(keys)) if isinstance(keys, list) else {keys}


def _map_nested(fn: Any, value: Any) -> Any:
    """Results nested like the requested keys: lists of keys give tuples, as dask's get functions."""
    if isinstance(value, list):
        return tuple(_map_nested(fn, v) for v in value)
    return fn(value)


def _refuse_partd(graph: Mapping[Hashable, GraphNode]) -> None:
    """Bag groupbys built for the disk method: their partd files would live on one function's disk."""
    for key, node in graph.items():
        func = getattr(node, "func", None)
        func = getattr(func, "func", func)  # functools.partial(partd.File, ...)
        if getattr(func, "__module__", "").startswith("partd"):
            raise ConfigError(
                f"this bag groupby uses a partd disk store ({key!r}), which needs a disk shared by "
                "every task; functions share only object storage. Pass shuffle='tasks' to groupby, "
                "or build the bag under dask_faas.enable(...)"
            )
