"""Per-call overhead of trivial calls through FaasExecutor and its alternatives, side by side.

Every contender runs the same ``inc(x) = x + 1`` over ``--calls`` arguments with the same number
of worker processes (``--workers``, default 2), is warmed up once (untimed), then timed
``--repeats`` times; the table reports the median milliseconds per call and ratios against
``ProcessPoolExecutor.map`` and dask's ``processes`` scheduler. Contenders (``--skip`` keys):

    faas-map           FaasExecutor.map(chunksize=1), the embedded local pool + local storage
    faas-dask          dask.compute(<delayed calls>, scheduler=<the FaasExecutor>)
    faas-map-off       faas-map with recording off (faas.records: false, faas.logs.max-bytes: 0)
    faas-dask-off      faas-dask with recording off
    ppe-map            concurrent.futures.ProcessPoolExecutor.map
    dask-processes     dask.compute(..., scheduler="processes"): dask's default, a new pool per compute
    dask-processes-warm  the same with pool=<a warm ProcessPoolExecutor> (for reference)
    distributed-map    LocalCluster + Client: client.map + client.gather
    distributed-dask   LocalCluster + Client: dask.compute(..., scheduler=client)
    lithops-v2         lithops localhost backend as configured by default (v2: one new Python
                       process per call; runs --lithops-v2-calls calls, default 50)
    lithops-v1         lithops localhost v1 (one runner process with a pool per job)

The cost of recording (invocation records and the capture of the functions' output, on by
default) is the ratio of faas-map to faas-map-off and of faas-dask to faas-dask-off (target: within
5%); the two executors of each pair are made afresh for every turn (in alternating order: of two
executors alive side by side the one made first runs 4-10% slower, see FreshPair), their repeats
interleaved in alternating order (A B B A A B ...: the first of each turn pays for collecting the
garbage of the turn before), and their CPU seconds (the client's and its function processes') are
compared too, which the waits of a loaded machine do not inflate. Besides the ratio of the two
medians, the median of the turns' own ratios is printed with its quartiles: each turn's pair ran
side by side, so its ratio leaves out what drifts between turns (an A/A run of two identical
executors spreads each turn's ratio by about +-5% around 1.00 on 2 cores).

Nothing is asserted on times: the script only reports (the target checks are printed). It exits 1
when a contender fails or returns wrong results, or when processes it started are left behind.

    python benchmarks/bench_executor.py
    python benchmarks/bench_executor.py --calls 200 --repeats 3 --skip lithops-v2 --json out.json
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import faulthandler
import logging
import math
import resource
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from _common import (
    Measurement,
    add_json_and_timeout_arguments,
    descendant_schedstats,
    describe_environment,
    finish,
    format_ratio,
    format_table,
    print_environment,
    ratio,
    time_repeats,
)

PACKAGES = ["dask-faas", "dask", "distributed", "lithops", "cloudpickle", "numpy"]
NAMES = {
    "faas-map": "FaasExecutor.map",
    "faas-dask": "dask.compute via FaasExecutor",
    "faas-map-off": "FaasExecutor.map, recording off",
    "faas-dask-off": "dask.compute via FaasExecutor, recording off",
    "ppe-map": "ProcessPoolExecutor.map",
    "dask-processes": "dask processes scheduler",
    "dask-processes-warm": "dask processes scheduler, warm pool",
    "distributed-map": "distributed client.map + gather",
    "distributed-dask": "dask.compute via distributed Client",
    "lithops-v2": "lithops localhost (default, v2)",
    "lithops-v1": "lithops localhost v1",
}
ORDER = list(NAMES)
REFERENCE_PPE = "ppe-map"
REFERENCE_DASK = "dask-processes"
TARGETS = [
    ("faas-map", REFERENCE_PPE, "FaasExecutor.map vs ProcessPoolExecutor.map", 2.0),
    ("faas-dask", REFERENCE_DASK, "dask.compute via FaasExecutor vs dask processes scheduler", 1.0),
    ("faas-map", "faas-map-off", "FaasExecutor.map, recording on vs off", 1.05),
    ("faas-dask", "faas-dask-off", "dask.compute via FaasExecutor, recording on vs off", 1.05),
]


def inc(x: int) -> int:
    """The trivial call: everything measured is overhead."""
    return x + 1


class Skipped(Exception):
    """A contender that cannot run here (e.g. its package is not installed)."""


@dataclass
class Case:
    """One timed way of making ``calls`` calls of ``inc``: ``run`` returns the results in order."""

    key: str
    calls: int
    run: Callable[[], Any]
    note: str | None = None
    #: Another case of the group timed together with this one, repeats interleaved (A B A B ...),
    #: so that a drifting machine load weighs on both alike.
    pair: str | None = None
    #: Called before each turn of a pair's interleaved repeats (with the turn's number) and before
    #: the warm-up (with -1): where a pair's contenders are made afresh.
    turn: Callable[[int], None] | None = None


Group = Callable[[argparse.Namespace], contextlib.AbstractContextManager[list[Case]]]


def _delayed_calls(calls: int) -> list[Any]:
    import dask

    return [dask.delayed(inc)(i) for i in range(calls)]


class FreshPair:
    """The two FaasExecutors of a pair (recording on and off), made afresh for every turn, in
    alternating order, and warmed up before it.

    Of two executors alive side by side, the one made first runs measurably slower: an A/A
    comparison of two identical executors showed 4-10% more CPU per call for the first one, as
    much as the effect measured. Long-lived pairs charged that to whichever side came first.
    """

    OFF: ClassVar[dict[str, Any]] = {"records": False, "logs": {"max-bytes": 0}}

    def __init__(self, workers: int, root: str, warm: Callable[[Any], Any]) -> None:
        self.workers, self.root, self.warm = workers, root, warm
        self.executors: dict[str, Any] = {}
        self.stats: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()

    def turn(self, number: int) -> None:
        from dask_faas import FaasExecutor

        self.close()
        for name in ("on", "off") if number % 2 == 0 else ("off", "on"):
            settings = self.OFF if name == "off" else {}
            self.executors[name] = self._stack.enter_context(
                FaasExecutor(workers=self.workers, local_storage={"root": self.root}, **settings)
            )
        for ex in self.executors.values():
            self.warm(ex)

    def close(self) -> None:
        self.stats = {name: ex.stats for name, ex in self.executors.items()}
        self._stack.close()
        self.executors = {}


@contextlib.contextmanager
def faas_group(args: argparse.Namespace) -> Iterator[list[Case]]:
    import dask

    tasks = _delayed_calls(args.calls)

    def warm(ex: Any) -> None:
        list(ex.map(inc, range(4 * args.workers)))
        dask.compute(tasks[: 4 * args.workers], scheduler=ex)

    with tempfile.TemporaryDirectory(prefix="bench-faas-") as root:
        maps, computes = FreshPair(args.workers, root, warm), FreshPair(args.workers, root, warm)
        try:
            yield [
                Case(
                    "faas-map",
                    args.calls,
                    lambda: list(maps.executors["on"].map(inc, range(args.calls))),
                    "chunksize=1",
                    pair="faas-map-off",
                    turn=maps.turn,
                ),
                Case(
                    "faas-map-off",
                    args.calls,
                    lambda: list(maps.executors["off"].map(inc, range(args.calls))),
                    "chunksize=1; faas.records: false, faas.logs.max-bytes: 0",
                    turn=maps.turn,
                ),
                Case(
                    "faas-dask",
                    args.calls,
                    lambda: dask.compute(tasks, scheduler=computes.executors["on"])[0],
                    "faas_get: the executor is a scheduler (batched invocations)",
                    pair="faas-dask-off",
                    turn=computes.turn,
                ),
                Case(
                    "faas-dask-off",
                    args.calls,
                    lambda: dask.compute(tasks, scheduler=computes.executors["off"])[0],
                    "faas.records: false, faas.logs.max-bytes: 0",
                    turn=computes.turn,
                ),
            ]
        finally:
            maps.close()
            computes.close()
        print(f"  FaasExecutor stats (last turn): {maps.stats}; {computes.stats}", flush=True)


@contextlib.contextmanager
def ppe_group(args: argparse.Namespace) -> Iterator[list[Case]]:
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        yield [
            Case(
                "ppe-map",
                args.calls,
                lambda: list(pool.map(inc, range(args.calls))),
                "chunksize=1",
            )
        ]


@contextlib.contextmanager
def dask_processes_group(args: argparse.Namespace) -> Iterator[list[Case]]:
    import dask
    from dask.multiprocessing import get_context

    tasks = _delayed_calls(args.calls)
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context()) as pool:
        yield [
            Case(
                "dask-processes",
                args.calls,
                lambda: dask.compute(tasks, scheduler="processes", num_workers=args.workers)[0],
                "dask's default: a new pool per compute",
            ),
            Case(
                "dask-processes-warm",
                args.calls,
                lambda: dask.compute(tasks, scheduler="processes", num_workers=args.workers, pool=pool)[0],
                "pool=ProcessPoolExecutor kept across computes",
            ),
        ]


@contextlib.contextmanager
def distributed_group(args: argparse.Namespace) -> Iterator[list[Case]]:
    import dask
    from distributed import Client, LocalCluster

    tasks = _delayed_calls(args.calls)

    with (
        tempfile.TemporaryDirectory(prefix="bench-distributed-") as scratch,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            local_directory=scratch,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):

        def client_map() -> list[int]:
            return client.gather(client.map(inc, range(args.calls), pure=False))

        yield [
            Case(
                "distributed-map",
                args.calls,
                client_map,
                "LocalCluster(processes=True, threads_per_worker=1)",
            ),
            Case(
                "distributed-dask",
                args.calls,
                lambda: dask.compute(tasks, scheduler=client)[0],
                "same cluster",
            ),
        ]


@contextlib.contextmanager
def lithops_group(args: argparse.Namespace) -> Iterator[list[Case]]:
    try:
        import lithops
    except ImportError as exc:
        raise Skipped(f"lithops is not importable ({exc})") from None

    executors: list[Any] = []

    def executor(version: int) -> Any:
        # Everything in code: no ~/.lithops/config needed. Results are not cleaned after every
        # get_result (data_cleaner=False) so that no cleaner process runs during the timings;
        # the jobs' data is cleaned once, at the end. The runtime is this interpreter: Lithops'
        # default, the first "python" on PATH, may be one without lithops.
        config = {
            "lithops": {"backend": "localhost", "storage": "localhost", "data_cleaner": False},
            "localhost": {"worker_processes": args.workers, "version": version, "runtime": sys.executable},
        }
        fexec = lithops.FunctionExecutor(
            backend="localhost", storage="localhost", config=config, log_level=None
        )
        executors.append(fexec)
        return fexec

    def runner(fexec: Any, calls: int) -> Callable[[], list[int]]:
        def run() -> list[int]:
            futures = fexec.map(inc, range(calls))
            return fexec.get_result(futures, show_progressbar=False)

        return run

    try:
        v2, v1 = executor(2), executor(1)
        yield [
            Case(
                "lithops-v2",
                args.lithops_v2_calls,
                runner(v2, args.lithops_v2_calls),
                "one new Python process per call",
            ),
            Case(
                "lithops-v1",
                args.calls,
                runner(v1, args.calls),
                "one runner process + pool per job",
            ),
        ]
    finally:
        for fexec in executors:
            fexec.__exit__(None, None, None)
            fexec.clean(clean_cloudobjects=False, clean_fn=True)
            atexit.unregister(fexec._clean_at_exit)  # cleaned already; spawn nothing at exit
        cleaner = lithops.FunctionExecutor._cleaner_process
        if cleaner is not None:
            cleaner.wait(60)


GROUPS: list[tuple[list[str], Group]] = [
    (["ppe-map"], ppe_group),
    (["faas-map", "faas-map-off", "faas-dask", "faas-dask-off"], faas_group),
    (["dask-processes", "dask-processes-warm"], dask_processes_group),
    (["distributed-map", "distributed-dask"], distributed_group),
    (["lithops-v2", "lithops-v1"], lithops_group),
]


def checker(calls: int) -> Callable[[Any], None]:
    def check(result: Any) -> None:
        values = list(result)
        if len(values) != calls or any(v != i + 1 for i, v in enumerate(values)):
            raise RuntimeError(f"wrong results (first ones: {values[:5]!r})")

    return check


#: CPU seconds (this process and its descendants) of each repeat of the paired contenders.
CPU_SECONDS: dict[str, list[float]] = {}


def _cpu_seconds() -> float:
    """CPU seconds of this process (every thread) and of its living descendants (the pools)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime + sum(cpu for _, cpu, _ in descendant_schedstats().values())


def _interleaved(cases: list[Case], repeats: int) -> list[list[float]]:
    """Time ``cases`` ``repeats`` times each, one repeat of each in turn (in alternating order),
    after one untimed warm-up each; the seconds of each case's repeats. With two cases, the CPU
    seconds of each repeat go to :data:`CPU_SECONDS` too (what a loaded machine's waits leave out)."""
    seconds: list[list[float]] = [[] for _ in cases]
    turn = cases[0].turn
    if turn is not None:
        turn(-1)
    for case in cases:
        checker(case.calls)(case.run())
    pairs = list(zip(cases, seconds, strict=True))
    for repeat in range(repeats):
        if turn is not None:
            turn(repeat)
        # in turn A B, then B A: the first of a turn collects the garbage the turn before left (the
        # dask graphs of 1000 tasks), which weighs on its time; alternating spreads it evenly
        for case, timings in pairs if repeat % 2 == 0 else pairs[::-1]:
            cpu = _cpu_seconds() if len(cases) > 1 else 0.0
            timings.extend(time_repeats(case.run, 1, warmup=0, check=checker(case.calls)))
            if len(cases) > 1:
                CPU_SECONDS.setdefault(case.key, []).append(_cpu_seconds() - cpu)
    return seconds


def run_groups(args: argparse.Namespace) -> tuple[dict[str, Measurement], list[str]]:
    """Run every group in turn (one group's processes alive at a time); collect measurements."""
    measurements: dict[str, Measurement] = {}
    failures: list[str] = []

    def skip_all(keys: list[str], reason: str) -> None:
        for key in keys:
            calls = args.lithops_v2_calls if key == "lithops-v2" else args.calls
            measurements.setdefault(key, Measurement(NAMES[key], calls, skipped=reason))

    for keys, group in GROUPS:
        wanted = [k for k in keys if k not in args.skip]
        skip_all([k for k in keys if k in args.skip], "--skip")
        if not wanted:
            continue
        faulthandler.dump_traceback_later(args.timeout, exit=True)
        try:
            with group(args) as cases:
                by_key = {case.key: case for case in cases}
                paired = {case.pair for case in cases if case.pair in wanted and case.key in wanted}
                for case in cases:
                    if case.key not in wanted or case.key in paired:
                        continue
                    together = [case] if case.pair not in paired else [case, by_key[case.pair]]
                    print(
                        f"running {' + '.join(c.key for c in together)} ({case.calls} calls) ...", flush=True
                    )
                    ms = [Measurement(NAMES[c.key], c.calls, note=c.note) for c in together]
                    try:
                        for m, seconds in zip(ms, _interleaved(together, args.repeats), strict=True):
                            m.seconds = seconds
                            print(f"  {m.name}: {m.median_ms_per_call:.3f} ms/call (median)", flush=True)
                    except Exception as exc:
                        traceback.print_exc()
                        for m in ms:
                            m.skipped = f"failed: {type(exc).__name__}: {exc}"
                        failures.append(f"{'/'.join(c.key for c in together)}: {ms[0].skipped}")
                    for c, m in zip(together, ms, strict=True):
                        measurements[c.key] = m
        except Skipped as exc:
            print(f"skipped: {exc}", flush=True)
            skip_all(wanted, f"skipped: {exc}")
        except Exception as exc:
            traceback.print_exc()
            reason = f"failed: {type(exc).__name__}: {exc}"
            failures.append(f"{'/'.join(wanted)}: {reason}")
            skip_all(wanted, reason)
        finally:
            faulthandler.cancel_dump_traceback_later()
    return measurements, failures


def report(measurements: dict[str, Measurement]) -> dict[str, float]:
    ppe = measurements[REFERENCE_PPE].median_ms_per_call
    dsk = measurements[REFERENCE_DASK].median_ms_per_call
    rows = []
    for key in ORDER:
        m = measurements[key]
        if m.ok:
            rows.append(
                [
                    m.name,
                    m.calls,
                    f"{m.median_ms_per_call:.3f}",
                    f"{m.min_ms_per_call:.3f}",
                    format_ratio(ratio(m.median_ms_per_call, ppe)),
                    format_ratio(ratio(m.median_ms_per_call, dsk)),
                    m.note or "",
                ]
            )
        else:
            rows.append([m.name, m.calls, "-", "-", "-", "-", m.skipped or ""])
    headers = [
        "contender",
        "calls",
        "median ms/call",
        "min ms/call",
        "vs PPE.map",
        "vs dask processes",
        "note",
    ]
    print()
    print(format_table(headers, rows, align="lrrrrrl"))
    print()
    targets = {}
    for key, reference, label, target in TARGETS:
        value = ratio(measurements[key].median_ms_per_call, measurements[reference].median_ms_per_call)
        targets[label] = value
        verdict = "" if value != value else (" met" if value <= target else " MISSED")
        print(f"{label}: {format_ratio(value)} (target <= {target:g}x){verdict}")
        if key in CPU_SECONDS and reference in CPU_SECONDS:
            on, off = (
                statistics.median(CPU_SECONDS[k]) * 1000 / measurements[k].calls for k in (key, reference)
            )
            value = ratio(on, off)
            targets[f"{label} (CPU)"] = value
            verdict = "" if value != value else (" met" if value <= target else " MISSED")
            print(
                f"{label}, CPU of the client and its functions: {on:.3f} vs {off:.3f} ms/call, "
                f"{format_ratio(value)} (target <= {target:g}x){verdict}"
            )
            for what, a, b in [
                ("wall", measurements[key].seconds, measurements[reference].seconds),
                ("CPU", CPU_SECONDS[key], CPU_SECONDS[reference]),
            ]:
                turns = [x / y for x, y in zip(a, b, strict=True) if y > 0]
                value = statistics.median(turns) if turns else math.nan
                targets[f"{label} (paired {what})"] = value
                quartiles = statistics.quantiles(turns, n=4) if len(turns) > 1 else [value] * 3
                print(
                    f"{label}, {what}, median of the {len(turns)} turns' ratios: {format_ratio(value)} "
                    f"(quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f})"
                )
    return targets


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Per-call overhead of FaasExecutor vs process pools, dask, distributed, lithops.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--calls", type=int, default=1000, help="trivial calls per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, everywhere")
    parser.add_argument(
        "--lithops-v2-calls",
        type=int,
        default=50,
        help="calls per repeat for lithops v2, which starts one Python process per call",
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=ORDER, metavar="KEY", help="contenders to skip"
    )
    add_json_and_timeout_arguments(parser)
    args = parser.parse_args(argv)
    if min(args.calls, args.repeats, args.workers, args.lithops_v2_calls) < 1:
        parser.error("--calls, --repeats, --workers and --lithops-v2-calls must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = describe_environment(PACKAGES)
    print(
        f"bench_executor: {args.calls} calls of inc(x) = x + 1, {args.workers} workers everywhere, "
        f"median of {args.repeats} repeats after 1 untimed warm-up"
    )
    print_environment(env)
    started = time.perf_counter()
    measurements, failures = run_groups(args)
    targets = report(measurements)

    return finish(
        args,
        env,
        started,
        failures,
        lambda leftovers: {
            "benchmark": "bench_executor",
            "args": vars(args),
            "environment": env,
            "results": {key: measurements[key] for key in ORDER},
            "targets": targets,
            "leftover_processes": leftovers,
            "failures": failures,
        },
        blank_line=False,
        load_average=False,
    )


if __name__ == "__main__":
    sys.exit(main())
