"""HTTP(S) URLs as ``map`` inputs: sizes from HEAD on the client, ranged GETs inside the functions.

The server must honour ``Range`` (answer ``206``) for chunked reads: a ``200`` to a ranged GET
fails the read, naming the URL, rather than reading the whole object for every chunk.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

from ..backends.storage.base import Storage

#: Seconds an HTTP request may take before it fails.
TIMEOUT_S = 60


class HttpObjects(Storage):
    """Read-only "storage" of HTTP(S) objects: the key is the URL."""

    name = "http"

    @property
    def location(self) -> str:
        return ""

    def put(self, key: str, data: bytes | memoryview) -> None:
        raise PermissionError(f"cannot write {key}: HTTP inputs are read-only")

    def delete(self, keys: Iterable[str]) -> None:
        raise PermissionError("cannot delete HTTP inputs")

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        raise NotImplementedError(f"cannot list {prefix}: HTTP has no listing; give each object's URL")

    def size(self, key: str) -> int:
        """The ``Content-Length`` of a HEAD request (``FileNotFoundError`` for a 404)."""
        request = urllib.request.Request(key, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                length = response.headers.get("Content-Length")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(f"{key}: 404 Not Found") from None
            raise
        if length is None:
            raise ValueError(f"{key}: the server sent no Content-Length, so it cannot be chunked")
        return int(length)

    def get(
        self, key: str, start: int | None = None, end: int | None = None, *, version: str | None = None
    ) -> bytes:
        """The bytes ``[start, end)`` of the URL ``key`` (all of it without a range).

        Raises
        ------
        OSError
            If the server does not honour the range (answers 200 to a ranged GET).
        """
        ranged = start is not None or end is not None
        request = urllib.request.Request(key)
        if ranged:
            last = "" if end is None else str(end - 1)
            request.add_header("Range", f"bytes={start or 0}-{last}")
        try:
            response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code == 416:  # a range past the end (reading on to complete a line)
                return b""
            if exc.code == 404:
                raise FileNotFoundError(f"{key}: 404 Not Found") from None
            raise
        with response:
            if ranged and response.status != 206:
                raise OSError(
                    f"{key}: the server answered {response.status} to a ranged GET (Range not honoured)"
                )
            return response.read()

    def locator(self) -> dict[str, Any]:
        return {"backend": "http"}
