"""Start and steer the platform emulators, each a real server process on a free 127.0.0.1 port.

An emulator is a module of :mod:`dask_faas.testing` run as ``python -m <module> --port-file PATH
[options]``: it binds 127.0.0.1 on a free port, writes its base URL to ``PATH`` once it accepts
connections, and serves until SIGTERM. Besides the platform's public API, every emulator answers
three control routes (never part of any platform's API, used by tests and benchmarks only):

``GET /_emulator/health``
    200 once the server is up.
``POST /_emulator/config``
    A JSON object of fault and load knobs, merged into the current ones (see each emulator's
    ``KNOBS``); ``{"reset": true}`` restores the defaults and clears the log.
``GET /_emulator/log``
    A JSON list, one object per delivery of an invocation to a function instance (request id,
    instance, times of receipt, start and end on the emulator's ``time.time()`` clock, outcome).

:func:`start_emulator` starts one and returns an :class:`Emulator` handle. The emulators' own side
shares :data:`KNOBS` (the knobs every emulator takes), :class:`Controls` (knobs, log and the three
routes), :class:`LoopbackServer` and :class:`LoopbackHandler` (the threaded HTTP server),
:func:`read_body` and :func:`publish_url`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .s3 import LOOPBACK_AWS_ENV, stop_process

__all__ = [
    "KNOBS",
    "Controls",
    "Emulator",
    "LoopbackHandler",
    "LoopbackServer",
    "publish_url",
    "read_body",
    "start_emulator",
]

#: The fault and load knobs every emulator takes, with their defaults (docs/platforms-wire.md).
KNOBS: dict[str, Any] = {
    "throttle": 0,  # the next N invoke requests get the platform's throttling answer
    "retry_after_s": None,  # sent as Retry-After with it
    "lose": 0,  # the next N invocations are accepted and never run
    "duplicate": 0,  # the next N invocations are delivered to two instances; one answer
    "kill": 0,  # the next N deliveries have their instance SIGKILLed kill_after_s after the start
    "kill_after_s": 0.0,
    "latency_s": 0.0,  # before each delivery
    "load_delay_s": None,  # load mode: answered by the emulator alone after this delay
}

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Emulator:
    """A running emulator process.

    Parameters
    ----------
    process : subprocess.Popen
        The server process.
    url : str
        Its base URL, ``http://127.0.0.1:<port>``.
    log_path : str
        Where its output goes.
    """

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: str) -> None:
        self.process, self.url, self.log_path = process, url, log_path

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Merge ``knobs`` into the emulator's fault and load knobs; return the knobs now in force."""
        return self._request("POST", "/_emulator/config", knobs)

    def reset(self) -> None:
        """Default knobs, empty log (function instances already running stay warm)."""
        self._request("POST", "/_emulator/config", {"reset": True})

    def log(self) -> list[dict[str, Any]]:
        """One record per delivery of an invocation to an instance, oldest first."""
        return self._request("GET", "/_emulator/log")

    def output(self) -> str:
        """What the server process has printed so far (for failure messages)."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        """Stop the server and, through its own shutdown, every instance it started."""
        stop_process(self.process)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with _OPENER.open(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


def start_emulator(
    module: str,
    *args: str,
    log_path: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Emulator:
    """Start ``python -m module --port-file F *args`` and wait until it answers its health route.

    Parameters
    ----------
    module : str
        The emulator's module, e.g. ``"dask_faas.testing.lambda_emulator"``.
    *args : str
        Its command-line options.
    log_path : str, optional
        File for its output (a fresh temporary file by default; never an unread pipe).
    env : dict, optional
        Extra environment variables (on top of this process's and the loopback AWS settings).

    Raises
    ------
    RuntimeError
        If it exits or does not answer within ``timeout_s``, with the end of its output.
    """
    workdir = tempfile.mkdtemp(prefix="dask-faas-emulator-")
    port_file = os.path.join(workdir, "url")
    log_path = log_path or os.path.join(workdir, "output.log")
    environment = {**os.environ, **LOOPBACK_AWS_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port-file", port_file, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # the terminal's Ctrl-C goes to the tests, not the emulator
        )
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with open(port_file) as f:
                url = f.read().strip()
        except FileNotFoundError:
            url = ""
        if url:
            try:
                _OPENER.open(url + "/_emulator/health", timeout=2).close()
                return Emulator(process, url, log_path)
            except (OSError, urllib.error.URLError):
                pass
        time.sleep(0.05)
    code = process.poll()
    stop_process(process)
    with open(log_path, errors="replace") as f:
        output = f.read()[-4000:]
    state = "did not answer" if code is None else f"exited with code {code}"
    raise RuntimeError(f"emulator {module} {state} within {timeout_s:.0f}s; output:\n{output}")


# -- the emulators' side ------------------------------------------------------------------------


class Controls:
    """An emulator's knobs and delivery log, and its three ``/_emulator/*`` routes.

    Parameters
    ----------
    defaults : dict
        The knobs and their defaults (:data:`KNOBS` and the emulator's own).
    lock : threading.Lock, optional
        Guards the knobs and the log (the emulator's own lock, if it takes knobs with other state).
    on_reset : callable, optional
        Called, holding ``lock``, when ``{"reset": true}`` restores the defaults.
    """

    def __init__(
        self,
        defaults: dict[str, Any],
        lock: threading.Lock | None = None,
        on_reset: Callable[[], None] | None = None,
    ) -> None:
        self.defaults = dict(defaults)
        self.lock = lock or threading.Lock()
        self.knobs = dict(defaults)
        self.records: list[dict[str, Any]] = []
        self._on_reset = on_reset

    def configure(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge knobs (``{"reset": true}`` first restores the defaults and clears the log).

        Raises
        ------
        ValueError
            For an unknown knob.
        """
        unknown = sorted(set(changes) - set(self.defaults) - {"reset"})
        if unknown:
            raise ValueError(f"unknown knob(s) {unknown}; known: {sorted(self.defaults)}")
        with self.lock:
            if changes.get("reset"):
                self.knobs, self.records = dict(self.defaults), []
                if self._on_reset is not None:
                    self._on_reset()
            self.knobs.update({k: v for k, v in changes.items() if k != "reset"})
            return dict(self.knobs)

    def take(self, knob: str) -> bool:
        """Use one of the next N of a counting knob (``throttle``, ``lose``...); whether there was one."""
        with self.lock:
            if self.knobs[knob] > 0:
                self.knobs[knob] -= 1
                return True
            return False

    def record(self, record: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Log a delivery (it may be updated later: ``ended`` and ``outcome`` once it ends)."""
        with self.lock:
            record.update(changes)
            self.records.append(record)
        return record

    def update(self, record: dict[str, Any], **changes: Any) -> None:
        """Change a logged record."""
        with self.lock:
            record.update(changes)

    def log(self) -> list[dict[str, Any]]:
        """The delivery records, oldest first."""
        with self.lock:
            return [dict(r) for r in self.records]

    def route(
        self,
        method: str,
        path: str,
        body: bytes | None,
        health: dict[str, Any] | None = None,
        extra: dict[tuple[str, str], Callable[[], Any]] | None = None,
    ) -> tuple[int, Any]:
        """Answer a ``/_emulator/*`` request: ``(status, JSON value)``.

        Parameters
        ----------
        method, path : str
            The request's.
        body : bytes or None
            Its body (``POST /_emulator/config``: a JSON object of knobs).
        health : dict, optional
            The health route's answer (``{"ok": true}`` by default).
        extra : dict, optional
            The emulator's own routes: ``(method, path) -> callable`` giving the answer.
        """
        if (method, path) == ("GET", "/_emulator/health"):
            return 200, {"ok": True} if health is None else health
        if (method, path) == ("GET", "/_emulator/log"):
            return 200, self.log()
        if (method, path) == ("POST", "/_emulator/config"):
            try:
                changes = json.loads(body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("the knobs must be a JSON object")
                return 200, self.configure(changes)
            except ValueError as exc:
                return 400, {"error": str(exc)}
        if extra and (method, path) in extra:
            return 200, extra[(method, path)]()
        return 404, {"error": f"no emulator route {method} {path}"}


class LoopbackServer(ThreadingHTTPServer):
    """A threaded HTTP server on a free 127.0.0.1 port: daemon threads, a deep accept queue.

    Parameters
    ----------
    handler : type
        The request handler class (a :class:`LoopbackHandler`).
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 4096  # load mode: 1,000+ clients connect at once

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"


class LoopbackHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, ``TCP_NODELAY`` on the accepted connection, no access log."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_answer(self, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        """Send a whole answer with ``Content-Length`` (no body to a HEAD); a client gone is no error."""
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a line per request would drown the instances' output in load mode


def publish_url(port_file: str, url: str) -> None:
    """Write ``url`` to ``port_file`` at once (:func:`start_emulator` waits for it)."""
    with open(port_file + ".tmp", "w") as f:
        f.write(url)
    os.replace(port_file + ".tmp", port_file)


def read_body(handler: BaseHTTPRequestHandler, limit: int | None = None) -> bytes | None:
    """The request body (Content-Length or chunked); ``None`` past ``limit`` bytes (read and dropped)."""
    chunks: list[bytes] = []
    size = 0

    def take(n: int) -> None:
        nonlocal size
        while n > 0:
            chunk = handler.rfile.read(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("the client closed the connection mid-body")
            n, size = n - len(chunk), size + len(chunk)
            if limit is None or size <= limit:
                chunks.append(chunk)

    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        while length := int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16):
            take(length)
            handler.rfile.readline()
        while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailers
    else:
        take(int(handler.headers.get("Content-Length") or 0))
    return b"".join(chunks) if limit is None or size <= limit else None
