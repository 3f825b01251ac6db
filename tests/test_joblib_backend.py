"""The joblib backend (dask_faas.joblib_backend) and Lithops' register_lithops (dask_faas.compat.util.joblib).

Oracles: joblib's own "sequential" backend and plain loops; sklearn searches fitted with the
sequential backend.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import pytest

joblib = pytest.importorskip("joblib")

from dask_faas.joblib_backend import FaasBackend, register_faas  # noqa: E402


def square(x: int) -> int:
    return x * x


def pid_of(_: int) -> int:
    return os.getpid()


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise KeyError(f"task {x} refused")
    return x


def nested(n: int) -> list[int]:
    return joblib.Parallel(n_jobs=2)(joblib.delayed(square)(i) for i in range(n))


@pytest.fixture(autouse=True)
def registered() -> None:
    register_faas()


def _left(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture
def local_root(storage_root: Path) -> Any:
    with dask.config.set({"faas.local-storage.root": str(storage_root), "faas.workers": 2}):
        yield storage_root
    assert _left(storage_root) == []


def test_results_in_order_equal_the_sequential_backend(local_root: Path) -> None:
    with joblib.parallel_backend("sequential"):
        expected = joblib.Parallel()(joblib.delayed(square)(i) for i in range(40))
    with joblib.parallel_backend("faas"):
        got = joblib.Parallel()(joblib.delayed(square)(i) for i in range(40))  # a generator input
    assert got == expected == [i * i for i in range(40)]


def test_tasks_run_in_function_processes(local_root: Path) -> None:
    with joblib.parallel_backend("faas"):
        pids = joblib.Parallel(batch_size=1)(joblib.delayed(pid_of)(i) for i in range(6))
    assert os.getpid() not in pids


def test_a_given_executor_is_used_and_left_open(executor: Any) -> None:
    with joblib.parallel_backend("faas", executor=executor):
        assert joblib.Parallel(n_jobs=3)(joblib.delayed(square)(i) for i in range(7)) == [
            i * i for i in range(7)
        ]
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(3)) == [0, 1, 4]
    assert executor.submit(square, 5).result() == 25
    assert executor.stats["calls"] >= 2


def test_n_jobs_counts_the_platform_concurrency(executor: Any) -> None:
    backend = FaasBackend(executor=executor)
    concurrency = executor.session.num_workers
    assert backend.effective_n_jobs(-1) == concurrency
    assert backend.effective_n_jobs(None) == concurrency
    assert backend.effective_n_jobs(5) == 5
    assert backend.effective_n_jobs(-2) == max(1, concurrency - 1)
    with pytest.raises(ValueError, match="n_jobs == 0"):
        backend.effective_n_jobs(0)
    with joblib.parallel_backend("faas", executor=executor, n_jobs=-1):
        assert joblib.effective_n_jobs() == concurrency


def test_an_exception_keeps_its_type_and_remote_traceback(local_root: Path) -> None:
    with joblib.parallel_backend("faas"), pytest.raises(KeyError, match="task 3 refused") as info:
        joblib.Parallel(batch_size=1)(joblib.delayed(fail_on)(i, 3) for i in range(8))
    chain = []
    exc: BaseException | None = info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    remote = "\n".join(chain)
    assert "fail_on" in remote and "raise KeyError" in remote, remote


def test_return_as_generator_yields_in_order(local_root: Path) -> None:
    with joblib.parallel_backend("faas"):
        out = joblib.Parallel(return_as="generator")(joblib.delayed(square)(i) for i in range(12))
        assert next(out) == 0
        assert list(out) == [i * i for i in range(1, 12)]


def test_nested_parallel_runs_inside_the_function(local_root: Path) -> None:
    with joblib.parallel_backend("faas"):
        got = joblib.Parallel()(joblib.delayed(nested)(n) for n in range(4))
    assert got == [[i * i for i in range(n)] for n in range(4)]


def test_require_sharedmem_falls_back_or_is_refused(executor: Any) -> None:
    with pytest.raises(ValueError, match="sharedmem"):
        FaasBackend(executor=executor).configure(n_jobs=2, require="sharedmem")


def _search_fit(backend: str, grid: bool, **params: Any) -> Any:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV
    from sklearn.svm import SVC

    digits = load_digits()
    X, y = digits.data[:400], digits.target[:400]
    if grid:
        search = GridSearchCV(SVC(), {"C": [0.1, 1.0, 10.0], "gamma": [1e-3, 1e-4]}, cv=2)
    else:
        space = {"C": [0.01, 0.1, 1.0, 10.0, 100.0], "gamma": [1e-2, 1e-3, 1e-4]}
        search = RandomizedSearchCV(SVC(), space, n_iter=5, cv=2, random_state=0)
    with joblib.parallel_backend(backend, **params):
        search.fit(X, y)
    return search


@pytest.mark.parametrize("grid", [True, False], ids=["GridSearchCV", "RandomizedSearchCV"])
def test_a_sklearn_search_equals_the_sequential_fit(local_root: Path, grid: bool) -> None:
    pytest.importorskip("sklearn")
    expected = _search_fit("sequential", grid)
    got = _search_fit("faas", grid)
    assert got.best_params_ == expected.best_params_
    assert got.cv_results_["params"] == expected.cv_results_["params"]
    for name in ("mean_test_score", "split0_test_score", "split1_test_score", "rank_test_score"):
        assert list(got.cv_results_[name]) == list(expected.cv_results_[name]), name


def test_register_lithops_through_the_facade(local_root: Path) -> None:
    from dask_faas.compat.util.joblib import LithopsBackend, register_lithops

    register_lithops()
    with joblib.parallel_backend("lithops"):
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(10)) == [i * i for i in range(10)]
        pids = joblib.Parallel(batch_size=1)(joblib.delayed(pid_of)(i) for i in range(4))
    assert os.getpid() not in pids
    backend = LithopsBackend(lithops_args={"backend": "localhost"}, workers=1)
    assert backend.effective_n_jobs(-1) == 1
    backend.terminate()


def test_register_lithops_reads_a_lithops_config(storage_root: Path) -> None:
    from dask_faas.compat.util.joblib import register_lithops

    register_lithops()
    config = {"lithops": {"backend": "localhost", "storage": "localhost"}}
    settings = {"config": config, "workers": 2}
    with (
        dask.config.set({"faas.local-storage.root": str(storage_root)}),
        joblib.parallel_backend("lithops", lithops_args=settings),
    ):
        assert joblib.Parallel()(joblib.delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]
    assert _left(storage_root) == []


def test_setup_lithops_logger_logs_lithops_records(tmp_path: Path) -> None:
    import logging

    from dask_faas.compat.utils import setup_lithops_logger, sizeof_fmt

    log = tmp_path / "lithops.log"
    lithops_logger = logging.getLogger("lithops")
    saved = (lithops_logger.level, lithops_logger.propagate, list(lithops_logger.handlers))
    try:
        setup_lithops_logger("DEBUG", filename=str(log))
        setup_lithops_logger("INFO", filename=str(log))  # replaces its handler, no duplicates
        lithops_logger.info("hello from lithops")
        lithops_logger.debug("not shown")
        with pytest.raises(ValueError, match="unknown log_level 'LOUD'"):
            setup_lithops_logger("LOUD")
    finally:
        for name in ("lithops", "dask_faas"):
            logger = logging.getLogger(name)
            for handler in [h for h in logger.handlers if h.get_name() == "dask-faas-compat"]:
                logger.removeHandler(handler)
                handler.close()
        lithops_logger.setLevel(saved[0])
        lithops_logger.propagate = saved[1]
        logging.getLogger("dask_faas").propagate = True
        logging.getLogger("dask_faas").setLevel(logging.NOTSET)
    text = log.read_text()
    assert text.count("hello from lithops") == 1 and "not shown" not in text
    assert "[INFO]" in text
    assert sizeof_fmt(2048) == "2.0KiB" and sizeof_fmt(10) == "10.0B"


def test_import_dask_faas_does_not_import_joblib() -> None:
    code = "import sys, dask_faas, dask_faas.compat, dask_faas.compat.util; print('joblib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


def total(a: Any, scale: float) -> float:
    return float(a.sum()) * scale


def test_large_arguments_on_an_s3_bucket_leave_nothing_behind(s3_storage: Any, s3_endpoint: str) -> None:
    import numpy as np

    a = np.arange(300_000, dtype=np.float64)  # 2.4 MB: above the inline limit, goes through storage
    s3 = {"bucket": s3_storage.bucket, "endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"}
    with joblib.parallel_backend("faas", storage="s3", s3=s3, workers=2):
        got = joblib.Parallel(batch_size=1)(joblib.delayed(total)(a, s) for s in (1.0, 2.0, 3.0))
    assert got == [total(a, s) for s in (1.0, 2.0, 3.0)]
    assert list(s3_storage.list("")) == []
