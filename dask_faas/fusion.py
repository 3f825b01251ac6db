"""Partition-wise fusion: one function runs a partition's chain of tasks, not one function per task.

``dask.compute`` hands dataframe graphs over without dask's blockwise fusion, and a column projection
makes diamonds (one ``read-csv`` partition feeding three ``getitem`` tasks) that linear fusion cannot
merge. :func:`fuse_partitionwise` merges such a partition's tasks into one task under the key of its
last task, so no output key changes and the partition's intermediates stay inside one function.

Fusion must never cost parallelism: a task is not fused into a dependent that waits for tasks of
other partitions (the aggregation of a tree reduction waits for every chunk), or the fused task
would run its partition's whole chain only after every other partition has finished.
"""

from __future__ import annotations

from collections.abc import Hashable
from graphlib import TopologicalSorter

from dask._task_spec import GraphNode, Task

__all__ = ["fuse_partitionwise"]


def fuse_partitionwise(graph: dict[Hashable, GraphNode], keep: set[Hashable]) -> dict[Hashable, GraphNode]:
    """Fuse each task into its dependents when they all belong to one group of the same partition.

    A task joins its dependents' group when it is not in ``keep``, all its dependents are in one
    group and share its partition index (``key[1:]``), and no task of that group depends on a task
    outside it that belongs to another partition (or to none: a scalar reduction). Each group
    becomes one task under the key of its root.

    Parameters
    ----------
    graph : dict
        Converted graph nodes by key.
    keep : set
        Keys that must stay tasks of their own (requested or persisted).
    """
    dependents: dict[Hashable, list[Hashable]] = {key: [] for key in graph}
    for key, node in graph.items():
        for dep in node.dependencies:
            if dep in dependents:
                dependents[dep].append(key)
    group: dict[Hashable, Hashable] = {}
    #: Whether every task of the group (by root) depends only on tasks of the root's partition.
    local: dict[Hashable, bool] = {}
    ordered = TopologicalSorter({k: n.dependencies & graph.keys() for k, n in graph.items()}).static_order()
    for key in reversed(list(ordered)):  # dependents before their dependencies
        node, users = graph[key], dependents[key]
        roots = {group[user] for user in users}
        if (
            key not in keep
            and len(roots) == 1
            and isinstance(node, Task)
            and not node.block_fusion
            and isinstance(key, tuple)
            and all(isinstance(user, tuple) and user[1:] == key[1:] for user in users)
            and local[root := next(iter(roots))]
        ):
            group[key] = root
            local[root] = _depends_on_own_partition(key, node)
        else:
            group[key] = key
            local[key] = _depends_on_own_partition(key, node)
    members: dict[Hashable, list[GraphNode]] = {}
    for key, root in group.items():
        members.setdefault(root, []).append(graph[key])
    return {
        root: nodes[0] if len(nodes) == 1 else Task.fuse(*nodes, key=root) for root, nodes in members.items()
    }


def _depends_on_own_partition(key: Hashable, node: GraphNode) -> bool:
    """True when every dependency of ``node`` is a task of the same partition index as ``key``."""
    if not isinstance(key, tuple):
        return False
    return all(isinstance(dep, tuple) and dep[1:] == key[1:] for dep in node.dependencies)
