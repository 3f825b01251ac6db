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
_NO_SUCH_KEY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>NoSuchKey</Code>'
    b"<Message>The specified key does not exist.</Message></Error>"
)
_PRECONDITION = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>PreconditionFailed</Code>'
    b"<Message>At least one of the pre-conditions you specified did not hold</Message></Error>"
)
#: Headers of an object's version that a stale read serves again.
_OBJECT_HEADERS = ("content-type", "etag", "last-modified", "accept-ranges")


class _Version:
    """What a GET of one key answered before a PUT replaced it (``body is None``: there was no
    object), and how many stale reads of it the proxy still serves."""

    def __init__(self, headers: list[tuple[str, str]], body: bytes | None, reads: int) -> None:
        self.headers = headers
        self.body = body
        self.reads = reads


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a ``Range: bytes=a-b`` / ``bytes=a-`` header within ``size`` bytes."""
    if not header or not header.startswith("bytes="):
        return None
    first, _, last = header[len("bytes=") :].partition("-")
    if not first:  # a suffix range, bytes=-n
        return max(size - int(last), 0), size - 1
    return int(first), min(int(last) if last else size - 1, size - 1)


class CountingProxy:
    """An HTTP proxy on 127.0.0.1 that forwards to ``upstream``, records every request and injects
    the faults of a real S3 endpoint, each chosen by one seeded random generator and counted.

    Every knob can be changed while the proxy runs; all are off at first.

    - :attr:`fail_ratio`: that share of requests is answered ``503 SlowDown`` without being
      forwarded, as S3 does under load (counted in :attr:`refused`); :attr:`fail_code` names
      another error of a 503 (``"ServiceUnavailable"``: a transient error, which botocore backs
      off from 50 ms instead of a throttling error's 1 s).
    - :attr:`reset_ratio`: that share of requests has its connection closed without an answer (not
      forwarded), or, for a GET with a body, after half the body was sent (:attr:`resets`).
    - :attr:`stall_ratio`: that share of requests stalls for :attr:`stall_s` seconds, a GET with a
      body after half of it, others before any answer (and then not forwarded); the connection
      is closed after the stall. Set the client's read timeout below ``stall_s`` (:attr:`stalls`).
    - :attr:`truncate_ratio`: that share of GETs with a body of 2 bytes or more sends half of it:
      either with the full ``Content-Length`` and then a closed connection, or, for a ranged GET,
      as a well-formed answer whose ``Content-Length`` is the short length while its
      ``Content-Range`` still claims the whole range (:attr:`truncated`).
    - :attr:`stale_reads`: after a simple PUT (not a multipart part) of a key that passed through
      the proxy, the next ``stale_reads`` GETs of that key are answered from the version before
      it, with that version's bytes and headers (``ETag``), ``Range`` and ``If-Match`` applied as
      S3 applies them; ``404 NoSuchKey`` if the key did not exist before, as an eventually
      consistent store lags behind a write. Counted in :attr:`stale` (old bytes served),
      :attr:`lagged` (404s) and :attr:`preconditions` (412s for an ``If-Match`` of another version).
    """

    def __init__(self, upstream: str, seed: int = 0) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.requests: list[tuple[str, str, str | None]] = []
        #: Share of requests answered ``503 SlowDown`` (0 to 1); counted in :attr:`refused`.
        self.fail_ratio = 0.0
        self.fail_code = "SlowDown"
        self.refused = 0
        #: Share of requests whose connection is reset; counted in :attr:`resets`.
        self.reset_ratio = 0.0
        self.resets = 0
        #: Share of requests that stall for :attr:`stall_s` seconds; counted in :attr:`stalls`.
        self.stall_ratio = 0.0
        self.stall_s = 2.0
        self.stalls = 0
        #: Share of GETs with a body answered with half of it; counted in :attr:`truncated`.
        self.truncate_ratio = 0.0
        self.truncated = 0
        #: Stale GETs served after each PUT of a key; counted in :attr:`stale`, :attr:`lagged`
        #: and :attr:`preconditions`.
        self.stale_reads = 0
        self.stale = 0
        self.lagged = 0
        self.preconditions = 0
        self._versions: dict[str, _Version] = {}
        self._lock = threading.Lock()
        self._chance = random.Random(seed)
        self._host, self._port = parsed.hostname, parsed.port
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self) -> None:
                proxy._handle(self)

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
        """How many recorded (forwarded) requests of each method match ``predicate(method, path, range)``."""
        return Counter(method for method, path, rng in list(self.requests) if predicate(method, path, rng))

    def faults(self) -> dict[str, int]:
        """The counters of every fault injected so far, by name."""
        with self._lock:
            return {
                "refused": self.refused,
                "resets": self.resets,
                "stalls": self.stalls,
                "truncated": self.truncated,
                "stale": self.stale,
                "lagged": self.lagged,
                "preconditions": self.preconditions,
            }

    # -- one request ---------------------------------------------------------------------------

    def _draw(self, ratio: float) -> bool:
        return ratio > 0 and self._chance.random() < ratio

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else None
        method = handler.command
        path, _, query = handler.path.partition("?")
        with self._lock:
            refuse = self._draw(self.fail_ratio)
            self.refused += refuse
            reset = not refuse and self._draw(self.reset_ratio)
            stall = not refuse and not reset and self._draw(self.stall_ratio)
            truncate = method == "GET" and not (refuse or reset or stall) and self._draw(self.truncate_ratio)
            variant = self._chance.random() < 0.5
            stall_s = self.stall_s
            version = self._versions.get(path) if method == "GET" else None
            if version is not None:
                version.reads -= 1
                if version.reads <= 0:
                    del self._versions[path]
            record = method == "PUT" and "uploadId" not in query and self.stale_reads > 0
            reads = self.stale_reads
        if refuse:
            body = SLOW_DOWN.replace(b"SlowDown", self.fail_code.encode())
            reason = "Slow Down" if self.fail_code == "SlowDown" else "Service Unavailable"
            self._send(handler, 503, reason, [("Content-Type", "application/xml")], body)
            return
        if (reset or stall) and method != "GET":
            self._count("resets" if reset else "stalls")
            if stall:
                time.sleep(stall_s)
            handler.close_connection = True
            return
        if version is not None:
            self._stale(handler, version)
            return
        # the PUT's own credentials identify the reader (moto answers anonymous reads 403)
        auth = {k: v for k, v in handler.headers.items() if k.lower() in ("authorization", "x-amz-date")}
        before = self._upstream("GET", path, None, auth) if record else None
        status, reason, headers, data = self._upstream(method, handler.path, body, self._headers(handler))
        if record and before is not None and 200 <= status < 300:
            old_headers = [(k, v) for k, v in before[2] if k.lower() in _OBJECT_HEADERS]
            with self._lock:
                self._versions[path] = _Version(old_headers, before[3] if before[0] == 200 else None, reads)
        with self._lock:
            self.requests.append((method, handler.path, handler.headers.get("Range")))
        kept = [
            (k, v)
            for k, v in headers
            if k.lower() not in ("transfer-encoding", "connection", "content-length")
        ]
        if method == "HEAD":
            length_header = next((v for k, v in headers if k.lower() == "content-length"), None)
            self._send(handler, status, reason, kept, b"", length=length_header)
            return
        if len(data) < 2 or not (reset or stall or truncate):
            self._send(handler, status, reason, kept, data)
            return
        half = len(data) // 2
        ranged = any(k.lower() == "content-range" for k, _ in headers)
        if truncate and ranged and variant:  # well-formed, but shorter than its Content-Range
            self._count("truncated")
            self._send(handler, status, reason, kept, data[:half])
            return
        self._count("resets" if reset else "stalls" if stall else "truncated")
        handler.close_connection = True
        try:
            self._head(handler, status, reason, kept, str(len(data)))
            handler.wfile.write(data[:half])
            handler.wfile.flush()
            if stall:
                time.sleep(stall_s)
        except OSError:  # the client gave up first
            pass

    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    @staticmethod
    def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
        skip = {"connection", "expect", "keep-alive", "proxy-connection"}
        return {k: v for k, v in handler.headers.items() if k.lower() not in skip}

    def _upstream(
        self, method: str, path: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.reason, response.getheaders(), response.read()
        finally:
            conn.close()

    def _stale(self, handler: BaseHTTPRequestHandler, version: _Version) -> None:
        """Answer a GET from the version before the last PUT (or 404 if there was none)."""
        xml = [("Content-Type", "application/xml")]
        if version.body is None:
            self._count("lagged")
            self._send(handler, 404, "Not Found", xml, _NO_SUCH_KEY)
            return
        etag = next((v for k, v in version.headers if k.lower() == "etag"), "")
        wanted = handler.headers.get("If-Match")
        if wanted is not None and wanted.strip('"') != etag.strip('"'):
            self._count("preconditions")
            self._send(handler, 412, "Precondition Failed", xml, _PRECONDITION)
            return
        self._count("stale")
        size = len(version.body)
        span = _byte_range(handler.headers.get("Range"), size)
        if span is None:
            self._send(handler, 200, "OK", version.headers, version.body)
        elif span[0] >= size:
            self._send(
                handler,
                416,
                "Requested Range Not Satisfiable",
                xml,
                b"<Error><Code>InvalidRange</Code></Error>",
            )
        else:
            first, last = span
            headers = [*version.headers, ("Content-Range", f"bytes {first}-{last}/{size}")]
            self._send(handler, 206, "Partial Content", headers, version.body[first : last + 1])

    @staticmethod
    def _head(
        handler: BaseHTTPRequestHandler, status: int, reason: str, headers: list[tuple[str, str]], length: str
    ) -> None:
        handler.send_response(status, reason)
        for name, value in headers:
            handler.send_header(name, value)
        handler.send_header("Content-Length", length)
        handler.end_headers()

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        data: bytes,
        length: str | None = None,
    ) -> None:
        head = handler.command == "HEAD"
        try:
            self._head(handler, status, reason, headers, length or ("0" if head else str(len(data))))
            if not head:
                handler.wfile.write(data)
        except OSError:
            handler.close_connection = True
