"""Dataframe shuffle throughput: faas_get's storage exchange against dask's shuffle methods.

One workload: ``--rows`` rows (default 20 million: int64 ``key``, float64 ``x`` and ``y``, 24 bytes a
row, 480 MB) in ``--partitions`` partitions (default 40) generated inside the workers
(``dd.from_map``), shuffled on ``key`` into as many partitions, each summarized by a tiny frame
(rows, distinct keys, sums), so that only the shuffle's traffic is measured. Results are checked: all
rows arrive, the sums match, and every key lands in exactly one partition. Contenders (``--skip``):

    faas            dask.compute(x, scheduler=FaasExecutor(workers=2)), local directory storage: the
                    storage exchange (single level at 40 x 40); every byte between processes goes
                    through storage, as on a FaaS platform
    faas-2level     the same with the two-level exchange forced (faas.exchange.two-level-above=0)
    faas-s3         FaasExecutor on a moto S3 server (127.0.0.1) behind a counting HTTP proxy, at
                    --s3-rows rows (same M x R): the real request counts; its MB/s is moto's, not S3's
    faas-s3-2level  the same with the two-level exchange forced
    tasks-processes dask's task shuffle on scheduler="processes" (num_workers=2)
    disk-threads    dask's disk shuffle (partd) on scheduler="threads" (num_workers=2)
    p2p-cluster     distributed's P2P shuffle, LocalCluster(2 workers x 1 thread) on 127.0.0.1
    tasks-cluster   dask's task shuffle on the same LocalCluster

Each contender warms up once on a tenth of the rows (pools and clusters start), then the full shuffle
is timed ``--repeats`` times (median). Throughput is the input bytes over the wall time. Nothing is
asserted on times; the exit code is 1 when a contender fails or leaves processes behind.

    python benchmarks/bench_shuffle.py
    python benchmarks/bench_shuffle.py --rows 2000000 --repeats 1 --skip faas-s3 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from _common import (
    Measurement,
    add_json_and_timeout_arguments,
    describe_environment,
    finish,
    format_ratio,
    format_table,
    print_environment,
    ratio,
    start_moto_server,
    stop_process,
)

from dask_faas.testing.s3 import CountingProxy

PACKAGES = ["dask-faas", "dask", "distributed", "pandas", "pyarrow", "moto"]
NAMES = {
    "faas": "faas_get, storage exchange (local storage)",
    "faas-2level": "faas_get, two-level exchange forced",
    "faas-s3": "faas_get on moto S3 (request counts)",
    "faas-s3-2level": "the same, two-level exchange forced",
    "tasks-processes": "dask tasks, processes scheduler",
    "disk-threads": "dask disk, threads scheduler",
    "p2p-cluster": "distributed p2p, LocalCluster",
    "tasks-cluster": "dask tasks, LocalCluster",
}
KEYS = 2**20  # keys (i * 2654435761) % 2**20: every key occurs, each ~rows/2**20 times
ROW_BYTES = 24
Runner = Callable[[int], Any]  # rows -> summary frame


# -- the workload -------------------------------------------------------------------------------


def make_part(i: int, rows: int, nonce: str = "") -> pd.DataFrame:
    """Partition ``i``; ``nonce`` only gives every build new keys (the data does not depend on it)."""
    rng = np.random.default_rng([2017, i])
    ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
    return pd.DataFrame(
        {"key": (ids * 2654435761) % KEYS, "x": rng.standard_normal(rows), "y": rng.random(rows)}
    )


def summary(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"rows": [len(df)], "keys": [df.key.nunique()], "key_sum": [int(df.key.sum())], "x_sum": [df.x.sum()]}
    )


def build(rows: int, partitions: int) -> Any:
    import dask.dataframe as dd

    meta = summary(make_part(0, 0)).iloc[:0]
    # new keys per build: no scheduler may hand back results of an earlier compute
    df = dd.from_map(make_part, range(partitions), rows=rows // partitions, nonce=uuid.uuid4().hex)
    return df.shuffle("key", npartitions=partitions).map_partitions(summary, meta=meta)


def expected(rows: int, partitions: int) -> tuple[int, int, int, float]:
    """Rows, distinct keys, key sum and x sum of the input, computed here part by part."""
    key_sum, x_sum = 0, 0.0
    for i in range(partitions):
        part = make_part(i, rows // partitions)
        key_sum += int(part.key.sum())
        x_sum += float(part.x.sum())
    n = rows // partitions * partitions
    return n, min(n, KEYS), key_sum, x_sum


def check(result: pd.DataFrame, want: tuple[int, int, int, float], partitions: int) -> None:
    got = (int(result.rows.sum()), int(result["keys"].sum()), int(result.key_sum.sum()))
    if len(result) != partitions or got != want[:3] or not np.isclose(result.x_sum.sum(), want[3]):
        raise RuntimeError(f"wrong result: {len(result)} partitions, {got}, x sum {result.x_sum.sum()}")


# -- contenders ---------------------------------------------------------------------------------


def compute_with(partitions: int, shuffle_method: str | None = None, **options: Any) -> Runner:
    """A runner: build the workload with ``shuffle_method`` and compute it with ``options``."""
    import dask

    def run(rows: int) -> Any:
        with dask.config.set({"dataframe.shuffle.method": shuffle_method}):
            collection = build(rows, partitions)
        return dask.compute(collection, **options)[0]

    return run


@contextlib.contextmanager
def faas_group(args: argparse.Namespace) -> Iterator[dict[str, tuple[Runner, Callable[[], str]]]]:
    from dask_faas import FaasExecutor, shuffle

    with (
        tempfile.TemporaryDirectory(prefix="bench-shuffle-") as root,
        FaasExecutor(workers=args.workers, local_storage={"root": root}) as ex,
        FaasExecutor(
            workers=args.workers, local_storage={"root": root}, exchange={"two_level_above": 0}
        ) as ex2,
    ):
        plain = compute_with(args.partitions, scheduler=ex)
        two_level = compute_with(args.partitions, scheduler=ex2)
        m = r = args.partitions
        groups = len(shuffle.plan(m, r, threshold=0) or [])
        single = f"{m} PUT + {m * r} ranged GET (from the plan)"
        double = f"{m + groups} PUT + {m} GET + {groups * r} ranged GET ({groups} combiners)"
        yield {
            "faas": (plain, lambda: f"{single}; {ex.last_report}"),
            "faas-2level": (two_level, lambda: f"{double}; {ex2.last_report}"),
        }


@contextlib.contextmanager
def faas_s3_group(args: argparse.Namespace) -> Iterator[dict[str, tuple[Runner, Callable[[], str]]]]:
    import boto3

    from dask_faas import FaasExecutor

    os.environ.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    with tempfile.TemporaryDirectory() as logs:
        moto, endpoint = start_moto_server(os.path.join(logs, "moto.log"))
        try:
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            credentials = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
            admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **credentials)
            admin.create_bucket(Bucket=bucket)
            with CountingProxy(endpoint) as proxy:
                s3 = {"bucket": bucket, "endpoint_url": proxy.url, "region_name": "us-east-1"}
                settings = {"workers": args.workers, "storage": "s3"}
                settings["s3"] = {**s3, "key": "testing", "secret": "testing"}
                with (
                    FaasExecutor(**settings) as ex,
                    FaasExecutor(**settings, exchange={"two_level_above": 0}) as ex2,
                ):
                    run = compute_with(args.partitions, scheduler=ex)
                    run_two_level = compute_with(args.partitions, scheduler=ex2)

                    def counted(rows: int) -> Any:
                        proxy.requests.clear()
                        return run(rows)

                    def counted_two_level(rows: int) -> Any:
                        proxy.requests.clear()
                        return run_two_level(rows)

                    def describe() -> str:
                        ours = proxy.count(lambda method, path, rng: "/x/" in path)
                        total = proxy.count(lambda *_: True)
                        return f"exchange requests {dict(ours)}; all requests {dict(total)}"

                    yield {"faas-s3": (counted, describe), "faas-s3-2level": (counted_two_level, describe)}
        finally:
            stop_process(moto)


@contextlib.contextmanager
def processes_group(args: argparse.Namespace) -> Iterator[dict[str, tuple[Runner, Callable[[], str]]]]:
    none = lambda: ""  # noqa: E731
    yield {
        "tasks-processes": (
            compute_with(args.partitions, "tasks", scheduler="processes", num_workers=args.workers),
            none,
        ),
        "disk-threads": (
            compute_with(args.partitions, "disk", scheduler="threads", num_workers=args.workers),
            none,
        ),
    }


@contextlib.contextmanager
def cluster_group(args: argparse.Namespace) -> Iterator[dict[str, tuple[Runner, Callable[[], str]]]]:
    from distributed import Client, LocalCluster

    with (
        tempfile.TemporaryDirectory(prefix="bench-shuffle-cluster-") as scratch,
        LocalCluster(
            n_workers=args.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            local_directory=scratch,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        none = lambda: ""  # noqa: E731
        yield {
            "p2p-cluster": (compute_with(args.partitions, "p2p", scheduler=client), none),
            "tasks-cluster": (compute_with(args.partitions, "tasks", scheduler=client), none),
        }


GROUPS = [faas_group, faas_s3_group, processes_group, cluster_group]


# -- serialization of the buckets ----------------------------------------------------------------


def serialization(rows: int, buckets: int, repeats: int = 5) -> list[list[str]]:
    """Encode and decode one partition's buckets with each candidate codec (best of ``repeats``).

    The pieces are what a mapper holds: ``shuffle_group`` output (rows taken in bucket order).
    "exchange" is the codec that ships (pickle protocol 5, buffers out of band, 8-byte framing).
    """
    import pickle

    import pyarrow as pa
    import pyarrow.ipc as ipc
    from dask.dataframe.shuffle import shuffle_group

    from dask_faas import exchange

    def arrow_dumps(df: pd.DataFrame) -> Any:
        table = pa.Table.from_pandas(df, preserve_index=True)
        sink = pa.BufferOutputStream()
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return sink.getvalue()

    # (encode, bytes as read back from storage (untimed), decode): every codec's output is copied
    # once into the mapper's object, whatever its form, so that copy is left out of all of them
    codecs = {
        "pickle 5, buffers out of band (exchange)": (
            exchange._encode,
            lambda chunks: memoryview(bytearray(b"".join(chunks))),
            exchange._decode,
        ),
        "pickle 5, in band": (lambda df: pickle.dumps(df, protocol=5), bytes, pickle.loads),
        "Arrow IPC stream per bucket": (
            arrow_dumps,
            lambda buf: buf,
            lambda buf: ipc.open_stream(buf).read_all().to_pandas(),
        ),
    }
    out = []
    for strings in (False, True):
        frame = make_part(0, rows)
        if strings:
            frame["s"] = pd.array([f"w{i % 1000}" for i in range(rows)], dtype="str")
        frame["_partitions"] = (frame.key % buckets).astype("int16")
        size = int(frame.memory_usage(deep=True).sum())
        pieces = list(shuffle_group(frame, "_partitions", 0, buckets, buckets, False, buckets).values())
        label = f"{rows:,} rows{' + str column' if strings else ''}, {size / 1e6:.1f} MB, {buckets} buckets"
        for name, (dumps, stored, loads) in codecs.items():
            encode = decode = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                blobs = [dumps(p) for p in pieces]
                encode = min(encode, time.perf_counter() - start)
                blobs = [stored(b) for b in blobs]
                start = time.perf_counter()
                back = [loads(b) for b in blobs]
                decode = min(decode, time.perf_counter() - start)
            for a, b in zip(pieces, back, strict=True):
                pd.testing.assert_frame_equal(a, b)
            out.append([label, name, f"{size / encode / 1e6:,.0f}", f"{size / decode / 1e6:,.0f}"])
    return out


# -- running and reporting ----------------------------------------------------------------------


def run_all(args: argparse.Namespace, want: tuple[int, int, int, float]) -> tuple[dict, dict, list[str]]:
    results: dict[str, Measurement] = {}
    notes: dict[str, str] = {}
    failures: list[str] = []
    small = expected(args.rows // 10, args.partitions)
    s3_want = expected(args.s3_rows, args.partitions)
    for group in GROUPS:
        faulthandler.dump_traceback_later(args.timeout, exit=True)
        try:
            with group(args) as contenders:
                for key, (run, describe) in contenders.items():
                    if key in args.skip:
                        continue
                    on_moto = key.startswith("faas-s3")
                    rows, target = (args.s3_rows, s3_want) if on_moto else (args.rows, want)
                    repeats = 1 if on_moto else args.repeats
                    m = results[key] = Measurement(NAMES[key], rows)
                    print(f"running {key} ({repeats} x {rows:,} rows) ...", flush=True)
                    try:
                        check(run(args.rows // 10), small, args.partitions)  # warm-up
                        for _ in range(repeats):
                            start = time.perf_counter()
                            value = run(rows)
                            m.seconds.append(time.perf_counter() - start)
                            check(value, target, args.partitions)
                        notes[key] = describe()
                        print(f"  {', '.join(f'{s:.2f}' for s in m.seconds)} s; {notes[key]}", flush=True)
                    except Exception as exc:
                        traceback.print_exc()
                        m.skipped = f"failed: {type(exc).__name__}: {exc}"
                        failures.append(f"{key}: {m.skipped}")
        except Exception as exc:
            traceback.print_exc()
            failures.append(f"{group.__name__}: {type(exc).__name__}: {exc}")
        finally:
            faulthandler.cancel_dump_traceback_later()
    return results, notes, failures


def report(args: argparse.Namespace, results: dict[str, Measurement]) -> str:
    def mbps(m: Measurement) -> float:
        return m.calls * ROW_BYTES / 1e6 / m.median_s if m.ok else float("nan")

    rows = []
    for key, m in results.items():
        rate = mbps(m)
        rows.append(
            [
                f"{key}: {m.name}",
                f"{m.calls:,}",
                f"{m.median_s:.2f}" if m.ok else (m.skipped or "-"),
                f"{rate:.0f}" if m.ok else "-",
                format_ratio(ratio(rate, mbps(results["p2p-cluster"])))
                if "p2p-cluster" in results
                else "n/a",
                format_ratio(ratio(rate, mbps(results["tasks-processes"])))
                if "tasks-processes" in results
                else "n/a",
            ]
        )
    headers = ["contender", "rows", "median s", "MB/s", "vs p2p", "vs tasks-processes"]
    return format_table(headers, rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000, help="rows shuffled (24 bytes each)")
    parser.add_argument("--partitions", type=int, default=40, help="input and output partitions")
    parser.add_argument("--s3-rows", type=int, default=2_000_000, help="rows of the faas-s3 run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes, everywhere")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(NAMES), metavar="KEY")
    parser.add_argument("--no-serialization", action="store_true", help="skip the codec measurement")
    add_json_and_timeout_arguments(parser, 1800.0, "seconds per group before aborting")
    args = parser.parse_args(argv)
    if min(args.rows, args.partitions, args.s3_rows, args.repeats, args.workers) < 1:
        parser.error("sizes, --repeats and --workers must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = describe_environment(PACKAGES)
    print(
        f"bench_shuffle: {args.rows:,} rows ({args.rows * ROW_BYTES / 1e6:.0f} MB), "
        f"{args.partitions} -> {args.partitions} partitions, {args.workers} workers everywhere, "
        f"median of {args.repeats}"
    )
    print_environment(env)
    started = time.perf_counter()
    if not args.no_serialization:
        print("\nserialization of one mapper's buckets (MB/s of the partition, best of 5):")
        table = serialization(args.rows // args.partitions, args.partitions)
        print(format_table(["partition", "codec", "encode MB/s", "decode MB/s"], table, "llrr"), flush=True)
        print()
    results, notes, failures = run_all(args, expected(args.rows, args.partitions))
    print()
    print(report(args, results))
    print()
    for key, note in notes.items():
        if note:
            print(f"{key}: {note}")
    if "faas" in results and "p2p-cluster" in results:
        target = ratio(results["p2p-cluster"].median_s, results["faas"].median_s)
        met = "met" if target >= 1 else "NOT met"
        print(f"target faas_get throughput >= p2p on LocalCluster: {format_ratio(target)} ({met})")
    return finish(
        args,
        env,
        started,
        failures,
        lambda leftovers: {
            "benchmark": "bench_shuffle",
            "args": vars(args),
            "environment": env,
            "results": results,
            "notes": notes,
        },
        blank_line=False,
        one_line=True,
    )


if __name__ == "__main__":
    sys.exit(main())
