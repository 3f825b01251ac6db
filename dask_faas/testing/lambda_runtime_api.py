"""The execution side of the Lambda emulator: function instances and the Lambda Runtime API.

An :class:`Instance` starts the function's image command (``python -m awslambdaric
function_runtime.aws_lambda.handler`` for the project's image) as its own process group, in a fresh
empty working directory with a clean environment, and serves it the Lambda Runtime API on its own
127.0.0.1 port (``AWS_LAMBDA_RUNTIME_API``), as AWS's runtime interface emulator does:

``GET /2018-06-01/runtime/invocation/next``
    Blocks until an invocation is handed to the instance; 200 with the event as the body and the
    ``Lambda-Runtime-Aws-Request-Id``, ``Lambda-Runtime-Deadline-Ms``,
    ``Lambda-Runtime-Invoked-Function-Arn`` and ``Lambda-Runtime-Trace-Id`` headers.
``POST /2018-06-01/runtime/invocation/{id}/response``
    202 ``{"status": "OK"}``; 400 ``InvalidRequestID`` for another id; 413 ``RequestEntityTooLarge``
    past 6291556 bytes (the caller then gets ``Function.ResponseSizeTooLarge``).
``POST /2018-06-01/runtime/invocation/{id}/error`` and ``POST /2018-06-01/runtime/init/error``
    202; the posted error body becomes the caller's payload, with ``X-Amz-Function-Error: Unhandled``.

:meth:`Instance.run` delivers one invocation and enforces the function's timeout. The
:class:`Fleet` holds every instance: idle ones per function revision (warm reuse), the memory watch
(each busy instance's process-group resident memory, from /proc every 20 ms:
:class:`~dask_faas.testing.instances.MemorySampler`) and the shutdown. What
an instance prints goes to the emulator's own output, each line prefixed with the instance id.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any

from .instances import InstanceProcess, MemorySampler, Sandbox, write_output
from .servers import LoopbackHandler, read_body

__all__ = ["MAX_RESPONSE_BYTES", "Delivery", "Fleet", "Instance", "Result"]

#: Largest response a function may return (Lambda's synchronous limit, as its error message states).
MAX_RESPONSE_BYTES = 6291556
#: Lambda's init phase limit; a slower init is retried within the invocation's own timeout.
INIT_TIMEOUT_S = 10.0
LOG_TAIL_BYTES = 4096

_ROUTE = re.compile(r"/2018-06-01/runtime/(?:invocation/(?P<id>[^/]+)/(?P<kind>response|error)|init/error)")


@dataclass(frozen=True)
class Result:
    """How one delivery ended.

    Parameters
    ----------
    outcome : str
        ``ok``, ``error`` (the runtime or the platform reported an error), ``timeout``, ``memory``
        or ``died``.
    payload : bytes
        The Invoke answer's body.
    function_error : bool
        Whether Invoke sends ``X-Amz-Function-Error: Unhandled``.
    content_type : str
        The payload's content type.
    """

    outcome: str
    payload: bytes
    function_error: bool = False
    content_type: str = "application/json"


def platform_error(outcome: str, error_type: str, message: str) -> Result:
    """A :class:`Result` for an error that Lambda itself reports (timeout, memory, death)."""
    payload = json.dumps({"errorMessage": message, "errorType": error_type}).encode()
    return Result(outcome, payload, function_error=True)


class Delivery:
    """One delivery of an invocation to one instance.

    Parameters
    ----------
    request_id : str
        The invocation's request id (two deliveries of a duplicated invocation share it).
    event : bytes
        The Invoke request's body.
    function_arn : str
        The ARN the caller invoked (``Lambda-Runtime-Invoked-Function-Arn``).
    timeout_s : float
        The function's timeout.
    """

    def __init__(self, request_id: str, event: bytes, function_arn: str, timeout_s: float) -> None:
        self.request_id, self.event, self.function_arn = request_id, event, function_arn
        self.timeout_s = timeout_s
        self.trace_id = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Sampled=0"
        self.started: float | None = None  # time.time() when the runtime took the event
        self.started_mono: float | None = None
        self.ended: float | None = None
        self.result: Result | None = None
        self.max_rss = 0
        self.log: list[str] = []  # the instance's output during the delivery
        self.cond = threading.Condition()

    @property
    def label(self) -> str:
        """``RequestId: <id> Error:``, how Lambda's own error messages start."""
        return f"RequestId: {self.request_id} Error:"

    def begin(self) -> dict[str, str]:
        """Mark the delivery started; the headers of the ``/next`` answer."""
        with self.cond:
            self.started, self.started_mono = time.time(), time.monotonic()
            self.cond.notify_all()
        return {
            "Lambda-Runtime-Aws-Request-Id": self.request_id,
            "Lambda-Runtime-Trace-Id": self.trace_id,
            "Lambda-Runtime-Invoked-Function-Arn": self.function_arn,
            "Lambda-Runtime-Deadline-Ms": str(int((self.started + self.timeout_s) * 1000)),
            "Content-Type": "application/json",
        }

    def settle(self, result: Result) -> bool:
        """Record how the delivery ended; the first settlement wins. Returns whether this one did."""
        with self.cond:
            if self.result is not None:
                return False
            self.result, self.ended = result, time.time()
            self.cond.notify_all()
            return True

    def log_tail(self) -> str:
        """The last 4 KB of the delivery's log (Invoke's ``LogType: Tail``)."""
        return "\n".join(self.log).encode()[-LOG_TAIL_BYTES:].decode(errors="ignore")


class Instance:
    """A function instance: its process (own process group) and its Runtime API server.

    Parameters
    ----------
    instance_id : str
        Names the instance in the log and its output lines.
    command : list of str
        The image's entry point and command.
    environment : dict
        The platform's and the function's variables; the instance adds ``AWS_LAMBDA_RUNTIME_API``
        and a fresh ``HOME``, ``TMPDIR`` and ``LAMBDA_TASK_ROOT`` (its working directory).
    on_exit : callable, optional
        Called with the instance once its process has exited and been reaped.

    Raises
    ------
    OSError
        If the command cannot be started.
    """

    def __init__(
        self,
        instance_id: str,
        command: list[str],
        environment: dict[str, str],
        on_exit: Callable[[Instance], None] | None = None,
    ) -> None:
        self.id = instance_id
        self._cond = threading.Condition()
        self._pending: Delivery | None = None  # waiting to be taken by /next
        self._current: Delivery | None = None  # taken, not answered yet
        self._ready = False  # the runtime has asked for its first event (init is done)
        self._served = 0
        self.alive, self.reusable = True, True
        self.exit_status: int | None = None
        self._on_exit = on_exit
        sandbox = Sandbox(f"lambda-{instance_id}-", work="task")
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _RuntimeApiHandler)
        self._server.daemon_threads = True
        self._server.instance = self  # type: ignore[attr-defined]
        port = self._server.server_address[1]
        env = {**environment, "HOME": sandbox.home, "TMPDIR": sandbox.tmp, "LAMBDA_TASK_ROOT": sandbox.work}
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{port}"
        try:
            self._proc = InstanceProcess(
                command, env, sandbox, prefix=f"[{instance_id}] ", on_line=self._log_line
            )
        except OSError:
            self._server.server_close()
            raise
        self.process = self._proc.process
        self.pid = self.process.pid
        self._started = time.monotonic()
        for target in (self._server.serve_forever, self._wait):
            threading.Thread(target=target, name=f"{instance_id}-{target.__name__}", daemon=True).start()
        _write_line(f"[emulator] started instance {instance_id} (pid {self.pid}, runtime API port {port})")

    # -- the emulator's side -------------------------------------------------------------------

    def run(self, delivery: Delivery, memory_mb: int, kill_after_s: float | None = None) -> Result:
        """Deliver ``delivery``; wait until it is answered, times out, or the instance dies.

        ``kill_after_s`` (the emulator's ``kill`` knob) SIGKILLs the process group that long after
        the runtime took the event. The memory limit is the :class:`Fleet`'s to enforce.
        """
        with self._cond:
            cold, self._served = self._served == 0, self._served + 1
            if self.alive:
                self._pending = delivery
                self._cond.notify_all()
            else:
                delivery.settle(self._death(delivery))
        init_deadline = time.monotonic() + INIT_TIMEOUT_S + delivery.timeout_s
        while (result := self._wait_for(delivery, init_deadline, kill_after_s)) is None:
            started, now = delivery.started_mono, time.monotonic()
            if started is not None and kill_after_s is not None and now >= started + kill_after_s:
                kill_after_s = None
                _write_line(f"[emulator] kill knob: SIGKILL to instance {self.id}")
                self.kill()
            else:
                message = f"{delivery.label} Task timed out after {delivery.timeout_s:.2f} seconds"
                self.fail(delivery, platform_error("timeout", "Sandbox.Timedout", message))
        self._report(delivery, memory_mb, cold)
        return result

    @staticmethod
    def _wait_for(delivery: Delivery, init_deadline: float, kill_after_s: float | None) -> Result | None:
        """The delivery's result, or ``None`` once its next deadline has passed."""
        with delivery.cond:
            while delivery.result is None:
                started = delivery.started_mono
                if started is None:
                    deadline = init_deadline
                elif kill_after_s is None:
                    deadline = started + delivery.timeout_s
                else:
                    deadline = started + min(delivery.timeout_s, kill_after_s)
                wait = deadline - time.monotonic()
                if wait <= 0:
                    return None
                delivery.cond.wait(wait)
            return delivery.result

    def _report(self, delivery: Delivery, memory_mb: int, cold: bool) -> None:
        assert delivery.ended is not None
        duration = 1000 * (delivery.ended - (delivery.started or delivery.ended))
        lines = [f"END RequestId: {delivery.request_id}"]
        report = f"REPORT RequestId: {delivery.request_id}\tDuration: {duration:.2f} ms"
        report += f"\tMemory Size: {memory_mb} MB"
        if delivery.max_rss:
            report += f"\tMax Memory Used: {delivery.max_rss // 2**20} MB"
        if cold and delivery.started_mono is not None:
            report += f"\tInit Duration: {1000 * (delivery.started_mono - self._started):.2f} ms"
        result = delivery.result
        if result is not None and result.outcome == "timeout":
            report += "\tStatus: timeout"
        elif result is not None and result.outcome in ("memory", "died"):
            report += f"\tStatus: error\tError Type: {json.loads(result.payload)['errorType']}"
        lines.append(report)
        for line in lines:
            delivery.log.append(line)
            _write_line(f"[{self.id}] {line}")

    def fail(self, delivery: Delivery, result: Result) -> None:
        """End ``delivery`` with ``result`` (a platform error), then kill the instance."""
        delivery.settle(result)
        self.kill()

    @property
    def running(self) -> Delivery | None:
        """The delivery the instance is busy with, if any."""
        with self._cond:
            return self._current or self._pending

    def kill(self) -> None:
        """SIGKILL the instance's process group (its runtime, the function and their children)."""
        self.reusable = False
        if self.alive:
            self._proc.kill()

    def join(self, timeout_s: float) -> bool:
        """Wait until the process has been reaped; return whether it has."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    # -- the Runtime API's side ------------------------------------------------------------------

    def next_event(self) -> tuple[int, dict[str, str], bytes]:
        """``GET /runtime/invocation/next``: wait for an invocation and hand it out."""
        with self._cond:
            if self._current is not None:
                status, body = _forbidden("InvocationResponse not sent", "Ready")
                return status, {"Content-Type": "application/json"}, body
            self._ready = True
            while self._pending is None and self.alive:
                self._cond.wait()
            if not self.alive:
                return 410, {}, b""
            delivery, self._pending = self._pending, None
            self._current = delivery
        headers = delivery.begin()
        start = f"START RequestId: {delivery.request_id} Version: $LATEST"
        delivery.log.append(start)
        _write_line(f"[{self.id}] {start}")
        return 200, headers, delivery.event

    def post(self, request_id: str | None, kind: str, headers: Any, body: bytes | None) -> tuple[int, bytes]:
        """``POST .../invocation/{id}/response`` or ``.../{id}/error`` or ``/runtime/init/error``."""
        with self._cond:
            if kind == "init":
                if self._ready:
                    return _forbidden("Ready", "InitError")
                delivery, self._pending = self._pending, None
                self.reusable = False
            else:
                delivery = self._current
                if delivery is None or delivery.request_id != request_id:
                    answer = {"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"}
                    return 400, _json_line(answer)
                self._current = None
            if body is None:  # too large: awslambdaric then fails and exits, as on Lambda
                self.reusable = False
        if body is None:
            limit = f"maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
            if delivery is not None:
                message = f"Response payload size exceeded {limit}"
                delivery.settle(platform_error("error", "Function.ResponseSizeTooLarge", message))
            return 413, _json_line(
                {"errorMessage": f"Exceeded {limit}", "errorType": "RequestEntityTooLarge"}
            )
        if delivery is not None and kind == "response":
            delivery.settle(Result("ok", body, False, headers.get("Content-Type") or "application/json"))
        elif delivery is not None:
            delivery.settle(Result("error", body, True))
        return 202, _json_line({"status": "OK"})

    # -- process lifecycle -----------------------------------------------------------------------

    def _log_line(self, raw: bytes) -> None:
        delivery = self.running
        if delivery is not None:
            delivery.log.append(raw.decode(errors="replace").rstrip("\n"))

    def _wait(self) -> None:
        status = self.process.wait()
        self._proc.kill()  # what the function left running in the group
        with self._cond:
            self.exit_status, self.alive, self.reusable = status, False, False
            deliveries = [d for d in (self._current, self._pending) if d is not None]
            self._current = self._pending = None
            self._cond.notify_all()
        for delivery in deliveries:
            delivery.settle(self._death(delivery))
        _write_line(f"[emulator] instance {self.id} exited ({_exit_text(status)})")
        self._server.shutdown()
        self._server.server_close()
        self._proc.sandbox.remove()
        if self._on_exit is not None:
            self._on_exit(self)

    def _death(self, delivery: Delivery) -> Result:
        message = f"{delivery.label} Runtime exited with error: {_exit_text(self.exit_status)}"
        return platform_error("died", "Runtime.ExitError", message)


class Fleet:
    """Every instance of the emulator: idle ones per function revision, the memory watch, shutdown."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[str, list[Instance]] = {}  # revision -> idle instances, most recent last
        self._all: set[Instance] = set()
        self._busy: dict[Instance, tuple[Delivery, int]] = {}  # -> (delivery, memory limit in bytes)
        self._ids = itertools.count(1)
        self.closing = False
        self._sampler = MemorySampler(self._watched, self._check_memory)

    def take(
        self, revision: str, name: str, command: list[str], environment: dict[str, str]
    ) -> tuple[Instance, bool]:
        """An idle instance of ``revision`` (warm), else a new one (cold); and whether it is cold.

        Raises
        ------
        OSError
            If a new instance's command cannot be started.
        """
        with self._lock:
            idle = self._idle.get(revision, [])
            while idle and not idle[-1].reusable:
                idle.pop()
            if idle:
                return idle.pop(), False
        instance = Instance(f"{name}-{next(self._ids)}", command, environment, on_exit=self._forget)
        with self._lock:
            self._all.add(instance)
            if self.closing:
                instance.kill()
        return instance, True

    def run(
        self, instance: Instance, delivery: Delivery, memory_mb: int, kill_after_s: float | None = None
    ) -> Result:
        """:meth:`Instance.run`, its process group's memory watched; give the instance back after."""
        with self._lock:
            self._busy[instance] = (delivery, memory_mb * 2**20)
        self._sampler.wake()
        try:
            return instance.run(delivery, memory_mb, kill_after_s)
        finally:
            with self._lock:
                self._busy.pop(instance, None)

    def release(self, revision: str, instance: Instance, keep: bool) -> None:
        """Give back a taken instance: idle for ``revision`` if ``keep`` (and it can), else killed."""
        with self._lock:
            keep = keep and instance.reusable and not self.closing
            if keep:
                self._idle.setdefault(revision, []).append(instance)
        if not keep:
            instance.kill()

    def retire(self, revision: str) -> None:
        """Kill the idle instances of ``revision`` (an updated or deleted function's)."""
        with self._lock:
            retired = self._idle.pop(revision, [])
        for instance in retired:
            instance.kill()

    def close(self, grace_s: float = 5.0) -> None:
        """Kill every instance's process group and reap them."""
        with self._lock:
            self.closing = True
            instances = list(self._all)
        self._sampler.wake()
        for instance in instances:
            instance.kill()
        deadline = time.monotonic() + grace_s
        for instance in instances:
            instance.join(max(0.0, deadline - time.monotonic()))

    def _forget(self, instance: Instance) -> None:
        with self._lock:
            self._all.discard(instance)
            for idle in self._idle.values():
                if instance in idle:
                    idle.remove(instance)

    def _watched(self) -> dict[int, tuple[Instance, Delivery, int]] | None:
        """The busy instances by process group (``None`` once closing: the sampler stops)."""
        with self._lock:
            if self.closing:
                return None
            return {i.pid: (i, delivery, limit) for i, (delivery, limit) in self._busy.items()}

    @staticmethod
    def _check_memory(busy: dict[int, tuple[Instance, Delivery, int]], usage: dict[int, int]) -> None:
        """Kill a busy instance whose process group's resident memory passes its function's size."""
        for pid, (instance, delivery, limit) in busy.items():
            rss = usage.get(pid, 0)
            delivery.max_rss = max(delivery.max_rss, rss)
            if rss > limit:
                message = f"{delivery.label} Runtime exited with error: signal: killed"
                instance.fail(delivery, platform_error("memory", "Runtime.OutOfMemory", message))


def _exit_text(status: int | None) -> str:
    """Lambda's (Go's) wording: ``signal: killed``, ``exit status 1``."""
    if status is None or status >= 0:
        return "signal: killed" if status is None else f"exit status {status}"
    try:
        name = (signal.strsignal(-status) or "").lower()
    except ValueError:
        name = ""
    return f"signal: {name or -status}"


def _forbidden(state: str, target: str) -> tuple[int, bytes]:
    """RAPID's answer to a call that its state machine does not allow."""
    message = f"State transition from {state} to {target} failed for runtime. Error: not allowed"
    return 403, _json_line({"errorMessage": message, "errorType": "InvalidStateTransition"})


def _json_line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"  # as Go's json.Encoder writes it


def _write_line(text: str) -> None:
    write_output(text + "\n")


class _RuntimeApiHandler(LoopbackHandler):
    wbufsize = 1 << 16  # headers and a small body leave in one segment (flushed after each request)

    def do_GET(self) -> None:
        instance: Instance = self.server.instance  # type: ignore[attr-defined]
        if self.path.split("?")[0] != "/2018-06-01/runtime/invocation/next":
            self._send(404, {}, b"404 page not found\n")
            return
        status, headers, body = instance.next_event()
        if status == 410:  # the instance is gone: no answer
            self.close_connection = True
            return
        self._send(status, headers, body)

    def do_POST(self) -> None:
        instance: Instance = self.server.instance  # type: ignore[attr-defined]
        route = _ROUTE.fullmatch(self.path.split("?")[0])
        body = read_body(self, MAX_RESPONSE_BYTES)
        if route is None:
            self._send(404, {}, b"404 page not found\n")
            return
        status, answer = instance.post(route["id"], route["kind"] or "init", self.headers, body)
        self._send(status, {"Content-Type": "application/json"}, answer)

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_answer(status, headers.items(), body)
