"""Dask workloads through faas_get and through dask's and Lithops' schedulers, side by side.

Every workload is computed by every contender with the same number of worker processes
(``--workers``, default 2); each contender is set up once, warmed up with one untimed compute,
then timed ``--repeats`` times (median reported). Results are checked. Workloads (``--workloads``):

    delayed     1,000 independent inc(i) tasks summed by a tree of fan-in 8 (1,144 tasks):
                everything measured is scheduling overhead; reported per task
    array       da.ones(1_000_000, chunks=1_000).sum(): a tree reduction of 1,000 chunks
                (1,334 tasks once dask has fused it); reported per chunk
    montecarlo  a European call priced from 10**8 draws in 100 chunks: the simulate_chunk
                function of examples/monte_carlo.py as 100 dask.delayed tasks + one sum task;
                reported as a percentage of the ideal 2-core time (below)

Contenders (``--skip`` keys):

    faas                 dask.compute(x, scheduler=FaasExecutor(workers=2)): faas_get with the
                         embedded warm pool and local directory storage
    dask-processes       dask.compute(x, scheduler="processes", num_workers=2): dask's default,
                         a new pool per compute (the reference)
    dask-processes-warm  the same with pool=<a warm ProcessPoolExecutor(2)>
    distributed          LocalCluster(n_workers=2, threads_per_worker=1, processes=True) on
                         127.0.0.1, dashboard off; dask.compute(x, scheduler=client)
    lithops-v1           Lithops localhost v1 (one runner process per job): montecarlo only, as a
                         map over the chunks + the sum on the client; --lithops-repeats repeats
    lithops-v2           Lithops localhost as configured by default (v2: one new Python process
                         per call); skipped unless --skip is given without it (about a minute
                         per compute here)

The ideal 2-core Monte Carlo time is the single-process time of the same 100 chunks, run one
after the other in a fresh ``python`` subprocess (one BLAS/OpenMP thread), halved. It is measured
twice in the same run: with the default malloc settings (the ideal) and with
MALLOC_TRIM_THRESHOLD_/MALLOC_MMAP_THRESHOLD_ raised to the values of the functions' environment
(``faas.environment``); the "moonshot" ideal is half the faster of the two. A third measurement
runs the chunks split over 2 such subprocesses side by side (the functions' malloc settings), with
no scheduler at all: what this machine gives two processes at once, the practical ceiling of every
contender (far below the ideal when other work loads the machine).

The column "workers cpu/queue/idle s" says, per compute (median), how the worker processes that
lived through it spent its wall time summed over them: running, waiting for a CPU that other
processes held (the run queue, from /proc/<pid>/task/*/schedstat), or idle (waiting for work or
I/O: scheduling overhead and imbalance); "-" for pools made per compute, and for Lithops.

Nothing is asserted on times: the script only reports (the target checks are printed). It exits 1
when a contender fails or returns wrong results, or when processes it started are left behind.

    python benchmarks/bench_scheduler.py
    python benchmarks/bench_scheduler.py --workloads delayed array --repeats 5 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import faulthandler
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    Measurement,
    add_json_and_timeout_arguments,
    descendant_schedstats,
    describe_environment,
    finish,
    format_ratio,
    format_table,
    lithops_localhost_executor,
    print_environment,
    ratio,
    release_lithops_executors,
)

# simulate_chunk comes from the example; its directory is on sys.path before any pool starts, so
# every contender's worker processes import it by name (they inherit sys.path or PYTHONPATH).
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))

import numpy as np  # noqa: E402
from monte_carlo import (  # noqa: E402
    TOLERANCE_SE,
    Option,
    black_scholes_call,
    combine,
    simulate_chunk,
    split,
)

PACKAGES = ["dask-faas", "dask", "distributed", "lithops", "cloudpickle", "numpy"]
NAMES = {
    "faas": "faas_get (FaasExecutor)",
    "dask-processes": "dask processes (cold)",
    "dask-processes-warm": "dask processes, warm pool",
    "distributed": "distributed LocalCluster",
    "lithops-v1": "lithops localhost v1",
    "lithops-v2": "lithops localhost (default, v2)",
}
ORDER = list(NAMES)
REFERENCE_COLD = "dask-processes"
REFERENCE_WARM = "dask-processes-warm"
WORKLOADS = ["delayed", "array", "montecarlo"]
NOT_COMPARABLE = "no comparable form"
DEFAULT_SKIP = ["lithops-v2"]
TARGET_VS_DASK = 1.0
TARGET_IDEAL = 0.85
SEED = 2017
OPTION = Option(S0=100.0, K=105.0, r=0.05, sigma=0.2, T=1.0)


# -- the workloads ---------------------------------------------------------------------------


def inc(x: int) -> int:
    return x + 1


def add(*values: Any) -> Any:
    return sum(values)


def total(partials: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """The Monte Carlo reduction: the chunks' (draws, sum, sum of squares), added in order."""
    return (
        sum(p[0] for p in partials),
        math.fsum(p[1] for p in partials),
        math.fsum(p[2] for p in partials),
    )


@dataclass
class Workload:
    """One computation: ``build`` makes the dask collection, ``check`` validates a result.

    Every ``build`` gives new keys (delayed calls are impure; arrays get a fresh name), so that no
    scheduler can reuse the results of an earlier compute (distributed would, for keys it has not
    yet forgotten).
    """

    key: str
    title: str
    unit: str  # what the per-unit time is reported per ("task", "chunk")
    units: int
    build: Callable[[], Any]
    check: Callable[[Any], None]
    # A map-style form for Lithops: (executor, warm-up) -> the callable to time; None: not comparable
    lithops: Callable[[Any, bool], Callable[[], Any]] | None = None
    tasks: int = 0  # tasks in the optimized dask graph (filled in by ``make_workloads``)


def delayed_workload(calls: int, fan_in: int) -> Workload:
    expected = calls * (calls + 1) // 2

    def build() -> Any:
        import dask

        level = [dask.delayed(inc)(i) for i in range(calls)]
        while len(level) > 1:
            level = [dask.delayed(add)(*level[i : i + fan_in]) for i in range(0, len(level), fan_in)]
        return level[0]

    def check(result: Any) -> None:
        if result != expected:
            raise RuntimeError(f"wrong result {result!r} (expected {expected})")

    return Workload(
        "delayed",
        f"{calls:,} inc tasks + a sum tree of fan-in {fan_in}",
        "task",
        0,
        build,
        check,
    )


def array_workload(size: int, chunk: int) -> Workload:
    def build() -> Any:
        import dask.array as da

        # a fresh name per build: no scheduler may reuse results of an earlier compute
        return da.ones(size, chunks=chunk, name=f"ones-{uuid.uuid4().hex}").sum()

    def check(result: Any) -> None:
        if float(result) != float(size):
            raise RuntimeError(f"wrong result {result!r} (expected {size})")

    return Workload(
        "array",
        f"da.ones({size:,}, chunks={chunk:,}).sum()",
        "chunk",
        -(-size // chunk),
        build,
        check,
    )


def montecarlo_workload(draws: int, chunks: int) -> Workload:
    sizes = split(draws, chunks)
    seeds = np.random.SeedSequence(SEED).spawn(chunks)
    reference: dict[str, Any] = {}

    def build() -> Any:
        import dask

        return dask.delayed(total)(
            [dask.delayed(simulate_chunk)(n, s, OPTION) for n, s in zip(sizes, seeds, strict=True)]
        )

    def check(result: Any) -> None:
        n, s, s2 = result
        if n != draws:
            raise RuntimeError(f"wrong number of draws {n} (expected {draws})")
        first = reference.setdefault("sums", (s, s2))  # every contender draws the same numbers
        if not (math.isclose(s, first[0], rel_tol=1e-9) and math.isclose(s2, first[1], rel_tol=1e-9)):
            raise RuntimeError(f"sums {s!r}, {s2!r} differ from the first contender's {first!r}")
        estimate = combine([result], OPTION)
        distance = (estimate.price - black_scholes_call(OPTION)) / estimate.stderr
        if abs(distance) > TOLERANCE_SE:
            raise RuntimeError(f"price {estimate.price:.6f} is {distance:+.1f} standard errors off")

    def lithops(fexec: Any, warmup: bool) -> Callable[[], Any]:
        # the warm-up starts Lithops' processes and ships the function on two tiny calls
        args = list(zip(sizes, seeds, [OPTION] * chunks, strict=True))
        if warmup:
            args = [(1000, s, OPTION) for s in seeds[:2]]

        def run() -> Any:
            futures = fexec.map(simulate_chunk, args)
            partials = fexec.get_result(futures, show_progressbar=False)
            return total(partials)  # the sum on the client

        return run

    return Workload(
        "montecarlo",
        f"Monte Carlo, {draws:,} draws in {chunks} chunks + one sum task",
        "chunk",
        chunks,
        build,
        check,
        lithops=lithops,
    )


def make_workloads(args: argparse.Namespace) -> list[Workload]:
    import dask

    makers = {
        "delayed": lambda: delayed_workload(args.calls, args.fan_in),
        "array": lambda: array_workload(args.array_size, args.array_chunk),
        "montecarlo": lambda: montecarlo_workload(args.draws, args.chunks),
    }
    workloads = [makers[key]() for key in WORKLOADS if key in args.workloads]
    for w in workloads:
        (collection,) = dask.optimize(w.build())
        w.tasks = len(collection.__dask_graph__())
        if w.unit == "task":
            w.units = w.tasks
    return workloads


# -- the ideal single-process Monte Carlo time -------------------------------------------------

_SINGLE_PROCESS = textwrap.dedent(
    """
    import json, sys, time
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from monte_carlo import Option, simulate_chunk, split
    draws, chunks, seed, repeats, part, parts = map(int, sys.argv[2:8])
    option = Option(**json.loads(sys.argv[8]))
    sizes, seeds = split(draws, chunks), np.random.SeedSequence(seed).spawn(chunks)
    sizes, seeds = sizes[part::parts], seeds[part::parts]
    simulate_chunk(1000, seeds[0], option)  # imports and first-call costs, untimed
    seconds, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        partials = [simulate_chunk(n, s, option) for n, s in zip(sizes, seeds)]
        result = (sum(p[0] for p in partials), sum(p[1] for p in partials))
        seconds.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "draws": result[0]}))
    """
)


def function_environment() -> dict[str, str]:
    """The environment variables the functions are deployed with (``faas.environment``)."""
    from dask_faas import config

    return {k: str(v) for k, v in (config.resolve()["environment"] or {}).items() if v is not None}


@dataclass
class SingleProcess:
    """Monte Carlo without any scheduler: ``parts`` fresh subprocesses, each running its share
    of the chunks one after the other; ``seconds[i]`` is the slowest part's i-th repeat."""

    name: str
    note: str
    seconds: list[float] = field(default_factory=list)
    cpu_seconds: list[float] = field(default_factory=list)  # summed over the parts

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds)


def single_process_seconds(args: argparse.Namespace, tuned_malloc: bool, parts: int = 1) -> SingleProcess:
    """The Monte Carlo chunks in ``parts`` fresh subprocesses started together (one BLAS thread)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    note = "default malloc"
    if tuned_malloc:
        malloc = {k: v for k, v in function_environment().items() if k.startswith("MALLOC_")}
        env.update(malloc)
        note = ", ".join(f"{k}={v}" for k, v in sorted(malloc.items()))
    option = json.dumps({k: getattr(OPTION, k) for k in ("S0", "K", "r", "sigma", "T")})
    numbers = (args.draws, args.chunks, SEED, args.repeats)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _SINGLE_PROCESS,
                str(EXAMPLES),
                *map(str, (*numbers, part, parts)),
                option,
            ],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for part in range(parts)
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=args.timeout)
            if proc.returncode:
                raise RuntimeError(f"the single-process Monte Carlo exited with {proc.returncode}")
            outputs.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    drawn = sum(o["draws"] for o in outputs)
    if drawn != args.draws:
        raise RuntimeError(f"the single processes drew {drawn} numbers instead of {args.draws}")
    if parts == 1:
        name = "single process" + (", malloc tuned" if tuned_malloc else "")
    else:
        name = f"{parts} processes side by side, {parts}-way split" + (
            ", malloc tuned" if tuned_malloc else ""
        )
    return SingleProcess(
        name,
        note,
        [max(times) for times in zip(*(o["seconds"] for o in outputs), strict=True)],
        [sum(times) for times in zip(*(o["cpu"] for o in outputs), strict=True)],
    )


# -- the contenders --------------------------------------------------------------------------


class Skipped(Exception):
    """A contender that cannot run here (e.g. its package is not installed)."""


Runner = Callable[["Workload", bool, int], Callable[[], Any]]


@dataclass
class Contender:
    """One way of computing a workload: ``runner(workload, warmup, count)`` returns the callable
    to call ``count`` times (``warmup`` is True for the untimed warm-up; most contenders warm up
    with the real thing)."""

    key: str
    runner: Runner
    note: str
    describe: Callable[[], dict[str, Any] | None] = lambda: None  # per compute (faas: last_report)


Group = Callable[[argparse.Namespace], contextlib.AbstractContextManager[list[Contender]]]


def _dask_runner(**kwargs: Any) -> Runner:
    def runner(workload: Workload, warmup: bool, count: int) -> Callable[[], Any]:
        import dask

        collections = iter([workload.build() for _ in range(count)])  # built before the timing
        return lambda: dask.compute(next(collections), **kwargs)[0]

    return runner


@contextlib.contextmanager
def faas_group(args: argparse.Namespace) -> Iterator[list[Contender]]:
    from dask_faas import FaasExecutor

    with (
        tempfile.TemporaryDirectory(prefix="bench-faas-") as root,
        FaasExecutor(workers=args.workers, local_storage={"root": root}) as ex,
    ):

        def describe() -> dict[str, Any] | None:
            return None if ex.last_report is None else dataclasses.asdict(ex.last_report)

        yield [
            Contender(
                "faas",
                _dask_runner(scheduler=ex),
                f"warm pool of {args.workers} function processes, local storage",
                describe,
            )
        ]
        print(f"  FaasExecutor stats: {ex.stats}", flush=True)


@contextlib.contextmanager
def dask_processes_group(args: argparse.Namespace) -> Iterator[list[Contender]]:
    from dask.multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context()) as pool:
        yield [
            Contender(
                "dask-processes",
                _dask_runner(scheduler="processes", num_workers=args.workers),
                "dask's default: a new pool per compute",
            ),
            Contender(
                "dask-processes-warm",
                _dask_runner(scheduler="processes", num_workers=args.workers, pool=pool),
                "pool=ProcessPoolExecutor kept across computes",
            ),
        ]


@contextlib.contextmanager
def distributed_group(args: argparse.Namespace) -> Iterator[list[Contender]]:
    from distributed import Client, LocalCluster

    with (
        tempfile.TemporaryDirectory(prefix="bench-distributed-") as scratch,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,  # no dashboard; its bare HTTP server on a free loopback port:
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            local_directory=scratch,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield [
            Contender(
                "distributed",
                _dask_runner(scheduler=client),
                "threads_per_worker=1, processes=True",
            )
        ]


@contextlib.contextmanager
def lithops_group(args: argparse.Namespace) -> Iterator[list[Contender]]:
    try:
        import lithops  # noqa: F401
    except ImportError as exc:
        raise Skipped(f"lithops is not importable ({exc})") from None

    executors: dict[int, Any] = {}

    def runner(version: int) -> Runner:
        def make(workload: Workload, warmup: bool, count: int) -> Callable[[], Any]:
            assert workload.lithops is not None
            if version not in executors:
                executors[version] = lithops_localhost_executor(args.workers, version)
            return workload.lithops(executors[version], warmup)

        return make

    # Lithops ships monte_carlo.py as a module file with every job; a v2 worker process that
    # unpickles two calls at once may then see the module half imported ("Can't get attribute
    # 'simulate_chunk' on <module 'monte_carlo'>"). Pickled by value, nothing is imported.
    import cloudpickle
    import monte_carlo

    cloudpickle.register_pickle_by_value(monte_carlo)
    try:
        yield [
            Contender("lithops-v1", runner(1), "one runner process per job; map + sum on the client"),
            Contender("lithops-v2", runner(2), "one new Python process per call; map + sum on the client"),
        ]
    finally:
        cloudpickle.unregister_pickle_by_value(monte_carlo)
        release_lithops_executors(executors.values())


GROUPS: list[tuple[list[str], Group]] = [
    (["faas"], faas_group),
    (["dask-processes", "dask-processes-warm"], dask_processes_group),
    (["distributed"], distributed_group),
    (["lithops-v1", "lithops-v2"], lithops_group),
]


# -- running and reporting -------------------------------------------------------------------


@dataclass
class Result:
    """A contender's measurement on one workload, plus what faas reported about each compute
    and what its worker processes did meanwhile."""

    measurement: Measurement
    reports: list[dict[str, Any]] = field(default_factory=list)
    workers: list[dict[str, float]] = field(default_factory=list)

    def median_workers(self) -> dict[str, float] | None:
        """Median CPU, run-queue and idle seconds of the workers per compute (None: unknown)."""
        if not self.workers:
            return None
        return {k: statistics.median(w[k] for w in self.workers) for k in self.workers[0]}


def _not_a_worker(cmd: str) -> bool:
    return "multiprocessing.resource_tracker" in cmd


def worker_times(before: dict[int, Any], after: dict[int, Any], wall: float) -> dict[str, float] | None:
    """What the worker processes alive through a compute did during its ``wall`` seconds: ran
    (``cpu``), waited for a CPU other processes held (``run_queue``), or neither (``idle``:
    waiting for work or I/O). None when no worker lived through it (a pool made per compute)."""
    pids = before.keys() & after.keys()
    if not pids:
        return None
    cpu = sum(after[p][1] - before[p][1] for p in pids)
    run_queue = sum(after[p][2] - before[p][2] for p in pids)
    return {
        "processes": len(pids),
        "cpu": cpu,
        "run_queue": run_queue,
        "idle": max(wall * len(pids) - cpu - run_queue, 0.0),
    }


Results = dict[str, dict[str, Result]]  # workload -> contender -> result


def repeats_of(key: str, args: argparse.Namespace) -> int:
    return min(args.repeats, args.lithops_repeats) if key.startswith("lithops") else args.repeats


def run_groups(args: argparse.Namespace, workloads: list[Workload]) -> tuple[Results, list[str]]:
    """Run every group in turn (one group's processes alive at a time) over every workload."""
    results: Results = {w.key: {} for w in workloads}
    failures: list[str] = []

    def skip_all(keys: list[str], reason: str) -> None:
        for w in workloads:
            for key in keys:
                results[w.key].setdefault(key, Result(Measurement(NAMES[key], w.units, skipped=reason)))

    for keys, group in GROUPS:
        for w in workloads:  # Lithops has a form of the map-style workloads only
            if w.lithops is None:
                for key in keys:
                    if key.startswith("lithops"):
                        results[w.key][key] = Result(Measurement(NAMES[key], w.units, skipped=NOT_COMPARABLE))
        wanted = [k for k in keys if k not in args.skip]
        skip_all([k for k in keys if k in args.skip], "--skip")
        runnable = {k: [w for w in workloads if k not in results[w.key]] for k in wanted}
        if not any(runnable.values()):
            continue
        faulthandler.dump_traceback_later(args.timeout, exit=True)
        try:
            with group(args) as contenders:
                for contender in contenders:
                    for w in runnable.get(contender.key, []):
                        results[w.key][contender.key] = run_one(args, contender, w, failures)
        except Skipped as exc:
            print(f"skipped: {exc}", flush=True)
            skip_all(wanted, f"skipped: {exc}")
        except Exception as exc:
            traceback.print_exc()
            reason = f"failed: {type(exc).__name__}: {exc}"
            failures.append(f"{'/'.join(wanted)}: {reason}")
            for w in workloads:  # results measured before the failure stay
                for key in wanted:
                    if key in runnable and w in runnable[key]:
                        m = results[w.key].get(key)
                        if m is None or not m.measurement.ok:
                            results[w.key][key] = Result(Measurement(NAMES[key], w.units, skipped=reason))
        finally:
            faulthandler.cancel_dump_traceback_later()
    return results, failures


def run_one(args: argparse.Namespace, contender: Contender, w: Workload, failures: list[str]) -> Result:
    repeats = repeats_of(contender.key, args)
    print(f"running {contender.key} on {w.key} ({repeats} repeats) ...", flush=True)
    result = Result(Measurement(NAMES[contender.key], w.units, note=contender.note))
    try:
        warm = contender.runner(w, True, 1)
        start = time.perf_counter()
        if w.key == "montecarlo" and contender.key.startswith("lithops"):
            warm()  # two tiny calls: a warm-up, not a result to check
        else:
            w.check(warm())
        print(f"  warm-up: {time.perf_counter() - start:.2f} s", flush=True)

        run = contender.runner(w, False, repeats)
        for _ in range(repeats):  # time_repeats, plus what the workers did meanwhile
            before = descendant_schedstats(ignore=_not_a_worker)
            start = time.perf_counter()
            value = run()
            wall = time.perf_counter() - start
            after = descendant_schedstats(ignore=_not_a_worker)
            result.measurement.seconds.append(wall)
            w.check(value)
            if (note := contender.describe()) is not None:
                result.reports.append(note)
            if (times := worker_times(before, after, wall)) is not None:
                result.workers.append(times)
        m = result.measurement
        extra = f"; last compute: {_invocations(result.reports[-1])}" if result.reports else ""
        if (times := result.median_workers()) is not None:
            extra += f"; workers {_workers(times)}"
        print(
            f"  median {m.median_s:.3f} s, {m.median_ms_per_call:.3f} ms/{w.unit}"
            f" (runs: {', '.join(f'{s:.3f}' for s in m.seconds)}){extra}",
            flush=True,
        )
    except Exception as exc:
        traceback.print_exc()
        result.measurement.skipped = f"failed: {type(exc).__name__}: {exc}"
        failures.append(f"{contender.key} on {w.key}: {result.measurement.skipped}")
    return result


def report(
    w: Workload, results: dict[str, Result], ideal: dict[str, SingleProcess] | None, workers: int
) -> dict[str, Any]:
    cold = results[REFERENCE_COLD].measurement.median_s
    warm = results[REFERENCE_WARM].measurement.median_s
    ideal_s = ideal_moon_s = math.nan
    if ideal is not None:
        ideal_s = ideal["default"].median_s / workers
        ideal_moon_s = min(ideal["default"].median_s, ideal["tuned"].median_s) / workers
    rows = []
    for key in ORDER:
        result = results.get(key)
        if result is None:
            continue
        m = result.measurement
        invocations = _invocations(result.reports[-1]) if result.reports else ""
        if m.ok:
            row = [
                m.name,
                f"{m.median_s:.3f}",
                f"{m.min_s:.3f}",
                f"{m.median_ms_per_call:.3f}",
                format_ratio(ratio(m.median_s, cold)),
                format_ratio(ratio(m.median_s, warm)),
            ]
            if ideal is not None:
                row.append(_percent(ratio(ideal_s, m.median_s)))
            times = result.median_workers()
            rows.append(
                [*row, invocations, "-" if times is None else _workers(times, short=True), m.note or ""]
            )
        else:
            rows.append(
                [m.name, "-", "-", "-", "-", "-", *(["-"] if ideal else []), "", "-", m.skipped or ""]
            )
    headers = [
        "contender",
        "median s",
        "min s",
        f"ms/{w.unit}",
        "vs dask processes",
        "vs warm processes",
        *(["% of ideal"] if ideal is not None else []),
        "faas invocations/tasks",
        "workers cpu/queue/idle s",
        "note",
    ]
    print()
    print(f"== {w.key}: {w.title} ({w.tasks:,} tasks after dask's optimizations, {w.units:,} {w.unit}s)")
    print(format_table(headers, rows, align="lrrrrr" + ("r" if ideal is not None else "") + "lrl"))
    print()
    faas = results["faas"].measurement.median_s
    targets: dict[str, Any] = {}
    value = ratio(faas, cold)
    targets["faas_get vs dask processes"] = value
    print(f"faas_get vs dask processes: {format_ratio(value)} (target <= {TARGET_VS_DASK:g}x){_met(value)}")
    value = ratio(faas, warm)
    targets["faas_get vs warm dask processes"] = value
    print(f"(for reference) faas_get vs warm dask processes: {format_ratio(value)}")
    if ideal is not None:
        d, t, side = ideal["default"], ideal["tuned"], ideal["side_by_side"]
        print(
            f"single process: {d.median_s:.3f} s with default malloc, {t.median_s:.3f} s with "
            f"{t.note}; ideal {workers}-core time {ideal_s:.3f} s, moonshot ideal {ideal_moon_s:.3f} s"
        )
        print(
            f"(for reference) {side.name} ({side.note}), no scheduler: {side.median_s:.3f} s = "
            f"{_percent(ratio(ideal_s, side.median_s))} of ideal: what this machine gives {workers} "
            "processes at once"
        )
        times = results["faas"].median_workers()
        if times is not None:
            print(
                f"(for reference) faas function processes per compute: {_workers(times)}; "
                "waiting for a CPU means other processes on the machine had it"
            )
        value = ratio(ideal_s, faas)
        targets[f"% of ideal {workers}-core time"] = value
        print(
            f"Monte Carlo: {_percent(value)} of ideal {workers}-core time (target >= {TARGET_IDEAL:.0%})"
            f"{_met(value, at_least=True)}"
        )
        value = ratio(ideal_moon_s, faas)
        targets["moonshot % of ideal"] = value
        print(
            f"moonshot: {_percent(value)} of ideal from the faster single-process time "
            f"(target >= {TARGET_IDEAL:.0%}){_met(value, at_least=True)}"
        )
    return targets


def _workers(times: dict[str, float], short: bool = False) -> str:
    if short:
        return f"{times['cpu']:.2f}/{times['run_queue']:.2f}/{times['idle']:.2f}"
    return (
        f"({times['processes']:.0f} processes) ran {times['cpu']:.3f} s, waited for a CPU "
        f"{times['run_queue']:.3f} s, idle {times['idle']:.3f} s"
    )


def _invocations(r: dict[str, Any]) -> str:
    fused = "" if r["executed"] == r["tasks"] else f" ({r['executed']} after fusion)"
    return f"{r['invocations']}/{r['tasks']}{fused}"


def _percent(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def _met(value: float, at_least: bool = False) -> str:
    if math.isnan(value):
        return ""
    good = value >= TARGET_IDEAL if at_least else value <= TARGET_VS_DASK
    return " met" if good else " MISSED"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Dask workloads through faas_get vs dask processes, distributed, lithops.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--workloads",
        nargs="+",
        default=WORKLOADS,
        choices=WORKLOADS,
        metavar="NAME",
        help=f"workloads to run, among {', '.join(WORKLOADS)}",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument(
        "--lithops-repeats", type=int, default=1, help="timed repeats for lithops (at most --repeats)"
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes, everywhere")
    parser.add_argument("--calls", type=int, default=1000, help="delayed: independent inc tasks")
    parser.add_argument("--fan-in", type=int, default=8, help="delayed: fan-in of the sum tree")
    parser.add_argument("--array-size", type=int, default=1_000_000, help="array: elements")
    parser.add_argument("--array-chunk", type=int, default=1_000, help="array: elements per chunk")
    parser.add_argument("--draws", type=int, default=100_000_000, help="montecarlo: draws")
    parser.add_argument("--chunks", type=int, default=100, help="montecarlo: chunks (tasks)")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=DEFAULT_SKIP,
        choices=ORDER,
        metavar="KEY",
        help="contenders to skip ('--skip' alone runs them all)",
    )
    add_json_and_timeout_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.repeats, args.lithops_repeats, args.workers, args.calls, args.chunks) < 1:
        parser.error("--repeats, --lithops-repeats, --workers, --calls and --chunks must be positive")
    if args.fan_in < 2 or args.array_chunk < 1 or args.array_size < 1 or args.draws < 2 * args.chunks:
        parser.error("need --fan-in >= 2, positive array sizes and at least 2 draws per chunk")
    args.workloads = [w for w in WORKLOADS if w in args.workloads]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = describe_environment(PACKAGES)
    print(
        f"bench_scheduler: {', '.join(args.workloads)}; {args.workers} workers everywhere, "
        f"median of {args.repeats} repeats (lithops {min(args.repeats, args.lithops_repeats)}) "
        "after 1 untimed warm-up"
    )
    print_environment(env)
    started = time.perf_counter()
    workloads = make_workloads(args)
    failures: list[str] = []

    ideal: dict[str, SingleProcess] | None = None
    if "montecarlo" in args.workloads:
        print("measuring the single-process Monte Carlo time (fresh subprocesses) ...", flush=True)
        try:
            ideal = {
                "default": single_process_seconds(args, tuned_malloc=False),
                "tuned": single_process_seconds(args, tuned_malloc=True),
                "side_by_side": single_process_seconds(args, tuned_malloc=True, parts=args.workers),
            }
            for m in ideal.values():
                print(
                    f"  {m.name}: {', '.join(f'{s:.3f}' for s in m.seconds)} s; CPU "
                    f"{', '.join(f'{s:.3f}' for s in m.cpu_seconds)} s ({m.note})",
                    flush=True,
                )
        except Exception as exc:
            traceback.print_exc()
            failures.append(f"single-process Monte Carlo: {type(exc).__name__}: {exc}")

    results, group_failures = run_groups(args, workloads)
    failures += group_failures
    targets = {}
    for w in workloads:
        targets[w.key] = report(w, results[w.key], ideal if w.key == "montecarlo" else None, args.workers)

    return finish(
        args,
        env,
        started,
        failures,
        lambda leftovers: {
            "benchmark": "bench_scheduler",
            "args": vars(args),
            "environment": env,
            "workloads": {
                w.key: {"title": w.title, "tasks": w.tasks, "units": w.units, "unit": w.unit}
                for w in workloads
            },
            "results": {
                wk: {
                    key: {**r.measurement.as_dict(), "faas_reports": r.reports, "workers": r.workers}
                    for key, r in per.items()
                }
                for wk, per in results.items()
            },
            "single_process_montecarlo": {k: dataclasses.asdict(v) for k, v in (ideal or {}).items()},
            "targets": targets,
            "leftover_processes": leftovers,
            "failures": failures,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
