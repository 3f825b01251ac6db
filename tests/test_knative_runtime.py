"""The Knative runtime (``function_runtime.knative``, served by func_python) and the router in front of it.

Part (a) starts the runtime alone as its own server process with ``$PORT`` set, as Knative Serving
runs the container, and talks HTTP to it: health routes, the bearer token gate (checked before the
body is read, so nothing is unpickled), signatures, versions, methods, real sealed invocations of a
job in local storage, and the thread pool of ``DASK_FAAS_INSTANCE_CONCURRENCY``.

Part (b) goes through ``dask_faas.testing.knative_router`` (standing in for the activator and the
Kubernetes Service) with two real instances: round robin, the fault and load knobs, and the
platform's limits (``timeoutSeconds`` -> 504, the memory limit -> 502 for an instance that is not
told its memory; with ``DASK_FAAS_MEMORY_MB`` the runtime enforces it on itself, part (a)). After
the module no instance process is left.

The functions invoked are defined here and pickled by value (the instances, like a real image,
cannot import this module): the job ships the test modules (tests/payloads.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import pickle
import resource
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from payloads import Payloads

from dask_faas import FunctionMemoryError, protocol
from dask_faas.testing.instances import process_table, read_proc
from dask_faas.testing.s3 import stop_process
from dask_faas.testing.servers import Emulator, start_emulator

TOKEN = "knative-test-token"
ROUTER = "dask_faas.testing.knative_router"
ROUTER_TIMEOUT_S, ROUTER_MEMORY_MB = 4, 300
NO_PROXY = {"http": None, "https": None}  # loopback only, whatever the environment says
#: In the environment of every instance this module starts, to find them in /proc.
MARKER = f"dask-faas-knative-test-{uuid.uuid4().hex}"


# -- functions the tests invoke (shipped by value) --------------------------------------------------


def double(x: int) -> int:
    return 2 * x


def getpid() -> int:
    return os.getpid()


def fail() -> None:
    raise TypeError("the function failed on purpose")


def touch(path: str) -> str:
    Path(path).write_text(str(os.getpid()))
    return path


def _wait_for_file(path: Path) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def hold_until(started: str, release: str) -> str:
    """Mark ``started``, run until ``release`` exists, then mark ``<started>.end``."""
    Path(started).write_text("")
    _wait_for_file(Path(release))
    Path(started + ".end").write_text("")
    return "released"


def started_after(*paths: str) -> bool:
    """Whether one of ``paths`` existed when this call started."""
    return any(os.path.exists(path) for path in paths)


def meet(directory: str, count: int) -> int:
    """Arrive at a barrier of ``count`` calls; return how many had arrived (``count`` if all met)."""
    Path(directory, str(threading.get_ident())).write_text("here")
    deadline = time.monotonic() + 60
    while (arrived := len(os.listdir(directory))) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return arrived


def hog(megabytes: int) -> int:
    """Keep ``megabytes`` resident (the bytes are written, so every page is) for 30 s."""
    block = b"\1" * (megabytes * 2**20)
    time.sleep(30)
    return len(block)


class WritesOnUnpickle:
    """Unpickling this creates the file ``path`` (a payload that must never be unpickled)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


# -- jobs, services ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(home: Path, **variables: str) -> dict[str, str]:
    """What a container gets: no PYTHONPATH, fresh HOME and TMPDIR, and the service's variables."""
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": str(home), "TMPDIR": str(home / "tmp")}
    return {**base, "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1", **variables}


class Service:
    """``python -m function_runtime.knative`` on a free loopback ``$PORT``."""

    def __init__(self, workdir: Path, environment: dict[str, str], concurrency: int = 1) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        workdir.mkdir(parents=True)
        (workdir / "cwd").mkdir()
        self.log_path = workdir / "output.log"
        env = clean_environment(
            workdir / "home",
            **environment,
            PORT=str(port),
            DASK_FAAS_LISTEN_HOST="127.0.0.1",
            DASK_FAAS_HTTP_TOKEN=TOKEN,
            DASK_FAAS_INSTANCE_CONCURRENCY=str(concurrency),
            TEST_MARKER=MARKER,
        )
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "function_runtime.knative"],
                cwd=workdir / "cwd",
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while not self.ready():
            assert self.process.poll() is None, f"the runtime exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"the runtime never became ready:\n{self.output()}"
            time.sleep(0.05)

    def ready(self) -> bool:
        try:
            answer = requests.get(self.url + "/health/readiness", timeout=5, proxies=NO_PROXY)
        except requests.ConnectionError:
            return False
        return answer.status_code == 200

    def post(self, body: bytes, token: str | None = TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Content-Type": "application/octet-stream", **kwargs.pop("headers", {})}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(self.url, data=body, headers=headers, timeout=60, proxies=NO_PROXY, **kwargs)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        stop_process(self.process)


def instance_processes() -> list[int]:
    """Live processes of function_runtime.knative started by this module (their environment holds MARKER)."""
    found = []
    for pid, (state, _, _) in process_table().items():
        cmdline, environ = read_proc(pid, "cmdline") or b"", read_proc(pid, "environ") or b""
        if b"function_runtime.knative" in cmdline and MARKER.encode() in environ and state != "Z":
            found.append(pid)
    return found


@pytest.fixture(scope="module", autouse=True)
def no_instance_left() -> Iterator[None]:
    """After the module (its servers and router stopped), no instance process is left."""
    yield
    deadline = time.monotonic() + 10
    while (left := instance_processes()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"instance processes left after the module: {left}"


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Payloads]:
    calls = Payloads(tmp_path_factory.mktemp("storage"), "knative")
    yield calls
    calls.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, calls: Payloads) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("service") / "one", calls.environment)
    yield service
    service.stop()


# -- (a) the runtime alone --------------------------------------------------------------------------


def test_health_routes_answer(service: Service) -> None:
    for route in ("/health/liveness", "/health/readiness"):
        answer = requests.get(service.url + route, timeout=10, proxies=NO_PROXY)
        assert answer.status_code == 200, (route, answer.text)


def test_a_sealed_invocation_runs_and_answers_the_sealed_response(service: Service, calls: Payloads) -> None:
    answer = service.post(calls.payload(double, 21).body)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/octet-stream"
    assert calls.decode(answer.content) == 42
    lower_case_scheme = service.post(
        calls.payload(double, 1).body, token=None, headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert calls.decode(lower_case_scheme.content) == 2, "the auth scheme is case-insensitive (RFC 9110)"
    assert calls.response(answer.content).stats["pid"] == service.process.pid
    answer = service.post(calls.payload(fail).body)
    assert answer.status_code == 200, "a function's own error travels inside the sealed response"
    with pytest.raises(TypeError, match="on purpose"):
        calls.decode(answer.content)


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x", ""])
def test_a_call_without_the_right_token_is_401_and_nothing_is_unpickled(
    service: Service, calls: Payloads, tmp_path: Path, token: str | None
) -> None:
    marker = tmp_path / "unpickled"
    payload = protocol.seal(WritesOnUnpickle(marker), calls.key)  # signed with the service's key
    answer = service.post(payload, token=token)
    assert answer.status_code == 401, answer.text
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    assert not marker.exists(), "the payload was unpickled without the right token"
    assert service.ready()


def test_the_token_is_the_only_gate_that_stopped_the_unpickling(
    service: Service, calls: Payloads, tmp_path: Path
) -> None:
    """The control of the test above: with the token, the same payload is unpickled (so 401 meant it)."""
    marker = tmp_path / "unpickled"
    answer = service.post(protocol.seal(WritesOnUnpickle(marker), calls.key))
    assert answer.status_code != 401 and marker.exists()
    assert service.ready()


def test_a_large_body_without_the_token_is_refused_from_its_headers(service: Service) -> None:
    answer = service.post(b"\x80" * (32 * 2**20), token="wrong")
    assert answer.status_code == 401
    assert service.ready()


def test_garbage_with_the_token_is_refused_and_the_instance_stays_healthy(
    service: Service, calls: Payloads
) -> None:
    for garbage in (b"\x80\x05garbage", pickle.dumps(object) * 3):
        answer = service.post(garbage)
        assert answer.status_code == 403, answer.text
        assert "IntegrityError" in answer.text
    assert service.ready()
    assert calls.decode(service.post(calls.payload(double, 2).body).content) == 4


def test_a_payload_sealed_with_another_key_is_403_and_nothing_runs(
    service: Service, calls: Payloads, tmp_path: Path
) -> None:
    marker = tmp_path / "ran"
    answer = service.post(calls.payload(touch, str(marker), key=protocol.new_key()).body)
    assert answer.status_code == 403, answer.text
    assert "IntegrityError" in answer.text and "signature" in answer.text
    assert not marker.exists()


def test_another_protocol_version_is_400(service: Service, calls: Payloads) -> None:
    payload = bytearray(calls.payload(double, 1).body)
    payload[len(protocol.MAGIC)] = protocol.VERSION + 1
    answer = service.post(bytes(payload))
    assert answer.status_code == 400, answer.text
    assert "ProtocolError" in answer.text


def test_other_methods_are_405_and_an_empty_post_is_400(service: Service) -> None:
    for method in ("GET", "PUT", "DELETE"):
        answer = requests.request(method, service.url, timeout=10, proxies=NO_PROXY)
        assert answer.status_code == 405, (method, answer.text)
    assert service.post(b"").status_code == 400


def test_health_answers_during_a_call_and_a_second_call_waits_for_the_thread(
    service: Service, calls: Payloads, tmp_path: Path
) -> None:
    started, release = tmp_path / "started", tmp_path / "release"
    answers: dict[str, requests.Response] = {}
    hold = calls.payload(hold_until, str(started), str(release))
    after = calls.payload(started_after, f"{started}.end")
    first = threading.Thread(target=lambda: answers.update(a=service.post(hold.body)))
    first.start()
    try:
        _wait_for_file(started)
        assert service.ready(), "readiness must answer while a call runs"
        second = threading.Thread(target=lambda: answers.update(b=service.post(after.body)))
        second.start()
    finally:
        release.write_text("")
        first.join(60)
    second.join(60)
    assert calls.decode(answers["a"].content, hold.call) == "released"
    assert calls.decode(answers["b"].content, after.call) is True, (
        "with one thread, the second call ran after the first"
    )


def test_instance_concurrency_runs_calls_at_once(tmp_path: Path, calls: Payloads) -> None:
    service = Service(tmp_path / "two", calls.environment, concurrency=2)
    try:
        barrier = tmp_path / "barrier"
        barrier.mkdir()
        payloads = [calls.payload(meet, str(barrier), 2).body for _ in range(2)]
        answers: list[requests.Response] = []
        threads = [threading.Thread(target=lambda p=p: answers.append(service.post(p))) for p in payloads]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        assert [calls.decode(a.content) for a in answers] == [2, 2]
    finally:
        service.stop()
    assert service.process.returncode == 0, f"SIGTERM must stop the runtime gracefully:\n{service.output()}"


def grow(megabytes: int, step_mb: int) -> int:
    """Allocate ``megabytes`` in steps of ``step_mb`` (every page written), hold them for 30 s."""
    blocks = [b"\1" * (step_mb * 2**20) for _ in range(megabytes // step_mb)]
    time.sleep(30)
    return len(blocks)


@pytest.mark.parametrize("allocate", [(hog, 600), (grow, 600, 8)], ids=["at-once", "in-steps"])
def test_the_runtime_enforces_its_memory_limit_on_itself(
    tmp_path: Path, calls: Payloads, allocate: tuple[Any, ...]
) -> None:
    """With DASK_FAAS_MEMORY_MB (as deployed), an allocation past it fails inside the instance:
    200 with a FunctionMemoryError naming the call and the limit, and the same instance goes on."""
    service = Service(tmp_path / "limited", {**calls.environment, "DASK_FAAS_MEMORY_MB": "300"})
    try:
        payload = calls.payload(*allocate)
        started = time.monotonic()
        answer = service.post(payload.body)
        assert answer.status_code == 200, answer.text
        with pytest.raises(FunctionMemoryError, match=rf"call {payload.call} .*memory_mb=300") as info:
            calls.decode(answer.content, payload.call)
        assert isinstance(info.value, MemoryError)
        assert time.monotonic() - started < 25, "the allocation must fail at once, not after the hold"
        answer = service.post(calls.payload(getpid).body)
        assert calls.decode(answer.content) == service.process.pid, "the instance must stay"
    finally:
        service.stop()


def test_the_runtime_refuses_a_memory_limit_that_is_not_a_number(tmp_path: Path, calls: Payloads) -> None:
    env = clean_environment(
        tmp_path,
        **calls.environment,
        PORT=str(free_port()),
        DASK_FAAS_LISTEN_HOST="127.0.0.1",
        DASK_FAAS_HTTP_TOKEN=TOKEN,
        DASK_FAAS_MEMORY_MB="1GB",
    )
    done = subprocess.run(
        [sys.executable, "-m", "function_runtime.knative"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"DASK_FAAS_MEMORY_MB must be a positive integer" in done.stderr, done.stderr


def test_the_runtime_refuses_to_start_without_a_token(tmp_path: Path, calls: Payloads) -> None:
    env = clean_environment(
        tmp_path, **calls.environment, PORT=str(free_port()), DASK_FAAS_LISTEN_HOST="127.0.0.1"
    )
    done = subprocess.run(
        [sys.executable, "-m", "function_runtime.knative"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"DASK_FAAS_HTTP_TOKEN is not set" in done.stderr, done.stderr


# -- (b) through the router -------------------------------------------------------------------------


class Routed:
    """The router and the job whose calls go through it."""

    def __init__(self, emulator: Emulator, calls: Payloads) -> None:
        self.emulator, self.calls = emulator, calls

    def post(self, body: bytes, token: str | None = TOKEN, **kwargs: Any) -> requests.Response:
        headers = {"Content-Type": "application/octet-stream", **kwargs.pop("headers", {})}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", 60)
        return requests.post(self.emulator.url, data=body, headers=headers, proxies=NO_PROXY, **kwargs)

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        call, body = self.calls.payload(fn, *args)
        answer = self.post(body)
        assert answer.status_code == 200, answer.text
        return self.calls.decode(answer.content, call)

    def log_when(self, done: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 60
        while not done(log := self.emulator.log()):
            assert time.monotonic() < deadline, f"log never got there: {log}"
            time.sleep(0.05)
        return log

    def health(self) -> dict[str, Any]:
        return requests.get(self.emulator.url + "/_emulator/health", timeout=10, proxies=NO_PROXY).json()

    def wait_all_ready(self) -> list[dict[str, Any]]:
        deadline = time.monotonic() + 60
        while True:
            instances = self.health()["instances"]
            if all(i["ready"] for i in instances):
                return instances
            assert time.monotonic() < deadline, f"not all ready: {instances}\n{self.emulator.output()}"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def routed_module(tmp_path_factory: pytest.TempPathFactory, calls: Payloads) -> Iterator[Routed]:
    env_file = tmp_path_factory.mktemp("router") / "env.json"
    env_file.write_text(
        json.dumps({**calls.environment, "DASK_FAAS_HTTP_TOKEN": TOKEN, "TEST_MARKER": MARKER})
    )
    emulator = start_emulator(
        ROUTER,
        *("--env-file", str(env_file), "--instances", "2", "--instance-concurrency", "1"),
        *("--timeout-s", str(ROUTER_TIMEOUT_S), "--memory-mb", str(ROUTER_MEMORY_MB)),
    )
    routed = Routed(emulator, calls)
    try:
        pids = {i["pid"] for i in routed.health()["instances"]}
        assert len(pids) == 2 and pids <= set(instance_processes()), emulator.output()
        yield routed
    finally:
        emulator.stop()


@pytest.fixture
def routed(routed_module: Routed) -> Iterator[Routed]:
    routed_module.wait_all_ready()
    routed_module.emulator.reset()
    yield routed_module
    routed_module.emulator.reset()


def test_router_round_robin_reaches_both_instances(routed: Routed) -> None:
    pids = [routed.call(getpid) for _ in range(4)]
    assert pids[0] != pids[1] and pids[:2] == pids[2:], pids
    log = routed.emulator.log()
    assert [r["instance"] for r in log] == pids
    assert [r["outcome"] for r in log] == ["ok"] * 4
    assert all(r["received"] <= r["started"] <= r["ended"] for r in log)
    assert not log[2]["cold"] and not log[3]["cold"]


def test_router_queues_requests_while_every_instance_is_busy(routed: Routed, tmp_path: Path) -> None:
    release = tmp_path / "release"
    holders = [tmp_path / "a", tmp_path / "b"]
    answers: dict[str, requests.Response] = {}

    def post(name: str, fn: Callable[..., Any], *args: Any) -> threading.Thread:
        thread = threading.Thread(
            target=lambda: answers.update({name: routed.post(routed.calls.payload(fn, *args).body)})
        )
        thread.start()
        return thread

    threads = [post(str(h), hold_until, str(h), str(release)) for h in holders]
    try:
        for holder in holders:
            _wait_for_file(holder)
        threads.append(post("queued", started_after, *(f"{h}.end" for h in holders)))
    finally:
        release.write_text("")
        for thread in threads:
            thread.join(60)
    assert [routed.calls.decode(answers[str(h)].content) for h in holders] == ["released"] * 2
    assert routed.calls.decode(answers["queued"].content) is True, "the third call ran before a slot was free"


def test_router_adds_latency_before_a_delivery(routed: Routed) -> None:
    routed.emulator.configure(latency_s=0.3)
    assert routed.call(double, 2) == 4
    (record,) = routed.emulator.log()
    assert record["started"] - record["received"] >= 0.3


def test_router_forwards_the_token_for_the_instances_to_check(routed: Routed) -> None:
    answer = routed.post(routed.calls.payload(double, 1).body, token="wrong")
    assert answer.status_code == 401 and answer.headers["WWW-Authenticate"] == "Bearer"
    assert routed.emulator.log()[0]["outcome"] == "error"


def test_router_throttles_with_429_or_503_and_retry_after(routed: Routed) -> None:
    routed.emulator.configure(throttle=2, retry_after_s=1.5)
    for _ in range(2):
        answer = routed.post(routed.calls.payload(double, 1).body)
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1.5"
    assert routed.call(double, 3) == 6
    routed.emulator.configure(throttle=1, throttle_status=503, retry_after_s=None)
    answer = routed.post(routed.calls.payload(double, 1).body)
    assert answer.status_code == 503 and "Retry-After" not in answer.headers
    assert routed.call(double, 4) == 8
    assert [r["outcome"] for r in routed.emulator.log()] == ["ok", "ok"], (
        "throttled requests are not delivered"
    )


def test_router_loses_a_request_until_the_client_gives_up(routed: Routed, tmp_path: Path) -> None:
    routed.emulator.configure(lose=1)
    marker = tmp_path / "ran"
    with pytest.raises(requests.Timeout):
        routed.post(routed.calls.payload(touch, str(marker)).body, timeout=1)
    log = routed.log_when(lambda log: log and log[0]["ended"] is not None)
    assert log[0]["outcome"] == "lost" and log[0]["instance"] is None
    assert not marker.exists()
    assert routed.call(double, 5) == 10


def test_router_duplicates_a_delivery_to_two_instances_and_answers_once(routed: Routed) -> None:
    routed.emulator.configure(duplicate=1)
    answer = routed.post(routed.calls.payload(getpid).body, headers={"X-Request-Id": "dup-1"})
    assert answer.status_code == 200
    pid = routed.calls.decode(answer.content)
    assert len(routed.emulator.log()) == 2, "the answer leaves once both deliveries started"
    log = routed.log_when(lambda log: all(r["ended"] is not None for r in log))
    assert {r["request_id"] for r in log} == {"dup-1"}
    assert sorted(r["outcome"] for r in log) == ["duplicate", "ok"]
    assert len({r["instance"] for r in log}) == 2 and pid in {r["instance"] for r in log}


def test_router_kill_answers_502_and_the_next_call_works(routed: Routed) -> None:
    routed.emulator.configure(kill=1, kill_after_s=0.2)
    answer = routed.post(routed.calls.payload(time.sleep, 30).body)
    assert answer.status_code == 502, answer.text
    assert routed.emulator.log()[0]["outcome"] == "died"
    assert routed.call(double, 6) == 12
    routed.wait_all_ready()


def test_router_timeout_answers_504_and_restarts_the_instance(routed: Routed) -> None:
    before = {i["pid"] for i in routed.wait_all_ready()}
    answer = routed.post(routed.calls.payload(time.sleep, 30).body)
    assert answer.status_code == 504 and answer.text == "activator request timeout\n"
    (record,) = routed.emulator.log()
    assert record["outcome"] == "timeout" and record["instance"] in before
    assert routed.call(double, 7) == 14
    after = {i["pid"] for i in routed.wait_all_ready()}
    assert after - before and record["instance"] not in after, "the timed-out instance was not replaced"
    routed.emulator.reset()
    (new,) = after - before
    pids = [routed.call(getpid) for _ in range(2)]
    assert new in pids
    assert [r["cold"] for r in routed.emulator.log() if r["instance"] == new] == [True]


def test_router_memory_limit_answers_502(routed: Routed) -> None:
    """An instance that does not enforce its memory (deployed without DASK_FAAS_MEMORY_MB) is
    OOMKilled past the container's limit."""
    answer = routed.post(routed.calls.payload(hog, 2 * ROUTER_MEMORY_MB).body)
    assert answer.status_code == 502, answer.text
    assert routed.emulator.log()[0]["outcome"] == "memory"
    assert routed.call(double, 8) == 16
    routed.wait_all_ready()


async def _load_requests(url: str, count: int) -> list[bytes]:
    host, port = url.removeprefix("http://").split(":")

    async def one() -> bytes:
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST / HTTP/1.1\r\nHost: router\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        return answer

    return await asyncio.wait_for(asyncio.gather(*(one() for _ in range(count))), 120)


def test_router_load_mode_holds_a_thousand_requests_at_once(routed: Routed) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:  # this process holds a socket per request
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    routed.emulator.configure(load_delay_s=4.0)
    answers = asyncio.run(_load_requests(routed.emulator.url, 1000))
    assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"\r\n\r\n") for a in answers), answers[:3]
    log = routed.emulator.log()
    assert len(log) == 1000 and {r["outcome"] for r in log} == {"load"}
    assert max(r["received"] for r in log) < min(r["ended"] for r in log), "not all held at once"
