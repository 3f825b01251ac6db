"""Faults and bad input: issue 10's matrix, every row a ``test_row<N>_...`` test (or several).

Every row runs on the local pool; rows marked P in the matrix (3 to 9, 19 to 21, and row 5) also run
on each platform's emulator (``kind`` is ``"local"`` or a platform of
:data:`~fixtures_platforms.PLATFORMS`; the platforms are slow-marked). Besides its own checks, every
row leaves nothing behind: the job prefix of every executor it made is empty (``make_executor``), no
multipart upload is open in the S3 bucket it used (:func:`~faults_kit.open_uploads`), no child
process is left (``conftest.no_leftover_processes``), and the row's wall time stays under a bound
that catches a hang (:func:`~faults_kit.bounded`).

Faults come from outside the code under test: the platform emulators' knobs
(:mod:`dask_faas.testing.servers`), a fault-injecting proxy in front of the moto server
(:class:`~dask_faas.testing.s3.CountingProxy`: 503s, resets, stalls past the read timeout, truncated
bodies, stale reads), functions that kill themselves, sleep or allocate, a moto server of rows 18 and
19's own that enforces IAM, and, for the local pool, subclasses of the real pool that act as a
platform may (losing or duplicating a delivery). Runs are counted from outside too: every run of a
function that must fail or straggle leaves a file in a directory of the test's own.

The sections follow the matrix: the shared checks and functions, then rows 1 to 22 in order (the
storage rows 10 to 13 share one proxy fixture; rows 18 and 19 one IAM-enforcing server), then the
soak test (slow) of the load section.

Where the memory limit of row 5 comes from, per backend: local, the per-call ``memory_mb``, enforced
by the function process on itself (``RLIMIT_DATA``; the process stays warm); knative, the container's
memory given to the runtime as ``DASK_FAAS_MEMORY_MB`` and enforced the same way; aws_lambda, the
function's ``MemorySize`` (the platform stops the call, ``Runtime.OutOfMemory``); openwhisk, the
action's ``limits.memory`` (the platform aborts the activation).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import io
import json
import logging
import os
import pickle
import random
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import boto3
import botocore.exceptions as bce
import dask
import pandas as pd
import pytest
from faults_kit import bounded, open_uploads, wait_until
from fixtures_platforms import (
    EXECUTOR_KINDS,
    FUNCTION_MEMORY_MB,
    OPENWHISK_AUTH,
    PLATFORMS,
    Platforms,
    executor_settings,
)
from fixtures_s3 import enforce_auth

import dask_faas
from dask_faas import (
    ConfigError,
    FaasExecutor,
    FunctionMemoryError,
    FunctionTimeoutError,
    IntegrityError,
    RemoteTraceback,
    SerializationError,
    StorageError,
    WorkerDiedError,
    cli,
)
from dask_faas.backends.compute import registry as compute_registry
from dask_faas.backends.compute.base import begin
from dask_faas.backends.compute.local import LocalBackend
from dask_faas.backends.storage import storage_from_settings
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.backends.storage.s3 import READ_ATTEMPTS, S3Storage
from dask_faas.deploy.policy import scoped_policy
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV, CountingProxy, start_moto_server, stop_process
from dask_faas.testing.servers import Emulator, start_emulator

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


# -- rows 2 and 21: functions that fail or straggle, counted by marker files -----------------------


def runs(markers: Path, prefix: str = "run-") -> list[str]:
    return sorted(p.name for p in markers.iterdir() if p.name.startswith(prefix))


class Flaky(Exception):
    """The user's own exception."""


def fail_first_runs(markers: str, failures: int, how: str, x: int) -> int:
    """Fail the first ``failures`` runs (counted by files in ``markers``): raise ``how`` (an
    exception's name) or, for ``"kill"``, SIGKILL the function's own process."""
    done = len([n for n in os.listdir(markers) if n.startswith("run-")])
    Path(markers, f"run-{done}-{os.getpid()}").touch()
    if done < failures:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise {"Flaky": Flaky, "ValueError": ValueError, "KeyError": KeyError}[how](f"run {done} of {x}")
    return x * x


def big_marked(markers: str, n: int) -> bytes:
    Path(markers, f"run-{time.time_ns()}-{os.getpid()}").touch()
    return b"r" * n


def straggle(
    markers: str, item_s: float, straggler_s: float, slow: tuple[int, ...], backup: str, x: int
) -> bytes:
    """Take ``item_s``; the first run of an item in ``slow`` takes ``straggler_s`` instead (it
    creates the marker that tells later runs they are not first). ``backup`` is what a later run
    of a slow item does: ``"run"`` at the usual speed, ``"raise"``, or ``"sleep"`` (``straggler_s``
    too). With ``backup="original-raises"`` the first run raises after its sleep instead of
    returning. Returns 4 KiB, so that every run writes its result to storage."""
    Path(markers, f"run-{x}-{os.getpid()}-{time.time_ns()}").touch()
    first = False
    if x in slow:
        try:
            os.close(os.open(os.path.join(markers, f"straggler-{x}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            first = True
        except FileExistsError:
            pass
    if first:
        time.sleep(straggler_s)
        Path(markers, f"finished-{x}").touch()
        if backup == "original-raises":
            raise Flaky(f"the original run of {x} failed")
    elif x in slow and backup == "raise":
        raise Flaky(f"the backup of {x} failed")
    elif x in slow and backup in ("sleep", "original-raises"):
        time.sleep(straggler_s)
    else:
        time.sleep(item_s)
    return bytes([x]) * 4096


def straggle_storing(markers: str, x: int) -> Any:
    """As the graph engine's tasks do: write an object named with the run's tag and return its
    reference. The first run of item 0 takes 10 s, every other run 0.3 s."""
    from dask_faas import worker

    first = False
    if x == 0:
        try:
            os.close(os.open(os.path.join(markers, "straggler-0"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            first = True
        except FileExistsError:
            pass
    time.sleep(10.0 if first else 0.3)
    context = worker.current()
    ref = context.store.put(f"side/{x}.{context.tag}", bytes([x]) * 100)
    if first:
        Path(markers, "finished-0").touch()
    return ref


# -- row 2: the first two attempts fail, retries=2 -------------------------------------------------


@pytest.mark.parametrize("how", ["Flaky", "kill"], ids=["user-exception", "killed-process"])
def test_row2_two_failed_attempts_and_retries_2_give_the_result_in_exactly_three_invocations(
    make_executor, tmp_path, how
):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=2, retry_backoff_s=0.01)
        assert ex.submit(fail_first_runs, str(markers), 2, how, 7).result(timeout=60) == 49
        assert len(runs(markers)) == 3, runs(markers)
        assert ex.stats["invocations"] == 3 and ex.stats["retries"] == 2, ex.stats


def test_row2_with_one_retry_two_failures_fail_the_call_after_two_invocations(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=1, retry_backoff_s=0.01)
        with pytest.raises(Flaky, match=r"^run 1 of 7$"):
            ex.submit(fail_first_runs, str(markers), 2, "Flaky", 7).result(timeout=60)
        assert len(runs(markers)) == 2 and ex.stats["invocations"] == 2, ex.stats


# -- the retry policy -----------------------------------------------------------------------------


def test_a_user_exception_outside_retry_on_is_not_retried(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=3, retry_backoff_s=0.01, retry_on=(KeyError, Flaky))
        with pytest.raises(ValueError, match=r"^run 0 of 1$"):
            ex.submit(fail_first_runs, str(markers), 1, "ValueError", 1).result(timeout=60)
        assert len(runs(markers)) == 1, "a ValueError is not in retry_on: one invocation"
        assert ex.stats["invocations"] == 1 and ex.stats["retries"] == 0, ex.stats
        # one in retry_on is (a subclass too: KeyError is a LookupError)
        for name in ("KeyError", "Flaky"):
            for marker in markers.iterdir():
                marker.unlink()
            assert ex.submit(fail_first_runs, str(markers), 1, name, 3).result(timeout=60) == 9
            assert len(runs(markers)) == 2


def test_retry_on_by_name_and_lookup_error_covers_key_error(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=1, retry_backoff_s=0.01, retry_on=["LookupError"])
        assert ex.submit(fail_first_runs, str(markers), 1, "KeyError", 4).result(timeout=60) == 16
        assert ex.stats["retries"] == 1


def test_a_platform_failure_is_retried_whatever_retry_on_says(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=1, retry_backoff_s=0.01, retry_on=(KeyError,))
        assert ex.submit(fail_first_runs, str(markers), 1, "kill", 5).result(timeout=60) == 25
        assert len(runs(markers)) == 2 and ex.stats["retries"] == 1, ex.stats
        # and past the retries, the platform's failure names the call and its attempt
        for marker in markers.iterdir():
            marker.unlink()
        with pytest.raises(WorkerDiedError, match=r"attempt 1\).*fail_first_runs"):
            ex.submit(fail_first_runs, str(markers), 5, "kill", 5).result(timeout=60)


def test_retry_on_per_call_through_the_session(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor()  # retries=0 by default: the call's options decide
        session = ex.session
        function = session.function(fail_first_runs)
        options = replace(session.options, retries=2, retry_backoff_s=0.01, retry_on=(Flaky,))
        call = [((str(markers), 2, "Flaky", 6), {})]
        assert session.submit(function, call, unwrap=True, options=options).result(timeout=60) == 36
        assert len(runs(markers)) == 3
        for marker in markers.iterdir():
            marker.unlink()
        narrow = replace(options, retry_on=(KeyError,))
        with pytest.raises(Flaky):
            session.submit(function, call, unwrap=True, options=narrow).result(timeout=60)
        assert len(runs(markers)) == 1
        with pytest.raises(ConfigError, match="retry_on must be a tuple of exception types"):
            session.submit(function, call, options=replace(options, retry_on=(ValueError, "KeyError")))


class TamperingStorage(LocalStorage):
    """A local storage whose reads of results are altered in transit (one flipped byte)."""

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        data = super().get(key, start, end)
        if "/out/" in key:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data


def test_an_integrity_error_is_never_retried(make_executor, storage_root, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(storage=TamperingStorage(storage_root), inline_limit=1000, retries=3)
        assert ex.submit(big_marked, str(markers), 10).result(timeout=60) == b"r" * 10  # inline: untouched
        with pytest.raises(IntegrityError, match=r"stored object '.*/out/1\.0\.[0-9a-f]+-[0-9a-f]+' failed"):
            ex.submit(big_marked, str(markers), 10_000).result(timeout=60)
        assert len(runs(markers)) == 2, "the tampered result was retried"
        assert ex.stats["invocations"] == 2 and ex.stats["retries"] == 0, ex.stats


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


# -- row 5: functions that allocate past the memory limit ------------------------------------------

#: How long a function holds memory it got: an answer well before this was not waiting for it.
HOLD_S = 120
#: The per-call limit the local pool is given (the platforms have their deployed memory).
LOCAL_LIMIT_MB = 256


def allocate_at_once(megabytes: int) -> int:
    """One big allocation (every page written: a bytearray is zero-filled), then hold it."""
    block = bytearray(megabytes * 2**20)
    time.sleep(HOLD_S)
    return len(block)


def allocate_in_steps(megabytes: int, step_mb: int) -> int:
    """``megabytes`` in allocations of ``step_mb`` (every page written), then hold them."""
    blocks = [bytearray(step_mb * 2**20) for _ in range(megabytes // step_mb)]
    time.sleep(HOLD_S)
    return len(blocks)


def getpid() -> int:
    return os.getpid()


# -- row 5: an executor with a memory limit --------------------------------------------------------


@pytest.fixture
def limited(
    request: pytest.FixtureRequest, make_executor: Callable[..., FaasExecutor], storage_root: Path
) -> Iterator[Callable[[str], tuple[FaasExecutor, int]]]:
    """``limited(kind)``: an executor of that kind without retries, and its memory limit in MiB;
    afterwards no multipart upload is open in the S3 bucket the platforms use."""
    used: set[str] = set()

    def make(kind: str) -> tuple[FaasExecutor, int]:
        used.add(kind)
        limit = LOCAL_LIMIT_MB if kind == "local" else FUNCTION_MEMORY_MB
        workers = {"workers": 1} if kind == "local" else {}  # one process: the next call is on it
        settings = executor_settings(request, kind, str(storage_root), memory_mb=limit, retries=0, **workers)
        return make_executor(**settings), limit

    yield make
    if used - {"local"}:
        bucket, endpoint = request.getfixturevalue("s3_module_bucket"), request.getfixturevalue("s3_endpoint")
        assert not open_uploads(endpoint, bucket), "multipart uploads left open"


def allocation(how: str, limit_mb: int) -> tuple[Callable[..., int], tuple[int, ...]]:
    """The function and arguments that allocate twice ``limit_mb``, at once or in small steps."""
    if how == "at-once":
        return allocate_at_once, (2 * limit_mb,)
    return allocate_in_steps, (2 * limit_mb, 8 if limit_mb < 1024 else 32)


# -- row 5: allocations past the limit -------------------------------------------------------------


@pytest.mark.parametrize("how", ["at-once", "in-steps"])
def test_row5_an_allocation_past_the_memory_limit_fails_naming_the_call_and_the_limit(
    kind: str, limited: Callable[[str], tuple[FaasExecutor, int]], how: str
) -> None:
    with bounded():
        ex, limit = limited(kind)
        before = ex.submit(getpid).result(timeout=60)
        fn, args = allocation(how, limit)
        future = ex.submit(fn, *args)
        with pytest.raises(FunctionMemoryError) as info:
            future.result(timeout=HOLD_S / 2)  # not a hang: well before the function's hold ends
        assert isinstance(info.value, MemoryError)
        message = str(info.value)
        assert fn.__name__ in message and f"memory_mb={limit}" in message, message
        assert "call " in message and "attempt 0" in message, message
        assert ex.submit(double, 4).result(timeout=60) == 8, "the next call must run"
        if kind == "local":  # the process enforced the limit on itself and stays warm
            assert ex.submit(getpid).result(timeout=60) == before


def test_row5_a_graph_task_past_the_memory_limit_is_named_with_the_limit(
    kind: str, limited: Callable[[str], tuple[FaasExecutor, int]]
) -> None:
    with bounded():
        ex, limit = limited(kind)
        fn, args = allocation("at-once", limit)
        hungry = dask.delayed(fn, pure=False)(*args, dask_key_name="hungry-task")
        with pytest.raises(FunctionMemoryError) as info:
            dask.compute(hungry, scheduler=ex)
        said = "\n".join([str(info.value), *getattr(info.value, "__notes__", [])])
        assert "hungry-task" in said and f"memory_mb={limit}" in said, said
        fine = dask.delayed(double)(21, dask_key_name="fine-task")
        assert dask.compute(fine, scheduler=ex) == (42,), "the next compute must run"


def allocate_and_free(megabytes: int) -> str:
    """Allocate ``megabytes`` and let go of them at once: too short for a sampler to see."""
    del bytearray(megabytes * 2**20)[:]
    return "escaped the limit"


@pytest.mark.parametrize("where", ["local", pytest.param("knative", marks=pytest.mark.slow)])
def test_row5_an_allocation_past_the_limit_freed_at_once_fails_too(
    where: str, limited: Callable[[str], tuple[FaasExecutor, int]]
) -> None:
    """Where the function process enforces the limit itself, no allocation slips between two
    samples of its memory."""
    with bounded():
        ex, limit = limited(where)
        with pytest.raises(FunctionMemoryError, match=rf"of allocate_and_free .*memory_mb={limit}"):
            ex.submit(allocate_and_free, 4 * limit).result(timeout=60)
        assert ex.submit(double, 6).result(timeout=60) == 12


def test_row5_a_memory_error_of_the_users_own_under_the_limit_names_the_limit_too(
    limited: Callable[[str], tuple[FaasExecutor, int]],
) -> None:
    """A MemoryError raised by the function itself under an enforced limit cannot be told from a
    failed allocation: it is answered as a FunctionMemoryError too, whose message keeps the
    original's (and it is still a MemoryError for ``except MemoryError``)."""
    with bounded():
        ex, limit = limited("local")
        with pytest.raises(FunctionMemoryError, match=rf"memory_mb={limit}.*MemoryError: mine"):
            ex.submit(raise_memory_error, "mine").result(timeout=60)
        assert ex.submit(double, 5).result(timeout=60) == 10


def raise_memory_error(text: str) -> Any:
    raise MemoryError(text)


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


def late_second_run(markers: str, size: int, late_s: float) -> bytes:
    """The first run answers at once; a second run of the call (a platform's duplicate) answers
    ``late_s`` later, when the job it belongs to may have ended, and stores its result."""
    try:
        os.close(os.open(os.path.join(markers, "first"), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        time.sleep(late_s)
        open(os.path.join(markers, "late"), "w").close()
    return random.randbytes(size)


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_row7_a_duplicate_that_stores_after_the_job_ended_leaves_nothing(platform, on, platforms, tmp_path):
    """A platform's duplicate is not the client's to stop: it may store its result after the job
    prefix was deleted. It finds the job gone and deletes what it stored."""
    emulator = platforms.emulator(platform)
    emulator.reset()
    with bounded():
        ex = on(platform, inline_limit=1024)  # the result goes through storage
        emulator.configure(duplicate=1)
        assert len(ex.submit(late_second_run, str(tmp_path), 4096, 2.0).result(timeout=60)) == 4096
        ex.shutdown()  # the duplicate still sleeps
        wait_until(lambda: (tmp_path / "late").exists(), 30, "the duplicate did not run")
        # a delivery is logged from its start (Knative's router): wait until both have ended
        wait_until(
            lambda: [r["ended"] is not None for r in emulator_log(platforms, platform)] == [True, True],
            30,
            "the duplicate did not end",
        )
        storage = storage_from_settings(ex.settings)
        left = list(storage.list(ex.job_prefix))
        assert not left, f"the late duplicate left {left} under the ended job {ex.job_prefix}"
    emulator.reset()


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


# -- rows 10 to 13: storage through a fault-injecting proxy ----------------------------------------

#: The read timeout of the clients in these rows, below the proxy's stalls.
READ_TIMEOUT_S = 1.0
STALL_S = 2.5


@pytest.fixture
def proxy(s3_endpoint: str, s3_bucket: str) -> Iterator[CountingProxy]:
    """A fault-injecting proxy of the moto server; afterwards no multipart upload is open."""
    with CountingProxy(s3_endpoint, seed=11) as running:
        running.stall_s = STALL_S
        yield running
    assert not open_uploads(s3_endpoint, s3_bucket), "multipart uploads left open"


@pytest.fixture
def s3_settings(proxy: CountingProxy, s3_bucket: str) -> dict[str, Any]:
    """``faas.s3`` settings of the bucket through the proxy, with a short read timeout."""
    return {
        "bucket": s3_bucket,
        "endpoint-url": proxy.url,
        "region-name": "us-east-1",
        "key": "testing",
        "secret": "testing",
        "read-timeout": READ_TIMEOUT_S,
    }


@pytest.fixture
def on_s3(
    s3_settings: dict[str, Any], make_executor: Callable[..., FaasExecutor]
) -> Iterator[Callable[..., FaasExecutor]]:
    """``on_s3(**settings)``: an executor whose storage (and its functions') is the bucket through
    the proxy; ``dask_faas.read_csv`` reads through the proxy as well (the ``faas.s3`` settings)."""

    def make(**settings: Any) -> FaasExecutor:
        settings.setdefault("inline_limit", 1024)  # arguments and results go through storage
        return make_executor(storage="s3", s3=dict(s3_settings), **settings)

    with dask.config.set({"faas.s3": dict(s3_settings)}):
        yield make


@pytest.fixture
def direct(s3_endpoint: str, s3_bucket: str) -> Iterator[Any]:
    """A boto3 client of the moto server itself (no proxy, no faults) for setting up and checking."""
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    yield client
    client.close()


def proxied(proxy: CountingProxy, bucket: str, **options: Any) -> S3Storage:
    """An S3 storage of ``bucket`` through the proxy."""
    return S3Storage(bucket, endpoint_url=proxy.url, region_name="us-east-1", **options)


def table(rows: int, names: tuple[str, str] = ("a", "b"), seed: int = 0) -> bytes:
    """A CSV object of ``rows`` rows of two integer columns (fixed width, so versions are equal in size)."""
    lines = [",".join(names)] + [
        f"{(i * 7 + seed) % 1000:04d},{(i * 13 + seed) % 997:04d}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def blob(i: int) -> bytes:
    return bytes([i % 251]) * (3000 + i)


# -- row 11: read timeouts, resets and truncated bodies --------------------------------------------


def test_row11_read_timeouts_resets_and_truncated_bodies_are_retried_and_the_results_are_equal(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any
) -> None:
    parts = [table(1500, seed=i) for i in range(6)]
    for i, data in enumerate(parts):
        direct.put_object(Bucket=s3_bucket, Key=f"in/data-{i}.csv", Body=data)
    expected = pd.concat([pd.read_csv(io.BytesIO(data)) for data in parts], ignore_index=True)
    with bounded():
        ex = on_s3()
        proxy.truncate_ratio, proxy.reset_ratio, proxy.stall_ratio = 0.15, 0.05, 0.02
        for blocksize in (None, 5000):  # whole objects (a short body would lose rows) and ranges
            df = dask_faas.read_csv(f"s3://{s3_bucket}/in/data-*.csv", blocksize=blocksize)
            got = df.compute(scheduler=ex)
            pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
        blobs = [blob(i) for i in range(24)]
        assert list(ex.map(checksum, blobs)) == [checksum(b) for b in blobs]
        ex.shutdown()
        proxy.truncate_ratio = proxy.reset_ratio = proxy.stall_ratio = 0.0
    faults = proxy.faults()
    assert faults["truncated"] and faults["resets"] and faults["stalls"], faults


def test_row11_a_body_shorter_than_its_length_or_range_is_read_again_and_never_returned(
    proxy: CountingProxy, s3_bucket: str, direct: Any
) -> None:
    data = bytes(range(256)) * 64
    direct.put_object(Bucket=s3_bucket, Key="short/obj", Body=data)
    storage = proxied(proxy, s3_bucket)
    try:
        with bounded():
            proxy.truncate_ratio = 0.5  # some answers short: every read still whole
            for start, end in [(None, None), (10, 9000), (100, None), (0, 1 << 30)]:
                assert storage.get("short/obj", start, end) == data[start:end]
            assert proxy.truncated > 0
            proxy.truncate_ratio = 1.0  # every answer short: an error, never the half
            before = proxy.truncated
            for start, end in [(None, None), (10, 9000)]:
                with pytest.raises(StorageError) as info:
                    storage.get("short/obj", start, end)
                message = str(info.value)
                assert (
                    f"s3://{s3_bucket}/short/obj" in message and f"after {READ_ATTEMPTS} attempts" in message
                )
                assert "HTTP 20" in message and "no part of it was used" in message, message
            assert proxy.truncated - before == 2 * READ_ATTEMPTS
    finally:
        proxy.truncate_ratio = 0.0
        storage.close()


def test_row11_a_read_that_stalls_past_the_read_timeout_is_retried_then_fails_naming_the_object(
    proxy: CountingProxy, s3_bucket: str, direct: Any
) -> None:
    data = b"x" * 50_000
    direct.put_object(Bucket=s3_bucket, Key="slow/obj", Body=data)
    storage = proxied(proxy, s3_bucket, read_timeout=0.5)
    try:
        with bounded():
            proxy.stall_ratio, proxy.stall_s = 0.3, 1.5
            assert all(
                storage.get("slow/obj", i, i + 20_000) == data[i : i + 20_000] for i in range(0, 40_000, 4000)
            )
            assert proxy.stalls > 0
            proxy.stall_ratio = 1.0
            with pytest.raises(StorageError) as info:
                storage.get("slow/obj")
            message = str(info.value)
            assert f"s3://{s3_bucket}/slow/obj" in message and "attempts" in message, message
            assert "ReadTimeout" in message, message
    finally:
        proxy.stall_ratio = 0.0
        storage.close()


# -- row 12: stale reads after an overwrite ---------------------------------------------------------


def test_row12_a_stale_read_of_an_overwritten_input_is_read_again_and_the_old_bytes_never_used(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str
) -> None:
    old, new = table(3000, ("a", "b"), seed=1), table(3000, ("x", "y"), seed=2)
    assert len(old) == len(new)  # only the version tells them apart
    writer = proxied(proxy, s3_bucket)  # through the proxy: it keeps the old version to serve
    try:
        writer.put("in/data.csv", old)
        proxy.stale_reads = 3  # the next 3 GETs after each PUT come from the version before it
        writer.put("in/data.csv", new)
        proxy.stale_reads = 0
    finally:
        writer.close()
    with bounded():
        ex = on_s3()
        df = dask_faas.read_csv(f"s3://{s3_bucket}/in/data.csv", blocksize=8000)
        assert list(df.columns) == ["x", "y"]  # the header came from the new version
        got = df.compute(scheduler=ex)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), pd.read_csv(io.BytesIO(new)))
    faults = proxy.faults()
    assert faults["preconditions"] == 3 and faults["stale"] == 0, faults  # refused, never used


def chunk_text(obj: Any) -> bytes:
    return obj.data_stream.read()


def test_row12_a_lithops_style_map_over_an_overwritten_object_reads_only_the_new_version(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str
) -> None:
    import dask_faas.compat as lithops

    old, new = table(3000, ("a", "b"), seed=1), table(3000, ("x", "y"), seed=2)
    writer = proxied(proxy, s3_bucket)
    try:
        writer.put("in/lines.csv", old)
        proxy.stale_reads = 4  # no header sample here: the functions' own ranged reads meet them
        writer.put("in/lines.csv", new)
        proxy.stale_reads = 0
    finally:
        writer.close()
    with bounded():
        ex = on_s3()
        fexec = lithops.FunctionExecutor(executor=ex)
        futures = fexec.map(chunk_text, f"s3://{s3_bucket}/in/lines.csv", obj_chunk_size=6000)
        chunks = fexec.get_result(futures)
    assert len(chunks) > 4 and b"".join(chunks) == new
    faults = proxy.faults()
    assert faults["preconditions"] == 4 and faults["stale"] == 0, faults


def test_row12_an_input_overwritten_between_planning_and_reading_fails_naming_it(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any
) -> None:
    direct.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=table(3000, seed=1))
    with bounded():
        ex = on_s3()
        df = dask_faas.read_csv(f"s3://{s3_bucket}/in/data.csv", blocksize=8000)
        direct.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=table(3000, seed=2))  # after planning
        with pytest.raises(StorageError) as info:
            df.compute(scheduler=ex)
    message = str(info.value)
    assert f"s3://{s3_bucket}/in/data.csv" in message and "HTTP 412" in message, message
    assert "written again after it was listed" in message, message


def test_row12_our_write_once_keys_read_before_they_are_visible_are_read_again(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor]
) -> None:
    proxy.stale_reads = 2  # every new key: its first 2 GETs answer 404, as a lagging replica
    with bounded():
        ex = on_s3()
        blobs = [blob(i) for i in range(12)]
        assert list(ex.map(checksum, blobs)) == [checksum(b) for b in blobs]
        ex.shutdown()
    proxy.stale_reads = 0
    faults = proxy.faults()
    assert faults["lagged"] > 0 and faults["stale"] == 0, faults  # write-once: never an old version


def test_row12_a_key_that_never_appears_fails_naming_it_within_the_bound(
    proxy: CountingProxy, s3_bucket: str
) -> None:
    storage = proxied(proxy, s3_bucket, read_after_write_s=0.5)
    try:
        with bounded(30), pytest.raises(FileNotFoundError) as info:
            storage.get("never/there")
        assert f"s3://{s3_bucket}/never/there" in str(info.value)
        assert len(proxy.count(lambda method, path, rng: method == "GET" and "never/there" in path)) > 0
        assert proxy.count(lambda method, path, rng: method == "GET" and "never/there" in path)["GET"] > 1
    finally:
        storage.close()


# -- row 13: missing bucket, missing key, refused credentials ---------------------------------------


def test_row13_a_missing_bucket_fails_before_any_invocation_naming_it_and_the_setting(
    proxy: CountingProxy, s3_settings: dict[str, Any], make_executor: Callable[..., FaasExecutor]
) -> None:
    with bounded(60):
        with pytest.raises(ConfigError) as info:
            make_executor(storage="s3", s3={**s3_settings, "bucket": "no-such-bucket-13"})
        message = str(info.value)
        assert "'no-such-bucket-13'" in message and "faas.s3.bucket" in message, message
        with pytest.raises(FileNotFoundError) as missing:
            dask_faas.read_csv("s3://no-such-bucket-13/data.csv", storage_options=_options(s3_settings))
        assert "s3://no-such-bucket-13/data.csv" in str(missing.value)
    assert not proxy.count(lambda method, path, rng: method in ("PUT", "POST"))  # nothing was written


def test_row13_a_missing_key_fails_at_planning_before_any_invocation_naming_the_object(
    on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any
) -> None:
    direct.put_object(Bucket=s3_bucket, Key="in/present.csv", Body=table(10))
    with bounded(60):
        ex = on_s3()
        for url in (f"s3://{s3_bucket}/in/missing.csv", f"s3://{s3_bucket}/in/*.tsv"):
            with pytest.raises(FileNotFoundError) as info:
                dask.compute(dask_faas.read_csv(url), scheduler=ex)
            assert url in str(info.value)
        assert ex.stats["invocations"] == 0


def test_row13_refused_credentials_fail_before_any_invocation_naming_the_setting(
    s3_endpoint_auth: Any, make_executor: Callable[..., FaasExecutor]
) -> None:
    wrong = {
        "bucket": s3_endpoint_auth.bucket,
        "endpoint-url": s3_endpoint_auth.endpoint_url,
        "region-name": "us-east-1",
        "key": s3_endpoint_auth.key,
        "secret": "not-the-secret",
    }
    with bounded(60):
        with pytest.raises(PermissionError) as info:
            make_executor(storage="s3", s3=wrong)
        message = str(info.value)
        assert f"s3://{s3_endpoint_auth.bucket}" in message and "faas.s3.key / faas.s3.secret" in message
        assert "not-the-secret" not in message
        ex = make_executor()  # local storage; the input's credentials are refused at planning
        url = f"s3://{s3_endpoint_auth.bucket}/in/data.csv"
        with pytest.raises(PermissionError) as refused:
            dask.compute(dask_faas.read_csv(url, storage_options=_options(wrong)), scheduler=ex)
        assert url in str(refused.value) and "not-the-secret" not in str(refused.value)
        assert ex.stats["invocations"] == 0
    auth = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint_auth.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_endpoint_auth.key,
        aws_secret_access_key=s3_endpoint_auth.secret,
    )
    try:
        assert not auth.list_multipart_uploads(Bucket=s3_endpoint_auth.bucket).get("Uploads")
    finally:
        auth.close()


def _options(settings: dict[str, Any]) -> dict[str, Any]:
    """s3fs-style ``storage_options`` of ``faas.s3`` settings."""
    names = {"endpoint-url": "endpoint_url", "region-name": "region_name", "key": "key", "secret": "secret"}
    return {names[k]: v for k, v in settings.items() if k in names}


# -- rows 10 and 13: uploads left open, botocore's retry quota -------------------------------------


def test_an_upload_left_open_under_the_job_prefix_is_aborted_when_the_job_ends(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any, s3_endpoint: str
) -> None:
    with bounded(60):
        ex = on_s3()
        assert ex.submit(checksum, b"x" * 4096).result() == checksum(b"x" * 4096)
        key = f"{ex.job_prefix}/out/interrupted-large-write"  # as a function killed mid-upload leaves it
        upload = direct.create_multipart_upload(Bucket=s3_bucket, Key=key)
        direct.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 1024
        )
        outside = direct.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/big")
        assert set(open_uploads(s3_endpoint, s3_bucket)) == {key, "elsewhere/big"}
        ex.shutdown()
    assert open_uploads(s3_endpoint, s3_bucket) == ["elsewhere/big"]  # only the job's own
    direct.abort_multipart_upload(Bucket=s3_bucket, Key="elsewhere/big", UploadId=outside["UploadId"])


def test_row10_a_sustained_30_percent_of_503s_outlasts_botocores_retry_quota(
    proxy: CountingProxy, s3_bucket: str
) -> None:
    """botocore's standard mode stops retrying once its client-side quota is spent (each 5xx retry
    costs 14 of 500 tokens, a success gives 1 back): at 30% transient 503s that is a few hundred
    requests into a warm function's life. Every read and write must still succeed."""
    storage = proxied(proxy, s3_bucket)
    storage.put("dask-faas/quota/k", b"x" * 100)
    proxy.fail_ratio, proxy.fail_code = 0.3, "ServiceUnavailable"
    try:
        with bounded(), cf.ThreadPoolExecutor(8) as pool:
            reads = list(pool.map(lambda i: storage.get("dask-faas/quota/k", 0, 50), range(1500)))
            writes = list(pool.map(lambda i: storage.put(f"dask-faas/quota/w{i}", b"y"), range(300)))
    finally:
        proxy.fail_ratio = 0.0
    assert reads == [b"x" * 50] * 1500 and len(writes) == 300
    assert proxy.refused > 400, "too few 503s to spend the quota: the test tested nothing"
    storage.delete_prefix("dask-faas/quota/")
    storage.close()


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


# -- rows 18 and 19: a moto server of their own that enforces IAM ----------------------------------


PREFIX = "dask-faas"  # faas.prefix's default: every job lives below it
ROLE_NAME = "dask-faas-scoped"
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE_NAME}"


class Keys(NamedTuple):
    key: str
    secret: str
    token: str | None = None

    def env(self) -> dict[str, str]:
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        return {n: v for n, v in zip(names, self, strict=True) if v}


class Scoped(NamedTuple):
    """The IAM-enforcing server, its bucket, the admin's keys and the functions' scoped keys."""

    url: str
    bucket: str
    admin: Keys
    functions: Keys

    def client(self, keys: Keys, service: str = "s3") -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=keys.key,
            aws_secret_access_key=keys.secret,
            aws_session_token=keys.token,
        )

    def s3_settings(self) -> dict[str, Any]:
        """The client's storage: the admin's credentials (it lists inputs and empties the prefix)."""
        return {
            "bucket": self.bucket,
            "endpoint_url": self.url,
            "region_name": "us-east-1",
            "key": self.admin.key,
            "secret": self.admin.secret,
        }


def _printed_policy(bucket: str) -> dict[str, Any]:
    """What ``dask-faas runtime policy --read s3://bucket/inputs/`` prints for this bucket."""
    out = io.StringIO()
    overrides = {"faas.storage": "s3", "faas.s3": {"bucket": bucket}}
    with dask.config.set(overrides), redirect_stdout(out):
        assert cli.main(["runtime", "policy", "--read", f"s3://{bucket}/inputs/"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scoped]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in LOOPBACK_AWS_ENV.items():
            mp.setenv(name, value)
        proc, url = start_moto_server(str(tmp_path_factory.mktemp("moto-iam") / "moto.log"))
        try:
            bucket = f"scoped-{uuid.uuid4().hex[:16]}"
            iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
            everything = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
            keys = {}
            for user, policy in (("admin", everything), ("functions", _printed_policy(bucket))):
                iam.create_user(UserName=user)
                iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
                access = iam.create_access_key(UserName=user)["AccessKey"]
                keys[user] = Keys(access["AccessKeyId"], access["SecretAccessKey"])
            trust = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        # "AWS": "*": the test assumes the role on behalf of Lambda
                        "Principal": {"Service": "lambda.amazonaws.com", "AWS": "*"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
            iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
            iam.close()
            s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            s3.create_bucket(Bucket=bucket)
            frame = pd.DataFrame({"k": [i % 5 for i in range(200)], "v": range(200)})
            s3.put_object(Bucket=bucket, Key="inputs/numbers.csv", Body=frame.to_csv(index=False).encode())
            s3.put_object(Bucket=bucket, Key="private/payroll.csv", Body=b"name,salary\nada,1\n")
            s3.close()
            enforce_auth(url)  # from here on every request is checked
            yield Scoped(url, bucket, keys["admin"], keys["functions"])
        finally:
            stop_process(proc)


# -- rows 18 and 19: what the functions do ---------------------------------------------------------


def reverse(blob: bytes) -> bytes:
    return blob[::-1]


def try_elsewhere(bucket: str, endpoint_url: str) -> dict[str, str]:
    """With the function's own credentials (its environment): write, read and list outside the prefix."""
    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    outcome = {}
    attempts = {
        "put": lambda: client.put_object(Bucket=bucket, Key="private/planted.txt", Body=b"x"),
        "get": lambda: client.get_object(Bucket=bucket, Key="private/payroll.csv")["Body"].read(),
        "overwrite_input": lambda: client.put_object(Bucket=bucket, Key="inputs/numbers.csv", Body=b"x"),
        "read_input": lambda: client.get_object(Bucket=bucket, Key="inputs/numbers.csv")["Body"].read(),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            outcome[name] = "ok"
        except bce.ClientError as exc:
            outcome[name] = exc.response["Error"]["Code"]
    client.close()
    return outcome


def _run_job(ex: FaasExecutor, scoped: Scoped) -> None:
    """Arguments and results through storage, a dask compute, a dataframe over the inputs: all work;
    outside the prefix, writes and reads are refused."""
    from dask_faas.dataframe import read_csv

    blobs = [secrets.token_bytes(150_000) for _ in range(4)]  # above the inline limit both ways
    assert list(ex.map(reverse, blobs)) == [b[::-1] for b in blobs]
    total = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(20)])
    assert dask.compute(total, scheduler=ex)[0] == sum(range(1, 21))
    url = f"s3://{scoped.bucket}/inputs/numbers.csv"
    options = {k: v for k, v in scoped.s3_settings().items() if k != "bucket"}
    df = read_csv(url, blocksize=400, storage_options=options)
    expected = pd.read_csv(
        io.BytesIO(
            scoped.client(scoped.admin)
            .get_object(Bucket=scoped.bucket, Key="inputs/numbers.csv")["Body"]
            .read()
        )
    )
    got = df.groupby("k").v.sum().compute(scheduler=ex)
    pd.testing.assert_series_equal(got.sort_index(), expected.groupby("k").v.sum(), check_names=False)
    outcome = ex.submit(try_elsewhere, scoped.bucket, scoped.url).result(timeout=120)
    assert outcome == {
        "put": "AccessDenied",
        "get": "AccessDenied",
        "overwrite_input": "AccessDenied",
        "read_input": "ok",
    }


def _assert_left_clean(scoped: Scoped) -> None:
    admin = scoped.client(scoped.admin)
    try:
        keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=scoped.bucket).get("Contents", []))
        assert keys == ["inputs/numbers.csv", "private/payroll.csv"], (
            "the job prefix is not empty, or a key was planted"
        )
        assert not admin.list_multipart_uploads(Bucket=scoped.bucket).get("Uploads"), (
            "a multipart upload is open"
        )
    finally:
        admin.close()


# -- row 19: credentials scoped to the job prefix --------------------------------------------------


def test_the_printed_policy_confines_to_the_prefix_and_the_inputs():
    policy = _printed_policy("bkt")
    assert policy == scoped_policy("bkt", PREFIX, ["s3://bkt/inputs/"])
    resources = [r for s in policy["Statement"] for r in s["Resource"]]
    assert sorted(resources) == [
        "arn:aws:s3:::bkt",
        "arn:aws:s3:::bkt/dask-faas/*",
        "arn:aws:s3:::bkt/inputs/*",
    ]
    (listing,) = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["dask-faas/*", "inputs/*"]}}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"faas.storage": "local"}, "faas.storage: s3"),
        ({"faas.storage": "s3", "faas.s3": {"bucket": None}}, "faas.s3.bucket"),
        ({"faas.storage": "s3", "faas.s3": {"bucket": "b"}, "faas.prefix": "/"}, "faas.prefix"),
    ],
)
def test_a_policy_that_cannot_confine_is_refused_naming_the_setting(settings, message, capsys):
    with dask.config.set(settings):
        assert cli.main(["runtime", "policy"]) == 1
    assert message in capsys.readouterr().err


def test_row19_scoped_credentials_on_the_local_pool(scoped):
    settings = {
        "workers": 2,
        "storage": "s3",
        "s3": scoped.s3_settings(),
        "environment": scoped.functions.env(),
    }
    with FaasExecutor(**settings) as ex:
        _run_job(ex, scoped)
    _assert_left_clean(scoped)


def _emulator_settings(name: str, url: str, key: str, **section: Any) -> dict[str, Any]:
    return {"backend": name, "signing_key": key, name: {**section}}


@pytest.mark.slow
def test_row19_scoped_credentials_on_openwhisk(scoped, platforms):
    import requests

    emulator = platforms.emulator("openwhisk")
    action = f"scoped-{uuid.uuid4().hex[:8]}"
    environment = {**platforms.environment, **scoped.functions.env()}
    user, _, password = OPENWHISK_AUTH.partition(":")
    body = {
        "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:test"},
        "limits": {"timeout": 300_000, "memory": 1024},
        "parameters": [{"key": k, "value": v, "init": True} for k, v in environment.items()],
    }
    with requests.Session() as http:
        http.trust_env = False
        route = f"{emulator.url}/api/v1/namespaces/_/actions/{action}"
        http.put(route, json=body, auth=(user, password), timeout=30).raise_for_status()
        try:
            section = {"api-host": emulator.url, "auth": OPENWHISK_AUTH, "action": action}
            with FaasExecutor(
                backend="openwhisk",
                signing_key=platforms.key.hex(),
                openwhisk=section,
                storage="s3",
                s3=scoped.s3_settings(),
            ) as ex:
                _run_job(ex, scoped)
        finally:
            http.delete(route, auth=(user, password), timeout=30)
    _assert_left_clean(scoped)


@pytest.mark.slow
def test_row19_scoped_credentials_on_knative(scoped, platforms, tmp_path):
    token = secrets.token_urlsafe(16)
    env_file = tmp_path / "env.json"
    env_file.write_text(
        json.dumps({**platforms.environment, **scoped.functions.env(), "DASK_FAAS_HTTP_TOKEN": token})
    )
    router = start_emulator(
        "dask_faas.testing.knative_router",
        "--env-file",
        str(env_file),
        "--instances",
        "1",
        log_path=str(tmp_path / "knative.log"),
    )
    try:
        with FaasExecutor(
            backend="knative",
            signing_key=platforms.key.hex(),
            knative={"url": router.url, "token": token},
            storage="s3",
            s3=scoped.s3_settings(),
        ) as ex:
            _run_job(ex, scoped)
    finally:
        router.stop()
    _assert_left_clean(scoped)


@pytest.mark.slow
def test_row19_deploy_scoped_policy_confines_a_lambda_functions_role(
    scoped, platforms, tmp_path, monkeypatch
):
    # Lambda gives a function its execution role's temporary credentials: here moto's STS for the
    # role that `deploy --scoped-policy` gives its policy, handed to the emulator as its role's
    sts = scoped.client(scoped.admin, "sts")
    role = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="dask-faas-function")["Credentials"]
    sts.close()
    role_keys = Keys(role["AccessKeyId"], role["SecretAccessKey"], role["SessionToken"])
    emulator: Emulator = start_emulator(
        "dask_faas.testing.lambda_emulator", log_path=str(tmp_path / "lambda.log"), env=role_keys.env()
    )
    try:
        for name, value in scoped.admin.env().items():  # the deployer's own credentials: IAM's admin
            monkeypatch.setenv(name, value)
        section = {
            "function-name": "dask-faas-scoped",
            "endpoint-url": emulator.url,
            "iam-endpoint-url": scoped.url,
            "region-name": "us-east-1",
            "image-uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda",
            "role-arn": ROLE_ARN,
        }
        overrides = {
            "faas.backend": "aws_lambda",
            "faas.aws-lambda": section,
            "faas.storage": "s3",
            "faas.s3": scoped.s3_settings(),
            "faas.signing-key": platforms.key.hex(),
            "faas.timeout-s": 300,
        }
        out = io.StringIO()
        with dask.config.set(overrides), redirect_stdout(out):
            code = cli.main(
                ["runtime", "deploy", "--scoped-policy", "--read", f"s3://{scoped.bucket}/inputs/"]
            )
        assert code == 0, out.getvalue()
        assert "attached policy dask-faas-job-prefix to the execution role dask-faas-scoped" in out.getvalue()
        iam = scoped.client(scoped.admin, "iam")
        attached = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName="dask-faas-job-prefix")[
            "PolicyDocument"
        ]
        iam.close()
        assert (json.loads(attached) if isinstance(attached, str) else attached) == _printed_policy(
            scoped.bucket
        )
        with FaasExecutor(
            backend="aws_lambda",
            signing_key=platforms.key.hex(),
            aws_lambda={k: section[k] for k in ("function-name", "endpoint-url", "region-name")},
            storage="s3",
            s3=scoped.s3_settings(),
        ) as ex:
            _run_job(ex, scoped)
    finally:
        emulator.stop()
    _assert_left_clean(scoped)


# -- row 18: sentinel credentials appear nowhere ---------------------------------------------------

SENTINEL_KEY = "AKIASENTINEL18KEY0ID"
SENTINEL_SECRET = "sentinel/row18/secret-never-seen-0123456"
SENTINEL_TOKEN = "sentinel-row18-session-token-0123456789"


def shout(text: str) -> str:
    import logging

    logging.getLogger("user.code").warning("working on %s", text)
    print("printing", text)
    return text.upper()


@pytest.mark.parametrize("kind", EXECUTOR_KINDS)
def test_row18_sentinel_credentials_appear_in_no_object_log_record_or_report(
    kind, request, s3_endpoint, s3_bucket, caplog
):
    """The client's storage credentials (sentinels, accepted by the test server) and its signing key:
    in no stored object (every version kept), no log record at DEBUG, no report, no stats, and on a
    platform in nothing its emulator logged or printed. (Payloads: tests/test_security.py records
    those of the local pool, whose encoding every backend shares.)"""
    from dask_faas.protocol import new_key

    admin = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    admin.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3 = {"bucket": s3_bucket, "endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    s3 |= {"key": SENTINEL_KEY, "secret": SENTINEL_SECRET, "token": SENTINEL_TOKEN}
    key = new_key()
    if kind == "local":
        settings: dict[str, Any] = {"workers": 2, "signing_key": key.hex()}
    else:
        farm = request.getfixturevalue("platforms")
        settings, key = farm.settings(kind), farm.key
        emulator = farm.emulator(kind)
        seen_before = len(emulator.output())
    caplog.set_level(logging.DEBUG)
    with FaasExecutor(storage="s3", s3=s3, inline_limit=1024, **settings) as ex:
        words = ["x" * 3000, "small"]  # one argument and result through storage, one inline
        assert list(ex.map(shout, words)) == [w.upper() for w in words]
        total = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(8)])
        assert dask.compute(total, scheduler=ex)[0] == sum(range(1, 9))
        texts = [repr(ex.stats), repr(ex.last_report), str(ex.last_report), repr(ex)]
    ours = [r for r in caplog.records if not r.name.startswith(("botocore", "boto3", "urllib3"))]
    texts += [f"{r.getMessage()} {r.__dict__!r}" for r in ours]
    if kind != "local":
        texts += [emulator.output()[seen_before:], json.dumps(emulator.log())]
    versions = admin.list_object_versions(Bucket=s3_bucket).get("Versions", [])
    assert versions, "nothing went through storage"
    stored = [
        admin.get_object(Bucket=s3_bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        for v in versions
    ]
    # botocore's own DEBUG records show, as botocore does for every client, the access key id (in
    # the SigV4 Authorization header) and the session token (X-Amz-Security-Token), and on Lambda the
    # answer of GetFunctionConfiguration, which holds the function's environment (the signing key
    # too, as Lambda's API returns it to whoever may read the configuration); never the secret
    wire = [f"{r.getMessage()} {r.__dict__!r}".encode() for r in caplog.records if r not in ours]
    everything = [*stored, *(t.encode() for t in texts)]
    checks = {SENTINEL_KEY: everything, SENTINEL_SECRET: everything + wire, SENTINEL_TOKEN: everything}
    checks[key.hex()] = everything
    for secret, blobs in checks.items():
        leaks = [b[:200] for b in blobs if secret.encode() in b]
        assert not leaks, f"{secret} appears in {leaks}"
    assert not any(key in blob for blob in stored), "the raw signing key is in a stored object"
    assert admin.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0, "the job prefix is not empty"
    assert not admin.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"), "a multipart upload is open"
    listed = admin.list_object_versions(Bucket=s3_bucket)
    doomed = [
        {"Key": v["Key"], "VersionId": v["VersionId"]} for v in [*versions, *listed.get("DeleteMarkers", [])]
    ]
    for start in range(0, len(doomed), 1000):
        admin.delete_objects(Bucket=s3_bucket, Delete={"Objects": doomed[start : start + 1000]})
    admin.close()


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


# -- row 21: stragglers and their backups ---------------------------------------------------------

#: Row 21's calls: ITEMS siblings of ITEM_S each, the straggler 40 times slower (10 at least,
#: as the row asks; the margin keeps the job's end before it independent of a loaded machine: at
#: 20 times, a Knative job under the full suite on 2 cores once ended after the straggler).
ITEMS, ITEM_S, STRAGGLER_S = 12, 0.5, 20.0


@pytest.fixture
def versioned_bucket(s3_endpoint: str, s3_bucket: str) -> Iterator[tuple[Any, str]]:
    """A fresh S3 bucket that keeps every version of every object, and an admin client of it;
    emptied of every version afterwards."""
    admin = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    admin.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield admin, s3_bucket
    finally:
        listing = admin.list_object_versions(Bucket=s3_bucket)
        entries = [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]
        for start in range(0, len(entries), 1000):
            chunk = entries[start : start + 1000]
            admin.delete_objects(
                Bucket=s3_bucket,
                Delete={"Objects": [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in chunk]},
            )
        admin.close()


def on_bucket(request: pytest.FixtureRequest, kind: str, bucket: str, **more: Any) -> dict[str, Any]:
    """Executor settings of ``kind`` whose storage is ``bucket`` on the S3 test server."""
    s3 = {
        "bucket": bucket,
        "endpoint_url": request.getfixturevalue("s3_endpoint"),
        "region_name": "us-east-1",
        "key": "testing",
        "secret": "testing",
    }
    if kind == "local":
        return {"workers": 3, "storage": "s3", "s3": s3, **more}
    settings = executor_settings(request, kind, "", **more)
    settings["s3"] = s3
    return settings


def outputs(admin: Any, bucket: str, prefix: str) -> tuple[int, int]:
    """``(versions written, objects still there)`` of the results stored under ``prefix``."""
    listing = admin.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/out/")
    versions = listing.get("Versions", [])
    return len(versions), sum(v["IsLatest"] for v in versions)


def straggler_map(
    ex: FaasExecutor, markers: Path, slow: tuple[int, ...] = (0,), backup: str = "run"
) -> list[bytes]:
    return list(
        ex.map(
            straggle,
            *zip(*[(str(markers), ITEM_S, STRAGGLER_S, slow, backup, x) for x in range(ITEMS)], strict=True),
        )
    )


def expected() -> list[bytes]:
    return [bytes([x]) * 4096 for x in range(ITEMS)]


def test_row21_a_straggler_is_backed_up_the_first_result_wins_and_its_outputs_are_deleted(
    request, kind, versioned_bucket, make_executor, tmp_path
):
    admin, bucket = versioned_bucket
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        # backups: the default on the platforms ("auto"), set for the local pool
        more = {"backups": True} if kind == "local" else {}
        ex = make_executor(**on_bucket(request, kind, bucket, inline_limit=1024, **more))
        assert straggler_map(ex, markers) == expected()
        assert not (markers / "finished-0").exists(), "the job waited for the straggler"
        assert ex.stats["backups"] >= 1 and ex.stats["backups_won"] >= 1, ex.stats
        assert ex.stats["invocations"] == ITEMS + ex.stats["backups"], ex.stats
        assert len(runs(markers, "run-0-")) == 2, "item 0 ran twice: the straggler and its backup"
        # the straggler ends, and what it wrote is deleted when its answer arrives
        wait_until((markers / "finished-0").exists, 60, "the straggler did not end")
        runs_total = ITEMS + ex.stats["backups"]
        wait_until(
            lambda: outputs(admin, bucket, ex.job_prefix) == (runs_total, 0),
            60,
            f"every run's result written once and deleted: {outputs(admin, bucket, ex.job_prefix)}",
        )


def test_row21_with_backups_off_the_job_waits_for_the_straggler(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, inline_limit=1024)  # the local pool's default: no backups
        assert ex.settings["backups"] == "auto"
        assert straggler_map(ex, markers) == expected()
        assert (markers / "finished-0").exists(), "the job ended before the straggler"
        assert ex.stats["backups"] == 0 and ex.stats["invocations"] == ITEMS, ex.stats
        assert len(runs(markers, "run-0-")) == 1


def test_row21_a_failing_backup_does_not_fail_the_call_whose_original_runs(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, inline_limit=1024, backups=True)
        assert straggler_map(ex, markers, backup="raise") == expected()
        assert (markers / "finished-0").exists(), "the result is the original's"
        assert ex.stats["backups"] == 1 and ex.stats["backups_won"] == 0, ex.stats
        assert ex.stats["retries"] == 0 and len(runs(markers, "run-0-")) == 2, ex.stats


def test_row21_a_failing_original_does_not_fail_the_call_whose_backup_runs(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, inline_limit=1024, backups=True)
        assert straggler_map(ex, markers, backup="original-raises") == expected()
        assert ex.stats["backups"] == 1 and ex.stats["backups_won"] == 1, ex.stats
        assert ex.stats["retries"] == 0 and len(runs(markers, "run-0-")) == 2, ex.stats


def test_row21_backups_are_bounded_to_a_share_of_the_calls(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=4, inline_limit=1024, backups=True)
        assert straggler_map(ex, markers, slow=(0, 1, 2)) == expected()
        # three stragglers among 12 calls, and a tenth of 12 (at least one) backed up
        assert ex.stats["backups"] == 1, ex.stats
        assert ex.stats["invocations"] == ITEMS + 1, ex.stats


def test_row21_what_the_losing_run_stored_under_its_tag_is_deleted(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, backups=True)
        refs = list(ex.map(straggle_storing, [str(markers)] * ITEMS, range(ITEMS)))
        assert not (markers / "finished-0").exists() and ex.stats["backups_won"] == 1, ex.stats

        def stored(x: int) -> list[str]:
            return [key for key, _ in ex.storage.list(f"{ex.job_prefix}/side/{x}.")]

        assert [stored(x) for x in range(ITEMS)] == [[ref.key] for ref in refs]
        # the straggler ends and stores its object; its answer comes and the object is deleted
        wait_until((markers / "finished-0").exists, 60, "the straggler did not end")
        wait_until(lambda: stored(0) == [refs[0].key], 60, f"the losing run's object is left: {stored(0)}")


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
