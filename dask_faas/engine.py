"""One Dask compute on an executor's :class:`~dask_faas.session.Session`: the get_async-style engine.

The engine is a close equivalent of :func:`dask.local.get_async`, built from the same parts
(``order``, ``start_state_from_dask``, ``finish_task`` and the callbacks protocol, so ``ProgressBar``,
``Profiler`` and custom ``Callback``s see every task), and like it takes what it needs explicitly:
the session's batch ``submit`` and ``num_workers``. The graph arrives prepared by the scheduler's
passes (:mod:`dask_faas.graph`). The differences from get_async:

- its cache holds references (:class:`~dask_faas.protocol.Ref`, :class:`~dask_faas.tasks.Inline`),
  and releasing a key deletes its stored object;
- ready tasks are batched into invocations: ``ceil(ready / (4 * num_workers))`` tasks each, at most
  ``faas.batch-size``, and each invocation reports back on its own;
- :class:`~dask._task_spec.Alias` nodes are resolved on the client, without an invocation;
- the assembly of a requested result (dask's finalize task, :func:`~dask_faas.graph.assembly_keys`)
  runs on the client from its inputs' references, as its result comes to the client anyway: a
  function would have to hold every partition, their concatenation and its pickle at once (a
  200 MiB array needs more than the default ``memory_mb=1024``). It runs in a function as before
  when the compute keeps its results in storage (persist) or a ``faas_*`` annotation asks for limits
  of its own (``with dask.annotate(faas_memory_mb=...): dask.compute(...)``);
- its wait has a deadline: when no invocation has finished for longer than the longest one call
  may take (its limits and retries), it fails naming the invocations it waits for;
- a failure names the task: its key and function, and the call and attempt that ran it.
"""

from __future__ import annotations

import concurrent.futures as cf
import queue
from collections.abc import Callable, Hashable
from dataclasses import replace
from typing import Any

import dask
from dask._task_spec import Alias, DataNode, GraphNode, Task
from dask.local import finish_task, local_callbacks, order, start_state_from_dask, unpack_callbacks
from dask.utils import funcname, key_split

from . import serialize
from .exceptions import SerializationError
from .graph import PreparedGraph, key_set
from .persisted import FaasFuture
from .protocol import Ref
from .session import CallOptions, Session
from .tasks import Inline, load, run_tasks

__all__ = ["ANNOTATIONS", "GraphRun", "describe_task"]

#: Dask annotations that reach the invocations of the annotated tasks.
ANNOTATIONS = {"faas_memory_mb": "memory_mb", "faas_timeout_s": "timeout_s", "faas_retries": "retries"}
#: Ready tasks are split into about this many invocations per worker (each at most faas.batch-size).
BATCHES_PER_WORKER = 4
#: Parallel reads from storage on the client (the requested results, an assembly's inputs).
FETCH_THREADS = 16

_Batch = list[tuple[Hashable, GraphNode, dict[Hashable, Any]]]


def describe_task(key: Hashable, node: Any) -> str:
    """``task <key> (<function>)``, for messages: the user's key and function, not the engine's."""
    func = getattr(node, "func", None)
    name = funcname(func) if isinstance(node, Task) and func is not None else key_split(key)
    if name == "_execute_subgraph":  # a fused task: named after its last task's key
        name = key_split(key)
    return f"task {key!r} ({name})"


class _Deleter:
    """Deletes released intermediates in the background, in batches."""

    def __init__(self, session: Session) -> None:
        self._store = session.store
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
    """One compute: run a prepared graph through invocations, fetch or keep the results.

    Parameters
    ----------
    session : Session
        The executor's session: runs the invocations; its job's storage holds the intermediates.
    name : str
        The compute's name; its objects live under ``<job prefix>/<name>/``.
    keep : bool
        Leave the requested results in storage and return :class:`FaasFuture` objects (persist).
    callbacks : optional
        Dask callbacks for this compute, in addition to the active ones.
    rerun_exceptions_locally : bool, optional
        Re-run a failed task on the client, with its inputs, to debug it (``dask.config`` default).
    """

    def __init__(
        self,
        session: Session,
        name: str,
        *,
        keep: bool = False,
        callbacks: Any = None,
        rerun_exceptions_locally: bool | None = None,
    ) -> None:
        self.session = session
        self.name = name
        self.keep = keep
        self.callbacks = callbacks
        if rerun_exceptions_locally is None:
            rerun_exceptions_locally = dask.config.get("rerun_exceptions_locally", False)
        self.rerun = rerun_exceptions_locally
        self.batch_size = int(session.settings["batch-size"])
        self.task_inline_limit = int(session.settings["task-inline-limit"])
        self.graph: dict[Hashable, GraphNode] = {}
        self.cache: dict[Hashable, Any] = {}
        self.protected: set[Hashable] = set()
        self.annotations: dict[str, dict[Hashable, Any]] = {}
        #: Tasks in the graph dask handed over.
        self.tasks = 0
        #: Requested keys assembled on the client from their inputs (see the module docstring).
        self.assembly: set[Hashable] = set()
        #: Of those, how many ran (the rest failed or were not reached).
        self.assembled = 0
        self._assembler: cf.ThreadPoolExecutor | None = None
        self._function = session.function(run_tasks)
        #: Invocations submitted and not yet taken from the done queue, with their labels.
        self._in_flight: dict[cf.Future[Any], str] = {}
        #: The longest any of them may take (see :meth:`Session.longest_call_s`).
        self._wait_bound = 0.0
        self._deleter = _Deleter(session)

    @property
    def executed(self) -> int:
        """Tasks that run inside functions (after fusion and alias resolution; assemblies on the
        client excluded)."""
        tasks = sum(not isinstance(t, Alias | DataNode) for t in self.graph.values())
        return tasks - len(self.assembly)

    def run(self, keys: Any, prepare: Callable[[], PreparedGraph]) -> Any:
        """Compute ``keys`` of the graph ``prepare()`` returns; results nest like ``keys``.

        The graph is prepared here so that whatever its passes upload is deleted with the rest of the
        compute's objects, whatever happens.
        """
        try:
            prepared = prepare()
            self.graph, self.cache, self.protected = prepared.graph, prepared.cache, prepared.protected
            self.annotations, self.tasks = prepared.annotations, prepared.tasks
            self.assembly = (
                set()
                if self.keep
                else {
                    key
                    for key in prepared.assembly
                    if not any(key in self.annotations.get(name, {}) for name in ANNOTATIONS)
                }
            )
            self._execute(keys)
            if self.keep:
                return _map_nested(self._persisted, keys)
            return _map_nested(self._fetch_all(key_set(keys)).__getitem__, keys)
        finally:
            self._finish()

    # -- the engine --------------------------------------------------------------------------

    def _execute(self, keys: Any) -> None:
        dsk, results = self.graph, key_set(keys)
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
                    for key, value, exc in self._next(done):
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

    def _next(self, done: queue.SimpleQueue[Any]) -> list[tuple[Hashable, Any, BaseException | None]]:
        """The next finished invocation's outcomes, within the longest time one call may take."""
        try:
            item = done.get(timeout=self._wait_bound or None)
        except queue.Empty:
            waiting = sorted(self._in_flight.values())
            raise TimeoutError(
                f"compute {self.name}: no invocation finished within {self._wait_bound:g} s, longer "
                f"than one call may take with its limits and retries; still waiting for {len(waiting)}: "
                + "; ".join(waiting[:5])
            ) from None
        if isinstance(item, list):  # aliases resolved on the client
            return item
        future, batch = item
        return self._outcome(future, batch)

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
            elif key in self.assembly:
                self._assemble(key, task, inputs, done)
            else:
                remote.append((key, task, inputs))
        if local:
            done.put(local)
        if not remote:
            return
        # a few invocations per worker, so a worker that finishes early takes the next one
        per_worker = BATCHES_PER_WORKER * max(self.session.num_workers, 1)
        size = min(self.batch_size, -(-len(remote) // per_worker))
        for start in range(0, len(remote), size):
            batch = remote[start : start + size]
            options, label = self._options(batch), self._label(batch)
            future = self._submit(batch, options, label)
            self._in_flight[future] = label
            self._wait_bound = max(self._wait_bound, self.session.longest_call_s(options))
            future.add_done_callback(lambda f, b=batch: done.put((f, b)))

    def _assemble(
        self, key: Hashable, task: GraphNode, inputs: dict[Hashable, Any], done: queue.SimpleQueue[Any]
    ) -> None:
        """Run an assembly task on the client, in a thread of its own (the engine keeps taking the
        outcomes of other invocations meanwhile); its outcome arrives like an invocation's."""
        if self._assembler is None:
            self._assembler = cf.ThreadPoolExecutor(1, thread_name_prefix="dask-faas-assemble")
        label = f"{describe_task(key, task)} of compute {self.name}, assembled on the client"
        future = self._assembler.submit(self._run_assembly, key, task, inputs)
        self._in_flight[future] = label
        future.add_done_callback(lambda f, b=[(key, task, inputs)]: done.put((f, b)))

    def _run_assembly(self, key: Hashable, task: GraphNode, inputs: dict[Hashable, Any]) -> list[Any]:
        # inline inputs came in the invocations' responses, which are counted already
        self.session.count_received(sum(v.size for v in inputs.values() if isinstance(v, Ref)))
        try:
            value = task(self._load_all(inputs))
        except Exception as exc:
            exc.add_note(f"raised by {describe_task(key, task)} while assembling the result on the client")
            raise
        self.assembled += 1
        return [(key, value)]

    def _load_all(self, refs: dict[Hashable, Any]) -> dict[Hashable, Any]:
        """The values behind ``refs``, stored ones read in parallel (threads only for two or more)."""
        stored = [key for key, value in refs.items() if isinstance(value, Ref)]
        if len(stored) < 2:
            return {key: load(value, self.session.store) for key, value in refs.items()}
        threads = min(FETCH_THREADS, len(stored))
        with cf.ThreadPoolExecutor(threads, thread_name_prefix="dask-faas-fetch") as pool:
            values = pool.map(lambda v: load(v, self.session.store), refs.values())
            return dict(zip(refs, values, strict=True))

    def _submit(self, batch: _Batch, options: CallOptions, label: str) -> cf.Future[Any]:
        calls = [((batch, self.name, self.task_inline_limit), {})]
        # siblings for speculative backups: batches of this compute running the same kind of task
        group = (self.name, key_split(batch[0][0]), len(batch))
        try:
            return self.session.submit(
                self._function,
                calls,
                unwrap=True,
                options=options,
                label=label,
                group=group,
                tasks=[key for key, _, _ in batch],
            )
        except SerializationError as exc:
            for key, task, _ in batch:  # name the task that cannot be pickled
                try:
                    serialize.dumps(task)
                except Exception as inner:
                    raise SerializationError(
                        f"{describe_task(key, task)} cannot be pickled to run in a function: {inner}"
                    ) from exc
            raise

    def _label(self, batch: _Batch) -> str:
        key, task, _ = batch[0]
        more = f" and {len(batch) - 1} more tasks" if len(batch) > 1 else ""
        return f"{describe_task(key, task)}{more} of compute {self.name}"

    def _outcome(self, future: cf.Future[Any], batch: _Batch) -> list[Any]:
        label = self._in_flight.pop(future, "")
        if future.cancelled():
            return [(batch[0][0], None, cf.CancelledError(f"the invocation of {label} was cancelled"))]
        exc = future.exception()
        if exc is not None:
            return [(getattr(exc, "dask_faas_key", batch[0][0]), None, exc)]
        return [(key, ref, None) for key, ref in future.result()]

    def _options(self, batch: _Batch) -> CallOptions:
        options = self.session.options
        for annotation, field in ANNOTATIONS.items():
            values = [v for key, *_ in batch if (v := self.annotations.get(annotation, {}).get(key))]
            if values:
                options = replace(options, **{field: type(getattr(options, field))(max(values))})
        return options

    def _raise(self, key: Hashable, exc: BaseException) -> None:
        task = self.graph.get(key)
        if self.rerun and task is not None:
            task({dep: load(self.cache[dep], self.session.store) for dep in task.dependencies})
        if getattr(exc, "dask_faas_key", None) is not None:
            where = describe_task(key, task)
            inner, name = getattr(exc, "dask_faas_raised_by", (key, ""))
            if inner != key:  # the raising task was fused into the one the graph knows
                where = f"task {inner!r} ({name}), fused into {where},"
            exc.add_note(f"raised by {where} inside a dask-faas function")
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
        self.session.count_received(sum(v.size for v in refs.values() if isinstance(v, Ref | Inline)))
        return self._load_all(refs)

    def _persisted(self, key: Hashable) -> Any:
        value = self.cache[key]
        return FaasFuture(key, value, self.session) if isinstance(value, Ref | Inline) else value

    def _finish(self) -> None:
        """Delete what this compute wrote, apart from persisted results; outputs of invocations
        still running (after an error) are deleted when they arrive."""
        for future in list(self._in_flight):
            future.cancel()
            future.add_done_callback(self._delete_outputs)
        if self._assembler is not None:  # one still running (after an error) ends by itself
            self._assembler.shutdown(wait=False, cancel_futures=True)
        self._deleter.close()
        kept = [v for v in self.cache.values() if isinstance(v, Ref)] if self.keep else []
        self.session.store.delete_under(self.name, keep=kept)

    def _delete_outputs(self, future: cf.Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self.session.store.delete(*(ref for _, ref in future.result() if isinstance(ref, Ref)))


def _map_nested(fn: Any, value: Any) -> Any:
    """Results nested like the requested keys: lists of keys give tuples, as dask's get functions."""
    if isinstance(value, list):
        return tuple(_map_nested(fn, v) for v in value)
    return fn(value)
