"""Real S3-compatible servers on loopback for tests and benchmarks: moto's server mode and a
request-counting proxy in front of it.

Nothing here is a stand-in for S3 calls: clients talk HTTP to a moto server started as a subprocess
on a free 127.0.0.1 port; :class:`CountingProxy` forwards every request to it and records what
crossed the wire (to count writes and ranged reads). Shared by ``tests/fixtures_s3.py``,
``tests/test_shuffle.py`` and ``benchmarks/``.
"""

from __future__ import annotations

import http.client
import os
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LOOPBACK_AWS_ENV", "SLOW_DOWN", "CountingProxy", "start_moto_server", "stop_process"]

#: Dummy AWS settings for clients of a loopback S3 server :
#: never the developer's ~/.aws, never a proxy for loopback.
LOOPBACK_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}


def start_moto_server(log_path: str, timeout_s: float = 30.0, attempts: int = 3) -> tuple[Any, str]:
    """Start moto's S3-compatible server (``python -m moto.server``) on a free 127.0.0.1 port.

    Its output (one line per request) goes to ``log_path``
    (a file, never an unread pipe), and it is started again on another port if another process
    took the free port first. Returns ``(Popen, endpoint URL)`` once it answers; stop it with
    :func:`stop_process`. Any credentials are accepted.
    """
    env = {**os.environ, **LOOPBACK_AWS_ENV, "PYTHONUNBUFFERED": "1"}
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL"):
        env.pop(name, None)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for attempt in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                opener.open(f"{url}/moto-api/data.json", timeout=1.0).close()
                return proc, url
            except urllib.error.HTTPError:
                return proc, url  # it answered
            except OSError:
                time.sleep(0.05)
        exit_code = proc.poll()
        stop_process(proc)
        with open(log_path, errors="replace") as f:
            output = f.read()[-4000:]
        if exit_code is None or "in use" not in output or attempt == attempts - 1:
            state = "did not answer" if exit_code is None else f"exited with code {exit_code}"
            raise RuntimeError(f"moto server on {url} {state} within {timeout_s:.0f}s; output:\n{output}")
    raise AssertionError("unreachable")


def stop_process(proc: Any, grace_s: float = 10.0) -> None:
    """Terminate a ``subprocess.Popen`` (kill it after ``grace_s``) and reap it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace_s)


#: What S3 answers when it sheds load.
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to ``upstream`` and records every request.

    Setting :attr:`fail_ratio` makes it answer that share of requests (chosen by a seeded random
    generator) itself with ``503 SlowDown``, as S3 does under load, without forwarding them.
    """

    def __init__(self, upstream: str, seed: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.requests: list[tuple[str, str, str | None]] = []
        #: Share of requests answered ``503 SlowDown`` (0 to 1); counted in :attr:`refused`.
        self.fail_ratio = 0.0
        self.refused = 0
        lock = threading.Lock()
        host, port = parsed.hostname, parsed.port
        requests = self.requests
        chance = random.Random(seed)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with lock:
                    refuse = chance.random() < proxy.fail_ratio
                    proxy.refused += refuse
                if refuse:
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", "0" if self.command == "HEAD" else str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                skip = {"connection", "expect", "keep-alive", "proxy-connection"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                conn = http.client.HTTPConnection(host, port, timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                finally:
                    conn.close()
                with lock:
                    requests.append((self.command, self.path, self.headers.get("Range")))
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                length_header = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length_header or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)

    def count(self, predicate: Callable[[str, str, str | None], bool]) -> Counter[str]:
        return Counter(method for method, path, rng in list(self.requests) if predicate(method, path, rng))
