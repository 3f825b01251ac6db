"""The remote backends' own capacity, side by side: client overhead, and a thousand calls in flight.

Everything runs against the platform emulators of ``dask_faas.testing`` on loopback (real server
processes). Three groups (``--skip`` keys in brackets):

``overhead`` -- per-invocation client overhead: ``--calls`` trivial invocations (default 1,000)
    * through each backend's ``invoke`` (``lambda``, ``openwhisk``, ``knative``) against its emulator in
      load mode with no delay (the emulator answers at once, no function runs), ``--overhead-concurrency``
      in flight (default 64);
    * ``boto3-loop``: the floor for the Lambda API, a bare loop of boto3 ``invoke`` calls on a
      ``ThreadPoolExecutor`` of the same size against the same emulator;
    * ``local-map`` / ``<platform>-map``: ``FaasExecutor.map`` of ``inc`` end to end (functions
      really run: the local pool with 2 processes; the platforms with 2 instances at once).
``load`` -- the emulators in load mode with ``--delay`` seconds per call (default 1.0): ``--load``
    calls (default ``1000,10000``) at ``--concurrency`` in flight (default 1,000), per backend and for
    the bare boto3 loop: the time from the first submit until every call ended, until every call
    had reached the platform (the emulator's receipt times), and how long after the platform
    answered the client noticed (median and 99th percentile).

Targets (issue 9), printed, never asserted: 1,000 one-second calls end within 2.5 s of the first
submit and all start within 1.5 s; 10,000 within 12 s; completion noticed within 50 ms; client
overhead within 1.5x of the bare boto3 loop. Reference: Lithops on real Lambda had 1,000 workers
running within 3.7 s and noticed each completion about 1.7 s after it happened (it polls storage).

    python benchmarks/bench_platforms.py
    python benchmarks/bench_platforms.py --load 1000 --skip knative --json out.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from _common import (
    add_json_and_timeout_arguments,
    describe_environment,
    finish,
    format_ratio,
    format_table,
    print_environment,
    ratio,
)

from dask_faas import FaasExecutor, protocol
from dask_faas.backends.compute import ComputeBackend, InvokeOptions
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV
from dask_faas.testing.servers import Emulator, start_emulator

PACKAGES = ["dask-faas", "boto3", "botocore", "requests", "awslambdaric", "func-python"]
PLATFORMS = ("lambda", "openwhisk", "knative")
AUTH = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:" + "k" * 64
PAYLOAD = b"x" * 200  # what the emulators' load mode answers without reading


def inc(x: int) -> int:
    return x + 1


class Farm:
    """One emulator per platform, a function deployed on each (for the end-to-end maps)."""

    def __init__(self, workdir: str, instances: int) -> None:
        self.key = protocol.new_key()
        self.env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "NO_PROXY": "127.0.0.1,localhost",
            "OMP_NUM_THREADS": "1",
            protocol.KEY_ENV: self.key.hex(),
        }
        self.token = "bench-token"
        self.workdir, self.instances = workdir, instances
        self.emulators: dict[str, Emulator] = {}

    def start(self, platform: str) -> Emulator:
        if platform in self.emulators:
            return self.emulators[platform]
        log = os.path.join(self.workdir, f"{platform}.log")
        if platform == "lambda":
            import boto3

            em = start_emulator("dask_faas.testing.lambda_emulator", log_path=log)
            client = boto3.session.Session().client("lambda", endpoint_url=em.url, region_name="us-east-1")
            client.create_function(
                FunctionName="bench",
                PackageType="Image",
                Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda"},
                Role="arn:aws:iam::123456789012:role/bench",
                MemorySize=1024,
                Timeout=300,
                Environment={"Variables": {k: v for k, v in self.env.items() if not k.startswith("AWS_")}},
            )
            client.close()
        elif platform == "openwhisk":
            import requests

            em = start_emulator("dask_faas.testing.openwhisk_emulator", "--auth", AUTH, log_path=log)
            action = {
                "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:bench"},
                "annotations": [{"key": "provide-api-key", "value": False}],
                "limits": {"timeout": 300_000, "memory": 1024},
                "parameters": [{"key": k, "value": v, "init": True} for k, v in self.env.items()],
            }
            with requests.Session() as s:
                s.trust_env = False
                s.put(
                    f"{em.url}/api/v1/namespaces/_/actions/bench", json=action, auth=tuple(AUTH.split(":"))
                ).raise_for_status()
        else:
            env_file = os.path.join(self.workdir, "knative.json")
            with open(env_file, "w") as f:
                json.dump({**self.env, "DASK_FAAS_HTTP_TOKEN": self.token}, f)
            args = ["--env-file", env_file, "--instances", str(self.instances)]
            em = start_emulator("dask_faas.testing.knative_router", *args, log_path=log)
        self.emulators[platform] = em
        return em

    def backend(self, platform: str, concurrency: int) -> ComputeBackend:
        em = self.start(platform)
        if platform == "lambda":
            from dask_faas.backends.compute.aws_lambda import AwsLambdaBackend

            return AwsLambdaBackend(
                "bench", endpoint_url=em.url, region_name="us-east-1", concurrency=concurrency
            )
        if platform == "openwhisk":
            from dask_faas.backends.compute.openwhisk import OpenWhiskBackend

            return OpenWhiskBackend(em.url, AUTH, action="bench", concurrency=concurrency)
        from dask_faas.backends.compute.knative import KnativeBackend

        return KnativeBackend(em.url, self.token, concurrency=concurrency)

    def executor_settings(self, platform: str, root: str) -> dict[str, Any]:
        em = self.start(platform)
        common = {"signing_key": self.key.hex(), "local_storage": {"root": root}}
        if platform == "lambda":
            section = {"function_name": "bench", "endpoint_url": em.url, "region_name": "us-east-1"}
            return {"backend": "aws_lambda", "aws_lambda": {**section, "concurrency": 2}, **common}
        if platform == "openwhisk":
            section = {"api_host": em.url, "auth": AUTH, "action": "bench", "concurrency": 2}
            return {"backend": "openwhisk", "openwhisk": section, **common}
        return {
            "backend": "knative",
            "knative": {"url": em.url, "token": self.token, "concurrency": 2},
            **common,
        }

    def stop(self) -> None:
        for em in self.emulators.values():
            em.stop()


# -- one run of N invocations at a given concurrency ----------------------------------------------


def run_backend(backend: ComputeBackend, calls: int) -> dict[str, Any]:
    """Invoke ``calls`` payloads; return first submit, per-call done times (client clock)."""
    done_at: list[float] = [0.0] * calls
    remaining = threading.Semaphore(0)
    errors: list[BaseException] = []

    def finished(i: int, future: cf.Future[bytes]) -> None:
        done_at[i] = time.time()
        if future.exception() is not None:
            errors.append(future.exception())  # type: ignore[arg-type]
        remaining.release()

    options = InvokeOptions(timeout_s=120.0, memory_mb=1024, label="bench call")
    first = time.time()
    for i in range(calls):
        backend.invoke(PAYLOAD, options).add_done_callback(lambda f, i=i: finished(i, f))
    for _ in range(calls):
        remaining.acquire()
    if errors:
        raise RuntimeError(f"{len(errors)} calls failed, first: {errors[0]!r}")
    return {"first": first, "done": done_at}


def run_boto3_loop(url: str, calls: int, concurrency: int) -> dict[str, Any]:
    """The floor: boto3 ``invoke`` on a thread pool, as a user would write it by hand."""
    import boto3
    import botocore.config

    config = botocore.config.Config(max_pool_connections=concurrency, retries={"total_max_attempts": 1})
    client = boto3.session.Session().client(
        "lambda", endpoint_url=url, region_name="us-east-1", config=config
    )
    body = json.dumps({"dask_faas": "eA=="}).encode()
    done_at: list[float] = [0.0] * calls

    def one(i: int) -> None:
        client.invoke(FunctionName="bench", Payload=body)["Payload"].read()
        done_at[i] = time.time()

    with cf.ThreadPoolExecutor(concurrency) as pool:
        first = time.time()
        list(pool.map(one, range(calls)))
    client.close()
    return {"first": first, "done": done_at}


def summarize(run: dict[str, Any], log: list[dict[str, Any]]) -> dict[str, float]:
    """Makespan, time until the platform had received every call, and completion-notice delay."""
    first, done = run["first"], run["done"]
    records = [r for r in log if r.get("outcome") == "load"]
    ended = sorted(r["ended"] for r in records if r.get("ended"))
    noticed = sorted(done)
    delays = sorted(max(0.0, n - e) for n, e in zip(noticed, ended, strict=False))
    return {
        "calls": len(done),
        "makespan_s": max(done) - first,
        "all_received_s": max((r["received"] for r in records), default=float("nan")) - first,
        "notice_median_ms": 1e3 * statistics.median(delays) if delays else float("nan"),
        "notice_p99_ms": 1e3 * delays[int(0.99 * (len(delays) - 1))] if delays else float("nan"),
    }


# -- the groups ------------------------------------------------------------------------------------


def overhead_group(
    farm: Farm, args: argparse.Namespace, skip: set[str], failures: list[str]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    conc = args.overhead_concurrency
    for platform in [p for p in PLATFORMS if p not in skip]:
        em = farm.start(platform)
        em.configure(load_delay_s=0.0)
        backend = farm.backend(platform, conc)
        try:
            run_backend(backend, min(100, args.calls))  # warm: connections, threads
            seconds = []
            for _ in range(args.repeats):
                run = run_backend(backend, args.calls)
                seconds.append(max(run["done"]) - run["first"])
            results[platform] = statistics.median(seconds)
        except Exception as exc:
            failures.append(f"overhead {platform}: {exc!r}")
        finally:
            backend.close()
            em.reset()
    if "lambda" not in skip and "boto3-loop" not in skip:
        em = farm.start("lambda")
        em.configure(load_delay_s=0.0)
        run_boto3_loop(em.url, min(100, args.calls), conc)
        seconds = []
        for _ in range(args.repeats):
            run = run_boto3_loop(em.url, args.calls, conc)
            seconds.append(max(run["done"]) - run["first"])
        results["boto3-loop"] = statistics.median(seconds)
        em.reset()
    with tempfile.TemporaryDirectory() as root:
        maps: list[tuple[str, Callable[[], FaasExecutor]]] = [
            ("local-map", lambda: FaasExecutor(workers=2, local_storage={"root": root}))
        ]
        maps += [
            (f"{p}-map", lambda p=p: FaasExecutor(**farm.executor_settings(p, root)))
            for p in PLATFORMS
            if p not in skip and f"{p}-map" not in skip
        ]
        for name, make in maps:
            if name in skip:
                continue
            try:
                with make() as ex:
                    list(ex.map(inc, range(50)))  # warm instances
                    seconds = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        assert list(ex.map(inc, range(args.calls))) == list(range(1, args.calls + 1))
                        seconds.append(time.perf_counter() - start)
                    results[name] = statistics.median(seconds)
            except Exception as exc:
                failures.append(f"{name}: {exc!r}")
    floor = results.get("boto3-loop", float("nan"))
    local = results.get("local-map", float("nan"))
    rows = [
        (name, f"{1e3 * s / args.calls:.3f}", format_ratio(ratio(s, floor)), format_ratio(ratio(s, local)))
        for name, s in results.items()
    ]
    print(f"\nclient overhead: {args.calls} trivial invocations, {conc} in flight (load mode, no delay)")
    print("  <platform>: the backend's invoke; boto3-loop: bare boto3 on a thread pool; *-map: end to end")
    print(format_table(["contender", "ms/call", "vs boto3-loop", "vs local-map"], rows))
    if "lambda" in results and "boto3-loop" in results:
        versus = format_ratio(ratio(results["lambda"], floor))
        print(f"target: lambda backend <= 1.5x the bare boto3 loop: {versus}")
    return {"calls": args.calls, "concurrency": conc, "seconds": results}


def load_group(farm: Farm, args: argparse.Namespace, skip: set[str], failures: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for calls in args.load:
        for platform in [p for p in PLATFORMS if p not in skip] + (
            ["boto3-loop"] if "boto3-loop" not in skip else []
        ):
            name = f"{platform} {calls}@{args.concurrency}"
            em = farm.start("lambda" if platform == "boto3-loop" else platform)
            em.reset()
            em.configure(load_delay_s=args.delay)
            try:
                if platform == "boto3-loop":
                    run = run_boto3_loop(em.url, calls, args.concurrency)
                else:
                    backend = farm.backend(platform, args.concurrency)
                    try:
                        run = run_backend(backend, calls)
                    finally:
                        backend.close()
                results[name] = summarize(run, em.log())
            except Exception as exc:
                failures.append(f"load {name}: {exc!r}")
            finally:
                em.reset()
    rows = [
        (
            name,
            f"{r['makespan_s']:.2f}",
            f"{r['all_received_s']:.2f}",
            f"{r['notice_median_ms']:.1f}",
            f"{r['notice_p99_ms']:.1f}",
        )
        for name, r in results.items()
    ]
    print(f"\nload mode: {args.delay:g} s per call, {args.concurrency} in flight")
    print(format_table(["run", "all ended (s)", "all received (s)", "noticed median (ms)", "p99 (ms)"], rows))
    print("targets: 1,000 calls end <= 2.5 s, all received <= 1.5 s; 10,000 end <= 12 s; noticed <= 50 ms")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--overhead-concurrency", type=int, default=64)
    parser.add_argument("--load", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 10000])
    parser.add_argument("--concurrency", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=1.0)
    parser.add_argument("--skip", default="", help="comma-separated keys: groups, platforms, contenders")
    add_json_and_timeout_arguments(parser, timeout=1800)
    args = parser.parse_args(argv)
    skip = {s for s in args.skip.split(",") if s}
    for name, value in LOOPBACK_AWS_ENV.items():
        os.environ[name] = value
    env = describe_environment(PACKAGES)
    print_environment(env)
    started, failures = time.perf_counter(), []
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        farm = Farm(workdir, instances=2)
        try:
            if "overhead" not in skip:
                report["overhead"] = overhead_group(farm, args, skip, failures)
            if "load" not in skip:
                report["load"] = load_group(farm, args, skip, failures)
        finally:
            farm.stop()
    return finish(
        args, env, started, failures, lambda leftovers: {"env": env, **report, "leftovers": leftovers}
    )


if __name__ == "__main__":
    sys.exit(main())
