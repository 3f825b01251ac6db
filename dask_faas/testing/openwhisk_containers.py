"""The OpenWhisk emulator's invoker side: action containers, their limits and the container pool.

Every action container is a real process, ``sys.executable -m function_runtime.openwhisk`` (the
Docker action's command), a :class:`~dask_faas.testing.instances.InstanceProcess` in its own
process group with a clean environment and a fresh empty working directory, driven over HTTP
through ``/init`` and ``/run``. Containers are started with a parent-death signal, so none outlives
an emulator that is killed outright. The :class:`ContainerPool` keeps warm containers per action
revision, enforces the time and memory limits (sampled every 20 ms) and turns a container's answer
into an activation response as the invoker does.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .instances import InstanceProcess, MemorySampler, Sandbox, free_port

__all__ = ["MAX_PAYLOAD_BYTES", "STATUS", "Container", "ContainerPool"]

#: ``whisk.activation.payload.max`` and ``truncation``: the request and result size limits (1 MB).
MAX_PAYLOAD_BYTES = 1048576
SAMPLE_S = 0.02  # how often the time, memory and kill limits of running containers are checked
# OpenWhisk's texts (org.apache.openwhisk.http.Messages)
ABNORMAL_INIT = "The action did not initialize and exited unexpectedly."
ABNORMAL_RUN = "The action did not produce a valid response and exited unexpectedly."
MEMORY_EXHAUSTED = "The action exhausted its memory and was aborted."
#: Activation response statuses, by code.
STATUS = ["success", "application error", "action developer error", "whisk internal error"]
SUCCESS, APPLICATION_ERROR, DEVELOPER_ERROR, WHISK_ERROR = range(4)


def _timed_out(timeout_ms: int, init: bool) -> str:
    return f"The action exceeded its time limits of {timeout_ms} milliseconds" + (
        " during initialization." if init else "."
    )


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


class _Spawner:
    """Starts every container from one long-lived thread, with a parent-death signal.

    Linux ties ``PR_SET_PDEATHSIG`` to the thread that forked, so containers are forked by this
    thread, which lives as long as the emulator: if the emulator is killed without running its
    SIGTERM cleanup, the kernel kills its containers.
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[tuple[list[str], dict[str, Any], list[Any], threading.Event]]
        self._requests = queue.SimpleQueue()
        self._parent = os.getpid()
        threading.Thread(target=self._loop, name="spawner", daemon=True).start()

    def popen(self, args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        box: list[Any] = []
        done = threading.Event()
        self._requests.put((args, kwargs, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    def _die_with_parent(self) -> None:  # in the child, between fork and exec
        if _LIBC is not None:
            _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != self._parent:
            os._exit(1)

    def _loop(self) -> None:
        while True:
            args, kwargs, box, done = self._requests.get()
            try:
                box.append(subprocess.Popen(args, preexec_fn=self._die_with_parent, **kwargs))
            except BaseException as exc:
                box.append(exc)
            done.set()


class Container:
    """One action container: a process serving ``/init`` and ``/run`` on a loopback port.

    Parameters
    ----------
    cid : str
        The container's id (prefixes its output).
    key : tuple
        ``(namespace, action, revision)`` it was started for.
    """

    def __init__(self, cid: str, key: tuple[str, str, int], spawner: _Spawner, api_host: str) -> None:
        self.cid, self.key = cid, key
        self.kill_reason: str | None = None
        self._lock = threading.Lock()
        self.port = free_port()
        variables = {"PORT": str(self.port), "__OW_LISTEN_HOST": "127.0.0.1", "__OW_API_HOST": api_host}
        self._proc = InstanceProcess(
            [sys.executable, "-m", "function_runtime.openwhisk"],
            variables,
            Sandbox(f"ow-{cid}-"),
            prefix=f"[{cid}] ",
            popen=spawner.popen,
            on_eof=self._reap,
        )
        self.process = self._proc.process

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the container accepts connections; False if it exited or did not in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.alive():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                time.sleep(0.01)
        return False

    def post(self, path: str, body: dict[str, Any], timeout_s: float) -> tuple[int, bytes]:
        """POST ``body`` as JSON; raises OSError (or http.client's errors) if the container went away."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
        try:
            connection.connect()  # headers and body go in two writes: no Nagle delay between them
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def alive(self) -> bool:
        return self.kill_reason is None and self.process.poll() is None

    def kill(self, reason: str) -> None:
        """SIGKILL the container's process group; the first reason given is kept."""
        with self._lock:
            if self.kill_reason is None:
                self.kill_reason = reason
        self._proc.kill()

    def _reap(self) -> None:
        self.process.wait()
        self._proc.sandbox.remove()


class _Monitor:
    """One thread checking the time, memory and kill deadlines of every busy container."""

    def __init__(self) -> None:
        self._watched: dict[Container, tuple[float, int, float | None]] = {}
        self._lock = threading.Lock()
        self._sampler = MemorySampler(self._snapshot, self._check, SAMPLE_S, name="monitor")

    def watch(
        self, container: Container, timeout_s: float, memory_mb: int, kill_after_s: float | None
    ) -> None:
        now = time.monotonic()
        kill_at = None if kill_after_s is None else now + kill_after_s
        with self._lock:
            self._watched[container] = (now + timeout_s, memory_mb * 2**20, kill_at)
        self._sampler.wake()

    def unwatch(self, container: Container) -> None:
        with self._lock:
            self._watched.pop(container, None)

    def _snapshot(self) -> dict[int, tuple[Container, tuple[float, int, float | None]]]:
        with self._lock:
            return {c.process.pid: (c, entry) for c, entry in self._watched.items()}

    def _check(
        self, watched: dict[int, tuple[Container, tuple[float, int, float | None]]], rss: dict[int, int]
    ) -> None:
        now = time.monotonic()
        for pid, (container, entry) in watched.items():
            deadline, memory, kill_at = entry
            reason = (
                "timeout"
                if now >= deadline
                else "memory"
                if rss.get(pid, 0) > memory
                else "killed"
                if kill_at is not None and now >= kill_at
                else None
            )
            with self._lock:  # still the same call (not one that started since the snapshot)
                if reason and self._watched.get(container) is entry:
                    container.kill(reason)


class ContainerPool:
    """The invoker's containers: warm ones per action revision, the limits' monitor, shutdown.

    Parameters
    ----------
    lock : threading.Lock
        The emulator's lock (it guards the actions too: a container is kept warm only for the
        action's current revision, checked under the same lock).
    is_current : callable
        ``is_current(key)``, called holding ``lock``: whether ``(namespace, action, revision)`` is
        still the action's current revision.
    """

    def __init__(self, lock: threading.Lock, is_current: Callable[[tuple[str, str, int]], bool]) -> None:
        self.lock, self._is_current = lock, is_current
        self.idle: dict[tuple[str, str, int], list[Container]] = {}
        self.containers: set[Container] = set()
        self.closed = False
        self._spawner = _Spawner()
        self._monitor = _Monitor()
        self._ids = itertools.count()

    def call(
        self,
        container: Container,
        path: str,
        body: dict[str, Any],
        limits: dict[str, int],
        kill_after_s: float | None,
        init: bool,
    ) -> tuple[int, dict[str, Any], str]:
        """One /init or /run under the action's ``limits``: ``(status code, result, log outcome)``."""
        timeout_ms, memory_mb = limits["timeout"], limits["memory"]
        self._monitor.watch(container, timeout_ms / 1000, memory_mb, kill_after_s)
        try:
            status, data = container.post(path, body, timeout_s=timeout_ms / 1000 + 30)
        except (OSError, http.client.HTTPException):
            status, data = None, b""
        finally:
            self._monitor.unwatch(container)
        if container.kill_reason == "timeout":
            return DEVELOPER_ERROR, {"error": _timed_out(timeout_ms, init)}, "timeout"
        if container.kill_reason == "memory":
            return DEVELOPER_ERROR, {"error": MEMORY_EXHAUSTED}, "memory"
        if status is None or container.kill_reason is not None:
            return DEVELOPER_ERROR, {"error": ABNORMAL_INIT if init else ABNORMAL_RUN}, "died"
        return _interpret(status, data, init)

    def acquire(self, key: tuple[str, str, int], api_host: str) -> tuple[Container | None, bool]:
        """A warm container of ``key`` (namespace, action, revision) or a new one (cold), started and
        accepting connections; ``(None, True)`` if none could be started."""
        with self.lock:
            pool = self.idle.get(key, [])
            while pool:
                container = pool.pop()
                if container.alive():
                    return container, False
                self.containers.discard(container)
        for _ in range(3):  # another process may take the free port first
            cid = f"wsk{next(self._ids)}_{key[1].replace('/', '_')}"
            container = Container(cid, key, self._spawner, api_host)
            with self.lock:
                self.containers.add(container)
                closed = self.closed
            if not closed and container.wait_ready(60):
                return container, True
            self.stop(lambda c, doomed=container: c is doomed, "start failed")
            if closed:
                break
        return None, True

    def release(self, container: Container, healthy: bool) -> None:
        """Give a container back: warm if ``healthy`` and its revision is current, else killed."""
        with self.lock:
            if healthy and container.alive() and self._is_current(container.key):
                self.idle.setdefault(container.key, []).append(container)
                return
            self.containers.discard(container)
        container.kill("destroyed")

    def stop(self, which: Callable[[Container], bool], reason: str) -> list[Container]:
        """Kill the containers ``which`` selects (process groups); return them."""
        with self.lock:
            doomed = [c for c in self.containers if which(c)]
            self.containers.difference_update(doomed)
            for pool in self.idle.values():
                pool[:] = [c for c in pool if c not in doomed]
        for container in doomed:
            container.kill(reason)
        return doomed

    def close(self, grace_s: float = 5.0) -> None:
        """Kill every container's process group and wait (a bounded time) until they are reaped."""
        with self.lock:
            self.closed = True
        deadline = time.monotonic() + grace_s
        for container in self.stop(lambda c: True, "emulator stopped"):
            with contextlib.suppress(subprocess.TimeoutExpired):
                container.process.wait(timeout=max(0.0, deadline - time.monotonic()))


def _interpret(status: int, data: bytes, init: bool) -> tuple[int, dict[str, Any], str]:
    """The activation response for a container's answer (``ActivationResponse.process*ResponseContent``)."""
    if len(data) > MAX_PAYLOAD_BYTES:
        text = data[:MAX_PAYLOAD_BYTES].decode("utf-8", "replace")
        error = (
            f"The action produced a response that exceeded the allowed length: {len(data)} > "
            f"{MAX_PAYLOAD_BYTES} bytes. The truncated response was: {text}"
        )
        return (DEVELOPER_ERROR if init else APPLICATION_ERROR), {"error": error}, "error"
    text = data.decode("utf-8", "replace")
    try:
        result = json.loads(text)
    except ValueError:
        result = None
    if init:
        if status == 200:
            return SUCCESS, {}, "ok"
        error = result.get("error") if isinstance(result, dict) else None
        fallback = "The action failed during initialization" + (f": {text}" if text else ".")
        return DEVELOPER_ERROR, {"error": error if error is not None else fallback}, "error"
    if isinstance(result, dict):
        if status == 200:
            return (APPLICATION_ERROR, result, "error") if "error" in result else (SUCCESS, result, "ok")
        error = result.get("error", f"The action did not produce a valid JSON or JSON Array response: {text}")
        return DEVELOPER_ERROR, {"error": error}, "error"
    invalid = "The action did not produce a valid JSON or JSON Array response" + (
        f": {text}" if text else "."
    )
    if isinstance(result, list) and status == 200:
        return SUCCESS, result, "ok"  # type: ignore[return-value]
    return DEVELOPER_ERROR, {"error": invalid}, "error"
