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
from dataclasses import dataclass, field
from typing import Any

import dask

from . import graph, records, shuffle
from .engine import GraphRun
from .exceptions import ConfigError
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
    queued_s : float
        Summed over the invocations: the time from the client's send to its answer that the
        function did not spend running the user's code (the platform's queue, cold starts, the
        runtime's reads and writes, the way there and back).
    running_s : float
        Summed over the invocations: the functions' own measurement of the user's code.
    client_s : float
        Wall time of the compute with no invocation out: the client's own work (graph passes,
        uploads, assembling and fetching results).
    storage_requests : dict
        Storage requests by kind (``put``, ``get``, ``head``, ``list``, ``delete``): the client's
        and its functions' (as they reported them).
    gb_s : float
        GB-seconds: each invocation's ``running_s`` times its ``memory_mb / 1024``.
    cost_usd : float
        Estimated cost from ``faas.prices`` (:func:`dask_faas.records.estimate_cost`): GB-seconds,
        invocations and storage requests.

    The figures from invocation records are those of the executor's invocations recorded while
    the compute ran (other work submitted to the same executor meanwhile included); they are 0
    when recording is off (``faas.records: false``).
    """

    tasks: int
    executed: int
    invocations: int
    bytes_received: int
    seconds: float
    assembled_locally: int = 0
    backups: int = 0
    queued_s: float = 0.0
    running_s: float = 0.0
    client_s: float = 0.0
    storage_requests: dict[str, int] = field(default_factory=dict, hash=False)
    gb_s: float = 0.0
    cost_usd: float = 0.0

    def __str__(self) -> str:
        assembled = f", {self.assembled_locally} assembled on the client" if self.assembled_locally else ""
        backups = f", {self.backups} backups" if self.backups else ""
        requests = sum(self.storage_requests.values())
        return (
            f"{self.tasks} tasks ({self.executed} after fusion{assembled}) ran in {self.invocations} "
            f"invocations{backups} in {self.seconds:.2f} s (running {self.running_s:.2f} s, queued "
            f"{self.queued_s:.2f} s, client {self.client_s:.2f} s); {self.bytes_received:,} bytes reached "
            f"the client; {requests:,} storage requests; {self.gb_s:.3g} GB-s, ~${self.cost_usd:.4g}"
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
    recorded, requested = executor.records.total, executor.storage_requests()
    functions_requested = dict(executor.records.function_requests)
    wall_started = time.time()
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
        seconds = time.perf_counter() - started
        seen = executor.records.since(recorded)
        requests = _delta(executor.storage_requests(), requested)
        for kind, count in _delta(dict(executor.records.function_requests), functions_requested).items():
            requests[kind] = requests.get(kind, 0) + count
        running = sum(r.running_s or 0.0 for r in seen)
        gb_s = sum((r.running_s or 0.0) * r.memory_mb / 1024 for r in seen)
        report = ComputeReport(
            run.tasks,
            run.executed,
            stats["invocations"] - invocations,
            stats["bytes_received"] - received,
            seconds,
            assembled_locally=run.assembled,
            backups=stats.get("backups", 0) - backups,
            queued_s=sum(
                max(0.0, r.received - r.submitted - (r.running_s or 0.0)) for r in seen if r.received
            ),
            running_s=running,
            client_s=max(0.0, seconds - _covered(seen, wall_started)),
            storage_requests=requests,
            gb_s=gb_s,
            cost_usd=_cost(executor, gb_s, stats["invocations"] - invocations, requests),
        )
        executor.last_report = report
        records.publish_compute(report)
        logger.info("faas_get: %s", report)


def _cost(executor: FaasExecutor, gb_s: float, invocations: int, requests: dict[str, int]) -> float:
    """:func:`records.estimate_cost` from the executor's ``faas.prices``; NaN (and a warning) when
    they have no price for its platform, or a price is no number."""
    settings = executor.settings
    platform = records.price_key(executor.backend.name, settings)
    try:
        return records.estimate_cost(
            settings["prices"] or {}, platform, gb_s, invocations, requests, storage=executor.storage.name
        )
    except ConfigError as exc:
        logger.warning("faas_get: no cost estimate: %s", exc)
        return float("nan")


def _delta(now: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {kind: count - before.get(kind, 0) for kind, count in now.items() if count - before.get(kind, 0)}


def _covered(seen: Sequence[records.InvocationRecord], since: float) -> float:
    """Seconds after ``since`` during which at least one of the invocations was out."""
    spans = sorted((max(r.submitted, since), r.received) for r in seen if r.received and r.submitted)
    covered, end = 0.0, since
    for start, stop in spans:
        if stop > end:
            covered += stop - max(start, end)
            end = stop
    return covered


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
