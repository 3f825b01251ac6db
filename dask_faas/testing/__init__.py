"""Testing helpers for dask-faas.

:mod:`dask_faas.testing.pytest_plugin` runs any pytest suite with Dask's synchronous scheduler
(and every compute that names no scheduler) routed through :func:`dask_faas.faas_get`::

    python -m pytest -p dask_faas.testing.pytest_plugin --dask-on-faas ...
"""
