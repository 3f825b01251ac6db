"""The embedded default platform: a warm pool of function processes on this machine.

Each process runs the same entry point a remote platform would (``function_runtime.local`` ->
:class:`dask_faas.worker.Runtime`), with the deployment's environment and nothing else shared with
the client: payloads go in and responses come out as bytes over pipes. Like a container platform,
the pool enforces per-invocation limits, and a process that dies for any reason fails only the call
it was running and is replaced:

- ``timeout_s``: a call past it is stopped by killing its process;
- ``memory_mb``: sent with each payload, the function process enforces it on itself
  (:class:`dask_faas.worker.MemoryLimit`, a soft ``RLIMIT_DATA`` of its data size at the call's start
  plus ``memory_mb``): an allocation past it fails at once with ``MemoryError``, answered as a
  :class:`~dask_faas.exceptions.FunctionMemoryError`, and the process stays warm. The pool keeps a
  backstop for what that limit does not count (shared mappings such as ``multiprocessing``'s shared
  memory, a function that raises its own soft limit): a process whose resident memory grows by more
  than ``memory_mb`` plus :data:`BACKSTOP_SLACK_MB` during a call (sampled every ``poll_interval_s``)
  is killed, and the call fails with a FunctionMemoryError too.

:meth:`LocalBackend.close` stops the whole pool at once: idle processes see the end of their stdin,
busy ones get SIGTERM (their calls are abandoned), then all share one grace deadline, after which
the rest are killed together. Closing never takes much longer than one process start-up, however
many processes are busy.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from ...exceptions import (
    ConfigError,
    FunctionMemoryError,
    FunctionTimeoutError,
    InvocationError,
    WorkerDiedError,
)
from .base import ComputeBackend, InvokeOptions, begin

__all__ = ["BACKSTOP_SLACK_MB", "LocalBackend"]

_LENGTH = struct.Struct(">Q")
_HEADER = struct.Struct(">QI")  # payload length, the call's memory_mb (function_runtime/local.py)
#: How much more than ``memory_mb`` a call's process may grow (resident) before the pool kills it:
#: room for what the in-process limit does not count and the pool does (code pages of the modules
#: a call imports), so that the in-process limit, which keeps the process, comes first.
BACKSTOP_SLACK_MB = 64
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_ENTRY = [sys.executable, "-m", "function_runtime.local"]
#: What a function process writes once it can take calls (function_runtime/local.py).
READY = b"R"
#: How long a new function process may take to start, apart from its first call's time limit.
START_TIMEOUT_S = 60.0


def _open_statm(pid: int) -> int | None:
    """A descriptor of ``/proc/<pid>/statm``, kept open while the process lives (None without /proc)."""
    try:
        return os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def _resident_bytes(statm: int | None) -> int:
    """Resident memory of the process whose ``statm`` descriptor this is (0 where it cannot be read)."""
    if statm is None:
        return 0
    try:
        return int(os.pread(statm, 512, 0).split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


class _FunctionProcess:
    """One warm function instance: a child process speaking length-prefixed frames."""

    def __init__(self, environment: Mapping[str, str]) -> None:
        self.popen = subprocess.Popen(
            _ENTRY, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=dict(environment), bufsize=0
        )
        self.pid = self.popen.pid
        self._statm = _open_statm(self.pid)
        self._in = self.popen.stdin.fileno()  # type: ignore[union-attr]
        self._out = self.popen.stdout.fileno()  # type: ignore[union-attr]
        #: Set when the pool's close stopped this process in the middle of a call.
        self.stopped_by_close = False
        self._started = False

    def call(self, payload: bytes, options: InvokeOptions, poll_interval_s: float) -> bytes:
        """Send ``payload``, wait for the reply within the limits, return the response bytes.

        A process's first call waits for it to start (its ready byte, within :data:`START_TIMEOUT_S`)
        before the call's own time limit begins, as a platform's initialisation is not the call's.
        """
        if not self._started:
            self._wait_started(options)
        deadline = time.monotonic() + options.timeout_s
        memory_limit = _resident_bytes(self._statm) + (options.memory_mb + BACKSTOP_SLACK_MB) * 2**20
        try:
            os.write(self._in, _HEADER.pack(len(payload), options.memory_mb))
            view = memoryview(payload)
            while view:
                view = view[os.write(self._in, view) :]
        except OSError:  # the process died (or the pool is closing)
            raise self._died(options) from None
        header = self._read(_LENGTH.size, deadline, memory_limit, options, poll_interval_s)
        (length,) = _LENGTH.unpack(header)
        reply = self._read(length, deadline, memory_limit, options, poll_interval_s)
        if reply[:1] == b"\1":
            raise InvocationError(f"{options.label}: the function runtime refused it: {reply[1:].decode()}")
        return reply[1:]

    def _read(self, n: int, deadline: float, memory_limit: int, options: InvokeOptions, poll: float) -> bytes:
        chunks: list[bytes] = []
        while n:
            ready, _, _ = select.select([self._out], [], [], max(0.0, min(poll, deadline - time.monotonic())))
            if ready:
                try:
                    chunk = os.read(self._out, min(n, 1 << 24))
                except OSError:
                    chunk = b""
                if not chunk:
                    raise self._died(options)
                chunks.append(chunk)
                n -= len(chunk)
                continue
            if time.monotonic() >= deadline:
                self.kill()
                raise FunctionTimeoutError(
                    f"{options.label} exceeded its time limit timeout_s={options.timeout_s:g} "
                    f"and was stopped (function process {self.pid} replaced)"
                )
            resident = _resident_bytes(self._statm)
            if resident > memory_limit:
                self.kill()
                raise FunctionMemoryError(
                    f"{options.label} exceeded its memory limit memory_mb={options.memory_mb} "
                    f"(resident {resident / 2**20:.0f} MB, grown past the limit by memory the "
                    f"function process does not count itself) and was stopped "
                    f"(function process {self.pid} replaced)"
                )
        return b"".join(chunks)

    def _wait_started(self, options: InvokeOptions) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._out], [], [], max(0.0, deadline - time.monotonic()))
            if ready:
                try:
                    byte = os.read(self._out, 1)
                except OSError:
                    byte = b""
                if byte != READY:
                    raise self._died(options)
                self._started = True
                return
        self.kill()
        raise WorkerDiedError(
            f"{options.label}: function process {self.pid} did not start within {START_TIMEOUT_S:g} s "
            "(replaced)"
        )

    def _died(self, options: InvokeOptions) -> WorkerDiedError:
        code = self.popen.wait()
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        return WorkerDiedError(f"{options.label}: function process {self.pid} died ({how}) while running it")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self) -> None:
        """Ask the process to stop now (SIGTERM), whatever it is doing."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the process to end; return whether it has."""
        try:
            self.popen.wait(max(0.0, timeout_s))
        except subprocess.TimeoutExpired:
            return False
        return True

    def release(self) -> None:
        """Close the pipes of a process that has ended, and its ``statm``."""
        for pipe in (self.popen.stdin, self.popen.stdout):
            with contextlib.suppress(OSError):
                pipe.close()  # type: ignore[union-attr]
        if self._statm is not None:
            with contextlib.suppress(OSError):
                os.close(self._statm)
            self._statm = None

    def kill(self) -> None:
        """Kill the process (SIGKILL) and reap it."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
        self.popen.wait()


class LocalBackend(ComputeBackend):
    """A warm pool of function processes on this machine (the embedded default).

    Parameters
    ----------
    environment : mapping
        The deployment's environment: what every function process gets (signing key, storage
        credentials). Added to this process's environment.
    workers : int, optional
        Pool size; defaults to the CPU count.
    poll_interval_s : float
        How often a running call's resident memory is sampled (the backstop of the memory limit).
    close_grace_s : float
        How long :meth:`close` lets the processes end by themselves before it kills them.
    """

    name = "local"
    confirms_start = True
    max_payload_bytes = 64 * 2**20
    max_timeout_s = 24 * 3600.0
    max_memory_mb = 1 << 20

    def __init__(
        self,
        environment: Mapping[str, str],
        workers: int | None = None,
        poll_interval_s: float = 0.02,
        close_grace_s: float = 2.0,
    ) -> None:
        workers = (os.cpu_count() or 1) if workers is None else workers
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ConfigError(f"faas.workers must be a positive integer, got {workers!r}")
        self.concurrency = workers
        self._poll = poll_interval_s
        self._grace = close_grace_s
        # Like a container built from this environment: the runtime and the client's modules import.
        runtime_root = str(Path(__file__).resolve().parents[3])
        path = os.pathsep.join(dict.fromkeys(p for p in (runtime_root, *sys.path) if p))
        self._environment = {**os.environ, "PYTHONPATH": path, **environment}
        self._queue: queue.SimpleQueue[tuple[Future[bytes], bytes, InvokeOptions] | None] = (
            queue.SimpleQueue()
        )
        # guards _closed, _busy and the replacement of processes, so that close() sees every
        # process and knows which ones are running a call
        self._lock = threading.Lock()
        self._closed = False
        self._processes: list[_FunctionProcess] = []
        try:
            for _ in range(workers):
                self._processes.append(_FunctionProcess(self._environment))
        except BaseException:  # e.g. out of processes: stop the ones already started
            for process in self._processes:
                process.release()
            self._stop_processes(self._processes, busy=[])
            raise
        self._busy = [False] * workers
        self._threads = [
            threading.Thread(target=self._serve, args=(i,), name=f"dask-faas-local-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> LocalBackend:
        return cls(environment, workers=settings.get("workers"))

    @property
    def pids(self) -> list[int]:
        """Process ids of the pool's current function processes."""
        return [p.pid for p in self._processes]

    def invoke(self, payload: bytes, options: InvokeOptions) -> Future[bytes]:
        """Queue one invocation for the next free function process.

        Raises
        ------
        RuntimeError
            After :meth:`close`.
        """
        future: Future[bytes] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"cannot invoke {options.label}: the local backend is closed")
            self._queue.put((future, payload, options))
        return future

    def _serve(self, slot: int) -> None:
        try:
            self._serve_calls(slot)
        finally:
            self._processes[slot].release()  # an idle process ends when its stdin closes

    def _serve_calls(self, slot: int) -> None:
        while (item := self._queue.get()) is not None:
            future, payload, options = item
            if not begin(future, options, wanted=not self._closed):
                continue
            with self._lock:
                closed = self._closed
                self._busy[slot] = not closed
                process = self._processes[slot]
            if closed:  # close() came between on_start and here: the payload was not sent
                future.set_exception(
                    InvocationError(f"{options.label}: not sent, the local backend was closed")
                )
                continue
            try:
                response = process.call(payload, options, self._poll)
            except InvocationError as exc:
                with self._lock:
                    self._busy[slot] = False
                    if not process.alive() and not self._closed:
                        process.release()
                        self._processes[slot] = _FunctionProcess(self._environment)
                error = exc
                if process.stopped_by_close:
                    error = InvocationError(
                        f"{options.label}: stopped while running, the local backend was closed "
                        f"(function process {process.pid})"
                    )
                future.set_exception(error)
            except BaseException as exc:  # a bug here must not hang the caller
                future.set_exception(exc)
                raise
            else:
                with self._lock:
                    self._busy[slot] = False
                future.set_result(response)

    def close(self) -> None:
        """Stop the pool, all processes at once.

        Invocations not yet sent are cancelled; running ones fail with an
        :class:`~dask_faas.exceptions.InvocationError` (their processes get SIGTERM). Idle processes
        end when their stdin closes. Whatever has not ended within one shared ``close_grace_s`` is
        killed. When this returns every process is reaped and every future of the pool is done.
        Closing again does nothing.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            processes = list(self._processes)
            busy = [p for p, running in zip(self._processes, self._busy, strict=True) if running]
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)  # each thread then closes its idle process's stdin
        self._stop_processes(processes, busy)
        deadline = time.monotonic() + max(10.0, self._grace)
        for thread in self._threads:
            if thread is not threading.current_thread():  # closed from a callback of one of its threads
                thread.join(max(0.0, deadline - time.monotonic()))

    def _stop_processes(self, processes: list[_FunctionProcess], busy: list[_FunctionProcess]) -> None:
        """Signal the busy ones, give all one shared grace period, then kill the rest together."""
        for process in busy:
            process.stopped_by_close = True
            process.terminate()
        deadline = time.monotonic() + self._grace
        for process in processes:
            process.wait(deadline - time.monotonic())
        for process in processes:
            process.kill()
