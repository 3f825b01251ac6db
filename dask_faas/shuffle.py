"""Dataframe shuffles under faas_get: functions share no disk and no workers, only storage.

dask-expr lowers a shuffle (``shuffle``, ``set_index``, ``sort_values``, a groupby with many output
partitions, a hash merge) to a method chosen from ``dataframe.shuffle.method``; outside distributed
that is the local-disk shuffle (``DiskShuffle``, partd files on one machine's disk). :func:`rewrite`
finds such shuffles in the expression that faas_get receives and replaces their graph layers with
the task-based shuffle, keeping their output keys, so the rest of the graph is untouched and nothing
is written to a local disk. The task shuffle moves every group through ordinary task results (so
through storage when they are large).
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

__all__ = ["rewrite"]

#: Shuffle expressions that cannot run across functions, by class name.
LOCAL_SHUFFLES = frozenset({"DiskShuffle", "P2PShuffle"})


def rewrite(expr: Any, graph: dict[Hashable, Any]) -> dict[Hashable, Any]:
    """``graph`` of ``expr`` with every local-disk or P2P shuffle layer replaced by a task shuffle."""
    walk = getattr(expr, "walk", None)
    shuffles = [node for node in walk() if type(node).__name__ in LOCAL_SHUFFLES] if walk else []
    if not shuffles:
        return graph
    graph = dict(graph)
    for node in shuffles:
        for key in node._layer():
            graph.pop(key, None)
        graph.update(_task_shuffle(node)._layer())
    return graph


@functools.cache
def _named_task_shuffle() -> type:
    from dask.dataframe.dask_expr._shuffle import TaskShuffle

    class NamedTaskShuffle(TaskShuffle):
        """dask's task shuffle, named like the shuffle it replaces (so are its output keys)."""

        _parameters = [*TaskShuffle._parameters, "faas_name"]

        @functools.cached_property
        def _name(self) -> str:
            return self.operand("faas_name")

    return NamedTaskShuffle


def _task_shuffle(node: Any) -> Any:
    return _named_task_shuffle()(*node.operands, node._name)
