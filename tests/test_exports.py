"""The public surface: exported names resolve, and the function runtime stays light."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import dask_faas


def test_every_exported_name_resolves_and_nothing_else_is_public():
    for name in dask_faas.__all__:
        assert getattr(dask_faas, name) is not None
    public = {
        name
        for name in dir(dask_faas)
        if not name.startswith("_") and not isinstance(getattr(dask_faas, name), types.ModuleType)
    }
    assert public - {"annotations", "TYPE_CHECKING", "Any"} == set(dask_faas.__all__)


def test_the_report_and_plot_import_neither_pandas_nor_bokeh_nor_matplotlib_until_used():
    """``dask_faas.performance_report`` and ``dask_faas.plot`` import their libraries only when they draw."""
    assert "performance_report" in dask_faas.__all__
    code = (
        "import sys, json, dask_faas, dask_faas.plot; dask_faas.performance_report; "
        "print(json.dumps(sorted(m for m in ('pandas', 'bokeh', 'matplotlib') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_exceptions_are_builtins_too():
    assert issubclass(dask_faas.ConfigError, ValueError)
    assert issubclass(dask_faas.FunctionTimeoutError, TimeoutError)
    assert issubclass(dask_faas.FunctionMemoryError, MemoryError)
    assert issubclass(dask_faas.SerializationError, TypeError)
    assert issubclass(dask_faas.IntegrityError, PermissionError)


def test_the_function_runtime_imports_neither_dask_nor_pandas_nor_a_cloud_sdk():
    code = (
        "import sys, json, function_runtime.local, dask_faas.worker; "
        "print(json.dumps(sorted(m for m in ('dask', 'pandas', 'boto3', 'numpy', 'distributed') "
        "if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
