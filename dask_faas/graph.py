"""The graph passes of ``faas_get``: what the scheduler does to a Dask graph before the engine runs it.

In order: the injected rewrites of the expression's graph (the storage exchange for dataframe
shuffles, :func:`dask_faas.shuffle.rewrite`), conversion of legacy tasks, persisted results taken
from storage instead of recomputed, culling to the requested keys, refusal of partd disk stores,
partition-wise fusion (:mod:`dask_faas.fusion`) and linear fusion, aliases resolved, and data
embedded in the graph uploaded once instead of travelling in every dependent's payload.

It also finds the requested keys that are dask's assembly of a computed collection
(:func:`assembly_keys`): the task ``dask.compute`` adds to concatenate a collection's partitions into
the one value it returns. The engine may run those on the client, so they are kept out of fusion.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
from dask.sizeof import sizeof

from . import persisted, serialize
from .exceptions import ConfigError
from .persisted import FaasFuture
from .session import Session
from .tasks import key_name

__all__ = ["PreparedGraph", "Rewrite", "assembly_keys", "key_set", "prepare"]

#: A rewrite of an expression's graph: ``rewrite(expr, graph) -> graph`` (same output keys).
Rewrite = Callable[[Any, dict[Hashable, Any]], dict[Hashable, Any]]


@dataclass
class PreparedGraph:
    """A graph ready for the engine.

    Attributes
    ----------
    graph : dict
        The nodes to run (tasks, fused tasks and aliases) by key.
    cache : dict
        References of the inputs already in storage (persisted results, embedded data), by key.
    protected : set
        Keys whose stored objects this compute must not delete (persisted earlier).
    annotations : dict
        Dask annotations by name, then by key.
    tasks : int
        Tasks in the graph dask handed over.
    assembly : set
        Requested keys that are dask's assembly of a computed collection (:func:`assembly_keys`):
        plain tasks, fused with nothing, whose inputs are tasks of their own.
    """

    graph: dict[Hashable, GraphNode]
    cache: dict[Hashable, Any] = field(default_factory=dict)
    protected: set[Hashable] = field(default_factory=set)
    annotations: dict[str, dict[Hashable, Any]] = field(default_factory=dict)
    tasks: int = 0
    assembly: set[Hashable] = field(default_factory=set)


def key_set(keys: Any) -> set[Hashable]:
    """The flat set of requested keys (dask nests them in lists)."""
    return set(flatten(keys)) if isinstance(keys, list) else {keys}


def prepare(
    dsk: Any,
    keys: Any,
    session: Session,
    *,
    compute: str,
    rewrites: Sequence[Rewrite] = (),
    fuse: Callable[[dict[Hashable, GraphNode], set[Hashable]], dict[Hashable, GraphNode]] | None = None,
) -> PreparedGraph:
    """Prepare ``keys`` of ``dsk`` (a graph or a dask expression) to run on ``session``.

    Parameters
    ----------
    dsk : mapping or dask expression
        What dask handed to the scheduler.
    keys : key or nested list of keys
        The requested keys.
    session : Session
        The executor's session (persisted results, the job's storage for embedded data).
    compute : str
        The compute's name: embedded data goes under ``<job prefix>/<compute>/``.
    rewrites : sequence of callables
        Applied to an expression's graph, in order.
    fuse : callable, optional
        A fusion pass ``fuse(graph, keep)`` applied before linear fusion.
    """
    prepared = PreparedGraph({})
    if not isinstance(dsk, Mapping):
        prepared.annotations = dsk.__dask_annotations__()
        expr, dsk = dsk, dsk.__dask_graph__()
        for rewrite in rewrites:
            dsk = rewrite(expr, dsk)
    graph = {}
    for key, node in dsk.items():
        value = node.value if isinstance(node, DataNode) else node
        if isinstance(value, FaasFuture):  # persisted earlier: its data is in storage
            prepared.cache[key] = value.reference(session)
            prepared.protected.add(key)
        else:
            graph[key] = node
    prepared.tasks = len(graph)
    out = key_set(keys)
    graph = convert_legacy_graph(graph, all_keys=set(graph) | set(prepared.cache))
    graph = {key: _keyed(key, node) for key, node in cull(graph, out).items()}
    _refuse_partd(graph)
    for node in list(graph.values()):  # dask's optimizations may have inlined persisted keys
        for dep in node.dependencies:
            known = dep in graph or dep in prepared.cache
            if not known and (ref := persisted.find(dep, session)) is not None:
                prepared.cache[dep] = ref
                prepared.protected.add(dep)
    prepared.assembly = assembly_keys(graph, out)
    # an assembly task stays alone, and so do its inputs: nothing of the user's joins it
    keep = out | prepared.protected | {dep for key in prepared.assembly for dep in graph[key].dependencies}
    if fuse is not None:
        graph = fuse(graph, keep)
    graph = fuse_linear_task_spec(graph, keep)
    dependents = reverse_dict({k: t.dependencies for k, t in graph.items()})
    prepared.graph = resolve_aliases(graph, out, dependents)
    for key, node in list(prepared.graph.items()):
        if isinstance(node, DataNode) and sizeof(node.value) > session.inline_limit:
            # graph-embedded data: into storage once, not into every dependent's payload
            data = serialize.dumps(node.value)
            prepared.cache[key] = session.store.put(f"{compute}/{key_name(key)}.data", data)
            del prepared.graph[key]
    return prepared


def assembly_keys(graph: Mapping[Hashable, GraphNode], keys: set[Hashable]) -> set[Hashable]:
    """Which of ``keys`` are dask's assembly of a computed collection, not tasks of the user's.

    ``dask.compute`` (dask >= 2025.1) wraps each collection in a ``FinalizeCompute`` expression,
    which adds one task that turns the collection's partitions into the value compute returns:

    - for collections backed by a high-level graph (arrays, bags, custom collections), dask's
      ``HLGFinalizeCompute``: a task named ``finalize-hlgfinalizecompute-<token>`` calling the
      collection's ``__dask_postcompute__`` function on its partitions;
    - for dataframes, ``FinalizeComputeDF``, lowered to a repartition to one partition: dask's
      ``_concat`` of every partition under ``("repartitiontofewer-<token>", 0)`` (a user's own
      ``repartition(npartitions=1)`` as the last step is the same task, and is found too).

    Only plain tasks qualify: a finalize that dask's own optimizations fused with the user's tasks
    (a single-chunk array, a reduction's aggregate) is an alias or a fused task, and is not found.

    Parameters
    ----------
    graph : mapping
        Converted graph nodes by key, before fusion.
    keys : set
        The requested keys.
    """
    return {key for key in keys if isinstance(node := graph.get(key), Task) and _is_assembly(key, node)}


def _is_assembly(key: Hashable, node: Task) -> bool:
    if node.has_subgraph() or not node.dependencies:
        return False
    if isinstance(key, str):  # HLGFinalizeCompute's name
        return key.startswith("finalize-hlgfinalizecompute-")
    return (  # FinalizeComputeDF, lowered to RepartitionToFewer to one partition
        isinstance(key, tuple)
        and len(key) == 2
        and isinstance(key[0], str)
        and key[0].startswith("repartitiontofewer-")
        and key[1] == 0
        and getattr(node.func, "__name__", None) == "_concat"
        and getattr(node.func, "__module__", "").startswith("dask.dataframe")
    )


def _keyed(key: Hashable, node: GraphNode) -> GraphNode:
    """``node`` under its graph key: dask-expr stores some nodes (``FromDelayed``'s aliases) under
    another key than their own, which linear fusion cannot handle."""
    if node.key == key:
        return node
    if isinstance(node, Alias):
        return Alias(key, node.target)
    return node.substitute({}, key=key)


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
