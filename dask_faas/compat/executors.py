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
    "knative_executor",
    "local_executor",
]


def ibm_cf_executor(**kwargs: Any) -> FunctionExecutor:
    """PyWren-IBM's ``ibm_cf_executor()``: a :class:`FunctionExecutor` on the configured backend
    (``pywren:`` / ``ibm_cf:`` configuration understood), with PyWren-IBM's ``url`` inputs."""
    executor = FunctionExecutor(**kwargs)
    executor.url_inputs = True
    return executor


function_executor = ibm_cf_executor


def knative_executor(**kwargs: Any) -> FunctionExecutor:
    """PyWren-IBM's ``knative_executor()``: the ``knative`` backend (``faas.knative.url``)."""
    return ibm_cf_executor(backend=kwargs.pop("backend", "knative"), **kwargs)


def ServerlessExecutor(**kwargs: Any) -> FunctionExecutor:
    """Lithops' ``ServerlessExecutor``: a :class:`FunctionExecutor` on the configured backend."""
    return FunctionExecutor(**kwargs)


def StandaloneExecutor(**kwargs: Any) -> FunctionExecutor:
    """Lithops' ``StandaloneExecutor`` (virtual machines): the configured dask-faas backend instead."""
    warn_ignored(["standalone mode (virtual machines)"], "StandaloneExecutor runs on the configured backend")
    return FunctionExecutor(**kwargs)


def local_executor(**kwargs: Any) -> FunctionExecutor:
    """PyWren-IBM's ``local_executor()``: the local function pool and local storage."""
    executor = LocalhostExecutor(**kwargs)
    executor.url_inputs = True
    return executor


def LocalhostExecutor(**kwargs: Any) -> FunctionExecutor:
    """Lithops' ``LocalhostExecutor``: the local function pool and local storage."""
    kwargs.setdefault("backend", "local")
    if kwargs.get("executor") is None and "s3" not in kwargs:
        kwargs.setdefault("storage", "local")
    return FunctionExecutor(**kwargs)
