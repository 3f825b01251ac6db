"""``lithops.util.joblib``: Lithops' joblib backend, on :mod:`dask_faas.joblib_backend`.

::

    from lithops.util.joblib import register_lithops     # or dask_faas.compat.util.joblib

    register_lithops()
    with joblib.parallel_backend("lithops"):              # lithops_args={...}: FunctionExecutor's
        search.fit(X, y)

The executor of each ``Parallel`` call is made as ``lithops.FunctionExecutor(**lithops_args)``
makes it (a Lithops configuration file, ``config=``, ``backend=``/``storage=`` or ``faas``
settings) and closed at the call's end. Unlike Lithops, ``n_jobs=-1`` counts the platform's
concurrency (``faas.workers`` on the local pool), and arguments are not copied to storage
separately: each batch carries its own (large ones go through storage, as any call's do).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ....joblib_backend import FaasBackend
from ...executors import FunctionExecutor

if TYPE_CHECKING:
    from ....executor import FaasExecutor

__all__ = ["LithopsBackend", "register_lithops"]


class LithopsBackend(FaasBackend):
    """The ``"lithops"`` joblib backend: batches run as calls of a :class:`FunctionExecutor`.

    Parameters
    ----------
    nesting_level, inner_max_num_threads : int, optional
        joblib's own parameters.
    lithops_args : dict, optional
        Keywords of :class:`FunctionExecutor` (``config``, ``backend``, ``storage``, ...).
    **kwargs
        More keywords of :class:`FunctionExecutor` (``faas`` settings too).
    """

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        lithops_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        self.lithops_args = {**(lithops_args or {}), **kwargs}
        self._function_executors: dict[int, FunctionExecutor] = {}

    def open_executor(self) -> FaasExecutor:
        """A :class:`FunctionExecutor` made from ``lithops_args``; its executor."""
        fexec = FunctionExecutor(**self.lithops_args)
        self._function_executors[id(fexec.executor)] = fexec
        return fexec.executor

    def close_executor(self, executor: FaasExecutor) -> None:
        """Close the :class:`FunctionExecutor` that made ``executor``."""
        self._function_executors.pop(id(executor)).close()


def register_lithops() -> None:
    """Register :class:`LithopsBackend` as joblib's ``"lithops"`` backend."""
    from joblib.parallel import register_parallel_backend

    register_parallel_backend("lithops", LithopsBackend)
