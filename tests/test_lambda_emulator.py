"""The AWS Lambda emulator, driven by boto3's own ``lambda`` client, running the real entry point.

One emulator for the module (``python -m dask_faas.testing.lambda_emulator``); functions are created
through boto3 with the environment a FaasExecutor gives them (a LocalStorage root, the signing key).
Payloads are real sealed invocations (tests/payloads.py), base64 in
``{"dask_faas": ...}``; every instance is ``python -m awslambdaric function_runtime.aws_lambda.handler``
talking to the emulator's Lambda Runtime API. This module is pickled by value (instances, like real
ones, cannot import the tests), as a FaasExecutor ships a user's own modules.
"""

from __future__ import annotations

import base64
import itertools
import json
import operator
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from payloads import Payloads

from dask_faas import protocol
from dask_faas.testing.instances import process_table, read_proc
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV
from dask_faas.testing.servers import Emulator, start_emulator

ROLE = "arn:aws:iam::123456789012:role/dask-faas"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:latest"


def invoke_body(payloads: Payloads, fn: Callable[..., Any], *args: Any, **options: Any) -> tuple[str, bytes]:
    """The call id and Invoke body (JSON event) of ``fn(*args)``; ``options``: ``key``, ``inline_limit``."""
    call, event = payloads.event(fn, *args, **options)
    return call, json.dumps(event).encode()


def answer_value(payloads: Payloads, call: str, answer: dict[str, Any]) -> Any:
    """Decode a successful Invoke answer of ``call``: the function's value (or raise its exception)."""
    body = json.loads(answer["Payload"].read())
    assert "FunctionError" not in answer, body
    return payloads.decode_event(body, call)


def platform_error(answer: dict[str, Any]) -> dict[str, Any]:
    """The error payload of a failed Invoke answer (``X-Amz-Function-Error: Unhandled``)."""
    assert answer["StatusCode"] == 200
    assert answer.get("FunctionError") == "Unhandled", answer
    return json.loads(answer["Payload"].read())


def instance_groups(emulator: Emulator) -> set[int]:
    """Process groups (= leader pids) of every instance the emulator started."""
    return {int(pid) for pid in re.findall(r"started instance \S+ \(pid (\d+)", emulator.output())}


def live_processes_in(groups: set[int]) -> list[tuple[int, str]]:
    """``(pid, cmdline)`` of live processes in ``groups`` or running awslambdaric as a group leader."""
    found = []
    for pid, (state, _, group) in process_table().items():
        cmdline = read_proc(pid, "cmdline")
        if state != "Z" and group in groups and cmdline is not None:
            found.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    emulator = start_emulator("dask_faas.testing.lambda_emulator")
    try:
        yield emulator
    finally:
        emulator.stop()
    groups = instance_groups(emulator)
    assert groups, "no instance was ever started"
    deadline = time.monotonic() + 10
    while (left := live_processes_in(groups)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"instance processes outlived the emulator: {left}"
    assert not any("awslambdaric" in cmdline for _, cmdline in left)


@pytest.fixture(scope="module")
def client(emulator: Emulator, _s3_env: None) -> Any:
    """boto3's Lambda client on the emulator (dummy credentials, no proxy, no retries)."""
    return lambda_client(emulator, read_timeout=120)


def lambda_client(emulator: Emulator, read_timeout: float) -> Any:
    return boto3.client(
        "lambda",
        endpoint_url=emulator.url,
        region_name="us-east-1",
        aws_access_key_id=LOOPBACK_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOOPBACK_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 0}, read_timeout=read_timeout, max_pool_connections=64),
    )


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Payloads]:
    payloads = Payloads(tmp_path_factory.mktemp("lambda-storage"), "lambda")
    yield payloads
    payloads.close()


@pytest.fixture(scope="module")
def make_function(client: Any, payloads: Payloads) -> Callable[..., str]:
    """Create a function deployed with the job's environment; returns its name."""
    names = itertools.count()

    def make(**settings: Any) -> str:
        name = f"fn-{next(names)}"
        options = {"Timeout": 60, "MemorySize": 512, **settings}
        client.create_function(
            FunctionName=name,
            Role=ROLE,
            PackageType="Image",
            Code={"ImageUri": IMAGE},
            Environment={"Variables": payloads.environment},
            Architectures=["x86_64"],
            **options,
        )
        client.get_waiter("function_active_v2").wait(FunctionName=name)
        return name

    return make


@pytest.fixture(scope="module")
def function(make_function: Callable[..., str]) -> str:
    """The roomy function most tests invoke."""
    return make_function()


@pytest.fixture(autouse=True)
def fresh_knobs(emulator: Emulator) -> None:
    emulator.reset()


def invoke(client: Any, payloads: Payloads, name: str, fn: Callable[..., Any], *args: Any) -> Any:
    call, event = invoke_body(payloads, fn, *args)
    return answer_value(payloads, call, client.invoke(FunctionName=name, Payload=event))


def wait_for_log(emulator: Emulator, count: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 60
    while len(records := emulator.log()) < count:
        assert time.monotonic() < deadline, f"the log never had {count} records: {records}"
        time.sleep(0.02)
    return records


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"the call never started (no {path})"
        time.sleep(0.01)


# -- functions the instances run (this module is pickled by value: instances cannot import it) --------


def touch_and_wait(started: str, go: str) -> str:
    """Say the call started, then wait (at most 60 s) for the go file."""
    Path(started).write_text("started")
    deadline = time.monotonic() + 60
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "done"


def meet(directory: str, count: int) -> int:
    """Arrive at a barrier of ``count`` calls (at most 60 s); return this instance's pid."""
    Path(directory, str(os.getpid())).write_text("here")
    deadline = time.monotonic() + 60
    while len(os.listdir(directory)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def hold_memory(megabytes: int) -> int:
    """Keep ``megabytes`` resident (every page written) for 30 s."""
    block = b"x" * (megabytes * 2**20)
    time.sleep(30)
    return len(block)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def surroundings() -> tuple[dict[str, str], str, list[str]]:
    return dict(os.environ), os.getcwd(), os.listdir(".")


def big(n: int) -> bytes:
    return b"x" * n


# -- results, cold and warm ---------------------------------------------------------------------------


def test_result_comes_back_cold_then_warm(emulator: Emulator, client: Any, payloads: Payloads) -> None:
    fresh = f"warm-{os.getpid()}"
    client.create_function(
        FunctionName=fresh,
        Role=ROLE,
        PackageType="Image",
        Code={"ImageUri": IMAGE},
        Environment={"Variables": payloads.environment},
        Timeout=60,
        MemorySize=256,
    )
    assert invoke(client, payloads, fresh, operator.mul, 6, 7) == 42
    call, event = invoke_body(payloads, os.getpid)
    answer = client.invoke(FunctionName=fresh, Payload=event, Qualifier="$LATEST")
    assert answer["StatusCode"] == 200 and answer["ExecutedVersion"] == "$LATEST"
    first = answer_value(payloads, call, answer)
    assert invoke(client, payloads, fresh, os.getpid) == first, "a warm instance must serve the next call"
    records = emulator.log()
    assert [r["cold"] for r in records] == [True, False, False]
    assert [r["outcome"] for r in records] == ["ok"] * 3
    assert len({r["instance"] for r in records}) == 1
    assert all(r["received"] <= r["started"] <= r["ended"] for r in records)
    client.delete_function(FunctionName=fresh)


def test_instances_get_a_clean_lambda_environment(client: Any, payloads: Payloads, function: str) -> None:
    seen = invoke(client, payloads, function, surroundings)
    environment, cwd, listing = seen
    assert listing == [] and environment["LAMBDA_TASK_ROOT"] == cwd
    assert environment["AWS_LAMBDA_FUNCTION_NAME"] == function
    assert environment["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert environment["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert environment["AWS_REGION"] == environment["AWS_DEFAULT_REGION"] == "us-east-1"
    assert environment["AWS_LAMBDA_LOG_GROUP_NAME"] == f"/aws/lambda/{function}"
    assert environment["_HANDLER"] == "function_runtime.aws_lambda.handler"
    assert environment["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    assert environment[protocol.KEY_ENV] == payloads.key.hex()
    assert environment["PYTHONUNBUFFERED"] == "1" and environment["TZ"] == ":UTC"
    assert os.path.isdir(environment["TMPDIR"]) and os.path.isdir(environment["HOME"])
    assert "PYTHONPATH" not in environment and "VIRTUAL_ENV" not in environment


# -- refusals and platform errors -------------------------------------------------------------------


def test_refused_payload_is_an_unhandled_integrity_error(
    client: Any, payloads: Payloads, function: str
) -> None:
    _, event = invoke_body(payloads, operator.add, 1, 2, key=protocol.new_key())
    error = platform_error(client.invoke(FunctionName=function, Payload=event))
    assert error["errorType"] == "IntegrityError", error
    assert "stackTrace" in error and error["requestId"]
    assert invoke(client, payloads, function, operator.add, 1, 2) == 3, "the instance stays warm"


def test_timeout_is_sandbox_timedout(
    emulator: Emulator, client: Any, payloads: Payloads, make_function: Callable[..., str]
) -> None:
    name = make_function(Timeout=1)
    _, event = invoke_body(payloads, time.sleep, 30)
    answer = client.invoke(FunctionName=name, Payload=event)
    error = platform_error(answer)
    request_id = answer["ResponseMetadata"]["RequestId"]
    assert error == {
        "errorMessage": f"RequestId: {request_id} Error: Task timed out after 1.00 seconds",
        "errorType": "Sandbox.Timedout",
    }
    assert invoke(client, payloads, name, operator.add, 2, 2) == 4, "a new instance replaces the killed one"
    assert [(r["outcome"], r["cold"]) for r in emulator.log()] == [("timeout", True), ("ok", True)]


def test_memory_is_runtime_out_of_memory(
    emulator: Emulator, client: Any, payloads: Payloads, make_function: Callable[..., str]
) -> None:
    name = make_function(MemorySize=128)
    _, event = invoke_body(payloads, hold_memory, 300)
    answer = client.invoke(FunctionName=name, Payload=event)
    request_id = answer["ResponseMetadata"]["RequestId"]
    assert platform_error(answer) == {
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
        "errorType": "Runtime.OutOfMemory",
    }
    assert invoke(client, payloads, name, operator.add, 2, 3) == 5
    assert [r["outcome"] for r in emulator.log()] == ["memory", "ok"]


def test_death_mid_call_is_runtime_exit_error(
    emulator: Emulator, client: Any, payloads: Payloads, function: str
) -> None:
    _, event = invoke_body(payloads, die)
    answer = client.invoke(FunctionName=function, Payload=event)
    request_id = answer["ResponseMetadata"]["RequestId"]
    assert platform_error(answer) == {
        "errorMessage": f"RequestId: {request_id} Error: Runtime exited with error: signal: killed",
        "errorType": "Runtime.ExitError",
    }
    assert invoke(client, payloads, function, operator.add, 3, 3) == 6
    assert [r["outcome"] for r in emulator.log()] == ["died", "ok"]


def test_exit_status_is_named(client: Any, payloads: Payloads, function: str) -> None:
    _, event = invoke_body(payloads, os._exit, 3)
    error = platform_error(client.invoke(FunctionName=function, Payload=event))
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].endswith("Error: Runtime exited with error: exit status 3")


def test_request_over_6_mb_is_413(client: Any, function: str) -> None:
    event = json.dumps({"dask_faas": "A" * (7 * 2**20)}).encode()
    with pytest.raises(ClientError) as info:
        client.invoke(FunctionName=function, Payload=event)
    error = info.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert error["Error"]["Code"] == "RequestEntityTooLargeException"
    assert "6291456 bytes" in error["Error"]["Message"]


def test_response_over_6_mb_is_response_size_too_large(
    client: Any, payloads: Payloads, function: str
) -> None:
    _, event = invoke_body(payloads, big, 7 * 2**20, inline_limit=2**24)
    error = platform_error(client.invoke(FunctionName=function, Payload=event))
    assert error == {
        "errorMessage": "Response payload size exceeded maximum allowed payload size (6291556 bytes).",
        "errorType": "Function.ResponseSizeTooLarge",
    }
    assert invoke(client, payloads, function, operator.add, 4, 4) == 8


def test_init_failure_is_reported_to_the_caller(
    client: Any, payloads: Payloads, make_function: Callable
) -> None:
    name = make_function(ImageConfig={"Command": ["no_such_module.handler"]})
    _, event = invoke_body(payloads, operator.add, 1, 1)
    error = platform_error(client.invoke(FunctionName=name, Payload=event))
    assert error["errorType"] == "Runtime.ImportModuleError", error
    assert "no_such_module" in error["errorMessage"]


def test_reserved_concurrency_throttles_with_429(
    client: Any, payloads: Payloads, make_function: Callable[..., str], tmp_path: Path
) -> None:
    name = make_function()
    assert (
        client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)[
            "ReservedConcurrentExecutions"
        ]
        == 1
    )
    started, go = tmp_path / "started", tmp_path / "go"
    call, event = invoke_body(payloads, touch_and_wait, str(started), str(go))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(client.invoke, FunctionName=name, Payload=event)
        wait_for(started)
        _, second = invoke_body(payloads, operator.add, 1, 1)
        with pytest.raises(client.exceptions.TooManyRequestsException) as info:
            client.invoke(FunctionName=name, Payload=second)
        go.write_text("go")
        assert answer_value(payloads, call, first.result(timeout=120)) == "done"
    assert info.value.response["Reason"] == "ReservedFunctionConcurrentInvocationLimitExceeded"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert info.value.response["Error"]["Message"] == "Rate Exceeded."
    assert invoke(client, payloads, name, operator.add, 1, 1) == 2, "the slot is free again"


# -- knobs --------------------------------------------------------------------------------------------


def test_throttle_knob(emulator: Emulator, client: Any, payloads: Payloads, function: str) -> None:
    emulator.configure(throttle=2, retry_after_s=0.5)
    for _ in range(2):
        _, event = invoke_body(payloads, operator.add, 1, 1)
        with pytest.raises(client.exceptions.TooManyRequestsException) as info:
            client.invoke(FunctionName=function, Payload=event)
        assert info.value.response["ResponseMetadata"]["HTTPHeaders"]["retry-after"] == "0.5"
        assert info.value.response["retryAfterSeconds"] == "0.5"
    assert invoke(client, payloads, function, operator.add, 1, 1) == 2
    assert [r["outcome"] for r in emulator.log()] == ["ok"], "a throttled request is no delivery"


def test_lose_knob_holds_the_request(emulator: Emulator, payloads: Payloads, function: str) -> None:
    emulator.configure(lose=1)
    impatient = lambda_client(emulator, read_timeout=1)
    _, event = invoke_body(payloads, operator.add, 1, 1)
    with pytest.raises(ReadTimeoutError):
        impatient.invoke(FunctionName=function, Payload=event)
    assert invoke(impatient, payloads, function, operator.add, 2, 1) == 3
    lost, answered = emulator.log()
    assert (lost["outcome"], lost["instance"], answered["outcome"]) == ("lost", None, "ok")
    impatient.close()


def test_duplicate_knob_delivers_twice_answers_once(
    emulator: Emulator, client: Any, payloads: Payloads, function: str
) -> None:
    emulator.configure(duplicate=1)
    call, event = invoke_body(payloads, operator.mul, 3, 5)
    answer = client.invoke(FunctionName=function, Payload=event)
    assert answer_value(payloads, call, answer) == 15
    records = wait_for_log(emulator, 2)
    assert len(records) == 2
    assert {r["request_id"] for r in records} == {answer["ResponseMetadata"]["RequestId"]}
    assert sorted(r["outcome"] for r in records) == ["duplicate", "ok"]
    assert records[0]["instance"] != records[1]["instance"], "the two deliveries go to two instances"


def test_kill_knob(emulator: Emulator, client: Any, payloads: Payloads, function: str) -> None:
    emulator.configure(kill=1, kill_after_s=0.2)
    _, event = invoke_body(payloads, time.sleep, 20)
    error = platform_error(client.invoke(FunctionName=function, Payload=event))
    assert error["errorType"] == "Runtime.ExitError"
    assert error["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert invoke(client, payloads, function, operator.add, 5, 5) == 10
    assert [r["outcome"] for r in emulator.log()] == ["died", "ok"]


def test_latency_knob(emulator: Emulator, client: Any, payloads: Payloads, function: str) -> None:
    emulator.configure(latency_s=0.3)
    assert invoke(client, payloads, function, operator.add, 1, 2) == 3
    (record,) = emulator.log()
    assert record["started"] - record["received"] >= 0.3


def test_load_mode_answers_without_instances(emulator: Emulator, client: Any, function: str) -> None:
    emulator.configure(load_delay_s=0.05)
    event = json.dumps({"dask_faas": "opaque"}).encode()
    with ThreadPoolExecutor(48) as pool:
        answers = list(pool.map(lambda _: client.invoke(FunctionName=function, Payload=event), range(200)))
    assert all(a["StatusCode"] == 200 and "FunctionError" not in a for a in answers)
    assert {json.loads(a["Payload"].read())["dask_faas"] for a in answers} == {""}
    records = emulator.log()
    assert len(records) == 200 and {(r["outcome"], r["instance"]) for r in records} == {("load", None)}


# -- control plane ------------------------------------------------------------------------------------


def test_control_plane_through_boto3(client: Any, payloads: Payloads) -> None:
    name = f"deploy-{os.getpid()}"
    create = {
        "FunctionName": name,
        "Role": ROLE,
        "PackageType": "Image",
        "Code": {"ImageUri": IMAGE},
        "Environment": {"Variables": payloads.environment},
    }
    created = client.create_function(**create, MemorySize=256, Timeout=30)
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert (created["State"], created["LastUpdateStatus"], created["PackageType"]) == (
        "Active",
        "Successful",
        "Image",
    )
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{name}"
    with pytest.raises(client.exceptions.ResourceConflictException):
        client.create_function(**create)
    for memory, timeout in ((20000, 3), (128, 901)):  # below the minimums, botocore itself refuses
        with pytest.raises(client.exceptions.InvalidParameterValueException):
            client.create_function(
                **{**create, "FunctionName": f"{name}-bad"}, MemorySize=memory, Timeout=timeout
            )
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="reserved keys"):
        client.create_function(
            **{**create, "FunctionName": f"{name}-bad", "Environment": {"Variables": {"AWS_REGION": "x"}}}
        )

    got = client.get_function(FunctionName=created["FunctionArn"])
    assert got["Configuration"]["MemorySize"] == 256 and got["Code"]["ImageUri"] == IMAGE
    assert client.get_function_configuration(FunctionName=name)["Timeout"] == 30

    client.update_function_code(FunctionName=name, ImageUri=IMAGE.replace("latest", "v2"))
    client.get_waiter("function_updated_v2").wait(FunctionName=name)
    updated = client.update_function_configuration(
        FunctionName=name,
        MemorySize=1024,
        Timeout=120,
        Environment={"Variables": {**payloads.environment, "X": "1"}},
    )
    client.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert (updated["MemorySize"], updated["Timeout"]) == (1024, 120)
    assert updated["Environment"]["Variables"]["X"] == "1"
    assert client.get_function(FunctionName=name)["Code"]["ImageUri"].endswith(":v2")
    assert invoke(client, payloads, name, lambda: os.environ["X"]) == "1"

    client.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
    assert client.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"] == 5
    assert client.get_function(FunctionName=name)["Concurrency"] == {"ReservedConcurrentExecutions": 5}
    client.delete_function_concurrency(FunctionName=name)
    assert "ReservedConcurrentExecutions" not in client.get_function_concurrency(FunctionName=name)

    listed = [
        f["FunctionName"]
        for page in client.get_paginator("list_functions").paginate()
        for f in page["Functions"]
    ]
    assert name in listed

    client.delete_function(FunctionName=name)
    for call in (client.get_function, client.get_function_configuration, client.delete_function):
        with pytest.raises(client.exceptions.ResourceNotFoundException, match="Function not found"):
            call(FunctionName=name)
    with pytest.raises(client.exceptions.ResourceNotFoundException):
        client.invoke(FunctionName=name, Payload=b"{}")


def test_invoke_of_an_unknown_qualifier_is_not_found(client: Any, function: str) -> None:
    with pytest.raises(client.exceptions.ResourceNotFoundException, match=rf"{function}:7"):
        client.invoke(FunctionName=function, Qualifier="7", Payload=b"{}")


def test_event_invocations_are_refused_clearly(client: Any, function: str) -> None:
    with pytest.raises(client.exceptions.InvalidParameterValueException, match="Event is not supported"):
        client.invoke(FunctionName=function, InvocationType="Event", Payload=b"{}")
    assert client.invoke(FunctionName=function, InvocationType="DryRun", Payload=b"{}")["StatusCode"] == 204


def test_concurrent_calls_run_on_separate_warm_instances(
    emulator: Emulator, client: Any, payloads: Payloads, function: str, tmp_path: Path
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with ThreadPoolExecutor(3) as pool:
        pids = list(pool.map(lambda _: invoke(client, payloads, function, meet, str(barrier), 3), range(3)))
    assert len(set(pids)) == 3, "each call had an instance of its own"
    assert sorted(pids) == sorted(int(p) for p in os.listdir(barrier)), "and they ran at once"


def test_prints_reach_the_emulator_output_and_the_log_tail(
    client: Any, emulator: Emulator, payloads: Payloads, function: str
) -> None:
    call, event = invoke_body(payloads, print, "hello from the function")
    answer = client.invoke(FunctionName=function, Payload=event, LogType="Tail")
    assert answer_value(payloads, call, answer) is None
    request_id = answer["ResponseMetadata"]["RequestId"]
    tail = base64.b64decode(answer["LogResult"]).decode()
    assert f"START RequestId: {request_id} Version: $LATEST" in tail
    assert f"REPORT RequestId: {request_id}\tDuration: " in tail
    (record,) = emulator.log()
    deadline = time.monotonic() + 10
    while f"[{record['instance']}] hello from the function" not in emulator.output():
        assert time.monotonic() < deadline, emulator.output()[-2000:]
        time.sleep(0.02)


def test_updates_retire_the_old_instances(
    client: Any, payloads: Payloads, make_function: Callable[..., str]
) -> None:
    name = make_function()
    before = invoke(client, payloads, name, os.getpid)
    client.update_function_configuration(FunctionName=name, Description="v2")
    client.get_waiter("function_updated_v2").wait(FunctionName=name)
    after = invoke(client, payloads, name, os.getpid)
    assert after != before, "an updated function runs on new instances"
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{before}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{before}"), "the old revision's idle instance must be killed"
    client.delete_function(FunctionName=name)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{after}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{after}"), "a deleted function's instances must be killed"


#: A runtime of its own (ImageConfig.EntryPoint) that speaks the Runtime API directly.
PROBE = """
import json, os, sys, urllib.error, urllib.request
api = "http://" + os.environ["AWS_LAMBDA_RUNTIME_API"] + "/2018-06-01/runtime"
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
with opener.open(api + "/invocation/next") as answer:
    headers, event = dict(answer.headers), json.loads(answer.read())
try:
    opener.open(urllib.request.Request(api + "/invocation/not-this-one/response", b"{}", method="POST"))
    wrong = None
except urllib.error.HTTPError as exc:
    wrong = [exc.code, json.loads(exc.read())]
seen = {"headers": headers, "event": event, "wrong": wrong, "argv": sys.argv[1:], "python": sys.executable}
request_id = headers["Lambda-Runtime-Aws-Request-Id"]
url = api + f"/invocation/{request_id}/response"
with opener.open(urllib.request.Request(url, json.dumps(seen).encode(), method="POST")) as answer:
    print("posted:", answer.status, answer.read().decode().strip())
"""


def test_runtime_api_as_a_runtime_sees_it(client: Any, emulator: Emulator, make_function: Callable) -> None:
    name = make_function(Timeout=30, ImageConfig={"EntryPoint": ["python", "-c", PROBE], "Command": ["x.y"]})
    before_ms = time.time() * 1000
    answer = client.invoke(FunctionName=name, Payload=b'{"probe": 1}')
    seen = json.loads(answer["Payload"].read())
    headers = seen["headers"]
    assert seen["event"] == {"probe": 1} and seen["argv"] == ["x.y"]
    assert seen["python"] == sys.executable, "'python' in an image command is the runtime's interpreter"
    assert headers["Lambda-Runtime-Aws-Request-Id"] == answer["ResponseMetadata"]["RequestId"]
    assert headers["Lambda-Runtime-Invoked-Function-Arn"].endswith(f":function:{name}")
    assert headers["Lambda-Runtime-Trace-Id"].startswith("Root=1-")
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Lambda-Runtime-Deadline-Ms"]) >= before_ms + 29_000
    assert seen["wrong"] == [400, {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}]
    deadline = time.monotonic() + 10
    while 'posted: 202 {"status": "OK"}' not in emulator.output():
        assert time.monotonic() < deadline, emulator.output()[-2000:]
        time.sleep(0.02)
