"""What runs inside a function for a pool chunk or a process (importable there: no dask, no pandas)."""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .util import RemoteLogIOBuffer


@dataclass(frozen=True)
class Chunk:
    """Calls of one pool invocation: ``func`` over ``items`` (each unpacked with ``star``), after
    ``initializer(*initargs)`` once."""

    func: Callable[..., Any]
    items: Sequence[Any]
    star: bool = False
    kwds: dict[str, Any] | None = None
    initializer: Callable[..., Any] | None = None
    initargs: tuple[Any, ...] = ()
    stream: str | None = None


def run_chunk(task: Chunk) -> list[Any]:
    """Run one pool chunk; a list of its values (the first error is raised)."""
    log = RemoteLogIOBuffer(task.stream) if task.stream else None
    if log is not None:
        log.start()
    try:
        if task.initializer is not None:
            task.initializer(*task.initargs)
        kwds = task.kwds or {}
        return [task.func(*item, **kwds) if task.star else task.func(item, **kwds) for item in task.items]
    finally:
        if log is not None:
            log.stop()


@dataclass(frozen=True)
class ProcessRun:
    """A :class:`~dask_faas.compat.multiprocessing.Process` as it travels: the object and its stream."""

    process: Any
    stream: str | None = None


def run_process(task: ProcessRun) -> tuple[int, int]:
    """Run ``task.process.run()``; ``(exitcode, pid)`` as ``multiprocessing`` would set them.

    As in a ``multiprocessing`` child, an exception prints ``Process <name>:`` and its traceback to
    ``sys.stderr`` (streamed too with ``STREAM_STDOUT``) and makes the exit code 1; ``SystemExit``
    gives its code.
    """
    log = RemoteLogIOBuffer(task.stream) if task.stream else None
    saved_err = sys.stderr
    if log is not None:
        log.start()
        sys.stderr = log  # type: ignore[assignment]
    try:
        try:
            task.process.run()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            sys.stderr.write(f"Process {task.process.name}:\n{traceback.format_exc()}")
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        sys.stderr = saved_err
        if log is not None:
            log.stop()
    return code, os.getpid()
