"""A joblib backend whose batches run as calls of a :class:`~dask_faas.FaasExecutor`.

::

    import joblib
    import dask_faas.joblib_backend as faas_joblib

    faas_joblib.register_faas()
    with joblib.parallel_backend("faas", workers=8):       # faas settings, or executor=<FaasExecutor>
        joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(100))

Each batch of joblib tasks is one invocation (joblib's auto-batching sizes batches from their
durations). Exceptions raised in a task are re-raised on the client with their type, and with
the remote traceback as ``__cause__``, as :meth:`FaasExecutor.submit` does. Parallel calls nested
inside a task run sequentially in that function.

When no executor is given, one is made from the settings at the start of each ``Parallel`` call
and shut down at its end (its job prefix is deleted then); a given executor is used as it is
and left open. This module imports joblib; ``import dask_faas`` does not import it.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from joblib.parallel import (
    AutoBatchingMixin,
    ParallelBackendBase,
    SequentialBackend,
    register_parallel_backend,
)

if TYPE_CHECKING:
    from .executor import FaasExecutor

__all__ = ["FaasBackend", "register_faas"]


class FaasBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's ``ParallelBackendBase`` over a :class:`~dask_faas.FaasExecutor`.

    Parameters
    ----------
    executor : FaasExecutor, optional
        Run every batch on this executor (never shut down by the backend).
    nesting_level, inner_max_num_threads : int, optional
        joblib's own parameters.
    **settings
        ``faas`` settings of the executor made for each ``Parallel`` call when ``executor`` is
        not given (``workers``, ``backend``, ``storage``, ``s3={...}``, ...).
    """

    supports_retrieve_callback = True
    supports_sharedmem = False
    default_n_jobs = -1

    def __init__(
        self,
        executor: FaasExecutor | None = None,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **settings: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self.settings = settings
        self._given = executor
        self._made: FaasExecutor | None = None
        self._lock = threading.Lock()
        self._pending: set[cf.Future[Any]] = set()

    # -- the executor ----------------------------------------------------------------------

    def open_executor(self) -> FaasExecutor:
        """Make the executor of one ``Parallel`` call (subclasses build it otherwise)."""
        from .executor import FaasExecutor

        return FaasExecutor(**self.settings)

    def close_executor(self, executor: FaasExecutor) -> None:
        """Shut down an executor made by :meth:`open_executor`."""
        executor.shutdown(wait=True)

    @property
    def executor(self) -> FaasExecutor:
        """The executor the batches run on (made on first use when none was given)."""
        if self._given is not None:
            return self._given
        with self._lock:
            if self._made is None:
                self._made = self.open_executor()
            return self._made

    # -- joblib's backend API --------------------------------------------------------------

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """``n_jobs`` if positive, else counted from the platform's concurrency (-1: all of it)."""
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is not None and n_jobs > 0:
            return n_jobs
        concurrency = max(1, int(self.executor.session.num_workers))
        if n_jobs is None:
            return concurrency
        return max(1, concurrency + 1 + n_jobs)

    def configure(
        self,
        n_jobs: int | None = 1,
        parallel: Any = None,
        prefer: str | None = None,
        require: str | None = None,
        **backend_kwargs: Any,
    ) -> int:
        """Start a ``Parallel`` call: returns the number of batches run at once."""
        if require == "sharedmem":
            raise ValueError(
                "the faas joblib backend runs tasks in other processes: require='sharedmem' "
                "cannot be honoured (use joblib's threading backend)"
            )
        self.parallel = parallel
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Callable[[], Any], callback: Callable[..., Any] | None = None) -> cf.Future[Any]:
        """Run one batch of tasks as one call of the executor."""
        future = self.executor.submit(func)
        with self._lock:
            self._pending.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, out: cf.Future[Any]) -> Any:
        """The batch's results, or its task's exception (remote traceback as ``__cause__``)."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """Cancel the batches not started yet (joblib will not read any result any more)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()
        if not ensure_ready:
            self.terminate()

    def terminate(self) -> None:
        """End of a ``Parallel`` call: shut down the executor made for it."""
        with self._lock:
            made, self._made = self._made, None
            self._pending.clear()
        if made is not None:
            self.close_executor(made)

    def get_nested_backend(self) -> tuple[ParallelBackendBase, None]:
        """Parallel calls inside a task run sequentially in its function."""
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    def _forget(self, future: cf.Future[Any]) -> None:
        with self._lock:
            self._pending.discard(future)


def register_faas(name: str = "faas") -> None:
    """Register :class:`FaasBackend` under joblib's ``name``: ``joblib.parallel_backend("faas")``."""
    register_parallel_backend(name, FaasBackend)
