"""``lithops.executors``: the executors."""

from __future__ import annotations

from ._executor import (
    FunctionExecutor,
    LocalhostExecutor,
    ServerlessExecutor,
    StandaloneExecutor,
    function_executor,
    ibm_cf_executor,
    local_executor,
)

__all__ = [
    "FunctionExecutor",
    "LocalhostExecutor",
    "ServerlessExecutor",
    "StandaloneExecutor",
    "function_executor",
    "ibm_cf_executor",
    "local_executor",
]
