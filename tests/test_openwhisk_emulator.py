"""The OpenWhisk / IBM Cloud Functions emulator and the action entry point it runs.

One emulator for the module (Basic auth and an IAM API key); each test resets its knobs and log. The
payloads are real: a job in a LocalStorage, sealed Invocations of it, sealed Responses decoded. The
action containers are real ``function_runtime.openwhisk`` processes with a clean environment, so the
functions shipped here are pickled by value (the job ships this module, as a user ships modules the
runtime image does not hold: tests/payloads.py). After the module no container process is left.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
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

from dask_faas import protocol
from dask_faas.testing.instances import process_table, read_proc
from dask_faas.testing.servers import Emulator, start_emulator

MODULE = "dask_faas.testing.openwhisk_emulator"
AUTH = "0f4c1c5c-6d52-4b7c-9a57-2b4b1d7b9e11:s3cr3t-k3y-of-the-test-namespace"
IAM_KEY = "test-ibm-cloud-api-key"
ROOMY = {"timeout": 60000, "memory": 256}


# -- functions the actions run (pickled by value; no asserts: pytest rewrites them) ----------------


def double(x: int) -> int:
    return 2 * x


def getpid() -> int:
    return os.getpid()


def hold(megabytes: int) -> int:
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(30)
    return len(block)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_file(path: str) -> str:
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return "released" if os.path.exists(path) else "never released"


def record_delivery(directory: str) -> int:
    Path(directory, f"{os.getpid()}-{uuid.uuid4().hex}").write_text("delivered")
    return os.getpid()


def shout(text: str) -> str:
    print(text, flush=True)
    return text


def big(n: int) -> bytes:
    return b"x" * n


def surroundings() -> dict[str, Any]:
    return {"environ": dict(os.environ), "cwd": os.getcwd(), "listing": os.listdir(".")}


# -- fixtures ----------------------------------------------------------------------------------------


def container_pids() -> set[int]:
    """Live processes running the action entry point, from /proc."""
    pids = set()
    for pid, (state, _, _) in process_table().items():
        if b"function_runtime.openwhisk" in (read_proc(pid, "cmdline") or b"") and state != "Z":
            pids.add(pid)
    return pids


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    before = container_pids()
    em = start_emulator(MODULE, "--auth", AUTH, "--api-key", IAM_KEY)
    try:
        yield em
    finally:
        em.stop()
    deadline = time.monotonic() + 10
    while (left := container_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"action containers left after the emulator stopped: {sorted(left)}"


@pytest.fixture(scope="module")
def payloads(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Payloads]:
    p = Payloads(tmp_path_factory.mktemp("storage"), "openwhisk")
    yield p
    p.close()


@pytest.fixture
def ow(emulator: Emulator) -> Iterator[requests.Session]:
    """A session on the emulator's ``guest`` namespace with Basic auth; knobs and log reset."""
    emulator.reset()
    session = requests.Session()
    session.trust_env = False
    session.auth = tuple(AUTH.split(":"))
    yield session
    session.close()


@pytest.fixture
def anonymous() -> Iterator[requests.Session]:
    """A session without credentials (each request brings its own)."""
    session = requests.Session()
    session.trust_env = False
    yield session
    session.close()


@pytest.fixture(scope="module")
def action(emulator: Emulator, payloads: Payloads) -> str:
    """The deployed action's name: init parameters carry the deployment environment."""
    session = requests.Session()
    session.trust_env = False
    deploy(session, emulator.url, "dask", payloads.environment)
    return "dask"


def deploy(
    session: requests.Session, url: str, name: str, environment: dict[str, str], **limits: int
) -> None:
    body = {
        "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:test"},
        "limits": {**ROOMY, **limits, "concurrency": 1},
        "parameters": [{"key": k, "value": v, "init": True} for k, v in environment.items()],
        "annotations": [{"key": "provide-api-key", "value": False}],
    }
    answer = session.put(
        f"{url}/api/v1/namespaces/_/actions/{name}?overwrite=true", json=body, auth=tuple(AUTH.split(":"))
    )
    assert answer.status_code == 200, answer.text


def invoke(session: requests.Session, url: str, name: str, body: Any, **query: str) -> requests.Response:
    params = {"blocking": "true", **query}
    return session.post(f"{url}/api/v1/namespaces/_/actions/{name}", json=body, params=params, timeout=120)


def poll(check: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
    return value


# -- results and warm containers ---------------------------------------------------------------------


def test_result_comes_back_in_the_activation_record(ow, emulator, payloads, action) -> None:
    call, body = payloads.event(double, 21)
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 200, answer.text
    record = answer.json()
    assert answer.headers["x-openwhisk-activation-id"] == record["activationId"]
    assert record["response"]["status"] == "success" and record["response"]["success"] is True
    assert {"start", "end", "duration", "namespace", "name"} <= set(record)
    assert (record["namespace"], record["name"]) == ("guest", "dask")
    assert payloads.decode_event(record["response"]["result"], call) == 42
    (entry,) = emulator.log()
    assert entry["request_id"] == record["activationId"] and entry["outcome"] == "ok"
    assert entry["received"] <= entry["started"] <= entry["ended"]


def test_result_true_answers_the_result_alone(ow, emulator, payloads, action) -> None:
    call, body = payloads.event(double, 5)
    answer = invoke(ow, emulator.url, action, body, result="true")
    assert answer.status_code == 200, answer.text
    assert payloads.decode_event(answer.json(), call) == 10


def test_warm_container_is_reused(ow, emulator, payloads, action) -> None:
    pids = []
    for _ in range(3):
        call, body = payloads.event(getpid)
        pids.append(payloads.decode_event(invoke(ow, emulator.url, action, body, result="true").json(), call))
    assert len(set(pids)) == 1, pids
    log = emulator.log()
    assert [e["cold"] for e in log[1:]] == [False, False] and len({e["instance"] for e in log}) == 1


def test_container_has_a_clean_environment_and_the_init_parameters(ow, emulator, payloads, action) -> None:
    call, body = payloads.event(surroundings)
    seen = payloads.decode_event(invoke(ow, emulator.url, action, body, result="true").json(), call)
    environ = seen["environ"]
    assert environ[protocol.KEY_ENV] == payloads.key.hex(), "init parameters must reach the environment"
    assert "PYTHONPATH" not in environ and environ["PYTHONUNBUFFERED"] == "1"
    assert environ["__OW_ACTION_NAME"] == "/guest/dask" and environ["__OW_NAMESPACE"] == "guest"
    assert len(environ["__OW_ACTIVATION_ID"]) == 32 and int(environ["__OW_DEADLINE"]) > 0
    assert "__OW_API_KEY" not in environ, "provide-api-key is false"
    assert seen["listing"] == [] and seen["cwd"] != os.getcwd()
    assert environ["TMPDIR"] != os.environ.get("TMPDIR")


def test_container_output_goes_to_the_emulator_output(ow, emulator, payloads, action) -> None:
    marker = f"hello-{uuid.uuid4().hex}"
    call, body = payloads.event(shout, marker)
    assert payloads.decode_event(invoke(ow, emulator.url, action, body, result="true").json(), call) == marker
    line = poll(lambda: next((s for s in emulator.output().splitlines() if marker in s), None), "the output")
    assert line.startswith("[wsk") and line.endswith(f"] {marker}")


def test_refused_payload_is_an_application_error(ow, emulator, payloads, action) -> None:
    _, body = payloads.event(double, 1, key=protocol.new_key())
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 502
    response = answer.json()["response"]
    assert response["status"] == "application error" and response["success"] is False
    assert response["result"]["error"].startswith(
        "IntegrityError: invocation payload has an invalid signature"
    )


def test_function_exception_comes_back_inside_the_response(ow, emulator, payloads, action) -> None:
    call, body = payloads.event(double, None)
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 200
    with pytest.raises(TypeError, match="unsupported operand"):
        payloads.decode_event(answer.json()["response"]["result"], call)


# -- limits and deaths -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def brief(emulator: Emulator, payloads: Payloads) -> str:
    """An action with a 1 s time limit."""
    session = requests.Session()
    session.trust_env = False
    deploy(session, emulator.url, "brief", payloads.environment, timeout=1000)
    return "brief"


@pytest.fixture(scope="module")
def small(emulator: Emulator, payloads: Payloads) -> str:
    """An action with 128 MB of memory (and a roomy time limit: a slow machine is no memory kill)."""
    session = requests.Session()
    session.trust_env = False
    deploy(session, emulator.url, "small", payloads.environment, memory=128)
    return "small"


def test_timeout_is_an_action_developer_error(ow, emulator, payloads, brief) -> None:
    _, body = payloads.event(time.sleep, 30)
    answer = invoke(ow, emulator.url, brief, body)
    assert answer.status_code == 502
    record = answer.json()
    assert record["response"]["status"] == "action developer error"
    assert record["response"]["result"] == {
        "error": "The action exceeded its time limits of 1000 milliseconds."
    }
    assert {"key": "timeout", "value": True} in record["annotations"]
    assert emulator.log()[-1]["outcome"] == "timeout"
    call, body = payloads.event(double, 4)
    assert payloads.decode_event(invoke(ow, emulator.url, brief, body, result="true").json(), call) == 8


def test_memory_over_the_limit_is_killed(ow, emulator, payloads, small) -> None:
    _, body = payloads.event(hold, 400)
    answer = invoke(ow, emulator.url, small, body)
    assert answer.status_code == 502
    assert answer.json()["response"]["result"] == {
        "error": "The action exhausted its memory and was aborted."
    }
    assert answer.json()["response"]["status"] == "action developer error"
    assert emulator.log()[-1]["outcome"] == "memory"


def test_container_death_is_an_action_developer_error(ow, emulator, payloads, action) -> None:
    _, body = payloads.event(die)
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 502
    error = "The action did not produce a valid response and exited unexpectedly."
    assert answer.json()["response"]["result"] == {"error": error}
    assert emulator.log()[-1]["outcome"] == "died"
    call, body = payloads.event(double, 6)
    assert payloads.decode_event(invoke(ow, emulator.url, action, body, result="true").json(), call) == 12
    assert emulator.log()[-1]["cold"] is True, "a dead container is replaced by a new one"


def test_result_over_1_mb_is_refused(ow, emulator, payloads, action) -> None:
    _, body = payloads.event(big, 2**20, inline_limit=2**22)
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 502
    error = answer.json()["response"]["result"]["error"]
    assert error.startswith("The action produced a response that exceeded the allowed length: ")
    assert "> 1048576 bytes. The truncated response was: " in error


def test_request_over_1_mb_is_413(ow, emulator, action) -> None:
    body = {"dask_faas": "A" * 2**20}
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 413
    length = len(json.dumps(body))
    assert answer.json()["error"] == f"Request larger than allowed: {length} > 1048576 bytes."
    assert invoke(ow, emulator.url, "missing", {}).status_code == 404, "the connection must stay usable"


# -- throttling, blocking window, faults -------------------------------------------------------------


def test_namespace_concurrency_limit_is_429(payloads: Payloads, tmp_path: Path) -> None:
    em = start_emulator(MODULE, "--auth", AUTH, "--concurrency", "1")
    try:
        session = requests.Session()
        session.trust_env = False
        session.auth = tuple(AUTH.split(":"))
        deploy(session, em.url, "one", payloads.environment)
        gate = tmp_path / "gate"
        _, body = payloads.event(wait_for_file, str(gate))
        assert invoke(session, em.url, "one", body, blocking="false").status_code == 202
        answer = invoke(session, em.url, "one", payloads.event(double, 1)[1])
        assert answer.status_code == 429
        assert answer.json()["error"] == "Too many concurrent requests in flight (count: 1, allowed: 1)."
        gate.write_text("open")
        call, body = payloads.event(double, 2)
        answer = poll(
            lambda: (a := invoke(session, em.url, "one", body)).status_code == 200 and a, "a free slot"
        )
        assert payloads.decode_event(answer.json()["response"]["result"], call) == 4
    finally:
        em.stop()


def test_throttle_knob_answers_429_with_retry_after(ow, emulator, payloads, action) -> None:
    emulator.configure(throttle=2, retry_after_s=1.5)
    for _ in range(2):
        answer = invoke(ow, emulator.url, action, payloads.event(double, 1)[1])
        assert answer.status_code == 429 and answer.headers["Retry-After"] == "1.5"
        assert answer.json()["error"].startswith("Too many concurrent requests in flight")
    call, body = payloads.event(double, 3)
    assert payloads.decode_event(invoke(ow, emulator.url, action, body, result="true").json(), call) == 6


def test_blocking_window_passed_then_poll_the_activation(ow, emulator, payloads, action, tmp_path) -> None:
    emulator.configure(blocking_window_s=0.2)
    gate = tmp_path / "gate"
    call, body = payloads.event(wait_for_file, str(gate))
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 202
    aid = answer.json()["activationId"]
    url = f"{emulator.url}/api/v1/namespaces/_/activations/{aid}"
    missing = ow.get(url)
    assert missing.status_code == 404 and missing.json()["error"] == "The requested resource does not exist."
    gate.write_text("open")
    record = poll(lambda: (r := ow.get(url)).status_code == 200 and r.json(), "the activation's end")
    assert record["activationId"] == aid and record["response"]["status"] == "success"
    assert payloads.decode_event(record["response"]["result"], call) == "released"


def test_non_blocking_invoke_answers_202_at_once(ow, emulator, payloads, action) -> None:
    call, body = payloads.event(double, 8)
    answer = invoke(ow, emulator.url, action, body, blocking="false")
    assert answer.status_code == 202
    url = f"{emulator.url}/api/v1/namespaces/_/activations/{answer.json()['activationId']}"
    record = poll(lambda: (r := ow.get(url)).status_code == 200 and r.json(), "the activation's end")
    assert payloads.decode_event(record["response"]["result"], call) == 16


def test_lost_invocation_is_202_then_404_for_ever(ow, emulator, payloads, action, tmp_path) -> None:
    emulator.configure(lose=1, blocking_window_s=0.2)
    answer = invoke(ow, emulator.url, action, payloads.event(record_delivery, str(tmp_path))[1])
    assert answer.status_code == 202
    url = f"{emulator.url}/api/v1/namespaces/_/activations/{answer.json()['activationId']}"
    for _ in range(3):
        assert ow.get(url).status_code == 404
        time.sleep(0.1)
    assert not list(tmp_path.iterdir()), "a lost invocation ran"
    assert [e["outcome"] for e in emulator.log()] == ["lost"]


def test_duplicate_delivery_runs_twice_and_answers_once(ow, emulator, payloads, action, tmp_path) -> None:
    emulator.configure(duplicate=1)
    call, body = payloads.event(record_delivery, str(tmp_path))
    answer = invoke(ow, emulator.url, action, body)
    assert answer.status_code == 200
    pid = payloads.decode_event(answer.json()["response"]["result"], call)
    log = poll(lambda: len(entries := emulator.log()) == 2 and entries, "both deliveries")
    assert sorted(e["outcome"] for e in log) == ["duplicate", "ok"]
    assert len({e["request_id"] for e in log}) == 1 and len({e["instance"] for e in log}) == 2
    deliveries = poll(lambda: len(files := list(tmp_path.iterdir())) == 2 and files, "two deliveries")
    assert pid in {int(f.name.split("-")[0]) for f in deliveries}


def test_kill_knob_kills_the_container_mid_run(ow, emulator, payloads, action) -> None:
    emulator.configure(kill=1, kill_after_s=0.2)
    answer = invoke(ow, emulator.url, action, payloads.event(time.sleep, 30)[1])
    assert answer.status_code == 502
    error = "The action did not produce a valid response and exited unexpectedly."
    assert answer.json()["response"]["result"] == {"error": error}
    assert emulator.log()[-1]["outcome"] == "died"


def test_load_mode_holds_1000_concurrent_invocations(ow, emulator, action) -> None:
    emulator.configure(load_delay_s=0.5)
    n, answers, lock = 1000, [], threading.Lock()
    host, port = emulator.url.removeprefix("http://").split(":")
    headers = {
        "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode(),
        "Content-Type": "application/json",
    }

    def one() -> None:
        connection = http.client.HTTPConnection(host, int(port), timeout=120)
        try:
            path = f"/api/v1/namespaces/_/actions/{action}?blocking=true&result=true"
            connection.request("POST", path, json.dumps({"dask_faas": ""}), headers)
            response = connection.getresponse()
            result = (response.status, json.loads(response.read()))
        finally:
            connection.close()
        with lock:
            answers.append(result)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert len(answers) == n and all(a == (200, {"dask_faas": ""}) for a in answers), answers[:3]
    log = emulator.log()
    assert len(log) == n and {e["outcome"] for e in log} == {"load"}
    events = sorted([(e["received"], 1) for e in log] + [(e["ended"], -1) for e in log])
    overlap = peak = 0
    for _, step in events:
        overlap += step
        peak = max(peak, overlap)
    assert peak > 1, "load mode served the invocations one at a time"


# -- actions, auth, IAM ------------------------------------------------------------------------------


def test_action_crud(ow, emulator, payloads) -> None:
    base = f"{emulator.url}/api/v1/namespaces/_/actions"
    body = {
        "exec": {"kind": "blackbox", "image": "img"},
        "parameters": [{"key": "a", "value": 1, "init": True}],
    }
    created = ow.put(f"{base}/crud", json=body)
    assert created.status_code == 200 and created.json()["limits"]["timeout"] == 60000
    again = ow.put(f"{base}/crud", json=body)
    assert again.status_code == 409 and again.json()["error"] == "resource already exists"
    got = ow.get(f"{base}/crud").json()
    assert got["parameters"] == [{"key": "a", "value": 1, "init": True}] and got["exec"]["image"] == "img"
    assert "crud" in [a["name"] for a in ow.get(base).json()]
    updated = ow.put(f"{base}/crud?overwrite=true", json={"limits": {"timeout": 5000}})
    assert updated.json()["limits"]["timeout"] == 5000 and updated.json()["version"] == "0.0.2"
    too_long = ow.put(f"{base}/crud?overwrite=true", json={"limits": {"timeout": 10**7}})
    assert too_long.status_code == 400
    assert "duration 10000000 milliseconds exceeds allowed threshold of 600000" in too_long.json()["error"]
    assert ow.delete(f"{base}/crud").status_code == 200
    missing = ow.get(f"{base}/crud")
    assert missing.status_code == 404 and missing.json()["error"] == "The requested resource does not exist."
    assert missing.json()["code"]
    assert invoke(ow, emulator.url, "crud", {}).status_code == 404


def test_update_replaces_the_warm_containers(ow, emulator, payloads) -> None:
    deploy(ow, emulator.url, "updated", payloads.environment)
    call, body = payloads.event(getpid)
    first = payloads.decode_event(invoke(ow, emulator.url, "updated", body, result="true").json(), call)
    deploy(ow, emulator.url, "updated", payloads.environment)
    call, body = payloads.event(getpid)
    second = payloads.decode_event(invoke(ow, emulator.url, "updated", body, result="true").json(), call)
    assert first != second and [e["cold"] for e in emulator.log()] == [True, True]
    poll(lambda: first not in container_pids(), "the old container's end")


def test_wrong_or_missing_credentials_are_401(ow, anonymous, emulator, action) -> None:
    url = f"{emulator.url}/api/v1/namespaces/_/actions/{action}"
    wrong = anonymous.post(url, json={}, auth=(AUTH.split(":")[0], "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "The supplied authentication is invalid"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    missing = anonymous.post(url, json={})
    assert missing.status_code == 401
    assert (
        missing.json()["error"]
        == "The resource requires authentication, which was not supplied with the request"
    )
    assert anonymous.post(url, json={}, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert emulator.log() == [], "nothing ran"


def test_iam_token_exchange_then_bearer(ow, anonymous, emulator, payloads, action) -> None:
    iam = f"{emulator.url}/identity/token"
    form = {"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": IAM_KEY}
    token = anonymous.post(iam, data=form, headers={"Accept": "application/json"})
    assert token.status_code == 200, token.text
    issued = token.json()
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == 3600
    assert issued["expiration"] > time.time()
    bearer = {"Authorization": f"Bearer {issued['access_token']}"}
    call, body = payloads.event(double, 7)
    for _ in range(2):
        answer = anonymous.post(
            f"{emulator.url}/api/v1/namespaces/_/actions/{action}?blocking=true&result=true",
            json=body,
            headers=bearer,
        )
        assert answer.status_code == 200, answer.text
        assert payloads.decode_event(answer.json(), call) == 14
    wrong = anonymous.post(iam, data={**form, "apikey": "nope"})
    assert wrong.status_code == 400 and wrong.json()["errorCode"] == "BXNIM0415E"
    counters = anonymous.get(f"{emulator.url}/_emulator/counters").json()
    assert counters["token_requests"] == 2 and counters["tokens_issued"] == 1
    emulator.configure(token_ttl_s=0)
    expired = anonymous.post(iam, data=form).json()
    assert expired["expires_in"] == 0
    url = f"{emulator.url}/api/v1/namespaces/_/actions/{action}"
    answer = anonymous.post(url, json=body, headers={"Authorization": f"Bearer {expired['access_token']}"})
    assert answer.status_code == 401


# -- the action container protocol, directly ---------------------------------------------------------


def test_action_container_protocol(payloads: Payloads, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    work = tmp_path / "work"
    work.mkdir()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PORT": str(port),
        "__OW_LISTEN_HOST": "127.0.0.1",
    }
    log = open(tmp_path / "output.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "function_runtime.openwhisk"],
        env=env,
        cwd=work,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    session = requests.Session()
    session.trust_env = False
    try:

        def up() -> bool:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return True
            except OSError:
                assert proc.poll() is None, (tmp_path / "output.log").read_text()
                return False

        poll(up, "the action proxy")
        init = {"value": {"name": "dask", "main": "main", "binary": False, "env": payloads.environment}}
        first = session.post(f"{url}/init", json=init)
        assert (first.status_code, first.json()) == (200, {"ok": True})
        second = session.post(f"{url}/init", json=init)
        assert second.status_code == 403
        assert second.json() == {"error": "Cannot initialize the action more than once."}
        call, value = payloads.event(surroundings)
        run = session.post(f"{url}/run", json={"value": value, "activation_id": "a1b2", "deadline": "123"})
        assert run.status_code == 200
        environ = payloads.decode_event(run.json(), call)["environ"]
        assert environ["__OW_ACTIVATION_ID"] == "a1b2" and environ["__OW_DEADLINE"] == "123"
        _, refused = payloads.event(double, 1, key=protocol.new_key())
        answer = session.post(f"{url}/run", json={"value": refused})
        assert answer.status_code == 200 and answer.json()["error"].startswith("IntegrityError: ")
        bad = session.post(f"{url}/run", json={"value": {"something": "else"}})
        assert bad.status_code == 502 and bad.json()["error"].startswith("ValueError: ")
        sentinel = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"
        poll(lambda: (tmp_path / "output.log").read_text().count(sentinel) >= 10, "the log sentinels")
    finally:
        session.close()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
