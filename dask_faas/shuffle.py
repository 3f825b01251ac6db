"""Dataframe shuffles under faas_get: rewritten into the storage exchange (:mod:`dask_faas.exchange`).

dask-expr lowers ``shuffle``, ``set_index``, ``sort_values``, a groupby with ``split_out > 1`` and
a hash ``merge`` to a shuffle method chosen from ``dataframe.shuffle.method``: the multi-stage task
shuffle, the local-disk shuffle (partd files on one machine), or distributed's P2P (worker memory and
disks). None of them suits functions, which share only object storage. :func:`rewrite` finds those
shuffles in the lowered expression that faas_get receives -- every subclass of dask's
``SimpleShuffle`` (``TaskShuffle``, ``DiskShuffle``, ``P2PShuffle``) and the P2P hash join
(``HashJoinP2P``) -- and replaces their graph layers with the exchange, keeping their output keys, so
the rest of the graph is untouched. What the replaced layer would have done instead is culled away
by the engine: neither the task shuffle's stages nor a partd file ever runs under faas_get.

Per shuffle of ``M`` input and ``R`` output partitions the graph holds ``M`` mapper tasks (each
fused by the engine with the task producing its partition), ``R`` reducer tasks depending on every
mapper, and, for a large ``M x R``, a combiner stage between them:

**The two-level rule.** A single-level exchange costs ``M`` writes and ``M x R`` ranged reads. Above
``M x R > faas.exchange.two-level-above`` (default 16,384 in ``faas.yaml``, about 3 s of
reads at the 5,500 GET/s that S3 sustains on one key prefix before it splits the prefix), mappers
are grouped into ``G = ceil(sqrt(M))`` consecutive groups, each rewritten by a combiner into one
object: ``M + G`` writes and ``M + G x R`` reads (for 1,000 x 1,000: 33,000 reads instead of a
million), at the price of moving the bytes twice. Row order is kept: reducers still concatenate the
pieces in mapper order, as dask's single-stage task shuffle does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable
from dataclasses import replace
from typing import Any

from .exceptions import ConfigError

__all__ = ["TWO_LEVEL_SETTING", "plan", "rewrite"]

#: Setting of the two-level threshold on ``M x R`` (see the module docstring; default in faas.yaml).
TWO_LEVEL_SETTING = "faas.exchange.two-level-above"
#: Column holding the output partition of each row in a P2P hash join (as dask names it).
MERGE_COLUMN = "__hash_partition"
#: Functions computing the output partitions of disk and P2P shuffles in a materialized graph.
_OUTPUT_FUNCTIONS = frozenset({"collect", "shuffle_unpack", "merge_unpack"})


def rewrite(expr: Any, graph: dict[Hashable, Any], compute: str, two_level_above: int) -> dict[Hashable, Any]:
    """``graph`` of ``expr`` with every dataframe shuffle's layer replaced by the storage exchange.

    Parameters
    ----------
    expr : dask expression
        What dask handed to the scheduler. Its lowered shuffles are found by walking it; disk and P2P
        shuffles materialized earlier into a plain graph (``to_delayed``) are found by their tasks.
    graph : dict
        ``expr.__dask_graph__()``.
    compute : str
        Name of the compute (``GraphRun.name``): the exchange's objects are written under
        ``<job prefix>/<compute>/``, which the engine deletes when the compute ends.
    two_level_above : int
        The executor's ``faas.exchange.two-level-above``: above this many mapper x reducer reads,
        mappers' objects are first merged by combiners.

    Raises
    ------
    ConfigError
        For a P2P hash join materialized without its expression (``to_delayed`` of such a merge).
    """
    walk = getattr(expr, "walk", None)
    nodes = [node for node in walk() if _kind(node)] if walk else []
    found, joins = _materialized(graph)
    if not nodes and not found and not joins:
        return graph
    graph = dict(graph)
    replaced: set[Hashable] = set()
    for node in nodes:
        make = _merge_layer if _kind(node) == "merge" else _layer
        layer = make(node, compute, two_level_above)
        graph.update(layer)
        replaced.update(layer)
    if left := [key for key in joins if key not in replaced]:
        raise ConfigError(
            f"{left[0]!r} belongs to a P2P hash join materialized without its expression (to_delayed?), "
            "which functions cannot run: compute the merged collection itself, or set "
            "dataframe.shuffle.method to 'tasks' before building it"
        )
    for internal, spec, inputs, outputs, drop in found:
        for key in internal:
            graph.pop(key, None)
        if not all(key in replaced for key, _ in outputs):
            spec = replace(spec, compute=compute)
            graph.update(_reducers(spec, inputs, outputs, drop, str(outputs[0][0][0]), two_level_above))
    return graph


def plan(mappers: int, reducers: int, threshold: int) -> list[range] | None:
    """The combiner groups of an exchange (consecutive mappers), or None for a single level."""
    if mappers * reducers <= threshold or mappers < 4:
        return None
    size = math.ceil(mappers / math.ceil(math.sqrt(mappers)))
    return [range(start, min(start + size, mappers)) for start in range(0, mappers, size)]


def _kind(node: Any) -> str | None:
    """The kind of a shuffle node ("shuffle" or "merge"), without importing dask.dataframe."""
    if not type(node).__module__.startswith("dask.dataframe"):
        return None
    names = _class_names(node)
    if "HashJoinP2P" in names:
        return "merge"
    return "shuffle" if "SimpleShuffle" in names else None


def _token(*parts: Any) -> str:
    return hashlib.blake2b(repr(parts).encode(), digest_size=6).hexdigest()


def _layer(node: Any, compute: str | None, two_level_above: int) -> dict[Hashable, Any]:
    """The exchange of one ``SimpleShuffle`` (task, disk or P2P): same output keys and partitions.

    Every method gives the partitions of dask's task shuffle: its split (``shuffle_group``), its
    ``ignore_index`` and its concatenation; P2P also drops its partitioning column, as its meta does.
    """
    from . import exchange

    spec = exchange.Spec(
        name=_token(node._name),
        compute=compute,
        npartitions=int(node.npartitions_out),
        by=node.partitioning_index,
        ignore_index=bool(node.ignore_index),
        wanted=frozenset(node._partitions) if node._filtered else None,
    )
    drop = node.partitioning_index if "P2PShuffle" in _class_names(node) else None
    inputs = [(node.frame._name, i) for i in range(node.frame.npartitions)]
    outputs = list(zip(node.__dask_keys__(), node._partitions, strict=True))
    return _reducers(spec, inputs, outputs, drop, node._name, two_level_above)


def _reducers(
    spec: Any, inputs: list, outputs: list, drop: Any, name: str, two_level_above: int
) -> dict[Hashable, Any]:
    from dask._task_spec import List, Task

    from . import exchange

    layer, sources = _map_stage(spec, inputs, name, two_level_above)
    for key, part in outputs:
        layer[key] = Task(key, exchange.reduce_partition, spec, part, List(*sources), drop)
    return layer


def _merge_layer(node: Any, compute: str | None, two_level_above: int) -> dict[Hashable, Any]:
    """The exchange of a P2P hash join: both sides through the exchange, then dask's merge_chunk."""
    from dask._task_spec import List, Task

    from . import exchange

    npartitions = int(node.operand("_npartitions"))
    wanted = frozenset(node._partitions) if node._filtered else None
    layer: dict[Hashable, Any] = {}
    sides = []
    for side, frame, on, by_index in (
        ("left", node.left, node.shuffle_left_on, node.left_index),
        ("right", node.right, node.shuffle_right_on, node.right_index),
    ):
        spec = exchange.Spec(
            _token(node._name, side), compute, npartitions, MERGE_COLUMN, False, wanted, True
        )
        prepare = (exchange.assign_merge_partitions, on, MERGE_COLUMN, npartitions, by_index)
        inputs = [(frame._name, i) for i in range(frame.npartitions)]
        stage, sources = _map_stage(spec, inputs, f"{side}-{node._name}", two_level_above, prepare)
        layer.update(stage)
        sides.append((spec, List(*sources)))
    (left, left_sources), (right, right_sources) = sides
    kwargs = {
        "how": node.how,
        "left_on": node.left_on,
        "right_on": node.right_on,
        "result_meta": node._meta,
        "suffixes": node.suffixes,
        "left_index": node.left_index,
        "right_index": node.right_index,
        "indicator": node.indicator,
    }
    for key, part in zip(node.__dask_keys__(), node._partitions, strict=True):
        args = (left, right, part, left_sources, right_sources, MERGE_COLUMN)
        layer[key] = Task(key, exchange.merge_partition, *args, **kwargs)
    return layer


def _map_stage(
    spec: Any, inputs: list, name: str, two_level_above: int, prepare: tuple | None = None
) -> tuple[dict, list]:
    """Mapper tasks over the ``inputs`` keys (and combiners, by :func:`plan`); their references."""
    from dask._task_spec import List, Task, TaskRef

    from . import exchange

    layer: dict[Hashable, Any] = {}
    sources = []
    for i, input_key in enumerate(inputs):
        source = TaskRef(input_key)
        if prepare is not None:
            key = (f"exchange-prepare-{name}", i)
            layer[key] = Task(key, prepare[0], source, *prepare[1:])
            source = TaskRef(key)
        key = (f"exchange-map-{name}", i)
        layer[key] = Task(key, exchange.map_partition, source, spec, i)
        sources.append(TaskRef(key))
    groups = plan(len(sources), spec.npartitions, two_level_above)
    if groups:
        combined = []
        for g, members in enumerate(groups):
            key = (f"exchange-combine-{name}", g)
            layer[key] = Task(key, exchange.combine, spec, g, List(*(sources[i] for i in members)))
            combined.append(TaskRef(key))
        sources = combined
    return layer, sources


# -- shuffles materialized without their expression (``to_delayed``) ----------------------------


def _materialized(graph: dict[Hashable, Any]) -> tuple[list[tuple[Any, ...]], list[Hashable]]:
    """Disk and P2P shuffle layers in a plain graph, ``(internal keys, spec, inputs, outputs, drop)``,
    and the output keys of P2P hash joins.

    Their tasks tell the input keys, the partitioning column (it holds each row's output partition)
    and the output partitions; the index is kept, as these methods keep it.
    """
    disk: dict[Hashable, list] = {}
    p2p: dict[Hashable, list] = {}
    joins: list[Hashable] = []
    for key, task in graph.items():
        func = task[0] if type(task) is tuple and task else getattr(task, "func", None)
        name = getattr(func, "__name__", None)
        if name not in _OUTPUT_FUNCTIONS or not callable(func):
            continue
        module = getattr(func, "__module__", "") or ""
        args = _call(task)[1]
        if name == "collect" and module == "dask.dataframe.shuffle":
            disk.setdefault(args[3], []).append((key, args[1]))  # collect(p, part, meta, barrier)
        elif name == "shuffle_unpack" and module.startswith("distributed.shuffle"):
            p2p.setdefault(args[2].key, []).append((key, args[1]))  # (id, part, barrier)
        elif name == "merge_unpack" and module.startswith("distributed.shuffle"):
            joins.append(key)
    found = []
    for barrier, outputs in disk.items():
        splits = sorted(_call(graph[barrier])[1][0], key=lambda k: k[1])
        tasks = [_call(graph[k])[1] for k in splits]  # (input, column, partitions, partd)
        parts = list(tasks[0][2])
        spec = _spec(barrier, parts, tasks[0][1])
        found.append(((barrier, *splits, tasks[0][3]), spec, [t[0] for t in tasks], outputs, None))
    for barrier, outputs in p2p.items():
        task = graph[barrier]
        info = task.spec
        transfers = sorted((graph[k] for k in task.dependencies), key=lambda t: t.args[2])
        parts = range(info.npartitions) if isinstance(info.parts_out, int) else list(info.parts_out)
        spec = _spec(barrier, parts, info.column, info.npartitions)
        drop = info.column if info.drop_column else None
        inputs = [t.args[0].key for t in transfers]
        found.append(((barrier, *(t.key for t in transfers)), spec, inputs, outputs, drop))
    return found, joins


def _spec(barrier: Hashable, parts: list, column: str, npartitions: int | None = None) -> Any:
    from . import exchange

    n = npartitions or max(parts, default=0) + 1
    wanted = None if list(parts) == list(range(n)) else frozenset(parts)
    return exchange.Spec(_token(barrier), None, n, column, False, wanted, assigned=True)


def _call(task: Any) -> tuple[Any, tuple]:
    """``(function, arguments)`` of a legacy tuple task or a ``Task``; ``(None, ())`` otherwise."""
    if isinstance(task, tuple) and task and callable(task[0]):
        return task[0], task[1:]
    func = getattr(task, "func", None)
    return (func, tuple(task.args)) if func is not None and hasattr(task, "args") else (None, ())


def _class_names(node: Any) -> set[str]:
    return {cls.__name__ for cls in type(node).__mro__}
