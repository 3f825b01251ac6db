"""Faults and bad input: issue 10's matrix, one test per row (``test_row<N>_...``).

Every row runs on the local pool; rows marked P in the matrix also run on each platform's emulator
(``kind`` is ``"local"`` or a platform of :data:`~fixtures_platforms.PLATFORMS`; the platforms are
slow-marked). Besides its own checks, every row leaves nothing behind: the job prefix of every
executor it made is empty (``make_executor``), no multipart upload is open in the S3 bucket it used,
no child process is left (``conftest.no_leftover_processes``), and the row's wall time stays under
a bound that catches a hang (:func:`bounded`).

Faults come from outside the code under test: the platform emulators' knobs
(:mod:`dask_faas.testing.servers`), a fault-injecting proxy in front of the moto server
(:class:`~dask_faas.testing.s3.CountingProxy`), functions that kill themselves or sleep, and, for the
local pool, subclasses of the real pool that act as a platform may (losing or duplicating a
delivery).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import json
import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import dask
import pytest
from faults_kit import bounded, open_uploads, wait_until
from fixtures_platforms import EXECUTOR_KINDS, PLATFORMS, Platforms, executor_settings

from dask_faas import (
    FaasExecutor,
    FunctionTimeoutError,
    IntegrityError,
    RemoteTraceback,
    SerializationError,
    StorageError,
    WorkerDiedError,
)
from dask_faas.backends.compute import registry as compute_registry
from dask_faas.backends.compute.base import begin
from dask_faas.backends.compute.local import LocalBackend
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.testing.s3 import CountingProxy

pytestmark = pytest.mark.timeout(300)


# -- what every row checks ------------------------------------------------------------------------


@pytest.fixture(params=EXECUTOR_KINDS)
def kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """``"local"`` or a platform; a platform's emulator knobs are reset before and after."""
    emulator = (
        request.getfixturevalue("platforms").emulator(request.param) if request.param != "local" else None
    )
    if emulator is not None:
        emulator.reset()
    yield request.param
    if emulator is not None:
        emulator.reset()


@pytest.fixture
def on(
    request: pytest.FixtureRequest, make_executor: Callable[..., FaasExecutor], storage_root: Path
) -> Iterator[Callable[..., FaasExecutor]]:
    """``on(kind, **settings)``: an executor of that kind; afterwards no multipart upload is open
    in the S3 bucket the platforms use."""
    used: set[str] = set()

    def make(kind: str, **settings: Any) -> FaasExecutor:
        used.add(kind)
        return make_executor(**executor_settings(request, kind, str(storage_root), **settings))

    yield make
    if used - {"local"}:
        bucket, endpoint = request.getfixturevalue("s3_module_bucket"), request.getfixturevalue("s3_endpoint")
        assert not open_uploads(endpoint, bucket), "multipart uploads left open"


def emulator_log(platforms: Platforms, kind: str, outcome: str | None = None) -> list[dict[str, Any]]:
    """The emulator's deliveries (with ``outcome``, only those)."""
    return [r for r in platforms.emulator(kind).log() if outcome is None or r["outcome"] == outcome]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# -- the functions the rows run -------------------------------------------------------------------


def double(x: int) -> int:
    return 2 * x


def explode(x: int) -> int:
    if x == 3:
        raise ValueError(f"bad item {x}")
    return 2 * x


def inc(x: int) -> int:
    return x + 1


def kill_first_runs(markers: str, runs: int, x: int) -> int:
    """SIGKILL its own process on the first ``runs`` runs (counted by files in ``markers``)."""
    done = len(os.listdir(markers))
    Path(markers, f"run-{done}-{os.getpid()}").touch()
    if done < runs:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def sleep_recording_pid(markers: str, seconds: float) -> None:
    Path(markers, str(os.getpid())).touch()
    time.sleep(seconds)


def noise(size: int) -> bytes:
    """A different value at every run: two runs of one call must never be mixed."""
    return random.randbytes(size)


def first_byte(data: bytes) -> int:
    return data[0]


def echo(data: bytes) -> bytes:
    return data[::-1]


# -- functions deployed with limits of their own --------------------------------------------------


@pytest.fixture
def deploy(
    request: pytest.FixtureRequest, tmp_path: Path, make_executor: Callable[..., FaasExecutor]
) -> Iterator[Callable[..., FaasExecutor]]:
    """``deploy(kind, timeout_s=..., **settings)``: an executor on a function of its own, deployed on
    the platform's emulator with that timeout (a platform stops a call at its function's deployed
    timeout, not at a per-call one); deleted afterwards."""
    import requests
    from fixtures_platforms import FUNCTION_ENV, LAMBDA_ROLE, OPENWHISK_AUTH, lambda_variables

    from dask_faas.testing.servers import start_emulator

    farm: Platforms = request.getfixturevalue("platforms")
    undo: list[Callable[[], Any]] = []

    def make(kind: str, timeout_s: int, **more: Any) -> FaasExecutor:
        name = f"faults-{len(undo)}-{os.getpid()}"
        settings = executor_settings(request, kind, "", timeout_s=timeout_s, **more)
        environment = farm.environment
        if kind == "aws_lambda":
            client = boto3.session.Session().client(
                "lambda", endpoint_url=farm.emulator(kind).url, region_name="us-east-1"
            )
            client.create_function(
                FunctionName=name,
                PackageType="Image",
                Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda"},
                Role=LAMBDA_ROLE,
                MemorySize=1024,
                Timeout=timeout_s,
                Environment={"Variables": lambda_variables(environment)},
            )
            undo.append(lambda: (client.delete_function(FunctionName=name), client.close()))
            settings["aws_lambda"]["function-name"] = name
        elif kind == "openwhisk":
            url = f"{farm.emulator(kind).url}/api/v1/namespaces/_/actions/{name}"
            action = {
                "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:test"},
                "annotations": [{"key": "provide-api-key", "value": False}],
                "limits": {"timeout": timeout_s * 1000, "memory": 1024},
                "parameters": [{"key": k, "value": v, "init": True} for k, v in environment.items()],
            }
            session = requests.Session()
            session.trust_env, session.auth = False, tuple(OPENWHISK_AUTH.split(":"))
            session.put(url, json=action, timeout=30).raise_for_status()
            undo.append(lambda: (session.delete(url, timeout=30), session.close()))
            settings["openwhisk"]["action"] = name
        else:
            env_file = tmp_path / f"{name}.json"
            env_file.write_text(json.dumps({**environment, "DASK_FAAS_HTTP_TOKEN": farm.knative_token}))
            router = start_emulator(
                "dask_faas.testing.knative_router", "--env-file", str(env_file), "--timeout-s", str(timeout_s)
            )
            undo.append(router.stop)
            settings["knative"]["url"] = router.url
        assert FUNCTION_ENV.items() <= environment.items()
        return make_executor(**settings)

    yield make
    for step in reversed(undo):
        step()


# -- row 1: the user's exception ------------------------------------------------------------------


def test_row1_a_user_exception_comes_back_as_itself_and_fails_its_dependents(on):
    with bounded():
        ex = on("local")
        futures = [ex.submit(explode, i) for i in range(6)]
        with pytest.raises(ValueError, match=r"^bad item 3$") as info:
            futures[3].result(timeout=60)
        assert type(info.value) is ValueError
        remote = info.value.__cause__
        assert isinstance(remote, RemoteTraceback), "the remote traceback is not attached"
        assert "in explode" in str(remote) and 'raise ValueError(f"bad item {x}")' in str(remote), remote
        assert [f.result(timeout=60) for i, f in enumerate(futures) if i != 3] == [0, 2, 4, 8, 10]
        # on the Dask path: dependents fail with it, as under dask's own scheduler (the oracle)
        failing = dask.delayed(inc)(dask.delayed(explode)(3))
        fine = dask.delayed(explode)(1)
        for scheduler in ("sync", ex):
            with pytest.raises(ValueError, match=r"^bad item 3") as info:
                dask.compute(failing, fine, scheduler=scheduler)
            assert type(info.value) is ValueError and str(info.value) == "bad item 3"
        assert "explode" in " ".join(info.value.__notes__), "the note names the task that raised"
        assert dask.compute(fine, scheduler=ex) == (2,)


# -- row 3: a process killed while running a call -------------------------------------------------


@pytest.mark.parametrize("runs", [1, 5])
def test_row3_a_call_whose_process_is_killed_is_run_again_then_fails_naming_it(kind, on, tmp_path, runs):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = on(kind, retries=1)
        future = ex.submit(kill_first_runs, str(markers), runs, 7)
        if runs == 1:  # the first attempt is killed, the retry runs to its end
            assert future.result(timeout=120) == 49
            assert len(os.listdir(markers)) == 2
            return
        with pytest.raises(WorkerDiedError) as info:
            future.result(timeout=120)
        message = str(info.value)
        assert "kill_first_runs" in message and "attempt 1" in message, message
        assert "died" in message, message
        # the signal, where the platform reports it (OpenWhisk and Knative's queue proxy do not)
        signal_text = {"local": "signal SIGKILL", "aws_lambda": "signal: killed"}.get(kind, "")
        assert signal_text in message, message
        assert len(os.listdir(markers)) == 2, "retries=1 means two attempts"


# -- row 4: a call past its time limit ------------------------------------------------------------


def test_row4_a_call_past_its_time_limit_fails_naming_it_and_its_process_is_stopped(
    kind, on, deploy, tmp_path
):
    markers = tmp_path / "markers"
    markers.mkdir()
    limit = 3
    with bounded():
        # a platform stops a call at its function's deployed timeout
        ex = on(kind, timeout_s=limit) if kind == "local" else deploy(kind, timeout_s=limit)
        future = ex.submit(sleep_recording_pid, str(markers), 60)
        with pytest.raises(FunctionTimeoutError) as info:
            future.result(timeout=90)
        message = str(info.value)
        assert "sleep_recording_pid" in message and f"timeout_s={limit}" in message, message
        (pid,) = (int(p.name) for p in markers.iterdir())
        wait_until(lambda: not alive(pid), 10, f"the process {pid} running the call was not stopped")
        assert ex.submit(double, 4).result(timeout=60) == 8, "the next call must run"


# -- rows 6 and 7: a delivery lost, a delivery doubled --------------------------------------------


class LosingPool(LocalBackend):
    """The local pool as a platform that accepts the first invocation and never runs it (and,
    like a remote platform, cannot confirm that a call started)."""

    name = "faults-losing-local"
    confirms_start = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lost: list[cf.Future[bytes]] = []

    def invoke(self, payload: bytes, options: Any) -> cf.Future[bytes]:
        if self.lost:
            return super().invoke(payload, options)
        future: cf.Future[bytes] = cf.Future()
        begin(future, options)  # accepted: from here on the platform owes an answer
        self.lost.append(future)
        return future

    def close(self) -> None:
        super().close()
        for future in self.lost:  # every future of a closed backend is done
            if not future.done():
                future.set_exception(RuntimeError("lost by the platform"))


class DoublingPool(LocalBackend):
    """The local pool as a platform that delivers every invocation to two function processes at
    once and answers with the first response (an at-least-once platform's duplicate)."""

    name = "faults-doubling-local"

    def invoke(self, payload: bytes, options: Any) -> cf.Future[bytes]:
        first = super().invoke(payload, options)
        super().invoke(payload, replace_hook(options))
        return first


def replace_hook(options: Any) -> Any:
    """The same call options without the client's start hook (the client knows one delivery)."""
    import dataclasses

    return dataclasses.replace(options, on_start=None, on_backoff=None)


@pytest.fixture
def local_platforms() -> Iterator[None]:
    compute_registry.register(LosingPool.name, LosingPool)
    compute_registry.register(DoublingPool.name, DoublingPool)
    yield


def test_row6_an_invocation_accepted_and_never_run_is_sent_again_at_its_start_deadline(
    kind, on, platforms, local_platforms
):
    with bounded():
        if kind == "local":
            ex = on(kind, backend=LosingPool.name, start_deadline_s=2)
        else:
            ex = on(kind, start_deadline_s=2)
            platforms.emulator(kind).configure(lose=1)
        assert ex.submit(double, 21).result(timeout=60) == 42
        assert list(ex.map(double, range(8))) == [2 * x for x in range(8)]
        assert ex.stats["redeliveries"] == 1, ex.stats
        assert ex.stats["invocations"] == 1 + 1 + 8, ex.stats
        if kind != "local":
            assert len(emulator_log(platforms, kind, "ok")) == 9, "each call ran exactly once"


def test_row7_a_call_delivered_twice_at_once_commits_one_output(kind, on, platforms, local_platforms):
    with bounded():
        settings = {"inline_limit": 1024, "task_inline_limit": 16}  # every value through storage
        if kind == "local":
            ex = on(kind, backend=DoublingPool.name, workers=4, **settings)
        else:
            ex = on(kind, **settings)
            platforms.emulator(kind).configure(duplicate=1000)
        values = [ex.submit(noise, 4096) for _ in range(4)]
        assert all(len(v.result(timeout=60)) == 4096 for v in values)
        # a graph whose every task ran twice, with different values: each key has one value, and
        # every dependent saw that one (dask's sync scheduler on the committed values is the oracle)
        base = [dask.delayed(noise)(2048, dask_key_name=f"noise-{i}") for i in range(6)]
        heads = [dask.delayed(first_byte)(b, dask_key_name=f"head-{i}") for i, b in enumerate(base)]
        computed_base, computed_heads = dask.compute(base, heads, scheduler=ex)
        assert list(computed_heads) == [b[0] for b in computed_base]
        if kind != "local":
            assert len(emulator_log(platforms, kind)) >= 2 * (4 + 1), "the calls were not doubled"


# -- rows 8 and 9: throttling, payloads above the platform's limit --------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_row8_throttling_with_retry_after_is_backed_off_and_every_call_runs_once(platform, on, platforms):
    emulator = platforms.emulator(platform)
    emulator.reset()
    with bounded():
        ex = on(platform)
        emulator.configure(throttle=2, retry_after_s=1.5)
        sent = time.time()
        assert ex.submit(double, 5).result(timeout=60) == 10
        (ran,) = emulator_log(platforms, platform, "ok")
        # two throttled answers, each asking for 1.5 s: the call reached a function no sooner
        assert ran["received"] - sent >= 2 * 1.5 * 0.9, f"Retry-After was not honoured: {ran}"
        emulator.configure(throttle=8, retry_after_s=0.05)
        assert list(ex.map(double, range(12))) == [2 * x for x in range(12)]
        assert len(emulator_log(platforms, platform, "ok")) == 1 + 12, "each call ran exactly once"
        assert ex.stats["retries"] == 0 and ex.stats["redeliveries"] == 0, ex.stats
    emulator.reset()


def test_row9_arguments_and_results_above_the_payload_limit_go_through_storage(kind, on):
    with bounded():
        ex = on(kind, inline_limit=1 << 30)  # asked for everything inline: the platform's limit wins
        limit = type(ex.backend).max_payload_bytes
        assert ex.session.inline_limit <= type(ex.backend).inline_capacity() < limit
        data = random.randbytes(min(limit, 64 << 20) + (1 << 20))
        assert ex.submit(echo, data).result(timeout=120) == data[::-1]
        assert ex.stats["bytes_received"] >= len(data)


# -- row 10: storage answering 503 SlowDown ------------------------------------------------------


def checksum(data: bytes) -> int:
    return sum(data) % 65_521


@pytest.fixture
def flaky_s3(s3_endpoint: str, s3_bucket: str) -> Iterator[tuple[CountingProxy, dict[str, Any]]]:
    """A proxy of the S3 test server that can answer 503 SlowDown, and the storage settings through it."""
    with CountingProxy(s3_endpoint, seed=10) as proxy:
        settings = {
            "storage": "s3",
            "s3": {
                "bucket": s3_bucket,
                "endpoint_url": proxy.url,
                "region_name": "us-east-1",
                "key": "testing",
                "secret": "testing",
            },
            "inline_limit": 1024,  # every argument and result goes through storage
        }
        yield proxy, settings


@pytest.mark.slow
def test_row10_with_30_percent_of_requests_answered_503_the_results_are_equal(
    flaky_s3: tuple[CountingProxy, dict[str, Any]], make_executor: Callable[..., FaasExecutor]
) -> None:
    proxy, settings = flaky_s3
    proxy.fail_ratio = 0.3
    blobs = [bytes([i]) * 4096 for i in range(16)]
    for _ in range(3):  # the storage check (HeadBucket) of each executor is retried too
        ex = make_executor(**settings)
        assert list(ex.map(checksum, blobs)) == [checksum(b) for b in blobs]
        ex.shutdown()
    assert proxy.refused > 0, "no request was refused: the test tested nothing"


@pytest.mark.slow
def test_row10_when_storage_keeps_answering_503_the_error_names_bucket_and_key(
    flaky_s3: tuple[CountingProxy, dict[str, Any]], make_executor: Callable[..., FaasExecutor]
) -> None:
    proxy, settings = flaky_s3
    ex = make_executor(**settings)
    proxy.fail_ratio = 1.0
    with pytest.raises(StorageError) as info:
        ex.submit(checksum, b"x" * 8192)  # the argument goes to storage at submit
    message = str(info.value)
    bucket = settings["s3"]["bucket"]
    assert f"s3://{bucket}/{ex.job_prefix}/" in message, message
    assert "SlowDown" in message and "HTTP 503" in message and "attempts" in message, message
    assert isinstance(info.value, OSError)
    proxy.fail_ratio = 0.0  # the job's prefix can be emptied at teardown


# -- row 14: Ctrl-C in the middle of a job --------------------------------------------------------

INTERRUPTED = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    import dask
    from dask_faas import FaasExecutor

    def busy(markers, index):
        Path(markers, f"{index}-{os.getpid()}").write_text("running")
        time.sleep(30)
        return index

    root, markers = sys.argv[1], sys.argv[2]
    with FaasExecutor(workers=2, local_storage={"root": root}, inline_limit=1024) as ex:
        print(ex.job_prefix, flush=True)
        parts = [dask.delayed(busy)(markers, i) for i in range(2)]
        dask.compute(dask.delayed(sum)(parts), b"x" * 4096, scheduler=ex)
""")


def test_row14_ctrl_c_mid_job_empties_the_prefix_and_stops_the_processes_within_a_second(tmp_path, on):
    root, markers = tmp_path / "driver-storage", tmp_path / "markers"
    root.mkdir()
    markers.mkdir()
    script = tmp_path / "driver.py"
    script.write_text(INTERRUPTED)
    with bounded(), open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(markers)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,  # a shell job: its own process group, as a terminal's Ctrl-C hits
        )
        try:
            assert proc.stdout is not None
            prefix = proc.stdout.readline().strip()
            wait_until(lambda: len(list(markers.iterdir())) == 2, 60, "the two calls did not start")
            pool = [int(m.name.split("-")[1]) for m in markers.iterdir()]
            assert list(root.rglob("*")), "the job stored nothing"
            os.killpg(proc.pid, signal.SIGINT)
            signalled = time.monotonic()
            proc.wait(timeout=30)
            wait_until(lambda: not any(map(alive, pool)), 10, "function processes left running")
            gone = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
    left = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
    assert prefix and not left, f"objects left in the storage after Ctrl-C: {left}"
    assert proc.returncode != 0
    assert gone <= 1.0, f"the driver and its function processes took {gone:.2f} s to go"
    # a rerun in the same storage is unaffected
    ex = on("local", local_storage={"root": str(root)})
    assert dask.compute(dask.delayed(sum)([dask.delayed(double)(i) for i in range(4)]), scheduler=ex) == (12,)


# -- row 15: CSV edge inputs ----------------------------------------------------------------------


@pytest.mark.slow
def test_row15_csv_edge_inputs_read_as_pandas_reads_the_whole_object(make_executor, storage_root, tmp_path):
    import io

    import dask.dataframe as dd
    import pandas as pd
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    import dask_faas

    data_dir = tmp_path / "data"
    data_dir.mkdir()
    ex = make_executor()
    cell = st.text(alphabet="abcxyzé0123456789 -.", max_size=12)
    rows = st.lists(st.tuples(st.integers(-(10**6), 10**6), cell), min_size=1, max_size=60)

    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(
        rows=rows,
        long_first=st.integers(0, 400_000),
        blocksize=st.sampled_from([7, 64, 1000, 1 << 20]),
        end=st.sampled_from(["\n", "\r\n", ""]),
    )
    def check(rows: list[tuple[int, str]], long_first: int, blocksize: int, end: str) -> None:
        lines = ["n,text", *(f"{n},{'w' * long_first if i == 0 else t}" for i, (n, t) in enumerate(rows))]
        body = ("\n" if end != "\r\n" else "\r\n").join(lines) + end
        path = data_dir / "part.csv"
        path.write_bytes(body.encode())
        df = dask_faas.read_csv(str(path), blocksize=blocksize, dtype={"text": object})
        got = df.compute(scheduler=ex).reset_index(drop=True)
        # two oracles: dask's own read_csv of the whole object (same dtypes: dask turns object
        # columns into strings), and pandas' values with its missing values as dask's
        whole = dd.read_csv(str(path), blocksize=None, dtype={"text": object})
        pd.testing.assert_frame_equal(got, whole.compute(scheduler="sync"))
        expected = pd.read_csv(io.BytesIO(body.encode()), dtype={"text": object})
        same_missing = got.astype(object).where(got.notna(), None)
        assert (
            same_missing.values.tolist()
            == expected.astype(object).where(expected.notna(), None).values.tolist()
        )

    with bounded(600):
        check()


# -- row 16: a mapper that dies during its shuffle write, or right after it -----------------------


class DyingMapperStorage:
    """Mixin of a storage whose functions SIGKILL themselves in the first write of a mapper's
    exchange object: halfway through it (``when="during"``: half the object written under a
    temporary name, as an interrupted upload leaves) or right after it (``"after"``). The marker
    file ``<state>/die-once`` is removed by the dying write, so the retry lives; every exchange
    object put and read is logged to ``<state>/log``."""

    state: Path
    when: str

    def log(self, op: str, key: str) -> None:
        with open(self.state / "log", "a") as f:
            f.write(f"{op} {key}\n")

    def mapper_write(self, key: str, data: bytes | memoryview, put: Callable[..., None]) -> None:
        if "/x/" not in key or "-m" not in key.rsplit("/", 1)[1]:
            put(key, data)
            return
        try:
            os.remove(self.state / "die-once")
        except FileNotFoundError:
            self.log("put", key)
            put(key, data)
            return
        if self.when == "during":
            put(f"{key}.partial", bytes(data)[: len(data) // 2])
        else:
            put(key, data)
        self.log("died", key)
        os.kill(os.getpid(), signal.SIGKILL)


class DyingLocalStorage(DyingMapperStorage, LocalStorage):
    def __init__(self, root: str, state: str, when: str) -> None:
        super().__init__(root)
        self.state, self.when = Path(state), when

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.mapper_write(key, data, super().put)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        if "/x/" in key:
            self.log("get", key)
        return super().get(key, start, end)

    def locator(self) -> dict[str, Any]:
        return {
            "backend": f"{__name__}:{type(self).__qualname__}",
            "root": self.root,
            "state": str(self.state),
            "when": self.when,
        }


@pytest.mark.parametrize("when", ["during", "after"])
def test_row16_a_mapper_killed_in_or_after_its_shuffle_write_is_rerun_and_only_committed_data_is_read(
    make_executor, storage_root, tmp_path, when
):
    import dask.dataframe as dd
    import pandas as pd

    state = tmp_path / "state"
    state.mkdir()
    (state / "die-once").touch()
    pdf = pd.DataFrame({"k": [i % 7 for i in range(400)], "v": range(400)})
    frame = dd.from_pandas(pdf, npartitions=4)
    shuffled = frame.shuffle("k", npartitions=3, shuffle_method="tasks")
    total = shuffled.groupby("k").v.sum()
    expected = total.compute(scheduler="sync")
    with bounded():
        ex = make_executor(storage=DyingLocalStorage(str(storage_root), str(state), when), retries=1)
        got = total.compute(scheduler=ex)
        pd.testing.assert_series_equal(got.sort_index(), expected.sort_index())
        log = (state / "log").read_text().split("\n")
        died = [line.split()[1] for line in log if line.startswith("died ")]
        read = {line.split()[1] for line in log if line.startswith("get ")}
        assert len(died) == 1 and not (state / "die-once").exists(), "no mapper was killed"
        assert died[0] not in read and f"{died[0]}.partial" not in read, "the killed attempt's data was read"
        assert ex.stats["retries"] >= 1, ex.stats
        ex.shutdown()
    left = [str(p.relative_to(storage_root)) for p in storage_root.rglob("*") if p.is_file()]
    assert not left, f"orphans left in the storage: {left}"


# -- row 17: malicious pickles -------------------------------------------------------------------


class Planted:
    """Unpickling it creates the sentinel file: what a malicious pickle would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (Path(self.path),))


class SwappingStorage(LocalStorage):
    """A local storage where every object stored under ``/<part>/`` is swapped for a malicious
    pickle (what an attacker with write access to the bucket would plant), in every process."""

    def __init__(self, root: str, part: str, sentinel: str) -> None:
        super().__init__(root)
        self.part, self.sentinel = part, sentinel

    def put(self, key: str, data: bytes | memoryview) -> None:
        if f"/{self.part}/" in key:
            data = pickle.dumps(Planted(self.sentinel))
        super().put(key, data)

    def locator(self) -> dict[str, Any]:
        return {
            "backend": f"{__name__}:{type(self).__qualname__}",
            "root": self.root,
            "part": self.part,
            "sentinel": self.sentinel,
        }


def big(n: int) -> bytes:
    return b"r" * n


@pytest.mark.parametrize("part", ["fn", "in", "out"], ids=["function", "argument", "result"])
def test_row17_a_stored_object_swapped_for_a_malicious_pickle_is_rejected_unread(
    make_executor, storage_root, tmp_path, part
):
    sentinel = tmp_path / "pwned"
    with bounded():
        ex = make_executor(storage=SwappingStorage(str(storage_root), part, str(sentinel)), inline_limit=1024)
        future = ex.submit(len, b"a" * 10_000) if part == "in" else ex.submit(big, 10_000)
        with pytest.raises(IntegrityError, match=r"failed its signature") as info:
            future.result(timeout=60)
        assert f"/{part}/" in str(info.value), info.value
    assert not sentinel.exists(), "the malicious pickle was unpickled"


# -- row 20: a runtime endpoint called without credentials or with an unsigned payload -----------


def plant(path: str) -> None:
    Path(path).touch()


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_row20_a_runtime_called_unauthenticated_or_unsigned_runs_nothing(platform, platforms, tmp_path):
    import base64

    import requests
    from payloads import Payloads

    from dask_faas import protocol

    sentinel = tmp_path / "ran"
    payloads = Payloads(tmp_path / "job")
    payloads.environment = platforms.environment  # unused: the farm's functions hold their own key
    _, unsigned = payloads.payload(plant, str(sentinel), key=protocol.new_key())  # not the function's key
    event = {protocol.JSON_FIELD: base64.b64encode(unsigned).decode()}
    session = requests.Session()
    session.trust_env = False
    settings = platforms.settings(platform)
    with bounded():
        if platform == "knative":
            url = settings["knative"]["url"]
            for headers, status in [({}, 401), ({"Authorization": "Bearer wrong"}, 401)]:
                answer = session.post(url, data=unsigned, headers=headers, timeout=30)
                assert answer.status_code == status, (headers, answer.status_code, answer.text)
            token = {"Authorization": f"Bearer {platforms.knative_token}"}
            answer = session.post(url, data=unsigned, headers=token, timeout=30)
            assert answer.status_code == 403, (answer.status_code, answer.text)
        elif platform == "openwhisk":
            host = settings["openwhisk"]["api-host"]
            url = f"{host}/api/v1/namespaces/_/actions/dask-faas?blocking=true&result=true"
            answer = session.post(url, json=event, timeout=30)
            assert answer.status_code == 401, (answer.status_code, answer.text)
            answer = session.post(
                url, json=event, auth=("23bc46b1-71f6-4ed5-8c54-816aa4f8c502", "wrong"), timeout=30
            )
            assert answer.status_code == 401, (answer.status_code, answer.text)
            from fixtures_platforms import OPENWHISK_AUTH

            answer = session.post(url, json=event, auth=tuple(OPENWHISK_AUTH.split(":")), timeout=30)
            assert answer.status_code >= 400 and "signature" in answer.text, (answer.status_code, answer.text)
        else:
            client = boto3.session.Session().client(
                "lambda", endpoint_url=settings["aws_lambda"]["endpoint-url"], region_name="us-east-1"
            )
            answer = client.invoke(FunctionName="dask-faas", Payload=json.dumps(event).encode())
            body = answer["Payload"].read().decode()
            assert answer.get("FunctionError") and "signature" in body, body
            client.close()
    session.close()
    payloads.close()
    assert not sentinel.exists(), "a payload the function could not verify ran"


# -- row 22: an argument that cannot be pickled ---------------------------------------------------


def add(x: int, y: int = 0) -> int:
    return x + y


def test_row22_an_unpicklable_argument_fails_at_submit_naming_it(on):
    with bounded():
        ex = on("local")
        with pytest.raises(SerializationError, match=r"keyword argument 'y' of add\(\).*lock") as info:
            ex.submit(add, 1, y=threading.Lock())
        assert isinstance(info.value, TypeError)
        task = dask.delayed(add)(threading.Lock(), dask_key_name="add-a-lock")
        with pytest.raises(SerializationError, match=r"add-a-lock"):
            dask.compute(task, scheduler=ex)
        assert ex.stats["invocations"] == 0, "nothing may be invoked for an argument that cannot travel"
        with pytest.raises(SerializationError, match=r"argument 0 of item 3 of map\(add\).*lock"):
            list(ex.map(add, [0, 1, 2, threading.Lock(), 4]))


# -- load: a 10,000-task graph under storage faults and killed processes ---------------------------


def square(x: int) -> int:
    return x * x


def total(values: list[int]) -> int:
    return sum(values)


def soak_graph() -> tuple[Any, Any]:
    """A dataframe groupby with a shuffle (split_out) and a delayed fan-out: over 10,000 tasks."""
    import dask.dataframe as dd
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(10)
    pdf = pd.DataFrame({"k": rng.integers(0, 2_000, 400_000), "v": rng.integers(0, 1_000, 400_000)})
    grouped = dd.from_pandas(pdf, npartitions=200).groupby("k").v.sum(split_out=40)
    fan = [dask.delayed(square)(i) for i in range(9_000)]
    partial = [dask.delayed(total)(fan[i : i + 100]) for i in range(0, len(fan), 100)]
    return grouped, dask.delayed(total)(partial)


class Killer(threading.Thread):
    """SIGKILLs a random function process of the local pool while calls run, keeping the kills at
    about ``share`` of the invocations made so far."""

    def __init__(self, ex: FaasExecutor, share: float, seed: int = 10) -> None:
        super().__init__(daemon=True, name="soak-killer")
        self.ex, self.share, self.kills = ex, share, 0
        self.chance = random.Random(seed)
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.chance.uniform(0.005, 0.05)):
            if self.kills < self.share * self.ex.stats["invocations"]:
                pids = self.ex.backend.pids
                if pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.chance.choice(pids), signal.SIGKILL)
                        self.kills += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(10)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_10000_tasks_with_30_percent_storage_503s_and_5_percent_processes_killed(
    flaky_s3: tuple[CountingProxy, dict[str, Any]],
    make_executor: Callable[..., FaasExecutor],
    s3_endpoint: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    grouped, fanned = soak_graph()
    with dask.config.set({"dataframe.shuffle.method": "tasks"}), pytest.warns(UserWarning, match="mixed"):
        graph = dask.base.collections_to_expr([grouped, fanned]).optimize().__dask_graph__()
    assert len(graph) >= 10_000, f"the graph has {len(graph)} tasks"
    with dask.config.set({"dataframe.shuffle.method": "tasks"}), pytest.warns(UserWarning, match="mixed"):
        want_grouped, want_total = dask.compute(grouped, fanned, scheduler="sync")
    proxy, settings = flaky_s3
    # 503 ServiceUnavailable, a transient error botocore backs off from 50 ms; 503 SlowDown (row 10)
    # is a throttling error backed off from 1 s, which at 30% of ~3,000 requests made this run 11 min
    proxy.fail_ratio, proxy.fail_code = 0.3, "ServiceUnavailable"
    ex = make_executor(**{**settings, "inline_limit": 64 * 1024}, retries=3)
    killer = Killer(ex, share=0.05)
    started = time.monotonic()
    killer.start()
    try:
        with pytest.warns(UserWarning, match="mixed"):
            got_grouped, got_total = dask.compute(grouped, fanned, scheduler=ex)
    finally:
        killer.stop()
    took = time.monotonic() - started
    assert got_total == want_total
    assert got_grouped.sort_index().equals(want_grouped.sort_index())
    stats = dict(ex.stats)
    proxy.fail_ratio = 0.0  # the prefix is emptied (and checked) at teardown
    ex.shutdown()
    assert killer.kills > 0 and proxy.refused > 0, "no fault was injected: the test tested nothing"
    assert stats["retries"] >= 1, stats
    assert not open_uploads(s3_endpoint, settings["s3"]["bucket"]), "a multipart upload is open"
    with capsys.disabled():
        print(
            f"\nsoak: {len(graph)} tasks in {took:.1f} s: {stats['invocations']} invocations, "
            f"{stats['retries']} retries, {stats.get('redeliveries', 0)} redeliveries, "
            f"{killer.kills} processes killed, {len(proxy.requests) + proxy.refused} storage requests "
            f"of which {proxy.refused} answered 503"
        )
