"""``faas_get``: run any Dask collection as FaaS invocations, with data kept in object storage.

Three ways in, one path (:class:`~dask_faas.engine.GraphRun`)::

    dask.compute(x, scheduler=dask_faas.faas_get)    # the default executor, from dask.config
    dask.compute(x, scheduler=FaasExecutor(...))     # an executor of your own
    with dask_faas.enable(): ...                     # everything, nested computes included

``dask.persist`` on any of them leaves the partitions in object storage (dask's scheduler
``persist`` protocol, with :class:`~dask_faas.persisted.FaasFuture` as duck-typed futures). Every
compute leaves a :class:`ComputeReport` in the executor's ``last_report``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import dask

from . import graph, shuffle
from .engine import GraphRun
from .executor import FaasExecutor
from .fusion import fuse_partitionwise

__all__ = ["ComputeReport", "compute_with", "default_executor", "enable", "faas_get", "persist"]

logger = logging.getLogger("dask_faas")
_compute_ids = itertools.count()


@dataclass(frozen=True)
class ComputeReport:
    """What one compute cost.

    Attributes
    ----------
    tasks : int
        Tasks in the graph dask handed over.
    executed : int
        Tasks run inside functions, after fusion and local alias resolution (assemblies on the
        client not included).
    invocations : int
        Function invocations, retries included.
    bytes_received : int
        Bytes that reached the client (responses, fetched results and the inputs of assemblies).
    seconds : float
        Wall time of the compute.
    assembled_locally : int
        Requested results assembled on the client from their partitions (dask's finalize task of
        a computed collection), not in a function.
    backups : int
        Backup invocations of stragglers (speculative copies of slow calls).
    """

    tasks: int
    executed: int
    invocations: int
    bytes_received: int
    seconds: float
    assembled_locally: int = 0
    backups: int = 0

    def __str__(self) -> str:
        assembled = f", {self.assembled_locally} assembled on the client" if self.assembled_locally else ""
        backups = f", {self.backups} backups" if self.backups else ""
        return (
            f"{self.tasks} tasks ({self.executed} after fusion{assembled}) ran in {self.invocations} "
            f"invocations{backups} in {self.seconds:.2f} s; {self.bytes_received:,} bytes reached "
            "the client"
        )


def compute_with(
    executor: FaasExecutor,
    dsk: Any,
    keys: Sequence[Hashable] | Hashable,
    *,
    keep: bool = False,
    callbacks: Any = None,
    rerun_exceptions_locally: bool | None = None,
    **kwargs: Any,
) -> Any:
    """Compute ``keys`` of ``dsk`` on ``executor``; ``keep=True`` leaves the results in storage.

    Extra keywords that dask passes to schedulers (``num_workers``, ``pool``, ...) are ignored: the
    executor's platform decides the parallelism.
    """
    stats, session, name = executor.stats, executor.session, f"c{next(_compute_ids)}"
    started, invocations, received = time.perf_counter(), stats["invocations"], stats["bytes_received"]
    backups = stats.get("backups", 0)
    exchange = functools.partial(
        shuffle.rewrite,
        compute=name,
        two_level_above=int(session.settings["exchange"]["two-level-above"]),
    )
    run = GraphRun(
        session, name, keep=keep, callbacks=callbacks, rerun_exceptions_locally=rerun_exceptions_locally
    )
    try:
        return run.run(
            keys,
            lambda: graph.prepare(
                dsk, keys, session, compute=name, rewrites=[exchange], fuse=fuse_partitionwise
            ),
        )
    finally:
        report = ComputeReport(
            run.tasks,
            run.executed,
            stats["invocations"] - invocations,
            stats["bytes_received"] - received,
            time.perf_counter() - started,
            assembled_locally=run.assembled,
            backups=stats.get("backups", 0) - backups,
        )
        executor.last_report = report
        logger.info("faas_get: %s", report)


def persist(
    executor: FaasExecutor, collections: Sequence[Any], optimize_graph: bool = True, **kwargs: Any
) -> list[Any]:
    """Dask's scheduler ``persist`` protocol: the collections, with their partitions in storage."""
    get = functools.partial(compute_with, executor, keep=True)
    return list(dask.persist(*collections, scheduler=get, optimize_graph=optimize_graph, **kwargs))


_default: FaasExecutor | None = None
_default_lock = threading.Lock()


def default_executor() -> FaasExecutor:
    """The executor of ``faas_get``: made from ``dask.config`` on first use, shut down at exit."""
    global _default
    with _default_lock:
        if _default is None or _default.session.closed:
            _default = FaasExecutor()
        return _default


class _FaasGet:
    """``faas_get(dsk, keys, **kwargs)``: the Dask scheduler-get of dask-faas.

    ``dask.compute(x, scheduler=faas_get)`` runs every task as a function invocation on the default
    executor (configured through ``dask.config``; pass ``executor=`` to choose another);
    ``dask.persist(x, scheduler=faas_get)`` keeps the results in object storage.
    """

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        executor = kwargs.pop("executor", None) or default_executor()
        return compute_with(executor, dsk, keys, **kwargs)

    def persist(self, collections: Sequence[Any], optimize_graph: bool = True, **kwargs: Any) -> list[Any]:
        return persist(default_executor(), collections, optimize_graph, **kwargs)

    def __repr__(self) -> str:
        return "dask_faas.faas_get"


faas_get = _FaasGet()


def enable(executor: FaasExecutor | None = None, **settings: Any) -> Any:
    """Run every Dask compute through dask-faas (like ray's ``enable_dask_on_ray``).

    Sets the scheduler (which also reaches nested computes, such as the quantiles of
    ``set_index``) and the dataframe settings functions need: the task-based shuffle, since
    functions share no disk. Use it as a context manager, or call it once.

    Parameters
    ----------
    executor : FaasExecutor, optional
        The executor to use; by default one made from ``settings`` (or the default executor).
    **settings
        ``faas`` settings for a new executor.
    """
    if executor is None:
        executor = FaasExecutor(**settings) if settings else default_executor()
    return dask.config.set({"scheduler": executor, "dataframe.shuffle.method": "tasks"})
