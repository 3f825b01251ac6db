"""What a function instance is on every emulator: a real process in its own process group.

An instance runs in a :class:`Sandbox` (a fresh temporary directory holding its empty working
directory, ``HOME`` and ``TMPDIR``) with a clean environment (:func:`clean_environment`): ``PATH``,
``HOME``, ``TMPDIR``, ``LANG``, ``PYTHONUNBUFFERED=1`` and the variables the emulator gives, never
the emulator's own. :class:`InstanceProcess` starts it as its own process group, copies its output
line by line, prefixed, to the emulator's output (never an unread pipe) and kills the group as a
whole. :func:`group_rss` measures the resident memory of process groups from /proc, and
:class:`MemorySampler` is the loop that watches it; :func:`process_table` is the /proc process
table the tests check for leftover processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

__all__ = [
    "InstanceProcess",
    "MemorySampler",
    "Sandbox",
    "clean_environment",
    "free_port",
    "group_rss",
    "kill_group",
    "process_table",
    "read_proc",
    "write_output",
]

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: How often :class:`MemorySampler` samples by default.
SAMPLE_S = 0.02
_OUTPUT_LOCK = threading.Lock()
T = TypeVar("T")


def write_output(data: str | bytes) -> None:
    """Write ``data`` to this process's output at once, flushed (a line never mixes with another's)."""
    raw = data.encode() if isinstance(data, str) else data
    with _OUTPUT_LOCK:
        sys.stdout.flush()
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (free when asked: another process may take it first)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sandbox:
    """A fresh temporary directory with an instance's empty working directory, ``HOME`` and ``TMPDIR``.

    Parameters
    ----------
    prefix : str
        The temporary directory's name prefix.
    work : str
        The working directory's name inside it (``task`` on Lambda).
    """

    def __init__(self, prefix: str, work: str = "work") -> None:
        self.root = tempfile.mkdtemp(prefix=prefix)
        self.work, self.home, self.tmp = (os.path.join(self.root, d) for d in (work, "home", "tmp"))
        for directory in (self.work, self.home, self.tmp):
            os.mkdir(directory)

    def remove(self) -> None:
        """Delete the sandbox and what the instance left in it."""
        shutil.rmtree(self.root, ignore_errors=True)


def clean_environment(
    sandbox: Sandbox,
    variables: dict[str, str] | None = None,
    *,
    path: str | None = None,
    lang: str = "C.UTF-8",
) -> dict[str, str]:
    """An instance's whole environment: the clean base, then ``variables`` (which may override it).

    Parameters
    ----------
    sandbox : Sandbox
        Gives ``HOME`` and ``TMPDIR``.
    variables : dict, optional
        The function's and the platform's variables.
    path : str, optional
        ``PATH`` (this process's by default).
    lang : str
        ``LANG``.
    """
    base = {
        "PATH": path if path is not None else os.environ.get("PATH", os.defpath),
        "HOME": sandbox.home,
        "TMPDIR": sandbox.tmp,
        "LANG": lang,
        "PYTHONUNBUFFERED": "1",
    }
    return {**base, **(variables or {})}


class InstanceProcess:
    """A function instance's process: its own process group, its output copied to ours, prefixed.

    Parameters
    ----------
    argv : list of str
        The command.
    variables : dict
        Variables on top of :func:`clean_environment`'s base.
    sandbox : Sandbox
        Its working directory (cwd), ``HOME`` and ``TMPDIR``; removed if the command cannot start.
    prefix : str
        Put before each line it prints, e.g. ``"[wsk1] "``.
    popen : callable
        Starts the process (``subprocess.Popen`` or a wrapper taking the same arguments).
    on_line : callable, optional
        Also given each raw output line (bytes) before it is copied.
    on_eof : callable, optional
        Called by the copying thread once the output has ended (the process has closed it).

    Raises
    ------
    OSError
        If the command cannot be started.
    """

    def __init__(
        self,
        argv: list[str],
        variables: dict[str, str],
        sandbox: Sandbox,
        *,
        prefix: str,
        popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen,
        on_line: Callable[[bytes], None] | None = None,
        on_eof: Callable[[], None] | None = None,
    ) -> None:
        self.sandbox = sandbox
        try:
            self.process = popen(
                argv,
                cwd=sandbox.work,
                env=clean_environment(sandbox, variables),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
            )
        except BaseException:
            sandbox.remove()
            raise
        self.pid = self.process.pid
        self._prefix, self._on_line, self._on_eof = prefix.encode(), on_line, on_eof
        threading.Thread(target=self._copy_output, name=f"output-{self.pid}", daemon=True).start()

    def _copy_output(self) -> None:
        stream = self.process.stdout
        assert stream is not None
        for line in stream:
            if self._on_line is not None:
                self._on_line(line)
            write_output(self._prefix + (line if line.endswith(b"\n") else line + b"\n"))
        stream.close()
        if self._on_eof is not None:
            self._on_eof()

    def poll(self) -> int | None:
        """The exit status, or ``None`` while it runs."""
        return self.process.poll()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait (at most ``timeout_s``) until the process has been reaped; return whether it has."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    def signal_group(self, signum: int = signal.SIGKILL) -> bool:
        """Send ``signum`` to the process group; False if the group is gone."""
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the process group: the instance, the function and whatever they started."""
        self.signal_group(signal.SIGKILL)


def _stats() -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, fields of /proc/pid/stat after the command name)`` of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        yield int(entry), stat[stat.rindex(b")") + 2 :].split()  # state ppid pgrp ... rss is the 22nd


def process_table() -> dict[int, tuple[str, int, int]]:
    """``pid -> (state, parent pid, process group)`` of every process, from /proc."""
    return {pid: (fields[0].decode(), int(fields[1]), int(fields[2])) for pid, fields in _stats()}


def read_proc(pid: int, name: str) -> bytes | None:
    """``/proc/<pid>/<name>`` (``cmdline``, ``environ``...), or ``None`` if it cannot be read."""
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return None


def group_rss(groups: Iterable[int]) -> dict[int, int]:
    """Resident bytes of all the processes of each process group in ``groups``, from /proc."""
    totals = dict.fromkeys(groups, 0)
    if totals:
        for _, fields in _stats():
            group = int(fields[2])
            if group in totals:
                totals[group] += int(fields[21]) * PAGE_SIZE
    return totals


class MemorySampler(Generic[T]):
    """A thread sampling, while anything is watched, the resident memory of the watched process groups.

    Parameters
    ----------
    snapshot : callable
        What is watched now: ``{process group: item}``; empty to wait for :meth:`wake`; ``None``
        to stop.
    act : callable
        Called with the snapshot and :func:`group_rss` of its groups, every ``interval_s``.
    interval_s : float
        How often to sample.
    name : str
        The thread's name.
    """

    def __init__(
        self,
        snapshot: Callable[[], dict[int, T] | None],
        act: Callable[[dict[int, T], dict[int, int]], Any],
        interval_s: float = SAMPLE_S,
        name: str = "memory",
    ) -> None:
        self._snapshot, self._act, self._interval_s = snapshot, act, interval_s
        self._wake = threading.Event()
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def wake(self) -> None:
        """Something is watched now (or the sampler should stop): look again."""
        self._wake.set()

    def _loop(self) -> None:
        while (watched := self._snapshot()) is not None:
            if not watched:
                self._wake.wait()
                self._wake.clear()
                continue
            self._act(watched, group_rss(watched))
            time.sleep(self._interval_s)


def kill_group(group: int) -> None:
    """SIGKILL process group ``group`` if it still exists."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, signal.SIGKILL)
