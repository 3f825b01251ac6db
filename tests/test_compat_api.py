"""The facade's Lithops API beyond the executor: ``lithops.Storage``, ``lithops.config``, top-level
``wait`` / ``get_result``, ``RetryingFunctionExecutor``, the submodules programs import, and the
executor keywords that are mapped to settings or accepted with one warning.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dask
import pytest

import dask_faas.compat as lithops
from dask_faas.compat.config import default_config, extract_storage_config, load_yaml_config
from dask_faas.compat.storage.utils import CloudObject, StorageNoSuchKeyError
from dask_faas.exceptions import InvocationError


@pytest.fixture
def local_root(storage_root: Path) -> Any:
    """Lithops-style construction (no executor given) on a local storage of this test."""
    with dask.config.set({"faas.local-storage.root": str(storage_root), "faas.workers": 2}):
        yield storage_root


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, local_root: Path) -> lithops.Storage:
    if request.param == "local":
        return lithops.Storage()
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    config = {
        "lithops": {"storage": "aws_s3", "storage_bucket": bucket},
        "aws": {"access_key_id": "testing", "secret_access_key": "testing"},
        "aws_s3": {"endpoint": endpoint, "region": "us-east-1"},
    }
    return lithops.Storage(config=config)


def test_storage_objects_buckets_and_missing_keys(storage: lithops.Storage) -> None:
    bucket = storage.bucket
    assert storage.backend == ("localhost" if storage.faas_storage.name == "local" else "aws_s3")
    storage.put_object(bucket, "p/a", b"0123456789")
    storage.put_object(bucket, "p/b", io.BytesIO(b"stream"))
    storage.put_object(bucket, "p_c", "text")
    assert storage.get_object(bucket, "p/a") == b"0123456789"
    assert storage.get_object(bucket, "p/a", stream=True).read() == b"0123456789"
    assert storage.get_object(bucket, "p/a", extra_get_args={"Range": "bytes=2-4"}) == b"234"
    assert storage.head_object(bucket, "p/b") == {"content-length": "6"}
    assert storage.list_keys(bucket, "p") == ["p/a", "p/b", "p_c"]
    assert storage.list_keys(bucket, "p/") == ["p/a", "p/b"]
    assert [o["Size"] for o in storage.list_objects(bucket, "p/")] == [10, 6]
    assert storage.list_objects(bucket, "p", match_pattern="*_c") == [{"Key": "p_c", "Size": 4}]
    assert storage.head_bucket(bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200
    with pytest.raises(StorageNoSuchKeyError, match=r"No such key /.*/p/zz"):
        storage.head_object(bucket, "p/zz")
    with pytest.raises(FileNotFoundError):  # a builtin too
        storage.get_object(bucket, "p/zz")
    with pytest.raises(StorageNoSuchKeyError):
        storage.head_bucket("no-such-bucket-here")
    storage.delete_object(bucket, "p_c")
    storage.delete_objects(bucket, ["p/a", "p/b"])
    assert storage.list_keys(bucket, "p") == []


def test_storage_cloudobjects_and_pywren_names(storage: lithops.Storage) -> None:
    co = storage.put_cloudobject(b"payload")
    assert isinstance(co, CloudObject) and co.bucket == storage.bucket and co.backend == storage.backend
    assert storage.get_cloudobject(co) == b"payload"
    assert storage.get_cloudobject(co, stream=True).read() == b"payload"
    named = storage.put_cobject(b"old", key="cobjects/one")  # PyWren-IBM
    assert storage.get_cobject(named) == b"old" and named == CloudObject(
        storage.backend, storage.bucket, "cobjects/one"
    )
    storage.delete_cloudobjects([co])
    storage.delete_cloudobject(CloudObject(storage.backend, storage.bucket, "cobjects/one"))
    with pytest.raises(StorageNoSuchKeyError):
        storage.get_cloudobject(co)
    assert storage.list_keys(storage.bucket) == []


def test_storage_creates_buckets_on_s3(s3_endpoint: str, s3_bucket: str, local_root: Path) -> None:
    config = {"aws_s3": {"endpoint": s3_endpoint, "storage_bucket": s3_bucket}}
    storage = lithops.Storage(config=config)
    storage.create_bucket("facade-made-bucket")
    try:
        assert storage.head_bucket("facade-made-bucket")["ResponseMetadata"]["HTTPStatusCode"] == 200
        storage.put_object("facade-made-bucket", "k", b"v")
        assert storage.get_object("facade-made-bucket", "k") == b"v"
    finally:
        storage.delete_object("facade-made-bucket", "k")
        storage.get_client().delete_bucket(Bucket="facade-made-bucket")


def test_config_helpers_round_trip(tmp_path: Path, local_root: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("pywren:\n  storage_bucket: b1\naws_s3:\n  endpoint: http://127.0.0.1:1\n")
    loaded = load_yaml_config(str(path))
    config = default_config(loaded, {"lithops": {"log_level": "DEBUG"}})
    assert config["lithops"] == {
        "storage_bucket": "b1",
        "log_level": "DEBUG",
        "backend": "localhost",
        "storage": "aws_s3",
    }
    storage_config = extract_storage_config(config)
    assert storage_config["backend"] == "aws_s3" and storage_config["bucket"] == "b1"
    local = default_config()
    assert local["lithops"]["storage"] == "localhost"
    assert lithops.Storage(storage_config=extract_storage_config(local)).bucket == str(local_root)


def test_submodules_and_version() -> None:
    code = (
        "from dask_faas.compat.wait import ALWAYS, ANY_COMPLETED, ALL_COMPLETED, THREADPOOL_SIZE\n"
        "from dask_faas.compat.storage import Storage\n"
        "from dask_faas.compat.storage.utils import CloudObject, StorageNoSuchKeyError\n"
        "from dask_faas.compat.executors import FunctionExecutor, LocalhostExecutor\n"
        "from dask_faas.compat.config import default_config, extract_storage_config\n"
        "from dask_faas.compat.retries import RetryingFunctionExecutor\n"
        "from dask_faas.compat.future import ResponseFuture\n"
        "import dask_faas.compat as lithops\n"
        "assert lithops.wait.__module__ == 'dask_faas.compat.wait' and callable(lithops.wait)\n"
        "assert (ALWAYS, ANY_COMPLETED, ALL_COMPLETED) == (0, -1, 100)\n"
        "assert lithops.__version__ == '3.8.0' and lithops.Storage is Storage\n"
        "import sys; assert 'dask' not in sys.modules and 'pandas' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_top_level_wait_and_get_result(executor: Any) -> None:
    fexec = lithops.FunctionExecutor(executor=executor)
    slow = fexec.call_async(time.sleep, 3)
    fast = fexec.map(lambda x: x * 10, [1, 2])
    done, not_done = lithops.wait([*fast, slow], return_when=lithops.ANY_COMPLETED)
    assert done and slow in not_done
    assert lithops.wait([slow], return_when=lithops.ALWAYS)[1] == [slow]
    assert lithops.get_result(fast) == [10, 20]
    assert lithops.get_result(fast[0]) == 10
    with pytest.raises(TimeoutError):
        lithops.wait([slow], timeout=0.05)
    assert lithops.get_result(slow) is None


def test_retrying_executor_maps_a_failed_call_again(executor: Any, tmp_path: Path) -> None:
    def flaky(i: int) -> int:
        marker = tmp_path / f"{i}.tried"
        if i == 1 and not marker.exists():
            marker.write_text("once")
            raise RuntimeError(f"first attempt of {i} fails")
        return i

    fexec = lithops.FunctionExecutor(executor=executor, config=None)
    with lithops.RetryingFunctionExecutor(fexec) as retrying:
        futures = retrying.map(flaky, [0, 1, 2], retries=1)
        done, pending = retrying.wait(futures, throw_except=False)
    assert pending == [] and sorted(f.result() for f in done) == [0, 1, 2]
    assert [f.failure_count for f in futures] == [0, 1, 0]
    with lithops.RetryingFunctionExecutor(fexec) as retrying:
        futures = retrying.map(lambda x: 1 / x, [0], retries=2)
        done, _ = retrying.wait(futures, throw_except=False)
    assert done[0].failure_count == 3 and done[0].error
    with pytest.raises(ZeroDivisionError):
        done[0].result()


def test_executor_keywords_map_to_settings_or_warn_once(local_root: Path, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, "dask_faas.compat")
    with lithops.FunctionExecutor(
        runtime="python3.11-custom", runtime_memory=512, worker_processes=4, monitoring="rabbitmq",
        max_workers=2, runtime_timeout=60, remote_invoker=True,
    ) as fexec:  # fmt: skip
        settings = fexec.executor.settings
        assert (settings["memory-mb"], settings["timeout-s"], settings["workers"]) == (512, 60, 2)
        assert fexec.map(lambda x: x + 1, [1]).get_result() == [2]
    warnings = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert len(warnings) == 1, warnings
    for name in ("monitoring", "remote_invoker", "runtime", "worker_processes"):
        assert name in warnings[0]
    caplog.clear()
    with lithops.FunctionExecutor(monitoring="storage", log_level="INFO") as fexec:  # Lithops' defaults
        assert fexec.call_async(abs, -3).result() == 3
    assert not [r for r in caplog.records if "ignores" in r.getMessage()]


def test_per_call_timeout_and_memory_are_the_calls_limits(executor: Any, caplog: Any) -> None:
    caplog.set_level(logging.WARNING, "dask_faas.compat")
    fexec = lithops.FunctionExecutor(executor=executor)
    slow = fexec.map(time.sleep, [5], timeout=1)
    with pytest.raises(InvocationError, match=r"time limit|timed out|timeout"):
        slow[0].result()

    def allocate(mb: int) -> int:
        return len(bytearray(mb << 20))

    small = fexec.call_async(allocate, 300, runtime_memory=128)
    with pytest.raises(MemoryError):
        small.result()
    assert fexec.call_async(allocate, 300).result() == 300 << 20  # the executor's 1024 MiB
    fexec.map(abs, [-1], extra_env={"A": "1"}, include_modules=["x"]).get_result()
    fexec.map(abs, [-1], extra_env={"A": "1"}).get_result()
    warnings = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert len(warnings) == 1 and "extra_env" in warnings[0] and "include_modules" in warnings[0]


def test_future_stats_plot_and_job_summary(executor: Any, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    fexec = lithops.FunctionExecutor(executor=executor)
    futures = fexec.map(lambda x: (time.sleep(0.3), x)[1], [1, 2, 3])
    total = fexec.map_reduce(abs, [-1, -2], sum)
    assert fexec.get_result(futures) == [1, 2, 3] and fexec.get_result(total) == 3
    stats = futures[0].stats
    assert stats["host_submit_tstamp"] <= stats["worker_start_tstamp"] + 1  # clocks of one machine
    assert stats["worker_start_tstamp"] < stats["worker_end_tstamp"] <= stats["host_result_done_tstamp"] + 1
    assert 0.3 <= stats["worker_func_exec_time"] <= stats["worker_exec_time"]
    assert stats["runtime_memory"] == 1024 and stats["attempts"] == 1 and stats["activation_id"]
    assert isinstance(stats["worker_cold_start"], bool) and stats["func_result_size"] > 0
    assert total[-1].stats["attempts"] == 1  # map_reduce's reducer, a task of its graph
    summary = fexec.job_summary()
    assert summary["invocations"].sum() == 3 + 2 + 1 and summary["errors"].sum() == 0
    written = fexec.plot(futures, dst=str(tmp_path / "plots" / "run"))
    assert [p.name for p in written] == ["run-timeline.png", "run-histogram.png"]
    assert all(p.stat().st_size > 1000 for p in written)
