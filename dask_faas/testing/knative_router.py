"""A stand-in for Knative's activator and the Kubernetes Service, in front of real runtime instances.

Run as ``python -m dask_faas.testing.knative_router --port-file F --env-file ENV.json [--instances 2]
[--instance-concurrency 1] [--timeout-s 300] [--memory-mb 1024]`` (see :mod:`dask_faas.testing.servers`).
It starts ``--instances`` processes of ``python -m function_runtime.knative`` (Knative's ``minScale``),
each in its own process group, on a free loopback ``$PORT``, with a clean environment: ``PATH``,
``HOME`` and ``TMPDIR`` (fresh directories), ``LANG``, ``PYTHONUNBUFFERED=1``, Knative's ``K_SERVICE``,
``K_CONFIGURATION`` and ``K_REVISION``, the service's variables from ``ENV.json`` and
``DASK_FAAS_INSTANCE_CONCURRENCY`` (the ``containerConcurrency``); cwd is a fresh empty directory.
Their output is copied, line by line and prefixed, to this process's output.

Every request outside ``/_emulator/`` is forwarded, ``Authorization`` untouched (the instances check
the token), round robin to an instance with a free slot; when every slot is taken it waits, as the
activator queues. Failures are answered as Knative answers them:

- the instance dies mid-request (killed, crashed, or OOMKilled past ``--memory-mb``, sampled from
  ``/proc`` every 20 ms over its process group) -> 502 with the reverse proxy's error text. A
  deployed service also tells the runtime its memory (``DASK_FAAS_MEMORY_MB`` in ``ENV.json``, as
  ``dask-faas runtime deploy`` writes it): the runtime then enforces it on itself and answers a call
  past it with a FunctionMemoryError, so this kill remains for what the runtime does not count;
- the request runs past ``--timeout-s`` (the revision's ``timeoutSeconds``) -> 504
  ``activator request timeout``, and the instance is killed;

and a dead instance is started again. Knobs (``POST /_emulator/config``, see :data:`KNOBS` and
docs/platforms-wire.md) inject throttling (429, or ``throttle_status``), lost and duplicated
deliveries, kills, latency, and a load mode answered by the router alone. ``GET /_emulator/log``
holds one record per delivery, logged when it starts (``ended`` and ``outcome`` are null until it
ends; ``instance`` is the instance's pid); of a duplicated request, the delivery that ends second is
the ``duplicate``, and the answer leaves once both have started. SIGTERM stops every instance's
process group, then the router.
"""

from __future__ import annotations

import argparse
import http.client
import json
import queue
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

from .instances import InstanceProcess, MemorySampler, Sandbox, free_port, write_output
from .servers import KNOBS as SHARED_KNOBS
from .servers import Controls, LoopbackHandler, LoopbackServer, publish_url, read_body

__all__ = ["KNOBS", "Instance", "Router", "main"]

#: Fault and load knobs and their defaults (docs/platforms-wire.md).
KNOBS: dict[str, Any] = {
    **SHARED_KNOBS,
    "throttle_status": 429,  # or 503, as an overloaded activator answers
}
_THROTTLE_TEXT = {429: "Too Many Requests", 503: "activator overload"}
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length", "date", "server",
}  # fmt: skip
#: An HTTP answer: status, headers, body.
Answer = tuple[int, list[tuple[str, str]], bytes]
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Instance:
    """One process of ``python -m function_runtime.knative`` (one pod of the revision).

    Parameters
    ----------
    name : str
        Its slot, e.g. ``instance-0``.
    environment : dict
        The service's environment variables (on top of the clean base).
    concurrency : int
        Its ``containerConcurrency``.
    """

    def __init__(self, name: str, environment: dict[str, str], concurrency: int) -> None:
        self.name, self.port = name, free_port()
        variables = {
            "K_SERVICE": "dask-faas",
            "K_CONFIGURATION": "dask-faas",
            "K_REVISION": "dask-faas-00001",
            **environment,
            "PORT": str(self.port),
            "DASK_FAAS_LISTEN_HOST": "127.0.0.1",
            "DASK_FAAS_INSTANCE_CONCURRENCY": str(concurrency),
        }
        self._proc = InstanceProcess(
            [sys.executable, "-m", "function_runtime.knative"],
            variables,
            Sandbox(f"dask-faas-knative-{name}-"),
            prefix=f"[{name} pid {{pid}}] ",
        )
        self.process, self.pid = self._proc.process, self._proc.pid
        self.busy = self.deliveries = 0
        self.ready = self.replaced = False
        self.cause: str | None = None  # why the router killed it ("timeout", "memory", "died")
        self.cause_for: str | None = None  # the request it was killed for (None: all of them)
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.cause is None and self.process.poll() is None

    def wait_ready(self, timeout_s: float, stopping: threading.Event) -> bool:
        """Wait until ``/health/readiness`` answers 200; False if it exited or timed out."""
        deadline = time.monotonic() + timeout_s
        while self.alive and not stopping.is_set() and time.monotonic() < deadline:
            try:
                with _OPENER.open(f"http://127.0.0.1:{self.port}/health/readiness", timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except OSError:
                pass
            stopping.wait(0.05)
        return False

    def kill(self, cause: str, request_id: str | None = None) -> None:
        """SIGKILL its process group, remembering why (the first cause wins)."""
        with self._lock:
            if self.cause is None:
                self.cause, self.cause_for = cause, request_id
        self._proc.kill()

    def outcome_for(self, request_id: str) -> str | None:
        """After a broken exchange: why it died (``None`` if it is still running after 2 s)."""
        try:
            self.process.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return None
        if self.cause is None or self.cause_for not in (None, request_id):
            return "died"
        return self.cause

    def stop(self, grace_s: float) -> None:
        """SIGTERM its process group (func_python stops gracefully), SIGKILL after ``grace_s``."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self._proc.signal_group(sig) or self._proc.wait(grace_s):
                break
        self.process.poll()
        self.cleanup()

    def cleanup(self) -> None:
        self._proc.sandbox.remove()


class Router:
    """The instances, their slots, the knobs and the delivery log.

    Parameters
    ----------
    environment : dict
        The service's environment variables.
    instances, concurrency : int
        How many instances, and how many requests each takes at once.
    timeout_s : float
        Knative's ``timeoutSeconds``.
    memory_mb : int
        The container's memory limit.
    """

    def __init__(
        self, environment: dict[str, str], instances: int, concurrency: int, timeout_s: float, memory_mb: int
    ) -> None:
        self.environment, self.concurrency = environment, concurrency
        self.timeout_s, self.memory_bytes = timeout_s, memory_mb * 2**20
        self.controls = Controls(KNOBS)  # knobs and the delivery log
        self.slots_changed = threading.Condition()  # slots, busy counts, readiness
        self.stopping = threading.Event()
        self.slots = [self._spawn(i) for i in range(instances)]
        self._next = 0

    def _spawn(self, index: int) -> Instance:
        return Instance(f"instance-{index}", self.environment, self.concurrency)

    def start(self, timeout_s: float = 60.0) -> None:
        """Wait until every instance is ready, then watch them (memory, deaths)."""
        for instance in self.slots:
            if not instance.wait_ready(timeout_s, self.stopping):
                raise RuntimeError(f"{instance.name} (pid {instance.pid}) did not become ready")
            instance.ready = True
        MemorySampler(self._watched, self._check, name="watch")

    def stop(self) -> None:
        """Stop every instance (process groups) and take no more requests."""
        self.stopping.set()
        with self.slots_changed:
            instances = list(self.slots)
            self.slots_changed.notify_all()
        threads = [threading.Thread(target=i.stop, args=(5.0,)) for i in instances]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    # -- instances ----------------------------------------------------------------------------

    def _watched(self) -> dict[int, tuple[int, Instance]] | None:
        """Every slot's instance by process group (``None`` once stopping)."""
        if self.stopping.is_set():
            return None
        return {instance.pid: (index, instance) for index, instance in enumerate(list(self.slots))}

    def _check(self, watched: dict[int, tuple[int, Instance]], usage: dict[int, int]) -> None:
        """Start a dead instance again; kill one past the memory limit (OOMKilled)."""
        for pid, (index, instance) in watched.items():
            if instance.process.poll() is not None:
                if not instance.replaced:
                    instance.replaced = True
                    threading.Thread(target=self._restart, args=(index, instance), daemon=True).start()
            elif self.memory_bytes and usage.get(pid, 0) > self.memory_bytes:
                instance.kill("memory")  # OOMKilled

    def _restart(self, index: int, dead: Instance) -> None:
        dead.cleanup()
        if not dead.ready:  # it never started: no crash loop at full speed
            self.stopping.wait(1.0)
        with self.slots_changed:
            if self.stopping.is_set():
                return
            instance = self.slots[index] = self._spawn(index)
        if instance.wait_ready(60.0, self.stopping):
            with self.slots_changed:
                instance.ready = True
                self.slots_changed.notify_all()
        else:
            instance.kill("died")  # the watcher starts another

    def _acquire(self, gone: Any, exclude: Instance | None = None) -> tuple[Instance, bool] | None:
        """A free slot, round robin (waiting while all are busy); None if ``gone()`` or stopping."""
        with self.slots_changed:
            while not self.stopping.is_set():
                count = len(self.slots)
                for k in range(count):
                    index = (self._next + k) % count
                    instance = self.slots[index]
                    usable = instance.ready and instance.alive and instance.busy < self.concurrency
                    if usable and (instance is not exclude or count == 1):
                        instance.busy += 1
                        instance.deliveries += 1
                        self._next = index + 1
                        return instance, instance.deliveries == 1
                if gone():
                    return None
                self.slots_changed.wait(0.1)
        return None

    def _release(self, instance: Instance) -> None:
        with self.slots_changed:
            instance.busy -= 1
            self.slots_changed.notify_all()

    # -- one request --------------------------------------------------------------------------

    def invoke(self, request: Request) -> Answer | None:
        """The answer to one forwarded request: (status, headers, body), or None to hang up."""
        knobs = self.controls.configure({})
        if self.controls.take("throttle"):
            status, after = int(knobs["throttle_status"]), knobs["retry_after_s"]
            headers = [] if after is None else [("Retry-After", f"{after:g}")]
            return _text(status, _THROTTLE_TEXT.get(status, "Too Many Requests"), headers)
        if knobs["load_delay_s"] is not None:
            self.stopping.wait(float(knobs["load_delay_s"]))
            self.controls.record(request.fields(None, False, None), ended=time.time(), outcome="load")
            return 200, [("Content-Type", "application/octet-stream")], b""
        if self.controls.take("lose"):
            record = self.controls.record(request.fields(None, False, None), outcome="lost")
            while not self.stopping.is_set() and not request.gone():
                self.stopping.wait(0.1)
            self.controls.update(record, ended=time.time())
            return None
        if knobs["latency_s"]:
            self.stopping.wait(float(knobs["latency_s"]))
        kill_after = float(knobs["kill_after_s"]) if self.controls.take("kill") else None
        if self.controls.take("duplicate"):
            return self._deliver_twice(request, kill_after)
        slot = self._acquire(request.gone)
        return None if slot is None else self._deliver(request, slot, kill_after)

    def _deliver_twice(self, request: Request, kill_after: float | None) -> Answer | None:
        """Deliver to two instances; answer with the first to end, once both have started."""
        first = self._acquire(request.gone)
        if first is None:
            return None
        answers: queue.SimpleQueue[Answer | None] = queue.SimpleQueue()
        lock, ended, second_started = threading.Lock(), [], threading.Event()

        def run(primary: bool) -> None:
            won: list[bool] = []

            def label(outcome: str) -> str:
                with lock:
                    won.append(not ended)
                    ended.append(outcome)
                return outcome if won[0] else "duplicate"

            answer = None
            try:
                slot = first if primary else self._acquire(self.stopping.is_set, exclude=first[0])
                if slot is not None:
                    started = None if primary else second_started
                    answer = self._deliver(request, slot, kill_after if primary else None, label, started)
            finally:
                if not primary:
                    second_started.set()
                if (won and won[0]) or (primary and not won):
                    answers.put(answer)

        for primary in (True, False):
            threading.Thread(target=run, args=(primary,), daemon=True).start()
        answer = answers.get()
        second_started.wait()
        return answer

    def _deliver(
        self,
        request: Request,
        slot: tuple[Instance, bool],
        kill_after: float | None,
        label: Callable[[str], str] | None = None,
        started: threading.Event | None = None,
    ) -> Answer:
        """Forward to the instance of ``slot``, logging the delivery from its start."""
        instance, cold = slot
        record = self.controls.record(request.fields(instance.pid, cold, time.time()))
        if started is not None:
            started.set()
        timers = [threading.Timer(self.timeout_s, instance.kill, ("timeout", request.id))]
        if kill_after is not None:
            timers.append(threading.Timer(kill_after, instance.kill, ("died", request.id)))
        for timer in timers:
            timer.daemon = True
            timer.start()
        conn = http.client.HTTPConnection("127.0.0.1", instance.port, timeout=self.timeout_s + 30)
        try:
            conn.connect()  # headers and body go in two writes: no Nagle delay between them
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.request(request.method, request.path, request.body, dict(request.headers))
            response = conn.getresponse()
            body = response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            answer, outcome = (response.status, headers, body), "ok" if response.status < 400 else "error"
        except (OSError, http.client.HTTPException) as exc:
            outcome = instance.outcome_for(request.id) or "error"
            if outcome == "timeout":
                answer = _text(504, "activator request timeout")
            else:  # Go's reverse proxy: http.Error(w, err.Error(), 502)
                reset = isinstance(exc, ConnectionResetError)
                where = f"read tcp 127.0.0.1->127.0.0.1:{instance.port}: read: connection reset by peer"
                answer = _text(502, where if reset else "EOF")
        finally:
            for timer in timers:
                timer.cancel()
            conn.close()
            self._release(instance)
        self.controls.update(record, ended=time.time(), outcome=label(outcome) if label else outcome)
        return answer


def _text(status: int, text: str, headers: Sequence[tuple[str, str]] = ()) -> Answer:
    """An error as Go's ``http.Error`` writes it."""
    fields = [("Content-Type", "text/plain; charset=utf-8"), ("X-Content-Type-Options", "nosniff")]
    return status, [*fields, *headers], f"{text}\n".encode()


class Request:
    """One request to forward: what the instance gets, and how to tell that its client left."""

    def __init__(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        self.received = time.time()
        self.method, self.path, self.body = handler.command, handler.path, body
        headers = [(k, v) for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP]
        self.id = handler.headers.get("X-Request-Id") or uuid.uuid4().hex
        if not handler.headers.get("X-Request-Id"):
            headers.append(("X-Request-Id", self.id))
        self.headers = headers
        self._connection = handler.connection

    def fields(self, instance: int | None, cold: bool, started: float | None) -> dict[str, Any]:
        """A log record of a delivery of this request."""
        return {"request_id": self.id, "instance": instance, "received": self.received, "started": started,
                "ended": None, "cold": cold, "outcome": None}  # fmt: skip

    def gone(self) -> bool:
        """Whether the client closed its connection (the request was read whole)."""
        poller = select.poll()  # not select(): a router holding 1,000+ requests has fds past 1024
        poller.register(self._connection, select.POLLIN)
        try:
            return bool(poller.poll(0)) and not self._connection.recv(
                1, socket.MSG_PEEK | socket.MSG_DONTWAIT
            )
        except BlockingIOError:
            return False
        except OSError:
            return True


class Handler(LoopbackHandler):
    """Control routes, and every other request forwarded through the :class:`Router`."""

    server: Server

    def _dispatch(self) -> None:
        try:
            body = read_body(self) or b""
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        path = self.path.split("?", 1)[0]
        if path.startswith("/_emulator/"):
            return self._control(path, body)
        answer = self.server.router.invoke(Request(self, body))
        if answer is None:
            self.close_connection = True
        else:
            self.send_answer(*answer)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _control(self, path: str, body: bytes) -> None:
        router = self.server.router
        slots = [
            {"name": i.name, "pid": i.pid, "port": i.port, "ready": i.ready and i.alive, "busy": i.busy}
            for i in router.slots
        ]
        health = {"ok": True, "instances": slots}
        self._json(*router.controls.route(self.command, path, body, health=health))

    def _json(self, status: int, value: Any) -> None:
        self.send_answer(status, [("Content-Type", "application/json")], json.dumps(value).encode())


class Server(LoopbackServer):
    """Threaded, with a deep accept queue: it holds thousands of requests at once."""

    def __init__(self, router: Router) -> None:
        super().__init__(Handler)
        self.router = router


def main(argv: list[str] | None = None) -> None:
    """Start the instances, serve until SIGTERM, stop the instances."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port-file", required=True, help="where to write the base URL once serving")
    parser.add_argument("--env-file", required=True, help="JSON object: the service's environment")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--instance-concurrency", type=int, default=1)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--memory-mb", type=int, default=1024)
    args = parser.parse_args(argv)
    with open(args.env_file) as f:
        environment = {str(k): str(v) for k, v in json.load(f).items()}
    threading.stack_size(1 << 20)  # a thread per request: keep each one small
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # and a socket per request
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    router = Router(environment, args.instances, args.instance_concurrency, args.timeout_s, args.memory_mb)
    server = Server(router)
    try:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        router.start()
        url = server.url
        publish_url(args.port_file, url)
        write_output(f"knative router on {url}: {len(router.slots)} instances\n".encode())
        stop.wait()
    finally:
        router.stop()
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    main()
