"""Row 5 of issue 10's faults matrix: an allocation past the memory limit (to be merged into
tests/test_faults.py).

On the local pool and on every platform's emulator (``kind``; the platforms are slow-marked), a call
that allocates past its memory limit, at once (one big bytearray) or in small steps, fails with a
:class:`~dask_faas.exceptions.FunctionMemoryError` (a ``MemoryError``) that names the call and the
limit ``memory_mb=...``, within a bound far below the time the function would hold its memory; the
next call on the same executor runs. Besides, the job prefix is empty afterwards
(``make_executor``), no multipart upload is left open in the S3 bucket the platforms use and no
child process is left (``conftest``).

Where the limit comes from, per backend (what each does with a per-call ``memory_mb``):

- local: the per-call ``memory_mb`` (here 256), enforced by the function process on itself
  (``RLIMIT_DATA``): the allocation fails inside the function and the process stays warm;
- knative: the container's memory (the farm's 1024 MiB), given to the runtime as
  ``DASK_FAAS_MEMORY_MB`` and enforced by it on itself; a per-call ``memory_mb`` is only checked
  against the backend's maximum;
- aws_lambda: the function's ``MemorySize`` (1024); the platform stops the call
  (``Runtime.OutOfMemory``) and the instance is replaced; a per-call ``memory_mb`` is not sent;
- openwhisk: the action's ``limits.memory`` (1024); the platform aborts the activation ("exhausted
  its memory") and the container is replaced; the error names the call's ``memory_mb``, so the
  calls here ask for the action's 1024.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import dask
import pytest
from faults_kit import bounded
from fixtures_platforms import EXECUTOR_KINDS, FUNCTION_MEMORY_MB, executor_settings

from dask_faas import FaasExecutor, FunctionMemoryError

pytestmark = pytest.mark.timeout(300)

#: How long a function holds memory it got: an answer well before this was not waiting for it.
HOLD_S = 120
#: The per-call limit the local pool is given (the platforms have their deployed memory).
LOCAL_LIMIT_MB = 256


# -- functions run inside the functions -----------------------------------------------------------


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


def double(x: int) -> int:
    return 2 * x


def getpid() -> int:
    return os.getpid()


# -- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(params=EXECUTOR_KINDS)
def kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """``"local"`` or a platform; a platform's emulator knobs are reset before and after."""
    emulator = None
    if request.param != "local":
        emulator = request.getfixturevalue("platforms").emulator(request.param)
        emulator.reset()
    yield request.param
    if emulator is not None:
        emulator.reset()


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
        client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
        try:
            uploads = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        finally:
            client.close()
        assert not uploads, f"multipart uploads left open: {[u['Key'] for u in uploads]}"


def allocation(how: str, limit_mb: int) -> tuple[Callable[..., int], tuple[int, ...]]:
    """The function and arguments that allocate twice ``limit_mb``, at once or in small steps."""
    if how == "at-once":
        return allocate_at_once, (2 * limit_mb,)
    return allocate_in_steps, (2 * limit_mb, 8 if limit_mb < 1024 else 32)


# -- row 5 ----------------------------------------------------------------------------------------


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
