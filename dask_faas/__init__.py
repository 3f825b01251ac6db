"""dask-faas: run Dask and ``concurrent.futures`` work as function-as-a-service invocations.

Public names are imported lazily, so that the function runtime (``dask_faas.worker``) starts without
pulling in dask, pandas or a cloud SDK.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

_EXPORTS = {
    "FaasExecutor": "dask_faas.executor",
    "CallOptions": "dask_faas.executor",
    "faas_get": "dask_faas.scheduler",
    "enable": "dask_faas.scheduler",
    "ComputeReport": "dask_faas.scheduler",
    "FaasFuture": "dask_faas.persisted",
    "performance_report": "dask_faas.performance",
    "read_csv": "dask_faas.dataframe",
    "to_csv": "dask_faas.dataframe",
    "to_parquet": "dask_faas.dataframe",
    "Storage": "dask_faas.backends.storage",
    "ComputeBackend": "dask_faas.backends.compute",
    "FaasError": "dask_faas.exceptions",
    "ConfigError": "dask_faas.exceptions",
    "SerializationError": "dask_faas.exceptions",
    "PayloadTooLargeError": "dask_faas.exceptions",
    "IntegrityError": "dask_faas.exceptions",
    "ProtocolError": "dask_faas.exceptions",
    "InvocationError": "dask_faas.exceptions",
    "FunctionTimeoutError": "dask_faas.exceptions",
    "FunctionMemoryError": "dask_faas.exceptions",
    "WorkerDiedError": "dask_faas.exceptions",
    "StorageError": "dask_faas.exceptions",
    "RemoteTraceback": "dask_faas.exceptions",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # names for type checkers; at run time __getattr__ imports them lazily
    from .backends.compute import ComputeBackend  # noqa: F401
    from .backends.storage import Storage  # noqa: F401
    from .dataframe import read_csv, to_csv, to_parquet  # noqa: F401
    from .exceptions import (  # noqa: F401
        ConfigError,
        FaasError,
        FunctionMemoryError,
        FunctionTimeoutError,
        IntegrityError,
        InvocationError,
        PayloadTooLargeError,
        ProtocolError,
        RemoteTraceback,
        SerializationError,
        StorageError,
        WorkerDiedError,
    )
    from .executor import CallOptions, FaasExecutor  # noqa: F401
    from .performance import performance_report  # noqa: F401
    from .persisted import FaasFuture  # noqa: F401
    from .scheduler import ComputeReport, enable, faas_get  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dask_faas' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
