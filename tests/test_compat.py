"""The Lithops / PyWren-IBM facade: the seed talk's programs, run on the local pool against real storage.

Data objects live in a bucket of a moto server on loopback (or a local directory); the executor's
own storage is local or that bucket: data storage and job storage may differ.
"""

from __future__ import annotations

import functools
import gc
import io
import json
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from faults_kit import wait_until
from fixtures_s3 import lithops_aws_s3_config

import dask_faas.compat as lithops
from dask_faas.backends.storage import Storage
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.compat._objects import _IterStream
from dask_faas.compat._storage import StorageClient, boto3_client, bucket_of

LINES = 300


def text(i: int) -> bytes:
    return "".join(f'line {j} of object {i} has "quoted" words\n' for j in range(LINES)).encode()


def put_dataset(storage: Storage, prefix: str = "year=2019", n: int = 3) -> list[str]:
    keys = [f"{prefix}/d{i}.csv" for i in range(1, n + 1)]
    for i, key in enumerate(keys, 1):
        storage.put(key, text(i))
    return keys


def s3_settings(storage: Any, endpoint: str) -> dict[str, Any]:
    return {"bucket": storage.bucket, "endpoint_url": endpoint, "key": "testing", "secret": "testing"}


@pytest.fixture
def local_data(storage_root: Path) -> LocalStorage:
    return LocalStorage(storage_root.parent / "data")


# -- the seed talk's two examples (the README's) -----------------------------------------------


def test_seed_example_map_over_a_list(executor):
    data = [1, 2, 3, 4]

    def my_map_function(x):
        return x + 7

    cb = lithops.ibm_cf_executor(executor=executor)
    cb.map(my_map_function, data)
    assert cb.get_result() == [8, 9, 10, 11]


def test_seed_example_map_over_a_bucket_prefix(executor, s3_storage, s3_endpoint):
    """Local job storage, data in S3: the functions reach the bucket with their own credentials."""
    keys = put_dataset(s3_storage)
    data = f"s3://{s3_storage.bucket}/year=2019/"

    def my_map_function(obj, boto3_client):
        body = boto3_client.get_object(Bucket=obj.bucket, Key=obj.key)["Body"].read()
        assert body == obj.data_stream.read()
        return obj.key

    cb = lithops.ibm_cf_executor(executor=executor, storage_options={"endpoint_url": s3_endpoint})
    cb.map(my_map_function, data)
    assert cb.get_result() == keys


# -- object processing -------------------------------------------------------------------------


def test_obj_and_storage_arguments_with_s3_job_storage(s3_storage, s3_endpoint, make_executor):
    keys = put_dataset(s3_storage)
    executor = make_executor(storage="s3", s3=s3_settings(s3_storage, s3_endpoint))

    def copy_upper(obj, storage, id):
        body = storage.get_object(obj.bucket, obj.key)
        assert storage.get_object(obj.bucket, obj.key, extra_get_args={"Range": "bytes=0-3"}) == b"line"
        storage.put_object(obj.bucket, f"upper/{obj.name}", body.upper())
        return id, obj.url, obj.backend, obj.part, obj.total_parts, storage.list_keys(obj.bucket, "year=")

    fexec = lithops.FunctionExecutor(executor=executor)
    futures = fexec.map(copy_upper, f"s3://{s3_storage.bucket}/year=2019/*.csv")
    results = fexec.get_result(futures)
    assert [r[:5] for r in results] == [
        (i, f"s3://{s3_storage.bucket}/{key}", "s3", 1, 1) for i, key in enumerate(keys)
    ]
    assert all(r[5] == keys for r in results)
    assert [s3_storage.get(f"upper/d{i}.csv") for i in (1, 2, 3)] == [text(i).upper() for i in (1, 2, 3)]
    assert fexec.storage.list_keys(s3_storage.bucket, "upper/") == [f"upper/d{i}.csv" for i in (1, 2, 3)]


def test_chunks_are_whole_lines_and_join_to_the_object(executor, local_data):
    put_dataset(local_data, n=2)
    fexec = lithops.FunctionExecutor(executor=executor)

    def echo(obj):
        return obj.part, obj.total_parts, obj.data_byte_range, obj.data_stream.read()

    size = len(text(1))
    for kwargs, parts in (({"obj_chunk_size": 1000}, -(-size // 1000)), ({"obj_chunk_number": 4}, 4)):
        results = fexec.get_result(fexec.map(echo, f"{local_data.root}/year=2019", **kwargs))
        assert len(results) == 2 * parts
        first = results[:parts]
        assert [r[0] for r in first] == list(range(1, parts + 1)) and {r[1] for r in first} == {parts}
        assert b"".join(r[3] for r in first) == text(1)
        assert all(r[3].endswith(b"\n") and r[3].startswith(b"line ") for r in results)
        assert first[0][2][0] == 0 and first[-1][2][1] == size - 1

    exact = fexec.get_result(
        fexec.map(echo, f"{local_data.root}/year=2019/d1.csv", obj_chunk_size=1000, obj_newline=None)
    )
    assert [len(r[3]) for r in exact[:-1]] == [r[2][1] - r[2][0] + 1 for r in exact[:-1]]
    assert b"".join(r[3] for r in exact) == text(1)


def test_map_reduce_counts_words_one_reducer_or_one_per_object(s3_storage, s3_endpoint, make_executor):
    put_dataset(s3_storage)
    executor = make_executor(storage="s3", s3=s3_settings(s3_storage, s3_endpoint))
    expected = sum(Counter(text(i).decode().split()).total() for i in (1, 2, 3))

    def count_words(obj):
        return Counter(obj.data_stream.read().decode().split())

    def reduce_counts(results):
        return sum(sum(counter.values()) for counter in results)

    fexec = lithops.FunctionExecutor(executor=executor)
    futures = fexec.map_reduce(count_words, f"s3://{s3_storage.bucket}/year=2019/", reduce_counts,
                               obj_chunk_size=4000)  # fmt: skip
    parts = 3 * -(-len(text(1)) // 4000)
    assert len(futures) == parts + 1
    assert fexec.get_result(futures) == expected
    assert fexec.get_result() == expected  # only the reducer produces output
    assert sum(sum(c.values()) for c in (f.result() for f in futures[:-1])) == expected

    fexec.map_reduce(count_words, f"s3://{s3_storage.bucket}/year=2019/", reduce_counts,
                     obj_chunk_number=2, obj_reduce_by_key=True)  # fmt: skip
    assert fexec.get_result() == [expected // 3] * 3

    def ordered(results, suffix):
        return [*results, suffix]

    fexec.map_reduce(lambda x, id: (x, id), ["a", "b", "c"], ordered, extra_args_reduce=("end",))
    assert fexec.get_result() == [("a", 0), ("b", 1), ("c", 2), "end"]


def test_map_reduce_results_go_through_storage_and_clean_releases_them(executor):
    big = 300_000

    def make(n):
        return b"x" * n

    def sizes(results):
        return [len(r) for r in results]

    fexec = lithops.FunctionExecutor(executor=executor)
    before = executor.stats["bytes_received"]
    fexec.map_reduce(make, [big] * 4, sizes)
    assert fexec.get_result() == [big] * 4
    assert executor.stats["bytes_received"] - before < big  # the map outputs never reached the client
    kept = len(list(executor.storage.list(executor.job_prefix + "/")))
    fexec.clean()
    gc.collect()

    def released() -> bool:  # the outputs are deleted as their references go (not all at once)
        return len(list(executor.storage.list(executor.job_prefix + "/"))) <= kept - 4

    wait_until(released, 30, "clean() did not release the map outputs")


# -- calls, futures and waiting ----------------------------------------------------------------


def add(x, y=0):
    return x + y


def test_call_async_and_map_bind_arguments_as_lithops(executor):
    fexec = lithops.FunctionExecutor(executor=executor)
    assert fexec.call_async(lambda x: " ".join(x), ["a", "b"]).result() == "a b"  # a list is one value
    assert fexec.get_result() == "a b"
    fexec.call_async(add, (4, 6))
    assert fexec.get_result() == 10
    fexec.call_async(add, {"x": 2, "y": 8})
    assert fexec.get_result() == 10
    fexec.call_async(functools.partial(add, 4), 6)
    assert fexec.get_result() == 10

    fexec.map(add, [1, 2, 3], extra_args=(10,))
    assert fexec.get_result() == [11, 12, 13]
    fexec.map(add, [{"x": 1}, {"x": 2}], extra_args={"y": 100})
    assert fexec.get_result() == [101, 102]
    fexec.map(lambda x, id: (x, id), "abcde", chunksize=2)
    assert fexec.get_result() == [("abcde", 0)]
    fexec.map(lambda x, id: (x, id), list("abcde"), chunksize=2)
    assert fexec.get_result() == [(c, i) for i, c in enumerate("abcde")]
    with pytest.raises(ValueError, match="args must be"):
        fexec.map(add, [{"z": 1}])


def fail_on_odd(x):
    if x % 2:
        raise ValueError(f"odd {x}")
    return x


def test_errors_wait_and_get_result_options(executor):
    fexec = lithops.FunctionExecutor(executor=executor)
    futures = fexec.map(fail_on_odd, range(4), chunksize=2)
    with pytest.raises(ValueError, match="odd 1") as info:
        fexec.get_result(futures)
    assert "fail_on_odd" in str(info.value.__cause__)  # the remote traceback
    assert fexec.get_result(futures, throw_except=False) == [0, None, 2, None]
    assert [f.success for f in futures] == [True, False, True, False]
    assert futures[1].error and futures[1].status(throw_except=False) == "error"

    slow = fexec.map(time.sleep, [0.01, 2])
    done, not_done = fexec.wait(slow, return_when=lithops.ANY_COMPLETED)
    assert len(done) >= 1 and len(done) + len(not_done) == 2
    done, not_done = fexec.wait(slow, return_when=lithops.ALWAYS)
    assert len(done) + len(not_done) == 2
    with pytest.raises(TimeoutError):
        fexec.get_result(fexec.map(time.sleep, [1.5]), timeout=0.2)
    done, not_done = fexec.wait(slow)
    assert len(done) == 2 and not not_done


def test_own_executor_from_a_lithops_config(s3_storage, s3_endpoint, storage_root):
    put_dataset(s3_storage, n=1)
    config = lithops_aws_s3_config(s3_endpoint, s3_storage.bucket)
    with lithops.FunctionExecutor(config=config, workers=1, runtime_memory=512) as fexec:
        assert fexec.executor.storage.name == "s3" and fexec.executor.settings["memory-mb"] == 512
        fexec.map(lambda obj: obj.data_stream.read().count(b"\n"), f"{s3_storage.bucket}/year=2019/")
        assert fexec.get_result() == [LINES]
        prefix = fexec.executor.job_prefix
    assert not list(s3_storage.list(prefix + "/"))

    with lithops.LocalhostExecutor(workers=1, local_storage={"root": str(storage_root)}) as fexec:
        fexec.map(add, [(1, 2)])
        assert fexec.get_result() == [3]
        assert fexec.executor.storage.name == "local"


# -- the package -------------------------------------------------------------------------------


def test_the_package_exports_its_names_and_imports_neither_dask_nor_pandas():
    public = {
        name
        for name in dir(lithops)
        if not name.startswith("_") and not isinstance(getattr(lithops, name), types.ModuleType)
    }
    modules = {"config", "executors", "future", "retries", "storage"}
    assert public - {"annotations"} == set(lithops.__all__) - modules - {"__version__"}
    assert all(isinstance(getattr(lithops, name), types.ModuleType) for name in modules)
    # functions import the package to run the calls: it must stay light
    code = (
        "import sys, json\n"
        "def in_a_function():\n"
        "    import dask_faas.compat as pywren\n"
        "    return pywren.ibm_cf_executor, pywren.FunctionExecutor, pywren.CloudObject\n"
        "in_a_function()\n"
        "print(json.dumps(sorted(m for m in ('dask', 'pandas', 'numpy', 'boto3', 'distributed') "
        "if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_facade_names_containers_and_hands_out_boto3_clients_of_s3_storage_only(s3_storage, local_data):
    assert bucket_of(s3_storage) == s3_storage.bucket and bucket_of(local_data) == local_data.root
    assert boto3_client(s3_storage) is s3_storage.client
    with pytest.raises(TypeError, match="needs S3 storage"):
        boto3_client(local_data)
    assert StorageClient(local_data).bucket == local_data.root
    assert StorageClient(s3_storage).get_client() is s3_storage.client


def test_data_stream_joins_its_pieces_in_small_and_whole_reads():
    pieces = [b"ab", b"", b"cdef", b"g" * 100_000, b"h"]

    def stream(buffer_size: int) -> io.BufferedReader:
        return io.BufferedReader(_IterStream(iter(pieces)), buffer_size=buffer_size)

    small = stream(4)
    assert [small.read(3) for _ in range(2)] == [b"abc", b"def"]
    assert small.read() == b"g" * 100_000 + b"h" and small.read(1) == b""
    assert stream(1 << 16).read() == b"".join(pieces)
