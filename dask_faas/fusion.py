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
    group and share its partition index (``key[1:]``), and joining delays it behind nothing of other
    partitions: every input of the group from outside it must be a task of the same partition that
    itself depends on no other partition, unless the joining task already does. Each group becomes
    one task under the key of its root.

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
    ordered = list(
        TopologicalSorter({k: n.dependencies & graph.keys() for k, n in graph.items()}).static_order()
    )
    spans = _spans(graph, ordered)
    group: dict[Hashable, Hashable] = {}
    #: Inputs of each group (by root) from outside it.
    inputs: dict[Hashable, set[Hashable]] = {}
    for key in reversed(ordered):  # dependents before their dependencies
        node, users = graph[key], dependents[key]
        roots = {group[user] for user in users}
        root = next(iter(roots)) if len(roots) == 1 else None
        if (
            root is not None
            and key not in keep
            and isinstance(node, Task)
            and not node.block_fusion
            and isinstance(key, tuple)
            and all(isinstance(user, tuple) and user[1:] == key[1:] for user in users)
            and all(
                isinstance(dep, tuple) and dep[1:] == key[1:] and (spans[key] or not spans.get(dep, False))
                for dep in inputs[root] - {key}
            )
        ):
            group[key] = root
            inputs[root] = (inputs[root] - {key}) | set(node.dependencies)
        else:
            group[key] = key
            inputs[key] = set(node.dependencies)
    members: dict[Hashable, list[GraphNode]] = {}
    for key, root in group.items():
        members.setdefault(root, []).append(graph[key])
    return {
        root: nodes[0] if len(nodes) == 1 else Task.fuse(*nodes, key=root) for root, nodes in members.items()
    }


def _spans(graph: dict[Hashable, GraphNode], ordered: list[Hashable]) -> dict[Hashable, bool]:
    """Whether each task depends, directly or not, on another partition (or is no partition's)."""
    spans: dict[Hashable, bool] = {}
    for key in ordered:  # dependencies first
        spans[key] = not isinstance(key, tuple) or any(
            not isinstance(dep, tuple) or dep[1:] != key[1:] or spans.get(dep, False)
            for dep in graph[key].dependencies
        )
    return spans
