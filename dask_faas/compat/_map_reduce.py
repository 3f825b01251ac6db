"""``map_reduce`` as one Dask graph on the executor: map outputs reach the reducers through storage.

Dask is imported only when a graph is built or run (on the client), never inside functions.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import cloudpickle

from ._binding import POSITIONAL, bind, user_parameters
from ._function import UserFunction

if TYPE_CHECKING:
    from ..executor import FaasExecutor


def map_reduce_graph(
    job: str,
    map_function: Callable[..., Any],
    calls: list[dict[str, Any]],
    locators: list[dict[str, Any]],
    reduce_function: Callable[..., Any],
    extra_args_reduce: Any,
    groups: list[range],
) -> tuple[dict[Any, Any], list[Any], list[Any]]:
    """A Dask graph: the map calls, and one reducer over the list of outputs of each group of calls.

    Parameters
    ----------
    job : str
        The job's id, part of the keys.
    map_function, calls, locators
        The user's map function, the keyword arguments of its calls and the data's storages.
    reduce_function : callable
        The user's reducer: its first parameter (not an injected one) gets the list of map results.
    extra_args_reduce : tuple or dict, optional
        The reducer's other arguments.
    groups : list of range
        The calls whose results each reducer gets.

    Returns
    -------
    graph : dict
        The graph.
    map_keys, reduce_keys : list
        The keys of the map calls and of the reducers.

    Raises
    ------
    TypeError
        If the reducer takes no parameter for the map results.
    """
    from dask._task_spec import List, Task, TaskRef

    params = user_parameters(reduce_function)
    if not params:
        name = getattr(reduce_function, "__qualname__", None) or repr(reduce_function)
        raise TypeError(f"{name} takes no parameter for the map results")
    mapper = UserFunction(map_function)
    reduce_data = bind(reduce_function, [(None,)], extra_args_reduce)[0]
    results_param = POSITIONAL if POSITIONAL in reduce_data else params[0]  # positional-only: sum
    reducer = UserFunction(reduce_function, results_param=results_param)
    if results_param != POSITIONAL:
        del reduce_data[results_param]
    reduce_blob = cloudpickle.dumps(reduce_data)  # bytes: Dask does not look into the arguments

    token = uuid.uuid4().hex[:8]
    map_keys = [(f"lithops-map-{job}-{token}", i) for i in range(len(calls))]
    reduce_keys = [(f"lithops-reduce-{job}-{token}", j) for j in range(len(groups))]
    graph: dict[Any, Any] = {}
    for i, (key, data) in enumerate(zip(map_keys, calls, strict=True)):
        graph[key] = Task(key, mapper, cloudpickle.dumps(data), i, locators)
    for j, (key, group) in enumerate(zip(reduce_keys, groups, strict=True)):
        inputs = List(*(TaskRef(map_keys[i]) for i in group))
        graph[key] = Task(key, reducer, reduce_blob, j, locators, inputs)
    return graph, map_keys, reduce_keys


def groups_by_object(parts: list[int]) -> list[range]:
    """The calls of each object, from the number of chunks of each object (in call order)."""
    ends = list(itertools.accumulate(parts))
    return [range(end - count, end) for count, end in zip(parts, ends, strict=True)]


def run_graph(
    executor: FaasExecutor, graph: dict[Any, Any], keys: list[Any], targets: list[cf.Future[Any]]
) -> None:
    """Compute ``keys`` on ``executor``, their results kept in storage, onto the ``targets`` futures."""
    from ..scheduler import compute_with

    try:
        values = compute_with(executor, graph, keys, keep=True)
    except BaseException as exc:
        for target in targets:
            if not target.done():
                target.set_exception(exc)
        return
    for target, value in zip(targets, values, strict=False):
        target.set_result(value)
