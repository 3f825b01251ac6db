"""``lithops.multiprocessing.Process``: ``multiprocessing.Process``'s API, ``run()`` in one function.

Each started process is one call of a :class:`~dask_faas.compat.FunctionExecutor` of its own (made
with ``config.LITHOPS_CONFIG``, released by :meth:`Process.join` once the call ended). The object
travels pickled: ``run()`` overridden by a subclass runs in the function too. With
``config.STREAM_STDOUT`` what the process prints (and its traceback) is streamed to the client's
``sys.stdout`` through object storage while it runs. ``pid`` is the function process's, known
once the call ended.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import multiprocessing
import os
import signal
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import config
from ._tasks import ProcessRun, run_process

_counter = itertools.count(1)
_children: weakref.WeakSet[Process] = weakref.WeakSet()


class Process:
    """A process whose ``run()`` runs in a function (``multiprocessing.Process``'s parameters)."""

    def __init__(
        self,
        group: None = None,
        target: Callable[..., Any] | None = None,
        name: str | None = None,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        daemon: bool | None = None,
    ) -> None:
        if group is not None:
            raise ValueError("group argument must be None for now")
        self._target = target
        self._args = tuple(args)
        self._kwargs = dict(kwargs or {})
        self._name = name or f"Process-{next(_counter)}"
        self.daemon = bool(daemon)
        self._future: Any = None
        self._executor: Any = None
        self._feed: Any = None
        self._exitcode: int | None = None
        self._pid: int | None = None

    def run(self) -> None:
        """What the process does (in the function): ``target(*args, **kwargs)``."""
        if self._target is not None:
            self._target(*self._args, **self._kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_future=None, _executor=None, _feed=None)
        return state

    @property
    def name(self) -> str:
        return self._name

    @name.setter
    def name(self, value: str) -> None:
        self._name = str(value)

    def start(self) -> None:
        """Invoke the function running :meth:`run`."""
        if self._future is not None or self._exitcode is not None:
            raise AssertionError("cannot start a process twice")
        from .. import FunctionExecutor
        from .util import RemoteLoggingFeed

        self._executor = FunctionExecutor(config=config.get_parameter(config.LITHOPS_CONFIG) or None)
        stream = None
        if config.get_parameter(config.STREAM_STDOUT):
            stream = f"process-{self._executor.executor_id}"
            self._feed = RemoteLoggingFeed(stream, self._executor.storage)
            self._feed.start()
        self._future = self._executor.call_async(run_process, (ProcessRun(self, stream),))
        _children.add(self)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the call to end (at most ``timeout`` seconds); then release its executor."""
        if self._future is None:
            if self._exitcode is None:
                raise AssertionError("can only join a started process")
            return
        try:
            self._future.future.exception(timeout)
        except cf.CancelledError:
            pass
        except TimeoutError:
            return
        self._finish()

    def _finish(self) -> None:
        future, self._future = self._future, None
        error = None if future.future.cancelled() else future.future.exception()
        if future.future.cancelled():
            self._exitcode = -signal.SIGTERM
        elif error is None:
            self._exitcode, self._pid = future.future.result()
        else:
            self._exitcode = 1
            print(f"Process {self.name}: its invocation failed: {error!r}", file=sys.stderr)
        try:
            self._executor.close()
        finally:
            self._executor = None
            if self._feed is not None:
                self._feed.stop()
                self._feed = None
        _children.discard(self)

    def is_alive(self) -> bool:
        """Whether the call is started and not ended."""
        return self._future is not None and not self._future.future.done()

    @property
    def exitcode(self) -> int | None:
        """0, the code of ``SystemExit``, 1 after an exception; None while it runs."""
        if self._future is not None and self._future.future.done():
            self._finish()
        return self._exitcode

    @property
    def pid(self) -> int | None:
        """The function process's pid (known once the call ended)."""
        self.exitcode  # noqa: B018  (ends a done call)
        return self._pid

    ident = pid

    def terminate(self) -> None:
        """Cancel the call if it has not started (a running function is not interrupted)."""
        if self._future is not None:
            self._future.cancel()

    kill = terminate

    def close(self) -> None:
        """Release the process object (``ValueError`` while it runs)."""
        if self.is_alive():
            raise ValueError(f"Cannot close a process while it is still running: {self!r}")

    def __repr__(self) -> str:
        state = "started" if self.is_alive() else ("initial" if self._exitcode is None else "stopped")
        return f"<{type(self).__name__} name={self.name!r} {state} exitcode={self._exitcode}>"


def current_process() -> Any:
    """The process this code runs in (``multiprocessing.current_process()``; in a function, the
    function's process)."""
    return multiprocessing.current_process()


def parent_process() -> None:
    """None: a function has no parent process of this program (as a process started by
    ``multiprocessing`` in a fresh interpreter sees none outside its parent's)."""
    return None


def active_children() -> list[Process]:
    """Started processes whose call has not ended (ended ones are joined, as ``multiprocessing``)."""
    alive = []
    for process in list(_children):
        if process.is_alive():
            alive.append(process)
        else:
            process.exitcode  # noqa: B018
    return alive


def cpu_count() -> int:
    """The client's CPU count (as Lithops, which returns a local count too)."""
    return os.cpu_count() or 1
