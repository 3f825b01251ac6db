"""What a function measures and captures about one invocation (imports neither pandas nor a cloud SDK).

- :class:`OutputCapture`: the invocation's ``sys.stdout``, ``sys.stderr`` and root-logger records,
  kept up to a cap (``faas.logs.max-bytes``) with a marker line saying how many bytes were dropped.
  What is printed still reaches the stream it reached before (the platform's log): the streams are
  teed, not replaced, and only while an invocation runs. Calls running at once on threads of one
  instance (Knative) each keep their own output (a context variable says whose it is); output of a
  thread the call started itself is kept when that call is the only one running.
- :func:`reset_peak_memory` and :func:`peak_memory_mb`: the process's peak resident memory during
  the call (``getrusage``'s ``ru_maxrss``, whose peak ``/proc/self/clear_refs`` resets on Linux;
  elsewhere the lifetime peak). It is the process's: calls running at once on one instance share it.
"""

from __future__ import annotations

import contextvars
import logging
import os
import resource
import sys
import threading
from types import TracebackType
from typing import Any, TextIO

__all__ = ["OutputCapture", "data_bytes", "peak_memory_mb", "reset_peak_memory", "status_bytes"]

_sink: contextvars.ContextVar[_Capped | None] = contextvars.ContextVar("dask_faas_output", default=None)
_lock = threading.Lock()
_active: list[_Capped] = []


class _Capped:
    """Text kept up to ``max_bytes`` (UTF-8); what comes after is counted, not kept."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        with self._lock:
            room = self.max_bytes - self.size
            if len(data) <= room:
                self.parts.append(text)
                self.size += len(data)
                return
            if room > 0:
                self.parts.append(data[:room].decode("utf-8", "ignore"))
                self.size = self.max_bytes
            self.dropped += len(data) - max(room, 0)

    def text(self) -> str:
        if not self.parts and not self.dropped:
            return ""
        with self._lock:
            kept = "".join(self.parts)
            if self.dropped:
                if kept and not kept.endswith("\n"):
                    kept += "\n"
                kept += (
                    f"[dask-faas: output truncated at faas.logs.max-bytes={self.max_bytes}: "
                    f"{self.dropped} more bytes dropped]\n"
                )
            return kept


def _owner() -> _Capped | None:
    """The capture this thread writes to: its call's, or the only one running."""
    sink = _sink.get()
    if sink is not None:
        return sink
    with _lock:
        return _active[0] if len(_active) == 1 else None


class _Tee:
    """A text stream that writes to the original and to the running call's capture."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        owner = _owner()
        if owner is not None:
            owner.write(text)
        return self.original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self.original.flush()

    def __getattr__(self, name: str) -> Any:  # fileno, buffer, encoding, isatty ... of the original
        return getattr(self.original, name)


class _Handler(logging.Handler):
    """Root-logger records of the running calls, each into its call's capture (on the root logger
    while any call captures, as the streams are teed)."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        sink = _owner()
        if sink is not None:
            try:
                sink.write(self.format(record) + "\n")
            except Exception:  # a record that cannot be formatted: logging's own report
                self.handleError(record)
        last = logging.lastResort
        # without this handler, logging's last resort would have printed the record: it still does,
        # to the stream it would have used (the platform's log)
        if last is not None and record.levelno >= last.level and _only_handlers(record.name):
            stderr = sys.stderr
            (stderr.original if isinstance(stderr, _Tee) else stderr).write(record.getMessage() + "\n")


def _only_handlers(name: str) -> bool:
    """Whether the captures' handlers are all a record of logger ``name`` reaches."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(not isinstance(h, _Handler) for h in logger.handlers):
            return False
        logger = logger.parent if logger.propagate else None
    return True


_HANDLER = _Handler()


class OutputCapture:
    """Capture one invocation's output while a ``with`` block runs.

    Parameters
    ----------
    max_bytes : int
        Most bytes kept; 0 captures nothing.

    Attributes
    ----------
    text : str
        What was captured (after the block), with the truncation marker when bytes were dropped.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.text = ""
        self._sink: _Capped | None = None
        self._token: contextvars.Token[_Capped | None] | None = None

    def __enter__(self) -> OutputCapture:
        if self.max_bytes <= 0:
            return self
        self._sink = sink = _Capped(self.max_bytes)
        with _lock:
            _install()
            _active.append(sink)
        self._token = _sink.set(sink)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        sink = self._sink
        if sink is None:
            return
        if sink.size or sink.dropped:  # the call wrote: its lines reach the platform's log now
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
        if self._token is not None:
            _sink.reset(self._token)
        with _lock:
            _active.remove(sink)
        self.text = sink.text()


def _install() -> None:
    """Tee the streams and put the records' handler on the root logger, where they are not yet:
    once per process, as a function process runs little but its calls (a call that replaced a
    stream for good has it teed again by the next call). Outside the calls both pass everything
    through: the tees write to the original streams only, and the handler prints the records that
    reach no other handler as logging's last resort would have (see :class:`_Handler`)."""
    if not isinstance(sys.stdout, _Tee):
        sys.stdout = _Tee(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, _Tee):
        sys.stderr = _Tee(sys.stderr)  # type: ignore[assignment]
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)


def status_bytes(name: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes (None where there is no such file)."""
    text = _read_kept("/proc/self/status")
    if text is None:
        return None
    try:
        start = text.index(b"\n" + name.encode() + b":") + len(name) + 2
        return int(text[start : text.index(b"kB", start)]) * 1024
    except ValueError:
        return None


def data_bytes() -> int | None:
    """The process's data size in bytes, what ``RLIMIT_DATA`` limits (None where there is no
    ``/proc``): ``/proc/self/statm``'s data field, a fifth of the cost of reading
    ``/proc/self/status``; it counts the stack too (``VmData`` + ``VmStk``), a few hundred kB."""
    text = _read_kept("/proc/self/statm")
    if text is None:
        return None
    try:
        return int(text.split()[5]) * _PAGE
    except (ValueError, IndexError):
        return None


_PAGE = resource.getpagesize()
_kept: dict[str, tuple[int, int]] = {}  # path -> (pid, fd) of a /proc file kept open


def _read_kept(path: str) -> bytes | None:
    """The text of ``path``, a ``/proc/self`` file kept open and read with one ``pread`` (None
    where there is none)."""
    try:
        kept = _kept.get(path)
        if kept is None or kept[0] != os.getpid():  # a forked child has its own
            kept = _kept[path] = (os.getpid(), os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        return os.pread(kept[1], 16384, 0)
    except OSError:
        return None


_clear_refs: tuple[int, int] | None = None  # (pid, fd) of the process's clear_refs, kept open


def reset_peak_memory() -> bool:
    """Start the process's peak resident memory afresh (Linux's ``clear_refs``); False where it
    cannot be (the peak is then the process's lifetime one)."""
    global _clear_refs
    try:
        if _clear_refs is None or _clear_refs[0] != os.getpid():  # a forked child has its own
            _clear_refs = (os.getpid(), os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC))
        os.write(_clear_refs[1], b"5")  # 5: reset the peak RSS only (no page-table walk)
    except OSError:
        return False
    return True


def peak_memory_mb() -> float | None:
    """The process's peak resident memory in MiB since :func:`reset_peak_memory` (or its start).

    Linux's ``VmHWM`` of ``/proc/self/status``, which the reset starts afresh; ``getrusage``'s
    ``ru_maxrss`` where there is no such file. Not ``ru_maxrss`` on Linux: it is the larger of
    that peak and one kept across ``execve``, which for a process started by a large one (a
    local pool's function started by a client of 800 MiB) is the client's size at the fork.
    """
    peak = status_bytes("VmHWM")
    if peak is not None:
        return peak / 2**20
    try:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except (OSError, ValueError):
        return None
