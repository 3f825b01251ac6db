"""``lithops.multiprocessing.util``: remote logs through object storage (Lithops uses Redis pub/sub).

A :class:`RemoteLogIOBuffer` started in a function takes ``sys.stdout``; each flush writes what was
printed since as one object under ``dask-faas-logs/<stream>/`` of the job's storage, named
``<time ns>-<buffer>-<seq>`` so that names sort in writing order. A :class:`RemoteLoggingFeed` on the
client polls that prefix, prints new chunks in name order and deletes each one it printed;
:meth:`RemoteLoggingFeed.stop` reads what is left once more, so nothing stays behind of what the
functions flushed before it.
"""

from __future__ import annotations

import logging
import secrets
import sys
import threading
import time
from typing import Any, TextIO

logger = logging.getLogger("dask_faas.compat.multiprocessing")

#: The prefix of log streams in the storage.
LOG_PREFIX = "dask-faas-logs"
#: Seconds between two listings of a stream by a feed.
POLL_INTERVAL_S = 0.25


def stream_prefix(stream: str) -> str:
    """The storage prefix of ``stream``'s chunks."""
    if not stream or "/" in stream:
        raise ValueError(f"a log stream name must be non-empty and have no '/': {stream!r}")
    return f"{LOG_PREFIX}/{stream}/"


def resolve_storage(storage: Any = None) -> Any:
    """The dask-faas :class:`~dask_faas.backends.storage.Storage` that logs and shared state go to.

    ``storage`` may be a dask-faas Storage or a ``lithops.Storage``-style client; with None, inside
    a function the storage of the job running it, outside one the storage of
    ``config.LITHOPS_CONFIG`` (what pools and processes are made with).
    """
    from ... import worker
    from ...backends.storage import Storage as FaasStorage
    from .. import Storage
    from . import config

    if isinstance(storage, FaasStorage):
        return storage
    if storage is not None:
        return storage.faas_storage
    try:
        return worker.current().storage
    except RuntimeError:
        return Storage(config=config.get_parameter(config.LITHOPS_CONFIG) or None).faas_storage


class RemoteLogIOBuffer:
    """A text stream whose flushes become chunks of the log stream ``stream``.

    Parameters
    ----------
    stream : str
        The stream's name (Lithops' examples use the executor's id).
    storage : optional
        Where the chunks go (see :func:`resolve_storage`).
    """

    def __init__(self, stream: str, storage: Any = None) -> None:
        self._prefix = stream_prefix(stream)
        self._stream = stream
        self._storage = resolve_storage(storage)
        self._buffer: list[str] = []
        self._name = secrets.token_hex(4)
        self._seq = 0
        self._last_ns = 0
        self._saved: TextIO | None = None

    def write(self, log: str) -> int:
        """Keep ``log`` until the next :meth:`flush`."""
        self._buffer.append(log)
        return len(log)

    def flush(self) -> None:
        """Write what was printed since the last flush as one chunk (nothing if nothing was)."""
        text = "".join(self._buffer)
        self._buffer.clear()
        if not text:
            return
        self._last_ns = max(time.time_ns(), self._last_ns + 1)
        self._seq += 1
        key = f"{self._prefix}{self._last_ns:020d}-{self._name}-{self._seq:08d}"
        self._storage.put(key, text.encode("utf-8"))

    def start(self) -> None:
        """Take ``sys.stdout`` (until :meth:`stop`)."""
        self._saved, sys.stdout = sys.stdout, self  # type: ignore[assignment]
        logger.debug("remote logging to stream %s started", self._stream)

    def stop(self) -> None:
        """Flush and give ``sys.stdout`` back."""
        self.flush()
        if self._saved is not None:
            sys.stdout, self._saved = self._saved, None
        logger.debug("remote logging to stream %s stopped", self._stream)


class RemoteLoggingFeed:
    """Prints the chunks of the log stream ``stream`` on the client as they arrive, in order.

    Parameters
    ----------
    stream : str
        The stream's name.
    storage : optional
        Where the chunks are (see :func:`resolve_storage`).
    out : text stream, optional
        Where to print (default: ``sys.stdout`` at each print).
    """

    def __init__(self, stream: str, storage: Any = None, out: TextIO | None = None) -> None:
        self._prefix = stream_prefix(stream)
        self._stream = stream
        self._storage = resolve_storage(storage)
        self._out = out
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._monitor, name=f"dask-faas-log-feed-{stream}", daemon=True
        )
        self._drain_lock = threading.Lock()

    def _drain(self) -> None:
        with self._drain_lock:
            keys = sorted(key for key, _ in self._storage.list(self._prefix))
            for key in keys:
                text = bytes(self._storage.get(key)).decode("utf-8", errors="replace")
                out = self._out or sys.stdout
                out.write(text)
                out.flush()
            if keys:
                self._storage.delete(keys)

    def _monitor(self) -> None:
        while not self._stop.wait(POLL_INTERVAL_S):
            try:
                self._drain()
            except Exception:  # a storage error: logged, retried at the next poll
                logger.exception("reading log stream %s failed", self._stream)

    def start(self) -> None:
        """Start polling in a thread."""
        self._thread.start()

    def stop(self) -> None:
        """Stop polling, then print (and delete) what is left of the stream."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._drain()
