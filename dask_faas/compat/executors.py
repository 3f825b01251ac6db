"""``lithops.executors``: the executors, and Lithops' and PyWren-IBM's constructors of them."""

from __future__ import annotations

from typing import Any

from ._config import warn_ignored
from ._executor import FunctionExecutor

__all__ = [
    "FunctionExecutor",
    "LocalhostExecutor",
    "ServerlessExecutor",
    "StandaloneExecutor",
    "function_executor",
    "ibm_cf_executor",
    "local_executor",
]


def ibm_cf_executor(**kwargs: Any) -> FunctionExecutor:
    """PyWren-IBM's ``ibm_cf_executor()``: a :class:`FunctionExecutor` on the configured backend."""
    return FunctionExecutor(**kwargs)


function_executor = ServerlessExecutor = ibm_cf_executor


def StandaloneExecutor(**kwargs: Any) -> FunctionExecutor:
    """Lithops' ``StandaloneExecutor`` (virtual machines): the configured dask-faas backend instead."""
    warn_ignored(["standalone mode (virtual machines)"], "StandaloneExecutor runs on the configured backend")
    return FunctionExecutor(**kwargs)


def LocalhostExecutor(**kwargs: Any) -> FunctionExecutor:
    """Lithops' ``LocalhostExecutor``: the local function pool and local storage."""
    kwargs.setdefault("backend", "local")
    if kwargs.get("executor") is None and "s3" not in kwargs:
        kwargs.setdefault("storage", "local")
    return FunctionExecutor(**kwargs)


local_executor = LocalhostExecutor
