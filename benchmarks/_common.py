"""Shared helpers of the benchmark scripts: timing, ratios, tables, JSON reports, process checks.

Benchmarks compare side by side in one run and only report: nothing here asserts on a time.
Import it from a script in this directory (``from _common import ...``); running
``python benchmarks/<script>.py`` puts the directory on ``sys.path``.
"""

from __future__ import annotations

import argparse
import atexit
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from dask_faas.testing.s3 import LOOPBACK_AWS_ENV, start_moto_server, stop_process

__all__ = [
    "LOOPBACK_AWS_ENV",
    "Measurement",
    "add_json_and_timeout_arguments",
    "descendant_processes",
    "descendant_schedstats",
    "describe_environment",
    "finish",
    "format_ratio",
    "format_table",
    "lithops_localhost_executor",
    "lithops_localhost_executor_on_s3",
    "print_environment",
    "process_cpu_seconds",
    "ratio",
    "release_lithops_executors",
    "start_moto_server",
    "stop_process",
    "time_repeats",
    "wait_for_no_descendants",
    "write_json",
]


@dataclass
class Measurement:
    """Repeated timings of one contender; ``skipped`` says why there are none."""

    name: str
    calls: int
    seconds: list[float] = field(default_factory=list)
    skipped: str | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        return self.skipped is None and bool(self.seconds)

    @property
    def median_s(self) -> float:
        return statistics.median(self.seconds) if self.ok else math.nan

    @property
    def min_s(self) -> float:
        return min(self.seconds) if self.ok else math.nan

    @property
    def median_ms_per_call(self) -> float:
        return 1e3 * self.median_s / self.calls if self.ok else math.nan

    @property
    def min_ms_per_call(self) -> float:
        return 1e3 * self.min_s / self.calls if self.ok else math.nan

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(
            median_s=_finite(self.median_s),
            median_ms_per_call=_finite(self.median_ms_per_call),
            min_ms_per_call=_finite(self.min_ms_per_call),
        )
        return out


def time_repeats(
    run: Callable[[], Any],
    repeats: int,
    warmup: int = 1,
    check: Callable[[Any], None] | None = None,
) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``run``, after ``warmup`` untimed ones.

    ``check`` (untimed) is given every result, the warm-up ones included, so that a contender
    that returns wrong answers fails instead of looking fast.
    """
    for _ in range(warmup):
        result = run()
        if check is not None:
            check(result)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
        if check is not None:
            check(result)
    return seconds


def ratio(value: float, reference: float) -> float:
    """``value / reference``; NaN when either is missing or the reference is not positive."""
    if math.isnan(value) or math.isnan(reference) or reference <= 0:
        return math.nan
    return value / reference


def format_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}x"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str | None = None) -> str:
    """A plain-text table.

    ``align`` has one letter per column, ``l`` or ``r``; by default the first column is
    left-aligned and the others right-aligned.
    """
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be one of 'l'/'r' per column, got {align!r}")

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(w) if a == "l" else cell.rjust(w)
            for cell, w, a in zip(row, widths, align, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def describe_environment(packages: Iterable[str] = ()) -> dict[str, Any]:
    """Interpreter, machine, load and package versions, to print next to the results."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    versions = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info["packages"] = versions
    return info


def descendant_processes(pid: int | None = None) -> list[tuple[int, str]]:
    """``(pid, command line)`` of every living descendant of ``pid`` (default: this process)."""
    root = os.getpid() if pid is None else pid
    try:
        import psutil
    except ImportError:  # /proc fallback (Linux)
        return _proc_descendants(root)
    try:
        children = psutil.Process(root).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append((child.pid, " ".join(child.cmdline()) or child.name()))
        except psutil.NoSuchProcess:
            pass
    return found


def descendant_schedstats(
    ignore: Callable[[str], bool] = lambda cmd: False,
) -> dict[int, tuple[str, float, float]]:
    """``{pid: (command line, CPU seconds, run-queue seconds)}`` of this process's descendants.

    From ``/proc/<pid>/task/*/schedstat`` (Linux), summed over each process's threads: the time
    it ran on a CPU and the time it was ready to run but waited for one (other processes had it).
    Empty where schedstat is not available. Processes whose command line satisfies ``ignore``
    are left out.
    """
    found = {}
    for pid, cmd in descendant_processes():
        if ignore(cmd):
            continue
        cpu = wait = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    fields = f.read().split()
                cpu, wait = cpu + int(fields[0]), wait + int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
        found[pid] = (cmd, cpu / 1e9, wait / 1e9)
    return found


def wait_for_no_descendants(
    timeout_s: float = 10.0, ignore: Callable[[str], bool] = lambda cmd: False
) -> list[tuple[int, str]]:
    """Wait up to ``timeout_s`` for this process's descendants to end; return those left.

    Processes whose command line satisfies ``ignore`` are neither waited for nor returned.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = [(pid, cmd) for pid, cmd in descendant_processes() if not ignore(cmd)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.1)


def lithops_localhost_executor(workers: int, version: int) -> Any:
    """A Lithops ``FunctionExecutor`` on the localhost backend, configured in code.

    No ``~/.lithops/config`` is needed. Results are not cleaned after every ``get_result``
    (``data_cleaner=False``) so that no cleaner process runs during the timings; release the
    executor with :func:`release_lithops_executors`, which cleans the jobs' data once.
    ``version`` 2 (Lithops' default) starts one Python process per call, 1 one runner per job.
    """
    import lithops

    config = {
        "lithops": {"backend": "localhost", "storage": "localhost", "data_cleaner": False},
        "localhost": {"worker_processes": workers, "version": version},
    }
    return lithops.FunctionExecutor(backend="localhost", storage="localhost", config=config, log_level=None)


def release_lithops_executors(executors: Iterable[Any], wait_s: float = 60.0) -> None:
    """Shut down Lithops executors, clean their jobs' data and wait for Lithops' cleaner process."""
    import lithops

    for fexec in executors:
        fexec.__exit__(None, None, None)
        fexec.clean(clean_cloudobjects=False, clean_fn=True)
        atexit.unregister(fexec._clean_at_exit)  # cleaned already; spawn nothing at exit
    cleaner = lithops.FunctionExecutor._cleaner_process
    if cleaner is not None:
        cleaner.wait(wait_s)


def lithops_localhost_executor_on_s3(
    workers: int, version: int, endpoint_url: str, bucket: str, key: str, secret: str
) -> Any:
    """A Lithops localhost ``FunctionExecutor`` whose storage is an S3-compatible server.

    Lithops' ``minio`` storage backend is its boto3 client for any S3-compatible endpoint: the
    jobs' data (function, arguments, status, results) go to ``bucket`` on ``endpoint_url``, and
    ``map(f, "minio://<bucket>/<prefix>/", obj_chunk_size=...)`` reads objects of that server.
    Otherwise as :func:`lithops_localhost_executor` (configured in code, ``data_cleaner=False``;
    release it with :func:`release_lithops_executors`).
    """
    import lithops

    config = {
        "lithops": {"backend": "localhost", "storage": "minio", "data_cleaner": False},
        "localhost": {"worker_processes": workers, "version": version},
        "minio": {
            "endpoint": endpoint_url,
            "access_key_id": key,
            "secret_access_key": secret,
            "storage_bucket": bucket,
        },
    }
    return lithops.FunctionExecutor(backend="localhost", storage="minio", config=config, log_level=None)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, its ended threads included (NaN if unknown).

    From ``/proc/<pid>/stat`` (Linux; clock-tick resolution). Unlike :func:`descendant_schedstats`,
    which sums the living threads, this counts threads that have ended too (a threaded server).
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().decode(errors="replace").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return math.nan


def add_json_and_timeout_arguments(
    parser: argparse.ArgumentParser,
    timeout: float = 900.0,
    timeout_help: str = "seconds one group may take before the run is aborted with every thread's traceback",
) -> None:
    """Add the ``--json`` and ``--timeout`` options every script has."""
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON ('-': stdout)")
    parser.add_argument("--timeout", type=float, default=timeout, help=timeout_help)


def print_environment(env: dict[str, Any]) -> None:
    """Print the Python version, CPUs, load average and package versions of ``env``."""
    print(
        f"Python {env['python']} on {env['cpus']} CPUs, load average {env.get('loadavg')}; "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v)
    )


def finish(
    args: argparse.Namespace,
    env: dict[str, Any],
    started: float,
    failures: list[str],
    payload: Callable[[list[tuple[int, str]]], dict[str, Any]],
    *,
    blank_line: bool = True,
    load_average: bool = True,
    one_line: bool = False,
) -> int:
    """The end of a script's run: check for left-over processes, print them, the load average,
    the total time since ``started`` and the failures, write ``payload(leftovers)`` as JSON to
    ``args.json`` (if given, after setting ``env["loadavg_end"]``); return the exit code.

    ``blank_line``, ``load_average`` and ``one_line`` keep each script's own output format.
    """
    # multiprocessing's resource tracker (started by spawn-context pools) lives until this
    # interpreter exits, by design; anything else still running was not shut down.
    leftovers = wait_for_no_descendants(
        timeout_s=15, ignore=lambda cmd: "multiprocessing.resource_tracker" in cmd
    )
    if blank_line:
        print()
    if one_line:
        print("left-over processes: " + (", ".join(f"{pid} {cmd}" for pid, cmd in leftovers) or "none"))
    elif leftovers:
        print("left-over processes:")
        for pid, cmd in leftovers:
            print(f"  {pid}: {cmd}")
    else:
        print("left-over processes: none")
    if load_average:
        print(f"load average at the end: {describe_environment().get('loadavg')}")
    print(f"total time: {time.perf_counter() - started:.1f} s")
    for failure in failures:
        print(f"FAILED {failure}")

    if args.json:
        env["loadavg_end"] = describe_environment().get("loadavg")
        write_json(args.json, payload(leftovers))
    return 1 if failures or leftovers else 0


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write ``data`` as indented JSON (``-`` writes to stdout)."""
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    if path == "-":
        sys.stdout.write(text)
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else value


def _json_default(value: Any) -> Any:
    if isinstance(value, Measurement):
        return value.as_dict()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _proc_descendants(root: int) -> list[tuple[int, str]]:
    parents: dict[int, int] = {}
    commands: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode(errors="replace")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, ...
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            parents[int(entry)] = int(ppid)
            commands[int(entry)] = cmdline
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                found.append((pid, commands[pid]))
                frontier.append(pid)
    return found
