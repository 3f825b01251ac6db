"""The ComputeBackend contract, run against every compute backend (the fsspec abstract-suite pattern).

:class:`ComputeBackendContract` holds the tests; a backend joins by subclassing it with one fixture,
``make_backend``, a :data:`BackendFactory` that builds the backend deployed with a given environment
and running a given number of calls at once (a platform backend's factory starts its emulator)::

    class TestAwsLambda(ComputeBackendContract):
        @pytest.fixture
        def make_backend(self, lambda_emulator) -> BackendFactory:
            return lambda environment, concurrency: ...

The payloads are real: each test writes a job to a :class:`~dask_faas.backends.storage.local.LocalStorage`
in its tmp dir, seals :class:`~dask_faas.protocol.Invocation` messages with the job's key, and
decodes the sealed :class:`~dask_faas.protocol.Response` the function (``dask_faas.worker``) sends
back, with the public functions of ``protocol``, ``serialize`` and ``job`` (tests/payloads.py).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import CancelledError, Future
from pathlib import Path
from typing import Any

import pytest
from conftest import child_pids, hold_memory
from fixtures_platforms import FUNCTION_ENV, LAMBDA_ROLE, OPENWHISK_AUTH, Platforms, lambda_variables
from payloads import Payloads

from dask_faas import (
    ConfigError,
    FaasExecutor,
    FunctionMemoryError,
    FunctionTimeoutError,
    InvocationError,
    WorkerDiedError,
)
from dask_faas.backends.compute import ComputeBackend, InvokeOptions, registry
from dask_faas.worker import MEMORY_ENV

#: ``(environment, concurrency, memory_mb) -> backend``: the backend deployed with ``environment``
#: (signing key, storage credentials) that runs at most ``concurrency`` calls at once. ``memory_mb``
#: is the deployment's memory, for platforms whose memory is set when the function is deployed
#: (the local pool takes it per call and ignores it).
BackendFactory = Callable[[Mapping[str, str], int, int], ComputeBackend]

#: Limits of the calls that are not about limits.
ROOMY = {"timeout_s": 60.0, "memory_mb": 1024}


# -- functions the tests invoke (module level: pickled by reference, imported by the function) ----


def double(x: int) -> int:
    return 2 * x


def getpid() -> int:
    return os.getpid()


def touch(path: str) -> str:
    Path(path).write_text(str(os.getpid()))
    return path


def touch_then_sleep(path: str, seconds: float) -> str:
    Path(path).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def meet(directory: str, count: int) -> int:
    """Arrive at a barrier of ``count`` calls; return how many had arrived (``count`` if all met)."""
    Path(directory, str(os.getpid())).write_text("here")
    deadline = time.monotonic() + 60
    while (arrived := len(os.listdir(directory))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return arrived


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"the call never started (no {path})"
        time.sleep(0.01)


# -- the harness: a real job, real payloads ---------------------------------------------------------


class Harness(Payloads):
    """A job in local storage (:class:`~payloads.Payloads`), the backends built for it, and its calls.

    Parameters
    ----------
    root : Path
        Root directory of the job's local storage.
    make_backend : BackendFactory
        The backend under test.
    """

    def __init__(self, root: Path, make_backend: BackendFactory) -> None:
        super().__init__(root, "contract")
        self._make = make_backend
        self._backends: list[ComputeBackend] = []

    def backend(self, concurrency: int = 2, memory_mb: int = 1024) -> ComputeBackend:
        """A new backend for this job (closed at teardown)."""
        backend = self._make(self.environment, concurrency, memory_mb)
        self._backends.append(backend)
        return backend

    def invoke(
        self, backend: ComputeBackend, fn: Callable[..., Any], *args: Any, **options: Any
    ) -> tuple[str, Future[bytes]]:
        """Invoke ``fn(*args)`` on ``backend``; ``options`` are :class:`InvokeOptions` fields."""
        call, payload = self.payload(fn, *args)
        options = {**ROOMY, "label": f"call {call} of {fn.__name__}", **options}
        return call, backend.invoke(payload, InvokeOptions(**options))

    def result(self, call: str, future: Future[bytes]) -> Any:
        """Decode the response of ``call``: its value, or raise the function's exception."""
        return self.decode(future.result(timeout=120), call)

    def close(self) -> None:
        """Close the backends, then the job (asserting it left nothing in the storage)."""
        for backend in self._backends:
            backend.close()
        super().close()


class ComputeBackendContract:
    """What every compute backend does. Subclass it with a ``make_backend`` fixture."""

    #: What a call past its memory limit fails with.
    memory_error: type[InvocationError] = FunctionMemoryError
    #: Whether the function process enforces the limit on itself (the local pool's per-call limit,
    #: Knative's ``DASK_FAAS_MEMORY_MB``): the allocation fails inside the function, which answers a
    #: FunctionMemoryError naming its call id and function; otherwise the platform stops the call and
    #: the backend's error names the call's label.
    memory_in_function = False

    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        raise NotImplementedError("a backend's contract class provides the make_backend fixture")

    @pytest.fixture
    def harness(self, tmp_path: Path, make_backend: BackendFactory) -> Iterator[Harness]:
        root = tmp_path / "storage"
        root.mkdir()
        harness = Harness(root, make_backend)
        try:
            yield harness
        finally:
            harness.close()

    # -- results ---------------------------------------------------------------------------

    def test_result_comes_back(self, harness: Harness) -> None:
        backend = harness.backend()
        started: list[bool] = []
        call, future = harness.invoke(backend, double, 21, on_start=lambda: started.append(True) or True)
        assert harness.result(call, future) == 42
        assert started == [True], "on_start must be called once, before the payload is sent"

    def test_each_future_gets_its_own_response(self, harness: Harness) -> None:
        backend = harness.backend()
        calls = [harness.invoke(backend, double, i) for i in range(4 * backend.concurrency)]
        assert [harness.result(call, future) for call, future in calls] == [2 * i for i in range(len(calls))]

    def test_concurrency_calls_run_at_once(self, harness: Harness, tmp_path: Path) -> None:
        backend = harness.backend(concurrency=2)
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        calls = [harness.invoke(backend, meet, str(barrier), 2) for _ in range(2)]
        assert [harness.result(call, future) for call, future in calls] == [2, 2]

    def test_function_exception_comes_back_in_the_response(self, harness: Harness) -> None:
        backend = harness.backend()
        call, future = harness.invoke(backend, double, None)
        with pytest.raises(TypeError, match="unsupported operand"):
            harness.result(call, future)

    # -- limits and deaths -----------------------------------------------------------------

    def test_call_over_its_timeout_fails_naming_the_call_and_the_limit(self, harness: Harness) -> None:
        backend = harness.backend(concurrency=1)
        _, future = harness.invoke(backend, time.sleep, 30, timeout_s=0.5, label="call 7 of sleepy")
        with pytest.raises(FunctionTimeoutError, match=r"call 7 of sleepy.*timeout_s=0\.5") as info:
            future.result(timeout=120)
        assert isinstance(info.value, TimeoutError)
        call, future = harness.invoke(backend, double, 4)
        assert harness.result(call, future) == 8, "the backend must keep working after a timeout"

    def test_call_over_its_memory_limit_fails_naming_the_call_and_the_limit(self, harness: Harness) -> None:
        backend = harness.backend(concurrency=1, memory_mb=150)
        call, future = harness.invoke(backend, hold_memory, 400, memory_mb=150, label="call 8 of hungry")
        named = (
            rf"call {call} \(attempt 0\) of hold_memory" if self.memory_in_function else "call 8 of hungry"
        )
        with pytest.raises(self.memory_error, match=rf"{named}.*memory_mb=150") as info:
            harness.result(call, future)
        assert isinstance(info.value, MemoryError)
        call, future = harness.invoke(backend, double, 5)
        assert harness.result(call, future) == 10, "the backend must keep working after a memory kill"

    def test_call_whose_process_dies_fails_naming_the_call(self, harness: Harness) -> None:
        backend = harness.backend(concurrency=1)
        _, future = harness.invoke(backend, die, label="call 9 of doomed")
        with pytest.raises(WorkerDiedError, match=r"call 9 of doomed"):
            future.result(timeout=120)
        call, future = harness.invoke(backend, double, 6)
        assert harness.result(call, future) == 12, "the backend must keep working after a death"

    # -- cancellation and close ------------------------------------------------------------

    def test_on_start_false_cancels_without_sending(self, harness: Harness, tmp_path: Path) -> None:
        backend = harness.backend(concurrency=1)
        unwanted, wanted = tmp_path / "unwanted", tmp_path / "wanted"
        _, cancelled = harness.invoke(backend, touch, str(unwanted), on_start=lambda: False)
        call, future = harness.invoke(backend, touch, str(wanted))
        assert harness.result(call, future) == str(wanted)  # the one slot served the first call first
        with pytest.raises(CancelledError):
            cancelled.result(timeout=60)
        assert cancelled.cancelled()
        assert not unwanted.exists(), "the cancelled call ran"

    def test_close_cancels_pending_fails_running_and_leaves_no_process(
        self, harness: Harness, tmp_path: Path
    ) -> None:
        before = child_pids()
        backend = harness.backend(concurrency=1)
        marker = tmp_path / "running"
        _, running = harness.invoke(backend, touch_then_sleep, str(marker), 30, label="call 1 of busy")
        wait_for(marker)
        pending = [harness.invoke(backend, touch, str(tmp_path / f"pending-{i}"))[1] for i in range(3)]
        backend.close()
        assert all(future.cancelled() for future in pending), pending
        assert running.done(), "close returned while a call it was running is still unsettled"
        assert isinstance(running.exception(), InvocationError)
        assert "call 1 of busy" in str(running.exception())
        assert not list(tmp_path.glob("pending-*")), "a call pending at close ran"
        assert not child_pids() - before, "close returned with processes of the backend still running"
        backend.close()  # closing again does nothing

    def test_invoke_after_close_raises(self, harness: Harness) -> None:
        backend = harness.backend()
        backend.close()
        _, payload = harness.payload(double, 1)
        with pytest.raises(RuntimeError, match=r"call 3 of late.*closed"):
            backend.invoke(payload, InvokeOptions(**ROOMY, label="call 3 of late"))

    # -- limits stated as class attributes -------------------------------------------------

    def test_limits_are_stated_and_sane(self, harness: Harness) -> None:
        backend = harness.backend(concurrency=3)
        cls = type(backend)
        assert registry.load(cls.name) is cls, "the backend's name must resolve to its class"
        assert isinstance(cls.max_payload_bytes, int) and 2**16 <= cls.max_payload_bytes <= 2**30
        assert isinstance(cls.max_timeout_s, int | float) and math.isfinite(cls.max_timeout_s)
        assert 1 <= cls.max_timeout_s <= 7 * 24 * 3600
        assert isinstance(cls.max_memory_mb, int) and 128 <= cls.max_memory_mb <= 2**20
        assert isinstance(backend.concurrency, int) and backend.concurrency == 3

    def test_executor_refuses_a_timeout_above_max_timeout_s(self, harness: Harness, tmp_path: Path) -> None:
        cls = self._backend_class(harness)
        with pytest.raises(ConfigError, match=rf"timeout-s.*{cls.max_timeout_s:g}"):
            FaasExecutor(
                backend=cls.name, local_storage={"root": str(tmp_path)}, timeout_s=cls.max_timeout_s + 1
            )

    def test_executor_refuses_memory_above_max_memory_mb(self, harness: Harness, tmp_path: Path) -> None:
        cls = self._backend_class(harness)
        with pytest.raises(ConfigError, match=rf"memory-mb.*{cls.max_memory_mb}"):
            FaasExecutor(
                backend=cls.name, local_storage={"root": str(tmp_path)}, memory_mb=cls.max_memory_mb + 1
            )

    @staticmethod
    def _backend_class(harness: Harness) -> type[ComputeBackend]:
        backend = harness.backend(concurrency=1)
        backend.close()
        return type(backend)


class TestLocal(ComputeBackendContract):
    """The embedded warm pool."""

    memory_in_function = True

    @pytest.fixture
    def make_backend(self) -> BackendFactory:
        local = registry.load("local")
        return lambda environment, concurrency, memory_mb: local.from_settings(
            dict(environment), {"workers": concurrency}
        )


# -- the platforms, through their emulators (tests/fixtures_platforms.py) -----------------------------


@pytest.mark.slow
class TestAwsLambda(ComputeBackendContract):
    """AWS Lambda: the Invoke API of the Lambda emulator, functions under awslambdaric."""

    @pytest.fixture
    def make_backend(self, platforms: Platforms) -> Iterator[BackendFactory]:
        import boto3

        from dask_faas.backends.compute.aws_lambda import AwsLambdaBackend

        url = platforms.emulator("aws_lambda").url
        client = boto3.session.Session().client("lambda", endpoint_url=url, region_name="us-east-1")
        names: list[str] = []

        def make(environment: Mapping[str, str], concurrency: int, memory_mb: int) -> ComputeBackend:
            names.append(name := f"contract-{secrets.token_hex(4)}")
            client.create_function(
                FunctionName=name,
                PackageType="Image",
                Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda"},
                Role=LAMBDA_ROLE,
                MemorySize=memory_mb,
                Timeout=300,
                Environment={"Variables": lambda_variables({**FUNCTION_ENV, **environment})},
            )
            return AwsLambdaBackend(name, endpoint_url=url, region_name="us-east-1", concurrency=concurrency)

        yield make
        for name in names:
            client.delete_function(FunctionName=name)
        client.close()


@pytest.mark.slow
class TestOpenWhisk(ComputeBackendContract):
    """Apache OpenWhisk: the REST API of the OpenWhisk emulator, actions in action containers."""

    @pytest.fixture
    def make_backend(self, platforms: Platforms) -> Iterator[BackendFactory]:
        import requests

        from dask_faas.backends.compute.openwhisk import OpenWhiskBackend

        url = platforms.emulator("openwhisk").url
        session = requests.Session()
        session.trust_env = False
        session.auth = tuple(OPENWHISK_AUTH.split(":"))
        names: list[str] = []

        def make(environment: Mapping[str, str], concurrency: int, memory_mb: int) -> ComputeBackend:
            names.append(name := f"contract-{secrets.token_hex(4)}")
            action = {
                "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:test"},
                "annotations": [{"key": "provide-api-key", "value": False}],
                "limits": {"timeout": 300_000, "memory": memory_mb},
                "parameters": [
                    {"key": k, "value": v, "init": True} for k, v in {**FUNCTION_ENV, **environment}.items()
                ],
            }
            session.put(
                f"{url}/api/v1/namespaces/_/actions/{name}", json=action, timeout=30
            ).raise_for_status()
            return OpenWhiskBackend(url, OPENWHISK_AUTH, action=name, concurrency=concurrency)

        yield make
        for name in names:
            session.delete(f"{url}/api/v1/namespaces/_/actions/{name}", timeout=30)
        session.close()


@pytest.mark.slow
class TestKnative(ComputeBackendContract):
    """Knative: our HTTP runtime under func-python, two instances behind the tests' router."""

    memory_in_function = True

    @pytest.fixture
    def make_backend(self, tmp_path: Path) -> Iterator[BackendFactory]:
        from dask_faas.backends.compute.knative import KnativeBackend
        from dask_faas.testing.servers import start_emulator

        routers = []

        def make(environment: Mapping[str, str], concurrency: int, memory_mb: int) -> ComputeBackend:
            token = secrets.token_urlsafe(16)
            env_file = tmp_path / f"env-{len(routers)}.json"
            variables = {**FUNCTION_ENV, **environment, "DASK_FAAS_HTTP_TOKEN": token}
            # as `dask-faas runtime deploy` writes it from the Service's memory limit
            env_file.write_text(json.dumps({**variables, MEMORY_ENV: str(memory_mb)}))
            args = ["--env-file", str(env_file), "--instances", str(max(2, concurrency))]
            routers.append(
                router := start_emulator(
                    "dask_faas.testing.knative_router", *args, "--memory-mb", str(memory_mb)
                )
            )
            return KnativeBackend(router.url, token, concurrency=concurrency)

        yield make
        for router in routers:
            router.stop()
