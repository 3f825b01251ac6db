"""A loopback HTTP file server of the tests' own: GET with ``Range`` and HEAD, as object stores and
web servers answer them (206 with the range, 416 past the end)."""

from __future__ import annotations

import http.server
from collections import Counter
from typing import Any


class RangedFiles(http.server.BaseHTTPRequestHandler):
    """Serves :attr:`files` (path -> bytes; a query string is ignored); subclasses set them.

    ``honour_range = False`` answers every GET whole, as a server that ignores ``Range``;
    :attr:`ranges` counts the ranged GETs of each path.
    """

    files: dict[str, bytes] = {}
    honour_range = True
    ranges: Counter[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.ranges = Counter()

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_error(404)
            return
        status, payload, spec = 200, data, self.headers.get("Range")
        if spec and self.honour_range:
            first, _, last = spec.removeprefix("bytes=").partition("-")
            start, end = int(first), min(int(last) + 1 if last else len(data), len(data))
            if start >= len(data):
                self.send_error(416)
                return
            status, payload = 206, data[start:end]
            self.ranges[self.path] += 1
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return None
