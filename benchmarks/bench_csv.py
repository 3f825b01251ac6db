"""CSV ETL over objects of an S3-compatible server: dask-faas vs dask (s3fs), distributed, Lithops.

One run generates ``--objects`` CSV objects of about ``--object-mb`` MB each (columns ``key``
0..999, ``amount`` float, ``category`` string, ``timestamp`` string), uploads them to a moto
server it starts on 127.0.0.1, then times the same filter + groupby-sum over them with every
contender, all with ``--workers`` worker processes (default 2) and byte ranges of ``--blocksize``::

    df[(df.amount > 0) & (df.category != "cat07")].groupby("key").amount.sum()

Each timed run is the whole job: planning (listing, sampling) plus the compute. Every contender is
set up once, warmed up with one untimed run, then timed ``--repeats`` times (median reported);
every result, the warm-up's included, is checked against pandas on the downloaded objects.
Throughput is CSV bytes / seconds (MB = 10**6 bytes). Contenders (``--skip`` keys):

    faas-s3           dask_faas.read_csv + FaasExecutor(storage="s3"): the job's objects on the
                      same moto server and bucket as the data
    faas-local        the same with the job's objects in a local directory (data still on moto)
    faas-s3-fused     diagnostic: faas-s3 on the collection's .optimize() (dask's blockwise
                      fusion: one task per partition), what faas_get is handed without it
    faas-local-fused  diagnostic: the same for faas-local
    dask-threads      dask.dataframe.read_csv through s3fs, scheduler="threads"
    dask-processes    the same, scheduler="processes" (dask's default: a new pool per compute)
    distributed       the same on LocalCluster(n_workers, threads_per_worker=1) on 127.0.0.1,
                      dashboard off
    lithops-v2        Lithops localhost (default, v2: one new process per call); storage = the
                      moto server (minio backend); map over "minio://bucket/data/" in
                      obj_chunk_size chunks, partial groupby-sums combined on the client
    lithops-v1        the same on Lithops localhost v1 (one runner process per job)
    ppe-ranges        reference: a warm ProcessPoolExecutor over the same even byte ranges,
                      boto3 ranged GET + pandas in each task, no scheduler and no job storage

s3fs is not installed next to dask-faas when installing it would change its botocore (aiobotocore
pins a narrow botocore range): the three s3fs contenders then run in a subprocess with another
interpreter
(``--s3fs-python``, default: this one if it imports s3fs, else /tmp/dask-faas-bench-s3fs/bin/python),
which runs this same script in ``--s3fs-child`` mode and reports back; it is timed the same way.

Each compute is also profiled: CPU seconds of the client, of the workers (the function processes,
cluster workers or pool processes alive through it) and of the moto server, the workers' time
waiting for a CPU (run queue), and the S3 requests it made (from the server's request log). The
"single-stream costs" (one ranged GET, one pandas parse) give the CPU floor of the data set.

Nothing is asserted on times: the script only reports (the target checks are printed). It exits 1
when a contender fails or returns a wrong result, or when processes it started are left behind.

    python benchmarks/bench_csv.py
    python benchmarks/bench_csv.py --objects 4 --object-mb 20 --repeats 1 --skip lithops-v2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import faulthandler
import io
import itertools
import json
import logging
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from _common import (
    LOOPBACK_AWS_ENV,
    Measurement,
    add_json_and_timeout_arguments,
    descendant_schedstats,
    describe_environment,
    finish,
    format_ratio,
    format_table,
    lithops_localhost_executor_on_s3,
    print_environment,
    process_cpu_seconds,
    ratio,
    release_lithops_executors,
    start_moto_server,
    stop_process,
)

PACKAGES = ["dask-faas", "dask", "distributed", "pandas", "numpy", "boto3", "botocore", "moto", "lithops"]
CHILD_PACKAGES = ["dask", "distributed", "pandas", "s3fs", "aiobotocore", "botocore"]
NAMES = {
    "faas-s3": "dask_faas, job on S3",
    "faas-local": "dask_faas, job on local dir",
    "faas-s3-fused": "dask_faas, job on S3, pre-fused",
    "faas-local-fused": "dask_faas, job local, pre-fused",
    "dask-threads": "dask threads (s3fs)",
    "dask-processes": "dask processes (s3fs)",
    "distributed": "distributed LocalCluster (s3fs)",
    "lithops-v2": "lithops localhost (default, v2)",
    "lithops-v1": "lithops localhost v1",
    "ppe-ranges": "ProcessPoolExecutor over ranges",
}
ORDER = list(NAMES)
FAAS = ["faas-s3", "faas-local", "faas-s3-fused", "faas-local-fused"]
S3FS = ["dask-threads", "dask-processes", "distributed"]
REFERENCE_CLUSTER = "distributed"
REFERENCE_LITHOPS = "lithops-v2"
TARGET_VS_CLUSTER = 1.0
TARGET_VS_LITHOPS = 3.0
DEFAULT_S3FS_PYTHON = "/tmp/dask-faas-bench-s3fs/bin/python"
S3FS_SETUP = (
    "python -m venv /tmp/dask-faas-bench-s3fs && /tmp/dask-faas-bench-s3fs/bin/pip install "
    "'dask[dataframe]' distributed s3fs psutil"
)

COLUMNS = ["key", "amount", "category", "timestamp"]
USED = ["key", "amount", "category"]  # what the ETL reads; every contender parses only these
KEYS = 1000
CATEGORIES = 20
DROPPED = "cat07"
READ_AHEAD = 1 << 20  # bytes past a range's end read with its GET (ppe-ranges), as dask-faas does
CREDENTIALS = {
    "key": LOOPBACK_AWS_ENV["AWS_ACCESS_KEY_ID"],
    "secret": LOOPBACK_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
}
REGION = "us-east-1"
MB = 1e6


# -- the workload ------------------------------------------------------------------------------


def etl(df: Any) -> Any:
    """The filter + groupby-sum, for a pandas or a Dask DataFrame."""
    return df[(df.amount > 0) & (df.category != DROPPED)].groupby("key").amount.sum()


def combine(partials: list[Any]) -> Any:
    """Partial groupby-sums (pandas Series) of chunks added into one."""
    import pandas as pd

    return pd.concat(partials).groupby(level=0).sum()


def make_object(index: int, rows: int, seed: int) -> bytes:
    """One CSV object: ``rows`` rows from its own random stream (numpy + pandas)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng([seed, index])
    categories = np.array([f"cat{i:02d}" for i in range(CATEGORIES)])
    start = np.datetime64("2024-01-01T00:00:00", "s")
    df = pd.DataFrame(
        {
            "key": rng.integers(0, KEYS, rows),
            "amount": np.round(rng.uniform(-500.0, 1500.0, rows), 2),
            "category": categories[rng.integers(0, CATEGORIES, rows)],
            "timestamp": start + rng.integers(0, 366 * 86400, rows).astype("timedelta64[s]"),
        }
    )
    return df.to_csv(index=False, float_format="%.2f").encode()


def _generate_and_upload(index: int, rows: int, seed: int, endpoint: str, bucket: str, key: str) -> int:
    """Pool task: make object ``index`` and PUT it; return its size."""
    data = make_object(index, rows, seed)
    client = _boto3_client(endpoint)
    client.put_object(Bucket=bucket, Key=key, Body=data)
    client.close()
    return len(data)


def _boto3_client(endpoint: str) -> Any:
    import boto3

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["key"],
        aws_secret_access_key=CREDENTIALS["secret"],
    )


def to_expected(series: Any) -> dict[str, Any]:
    """A groupby result as JSON-able sorted keys and values."""
    series = series.sort_index()
    return {"keys": [int(k) for k in series.index], "values": [float(v) for v in series.to_numpy()]}


def checker(expected: dict[str, Any]) -> Callable[[Any], None]:
    """Checks a contender's result against pandas' (same keys, sums equal to 1e-9 relative)."""
    import numpy as np

    keys = np.asarray(expected["keys"])
    values = np.asarray(expected["values"])

    def check(result: Any) -> None:
        got = result.sort_index()
        if len(got) != len(keys) or not np.array_equal(np.asarray(got.index), keys):
            raise RuntimeError(f"wrong groups: {len(got)} keys (expected {len(keys)})")
        if not np.allclose(got.to_numpy(dtype=float), values, rtol=1e-9, atol=1e-6):
            worst = np.max(np.abs(got.to_numpy(dtype=float) - values))
            raise RuntimeError(f"wrong sums (largest difference {worst:g})")

    return check


# -- byte ranges without any framework (ppe-ranges and the single-stream costs) -----------------


def even_ranges(size: int, blocksize: int) -> list[tuple[int, int]]:
    """``ceil(size / blocksize)`` ranges of an object of ``size`` bytes, split evenly."""
    n = max(1, -(-size // blocksize))
    bounds = [size * i // n for i in range(n + 1)]
    return list(itertools.pairwise(bounds))


def read_lines(client: Any, bucket: str, key: str, start: int, end: int, size: int) -> bytes:
    """The lines that start in ``[start, end)`` of an object, with one ranged GET (more only for
    a last line longer than the read-ahead); the same ownership rule as dask-faas' ranges."""
    base = max(start - 1, 0)
    stop = min(end + READ_AHEAD, size)
    data = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={base}-{stop - 1}")["Body"].read()
    lo = 0
    if start > 0:
        lo = data.find(b"\n", 0, end - base - 1) + 1  # a line starts after a "\n" in [start-1, end-1)
        if lo == 0:
            return b""
    while True:
        hi = data.find(b"\n", max(end - 1 - base, lo))
        if hi >= 0 or base + len(data) >= size:
            return data[lo : hi + 1] if hi >= 0 else data[lo:]
        more = client.get_object(
            Bucket=bucket, Key=key, Range=f"bytes={base + len(data)}-{min(base + 2 * len(data), size) - 1}"
        )
        data += more["Body"].read()


def parse_partial(data: bytes, first: bool) -> Any:
    """pandas on one chunk of lines (``first``: it starts with the header) -> its partial ETL."""
    import pandas as pd

    if not data:
        return pd.Series([], dtype=float, name="amount")
    df = pd.read_csv(
        io.BytesIO(data),
        header=0 if first else None,
        names=None if first else COLUMNS,
        usecols=USED,
    )
    return etl(df)


_CLIENTS: dict[str, Any] = {}


def _range_task(endpoint: str, bucket: str, key: str, start: int, end: int, size: int) -> Any:
    """ppe-ranges pool task (one boto3 client per process)."""
    client = _CLIENTS.get(endpoint)
    if client is None:
        client = _CLIENTS[endpoint] = _boto3_client(endpoint)
    return parse_partial(read_lines(client, bucket, key, start, end, size), start == 0)


def lithops_chunk(obj: Any) -> Any:
    """Lithops map function: one line-aligned chunk of an object -> its partial ETL."""
    first = obj.data_byte_range is None or obj.data_byte_range[0] == 0
    return parse_partial(obj.data_stream.read(), first)


# -- profiling a compute -----------------------------------------------------------------------

_REQUEST = re.compile(r'"([A-Z]+) (\S+) HTTP')


@dataclass
class Probe:
    """What a compute cost besides its wall time: CPU of the client, the workers and the S3
    server, the workers' run-queue wait, and the S3 requests (from the server's request log)."""

    moto_pid: int
    moto_log: str
    data_path: str  # "/<bucket>/<prefix>": GETs under it read the CSV data

    def snapshot(self) -> dict[str, Any]:
        with open(self.moto_log, "rb") as f:
            log_end = f.seek(0, io.SEEK_END)
        return {
            "client": time.process_time(),
            "workers": descendant_schedstats(ignore=_not_a_worker),
            "moto": process_cpu_seconds(self.moto_pid),
            "log": log_end,
        }

    def delta(self, before: dict[str, Any], after: dict[str, Any], wall: float) -> dict[str, Any]:
        """The profile of a run of ``wall`` seconds between two snapshots."""
        pids = before["workers"].keys() & after["workers"].keys()
        workers = run_queue = None
        if pids:  # workers alive through the compute (not pools made per compute)
            workers = sum(after["workers"][p][1] - before["workers"][p][1] for p in pids)
            run_queue = sum(after["workers"][p][2] - before["workers"][p][2] for p in pids)
        with open(self.moto_log, "rb") as f:
            f.seek(before["log"])
            lines = f.read(after["log"] - before["log"]).decode(errors="replace").splitlines()
        data_gets = other = 0
        for line in lines:
            match = _REQUEST.search(line)
            if match is None:
                continue
            method, path = match.groups()
            if method == "GET" and path.startswith(self.data_path) and "?" not in path:
                data_gets += 1
            else:
                other += 1
        return {
            "seconds": wall,
            "client_cpu": after["client"] - before["client"],
            "workers": len(pids),
            "workers_cpu": workers,
            "run_queue": run_queue,
            "moto_cpu": after["moto"] - before["moto"],
            "data_gets": data_gets,
            "other_requests": other,
        }


def _not_a_worker(cmd: str) -> bool:
    return "moto.server" in cmd or "multiprocessing.resource_tracker" in cmd


# -- running contenders --------------------------------------------------------------------------


class Skipped(Exception):
    """A contender that cannot run here (e.g. its package is not installed)."""


@dataclass
class Case:
    """One contender: ``run`` does the whole job (plan + compute) and returns the groupby result;
    ``describe`` reports on the last compute (faas: its ComputeReport); ``plan`` times the part
    of ``run`` that builds the collection (listing, sampling, planning), where there is one."""

    key: str
    run: Callable[[], Any]
    note: str = ""
    describe: Callable[[], dict[str, Any] | None] = lambda: None
    plan: PlanTimer | None = None


class PlanTimer:
    """``with timer: ...`` keeps the seconds of the block (the latest run's planning)."""

    def __init__(self) -> None:
        self.seconds: float | None = None
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._start


@dataclass
class Result:
    """A contender's timings plus, per timed compute, its profile (and faas' report)."""

    measurement: Measurement
    computes: list[dict[str, Any]] = field(default_factory=list)
    warmup_s: float | None = None

    def median(self, name: str) -> float:
        values = [c[name] for c in self.computes if c.get(name) is not None]
        return statistics.median(values) if values else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {**self.measurement.as_dict(), "warmup_s": self.warmup_s, "computes": self.computes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        m = Measurement(data["name"], data["calls"], data["seconds"], data["skipped"], data["note"])
        return cls(m, data["computes"], data["warmup_s"])


def run_case(case: Case, repeats: int, check: Callable[[Any], None], probe: Probe) -> Result:
    """One untimed warm-up, then ``repeats`` timed runs, each checked and profiled."""
    print(f"running {case.key} ({repeats} repeats) ...", flush=True)
    result = Result(Measurement(NAMES[case.key], 1, note=case.note))
    try:
        start = time.perf_counter()
        check(case.run())
        result.warmup_s = time.perf_counter() - start
        print(f"  warm-up: {result.warmup_s:.2f} s", flush=True)
        for _ in range(repeats):
            before = probe.snapshot()
            start = time.perf_counter()
            value = case.run()
            wall = time.perf_counter() - start
            compute = probe.delta(before, probe.snapshot(), wall)
            check(value)
            compute["plan_s"] = None if case.plan is None else case.plan.seconds
            if (report := case.describe()) is not None:
                compute["faas"] = report
            result.measurement.seconds.append(compute["seconds"])
            result.computes.append(compute)
        m = result.measurement
        last = result.computes[-1]
        extra = f"; last compute: {last['faas']['text']}" if "faas" in last else ""
        print(
            f"  median {m.median_s:.3f} s (runs: {', '.join(f'{s:.3f}' for s in m.seconds)}){extra}",
            flush=True,
        )
    except Exception as exc:
        traceback.print_exc()
        result.measurement.skipped = f"failed: {type(exc).__name__}: {exc}"
    return result


Group = Callable[["Setup"], contextlib.AbstractContextManager[list[Case]]]


@dataclass
class Setup:
    """What every group needs: the server, the data and the run's options."""

    args: argparse.Namespace
    endpoint: str
    bucket: str
    prefix: str
    objects: list[tuple[str, int]]  # (key, size)
    blocksize: int
    scratch: str
    moto_pid: int
    moto_log: str

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}*.csv"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {**CREDENTIALS, "endpoint_url": self.endpoint, "region_name": REGION}


def _faas_group(job_on_s3: bool) -> Group:
    @contextlib.contextmanager
    def group(setup: Setup) -> Iterator[list[Case]]:
        from dask_faas import FaasExecutor, read_csv

        if job_on_s3:
            s3 = {
                "bucket": setup.bucket,
                "endpoint-url": setup.endpoint,
                "region-name": REGION,
                **CREDENTIALS,
            }
            settings: dict[str, Any] = {"storage": "s3", "s3": s3}
            where, key = "job objects on the moto server", "faas-s3"
        else:
            root = tempfile.mkdtemp(prefix="faas-job-", dir=setup.scratch)
            settings = {"local_storage": {"root": root}}
            where, key = "job objects in a local directory", "faas-local"
        # the functions find the data's credentials in their own environment (LOOPBACK_AWS_ENV)
        with FaasExecutor(workers=setup.args.workers, **settings) as ex:
            plan, fused_plan = PlanTimer(), PlanTimer()

            def runner(fused: bool, plan: PlanTimer) -> Callable[[], Any]:
                def run() -> Any:
                    with plan:
                        options = setup.storage_options
                        query = etl(read_csv(setup.url, blocksize=setup.blocksize, storage_options=options))
                        if fused:
                            query = query.optimize()  # dask's blockwise fusion, before faas_get sees it
                    return query.compute(scheduler=ex)

                return run

            def describe() -> dict[str, Any] | None:
                report = ex.last_report
                if report is None:
                    return None
                return {**dataclasses.asdict(report), "text": str(report)}

            yield [
                Case(
                    key,
                    runner(False, plan),
                    f"{setup.args.workers} function processes; {where}",
                    describe,
                    plan,
                ),
                Case(
                    f"{key}-fused",
                    runner(True, fused_plan),
                    "diagnostic: query.optimize() before compute",
                    describe,
                    fused_plan,
                ),
            ]
            print(f"  FaasExecutor stats: {ex.stats}", flush=True)

    return group


def _s3fs_runner(setup: Setup, plan: PlanTimer, **compute_kwargs: Any) -> Callable[[], Any]:
    """dask.dataframe.read_csv through s3fs + the ETL, computed with ``compute_kwargs``."""
    try:
        import dask
        import dask.dataframe as dd
        import s3fs  # noqa: F401
    except ImportError as exc:
        raise Skipped(f"s3fs is not importable ({exc})") from None
    options = {**CREDENTIALS, "endpoint_url": setup.endpoint, "client_kwargs": {"region_name": REGION}}

    def run() -> Any:
        with plan:
            query = etl(dd.read_csv(setup.url, blocksize=setup.blocksize, storage_options=options))
        return dask.compute(query, **compute_kwargs)[0]

    return run


@contextlib.contextmanager
def dask_local_group(setup: Setup) -> Iterator[list[Case]]:
    """dask's threads and processes schedulers (s3fs; in the ``--s3fs-child`` interpreter)."""
    workers = setup.args.workers
    threads, processes = PlanTimer(), PlanTimer()
    yield [
        Case(
            "dask-threads",
            _s3fs_runner(setup, threads, scheduler="threads", num_workers=workers),
            f"{workers} threads",
            plan=threads,
        ),
        Case(
            "dask-processes",
            _s3fs_runner(setup, processes, scheduler="processes", num_workers=workers),
            "dask's default: a new pool per compute",
            plan=processes,
        ),
    ]


@contextlib.contextmanager
def distributed_group(setup: Setup) -> Iterator[list[Case]]:
    """A distributed LocalCluster on 127.0.0.1 (s3fs; in the ``--s3fs-child`` interpreter)."""
    from distributed import Client, LocalCluster

    with (
        tempfile.TemporaryDirectory(prefix="bench-distributed-", dir=setup.scratch) as scratch,
        LocalCluster(
            n_workers=setup.args.workers,
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
        plan = PlanTimer()
        run = _s3fs_runner(setup, plan, scheduler=client)
        yield [Case("distributed", run, "threads_per_worker=1, processes", plan=plan)]


def run_s3fs_child(setup: Setup, expected_path: str, wanted: list[str]) -> dict[str, Result]:
    """Run this script with ``--s3fs-python`` in ``--s3fs-child`` mode; echo its progress lines,
    return its results."""
    if setup.args.s3fs_python is None:
        raise Skipped(
            "s3fs is not importable here and no other interpreter has it (installing s3fs here would "
            f"change botocore); make one with: {S3FS_SETUP}"
        )
    config = {
        "endpoint": setup.endpoint,
        "bucket": setup.bucket,
        "prefix": setup.prefix,
        "objects": setup.objects,
        "blocksize": setup.blocksize,
        "workers": setup.args.workers,
        "repeats": setup.args.repeats,
        "timeout": setup.args.timeout,
        "moto_pid": setup.moto_pid,
        "moto_log": setup.moto_log,
        "expected": expected_path,
        "wanted": wanted,
        "scratch": setup.scratch,
    }
    config_path = os.path.join(setup.scratch, "s3fs-child.json")
    with open(config_path, "w") as f:
        json.dump(config, f)
    env = {**os.environ, **LOOPBACK_AWS_ENV}
    # the child's own site-packages, plus this checkout for the stdlib-only dask_faas.testing.s3
    # that _common imports (dask_faas itself is not installed there, and its package is lazy)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    cmd = [setup.args.s3fs_python, os.path.abspath(__file__), "--s3fs-child", config_path]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    payload = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("RESULT "):
                payload = json.loads(line[len("RESULT ") :])
            else:
                print(f"  [s3fs child] {line.rstrip()}", flush=True)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode or payload is None:
        raise RuntimeError(f"the s3fs child ({setup.args.s3fs_python}) exited with {proc.returncode}")
    setup.args.child_environment = payload["environment"]
    if payload.get("skipped"):
        raise Skipped(payload["skipped"])
    return {key: Result.from_dict(r) for key, r in payload["results"].items()}


def s3fs_child_main(config_path: str) -> int:
    """``--s3fs-child``: run the s3fs contenders here and print ``RESULT <json>`` last."""
    with open(config_path) as f:
        config = json.load(f)
    with open(config["expected"]) as f:
        expected = json.load(f)
    faulthandler.dump_traceback_later(config["timeout"], exit=True)
    args = argparse.Namespace(workers=config["workers"], repeats=config["repeats"])
    setup = Setup(
        args,
        config["endpoint"],
        config["bucket"],
        config["prefix"],
        [tuple(o) for o in config["objects"]],
        config["blocksize"],
        config["scratch"],
        config["moto_pid"],
        config["moto_log"],
    )
    probe = Probe(setup.moto_pid, setup.moto_log, f"/{setup.bucket}/{setup.prefix}")
    results: dict[str, Any] = {}
    skipped = None
    env = describe_environment(CHILD_PACKAGES)
    env["executable"] = sys.executable
    print(
        f"Python {env['python']} ({sys.executable}); "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
        flush=True,
    )
    for keys, group in (
        (["dask-threads", "dask-processes"], dask_local_group),
        (["distributed"], distributed_group),
    ):
        if not set(keys) & set(config["wanted"]):
            continue
        try:
            with group(setup) as cases:
                for case in cases:
                    if case.key in config["wanted"]:
                        results[case.key] = run_case(case, args.repeats, checker(expected), probe).as_dict()
        except Skipped as exc:
            skipped = str(exc)
            break
    faulthandler.cancel_dump_traceback_later()
    print("RESULT " + json.dumps({"results": results, "skipped": skipped, "environment": env}), flush=True)
    return 0


@contextlib.contextmanager
def lithops_group(setup: Setup) -> Iterator[list[Case]]:
    try:
        import lithops  # noqa: F401
    except ImportError as exc:
        raise Skipped(f"lithops is not importable ({exc})") from None

    client = _boto3_client(setup.endpoint)
    jobs_bucket = f"{setup.bucket}-lithops"  # Lithops' own objects, apart from the data
    client.create_bucket(Bucket=jobs_bucket)
    executors: dict[int, Any] = {}

    def runner(version: int) -> Callable[[], Any]:
        def run() -> Any:
            if version not in executors:
                executors[version] = lithops_localhost_executor_on_s3(
                    setup.args.workers, version, setup.endpoint, jobs_bucket, **CREDENTIALS
                )
            fexec = executors[version]
            futures = fexec.map(
                lithops_chunk,
                f"minio://{setup.bucket}/{setup.prefix}",
                obj_chunk_size=setup.blocksize,
                obj_newline="\n",
            )
            return combine(fexec.get_result(futures, show_progressbar=False))

        return run

    note = "storage: moto (minio backend)"
    try:
        yield [
            Case("lithops-v2", runner(2), f"a new process per call; {note}"),
            Case("lithops-v1", runner(1), f"a runner process per job; {note}"),
        ]
    finally:
        release_lithops_executors(executors.values())
        _empty_bucket(client, jobs_bucket)
        client.delete_bucket(Bucket=jobs_bucket)
        client.close()


@contextlib.contextmanager
def ppe_group(setup: Setup) -> Iterator[list[Case]]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    tasks = [
        (setup.endpoint, setup.bucket, key, start, end, size)
        for key, size in setup.objects
        for start, end in even_ranges(size, setup.blocksize)
    ]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(setup.args.workers, mp_context=context) as pool:

        def run() -> Any:
            return combine(list(pool.map(_range_task, *zip(*tasks, strict=True))))

        yield [Case("ppe-ranges", run, f"{len(tasks)} ranges, boto3 + pandas per task; no scheduler")]


def _empty_bucket(client: Any, bucket: str) -> None:
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})


# None: the s3fs contenders, run by another interpreter (run_s3fs_child)
GROUPS: list[tuple[list[str], Group | None]] = [
    (["faas-s3", "faas-s3-fused"], _faas_group(job_on_s3=True)),
    (["faas-local", "faas-local-fused"], _faas_group(job_on_s3=False)),
    (S3FS, None),
    (["lithops-v2", "lithops-v1"], lithops_group),
    (["ppe-ranges"], ppe_group),
]


def run_groups(
    setup: Setup, expected_path: str, check: Callable[[Any], None]
) -> tuple[dict[str, Result], list[str]]:
    """Run every group in turn (one group's processes alive at a time)."""
    args = setup.args
    probe = Probe(setup.moto_pid, setup.moto_log, f"/{setup.bucket}/{setup.prefix}")
    results: dict[str, Result] = {}
    failures: list[str] = []

    def skip_all(keys: list[str], reason: str) -> None:
        for key in keys:
            results.setdefault(key, Result(Measurement(NAMES[key], 1, skipped=reason)))

    for keys, group in GROUPS:
        wanted = [k for k in keys if k not in args.skip]
        skip_all([k for k in keys if k in args.skip], "--skip")
        if not wanted:
            continue
        faulthandler.dump_traceback_later(args.timeout, exit=True)
        try:
            if group is None:
                results.update(run_s3fs_child(setup, expected_path, wanted))
            else:
                with group(setup) as cases:
                    for case in cases:
                        if case.key in wanted:
                            results[case.key] = run_case(case, args.repeats, check, probe)
        except Skipped as exc:
            print(f"skipped: {exc}", flush=True)
            skip_all(wanted, f"skipped: {exc}")
        except Exception as exc:
            traceback.print_exc()
            skip_all(wanted, f"failed: {type(exc).__name__}: {exc}")
        finally:
            faulthandler.cancel_dump_traceback_later()
    for key in ORDER:
        m = results[key].measurement
        if m.skipped and m.skipped.startswith("failed"):
            failures.append(f"{key}: {m.skipped}")
    return results, failures


# -- data, expected result and single-stream costs -----------------------------------------------


def prepare_data(args: argparse.Namespace, endpoint: str, bucket: str, prefix: str) -> list[tuple[str, int]]:
    """Generate and upload the objects (in a pool of ``--workers`` processes); ``(key, size)``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    sample = make_object(0, 20_000, args.seed)
    rows = int(args.object_mb * MB * 20_000 / len(sample))
    keys = [f"{prefix}part-{i:03d}.csv" for i in range(args.objects)]
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool:
        sizes = list(
            pool.map(
                _generate_and_upload,
                range(args.objects),
                [rows] * args.objects,
                [args.seed] * args.objects,
                [endpoint] * args.objects,
                [bucket] * args.objects,
                keys,
            )
        )
    return list(zip(keys, sizes, strict=True))


def expected_result(endpoint: str, bucket: str, objects: list[tuple[str, int]]) -> Any:
    """pandas on the downloaded objects: the reference every contender must match."""
    import pandas as pd

    client = _boto3_client(endpoint)
    frames = [
        pd.read_csv(io.BytesIO(client.get_object(Bucket=bucket, Key=key)["Body"].read()), usecols=USED)
        for key, _ in objects
    ]
    client.close()
    return etl(pd.concat(frames, ignore_index=True))


def single_stream_costs(setup: Setup, repeats: int = 5) -> dict[str, float]:
    """One range of the first object, fetched and parsed ``repeats`` times in this process, one
    at a time: the mean wall time of its GET, the server's CPU per GET, the server's CPU per 1 KB
    ranged GET of the same object (moto reads the whole object for any range) and pandas' CPU
    per parse + ETL. Means over the repeats: the server's CPU is counted in clock ticks."""
    client = _boto3_client(setup.endpoint)
    key, size = setup.objects[0]
    start, end = even_ranges(size, setup.blocksize)[0]

    def measure(action: Callable[[], Any]) -> tuple[float, float, float]:
        moto, wall, cpu = process_cpu_seconds(setup.moto_pid), time.perf_counter(), time.process_time()
        for _ in range(repeats):
            action()
        return (
            (time.perf_counter() - wall) / repeats,
            (process_cpu_seconds(setup.moto_pid) - moto) / repeats,
            (time.process_time() - cpu) / repeats,
        )

    try:
        data = read_lines(client, setup.bucket, key, start, end, size)
        get_s, get_moto, _ = measure(lambda: read_lines(client, setup.bucket, key, start, end, size))
        tiny = lambda: client.get_object(Bucket=setup.bucket, Key=key, Range="bytes=0-1023")["Body"].read()  # noqa: E731
        _, tiny_moto, _ = measure(tiny)
        _, _, parse = measure(lambda: parse_partial(data, True))
    finally:
        client.close()
    return {
        "range_bytes": len(data),
        "object_bytes": size,
        "get_s": get_s,
        "get_moto_cpu_s": get_moto,
        "tiny_get_moto_cpu_s": tiny_moto,
        "parse_cpu_s": parse,
    }


# -- reporting ---------------------------------------------------------------------------------


def throughput(total_bytes: int, seconds: float) -> float:
    return total_bytes / MB / seconds if seconds > 0 else math.nan


def _num(value: float, fmt: str = ".2f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def report(
    setup: Setup, results: dict[str, Result], total_bytes: int, costs: dict[str, float] | None
) -> dict[str, Any]:
    cluster = results[REFERENCE_CLUSTER].measurement.median_s
    lithops = results[REFERENCE_LITHOPS].measurement.median_s
    rows = []
    for key in ORDER:
        r = results[key]
        m = r.measurement
        if not m.ok:
            rows.append([key, *["-"] * 10, m.skipped or ""])
            continue
        cpu = "/".join(_num(r.median(n)) for n in ("client_cpu", "workers_cpu", "moto_cpu"))
        plan = _num(r.median("plan_s"))
        requests = f"{r.median('data_gets'):.0f}/{r.median('other_requests'):.0f}"
        faas = r.computes[-1].get("faas")
        invocations = f"{faas['invocations']}/{faas['tasks']}" if faas else ""
        rows.append(
            [
                key,
                f"{m.median_s:.2f}",
                f"{m.min_s:.2f}",
                f"{throughput(total_bytes, m.median_s):.0f}",
                plan,
                format_ratio(ratio(cluster, m.median_s)),
                format_ratio(ratio(lithops, m.median_s)),
                cpu,
                _num(r.median("run_queue")),
                requests,
                invocations,
                m.note or "",
            ]
        )
    headers = [
        "contender",
        "median s",
        "min s",
        "MB/s",
        "plan s",
        "vs LocalCluster",
        "vs Lithops",
        "cpu s client/workers/S3",
        "run queue s",
        "S3 GET data/other",
        "invocations/tasks",
        "note",
    ]
    print()
    print(
        f"== CSV ETL: {len(setup.objects)} objects, {total_bytes / MB:.1f} MB of CSV, blocksize "
        f"{setup.blocksize:,} bytes, {setup.args.workers} workers; throughput = CSV MB / median s; "
        "ratios are throughput ratios (> 1x: faster than the reference)"
    )
    print(format_table(headers, rows, align="lrrrrrrrrrrl"))
    print(
        "(medians per run. plan s: building the collection (listing, sampling, planning) on the "
        "client, part of the run; cpu s: this process / the worker processes alive through the run "
        "('-': pools or processes made per run) / the moto server; run queue: the workers' wait for "
        "a CPU held by other processes; S3 GET data/other: GETs of the CSV objects / every other "
        "request)"
    )
    print()
    targets: dict[str, Any] = {}
    for key, label in (("faas-s3", "job on S3"), ("faas-local", "job on local storage")):
        faas = results[key].measurement.median_s
        value = ratio(cluster, faas)
        targets[f"{key} vs LocalCluster"] = value
        print(
            f"dask_faas ({label}) vs LocalCluster throughput: {format_ratio(value)} "
            f"(target >= {TARGET_VS_CLUSTER:g}x){_met(value, TARGET_VS_CLUSTER)}"
        )
        value = ratio(lithops, faas)
        targets[f"{key} vs Lithops"] = value
        print(
            f"dask_faas ({label}) vs Lithops throughput: {format_ratio(value)} "
            f"(target >= {TARGET_VS_LITHOPS:g}x){_met(value, TARGET_VS_LITHOPS)}"
        )
    v1 = results["lithops-v1"].measurement.median_s
    print(
        "(for reference) vs Lithops localhost v1 (job on S3 / local): "
        f"{format_ratio(ratio(v1, results['faas-s3'].measurement.median_s))} / "
        f"{format_ratio(ratio(v1, results['faas-local'].measurement.median_s))}"
    )
    print()
    for key in FAAS:
        r = results[key]
        if r.measurement.ok and "faas" in r.computes[-1]:
            print(f"{key}: ex.last_report: {r.computes[-1]['faas']['text']}")
            received = r.computes[-1]["faas"]["bytes_received"]
            print(f"{key}: bytes the client received (last compute): {received:,}")
    if costs is not None:
        ranges = sum(len(even_ranges(size, setup.blocksize)) for _, size in setup.objects)
        floor = ranges * (costs["get_moto_cpu_s"] + costs["parse_cpu_s"])
        print()
        print(
            f"single-stream costs (one range of {costs['range_bytes'] / MB:.1f} MB of a "
            f"{costs['object_bytes'] / MB:.1f} MB object, fetched and parsed in this process): GET "
            f"{costs['get_s']:.3f} s, moto CPU {costs['get_moto_cpu_s']:.3f} s (a 1 KB ranged GET of "
            f"the same object: {costs['tiny_get_moto_cpu_s']:.3f} s), pandas parse + ETL "
            f"{costs['parse_cpu_s']:.3f} s CPU"
        )
        print(
            f"CPU floor of the data set: {ranges} ranges x (moto + parse) = {floor:.2f} CPU s; on "
            f"{setup.args.workers} cores at best {floor / setup.args.workers:.2f} s = "
            f"{throughput(total_bytes, floor / setup.args.workers):.0f} MB/s"
        )
    return targets


def _met(value: float, target: float) -> str:
    if math.isnan(value):
        return ""
    return " met" if value >= target else " MISSED"


# -- main ----------------------------------------------------------------------------------------


def default_s3fs_python() -> str | None:
    """This interpreter if it imports s3fs, else the benchmark's venv if it exists."""
    try:
        import s3fs  # noqa: F401

        return sys.executable
    except ImportError:
        pass
    return DEFAULT_S3FS_PYTHON if os.path.exists(DEFAULT_S3FS_PYTHON) else None


def parse_blocksize(text: str) -> int:
    from dask.utils import parse_bytes

    value = parse_bytes(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"blocksize must be positive, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="CSV ETL on an S3-compatible server: dask-faas vs dask (s3fs), distributed, Lithops.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--objects", type=int, default=8, help="CSV objects")
    parser.add_argument("--object-mb", type=float, default=50.0, help="approximate MB per object")
    parser.add_argument("--blocksize", default="32MiB", help="bytes per partition, everywhere")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, everywhere")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the generated data")
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=ORDER, metavar="KEY", help="contenders to skip"
    )
    parser.add_argument(
        "--s3fs-python",
        default=default_s3fs_python(),
        help="interpreter that has dask, distributed and s3fs, for the s3fs contenders",
    )
    add_json_and_timeout_arguments(parser)
    parser.add_argument("--s3fs-child", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.s3fs_child:
        return args
    if min(args.objects, args.repeats, args.workers) < 1 or args.object_mb <= 0:
        parser.error("--objects, --object-mb, --repeats and --workers must be positive")
    args.blocksize = parse_blocksize(args.blocksize)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.s3fs_child:
        return s3fs_child_main(args.s3fs_child)
    os.environ.update(LOOPBACK_AWS_ENV)  # every client, the functions included, uses these
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)
    env = describe_environment(PACKAGES)
    print(
        f"bench_csv: {args.objects} objects of ~{args.object_mb:g} MB, blocksize {args.blocksize:,}, "
        f"{args.workers} workers everywhere, median of {args.repeats} repeats after 1 untimed warm-up"
    )
    print_environment(env)
    print(f"s3fs contenders: {args.s3fs_python or 'no interpreter with s3fs'}")
    started = time.perf_counter()
    failures: list[str] = []
    results: dict[str, Result] = {}
    targets: dict[str, Any] = {}
    costs = None
    total_bytes = 0
    args.child_environment = None

    with tempfile.TemporaryDirectory(prefix="bench-csv-") as scratch:
        moto_log = os.path.join(scratch, "moto.log")
        moto, endpoint = start_moto_server(moto_log)
        try:
            bucket, prefix = "bench-csv", "data/"
            client = _boto3_client(endpoint)
            client.create_bucket(Bucket=bucket)
            print(f"moto server {endpoint} (pid {moto.pid}); generating and uploading ...", flush=True)
            start = time.perf_counter()
            objects = prepare_data(args, endpoint, bucket, prefix)
            total_bytes = sum(size for _, size in objects)
            print(
                f"  {len(objects)} objects, {total_bytes:,} bytes in {time.perf_counter() - start:.1f} s",
                flush=True,
            )
            start = time.perf_counter()
            expected = expected_result(endpoint, bucket, objects)
            print(
                f"  pandas on the downloaded objects: {len(expected)} groups, total "
                f"{expected.sum():,.2f} ({time.perf_counter() - start:.1f} s)",
                flush=True,
            )
            expected_json = to_expected(expected)
            expected_path = os.path.join(scratch, "expected.json")
            with open(expected_path, "w") as f:
                json.dump(expected_json, f)
            setup = Setup(
                args, endpoint, bucket, prefix, objects, args.blocksize, scratch, moto.pid, moto_log
            )
            costs = single_stream_costs(setup)
            results, failures = run_groups(setup, expected_path, checker(expected_json))
            targets = report(setup, results, total_bytes, costs)
            _empty_bucket(client, bucket)
            client.delete_bucket(Bucket=bucket)
            client.close()
        finally:
            stop_process(moto)

    return finish(
        args,
        env,
        started,
        failures,
        lambda leftovers: {
            "benchmark": "bench_csv",
            "args": {k: v for k, v in vars(args).items() if k != "child_environment"},
            "environment": {**env, "s3fs_child": args.child_environment},  # after loadavg_end
            "csv_bytes": total_bytes,
            "results": {key: results[key].as_dict() for key in ORDER if key in results},
            "single_stream_costs": costs,
            "targets": targets,
            "leftover_processes": leftovers,
            "failures": failures,
        },
    )


if __name__ == "__main__":
    sys.exit(main())
