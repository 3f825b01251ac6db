"""Dask's published contract for scheduler-get functions, run through ``faas_get``.

:class:`dask.utils_test.GetFunctionTestMixin` is the suite dask offers to foreign ``get``
implementations; here every ``self.get(dsk, keys)`` runs the graph as FaaS invocations on one
executor shared by the module (2 warm function processes, local storage). Two of its tests are
expected failures: ``faas_get`` returns lists where dask's get functions return tuples.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dask.utils_test import GetFunctionTestMixin
from fixtures_platforms import EXECUTOR_KINDS, executor_settings

from dask_faas import FaasExecutor, faas_get
from dask_faas.backends.storage import storage_from_settings

_executor: FaasExecutor | None = None


@pytest.fixture(scope="module", autouse=True, params=EXECUTOR_KINDS)
def module_executor(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaasExecutor]:
    """One executor for the module per kind (the local pool, each platform's emulator); shut
    down, with its job prefix empty, at module teardown."""
    global _executor
    root: Path = tmp_path_factory.mktemp("storage")
    executor = FaasExecutor(**executor_settings(request, request.param, str(root)))
    _executor = executor
    try:
        yield executor
    finally:
        _executor = None
        executor.shutdown(wait=True, cancel_futures=True)
        storage = storage_from_settings(executor.settings)
        left = list(storage.list(executor.job_prefix))
        assert not left, f"job prefix {executor.job_prefix} not empty after shutdown: {left[:5]}"


@pytest.fixture(autouse=True)
def nothing_left_between_computes(module_executor: FaasExecutor) -> Iterator[None]:
    """After each test, the job prefix holds only the uploaded function bodies."""
    yield
    left = [k for k, _ in module_executor.storage.list(module_executor.job_prefix) if "/fn/" not in k]
    assert not left, f"objects left in storage after the computes of this test: {left[:5]}"


def _get(dsk: Any, keys: Hashable | list[Any], **kwargs: Any) -> Any:
    assert _executor is not None, "the module executor is not running"
    return faas_get(dsk, keys, executor=_executor, **kwargs)


class TestFaasGet(GetFunctionTestMixin):
    get = staticmethod(_get)

    def test_list_keys_give_the_values_in_key_order(self):
        d = {"x": 1, "y": 2, "z": (sum, ["x", "y"])}
        assert list(self.get(d, ["x", "y", "z"])) == [1, 2, 3]
        nested = self.get(d, [["x"], "y"])
        assert list(nested[0]) == [1] and nested[1] == 2
