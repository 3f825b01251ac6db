"""HTTP(S) URLs as ``map`` inputs, and PyWren-IBM-era programs through the facade.

HTTP objects are sized with HEAD on the client and read inside the functions with ranged GETs,
from a loopback HTTP server started here (one that honours ``Range`` and one that does not).
PyWren-IBM's configuration (``pywren:`` section, ``ibm_cos`` HMAC keys, ``ibm_cf`` ``api_key``),
its executor and map keywords run against a moto bucket on loopback.
"""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from http_kit import RangedFiles

import dask_faas.compat as pywren
from dask_faas.compat._config import faas_settings

WORDS = b"".join(f"line {i} has some words of text {i % 7}\n".encode() for i in range(2000))
FILES = {"/data/a.txt": WORDS, "/data/b.txt": WORDS[:30_001], "/data/empty.txt": b""}


class _Files(RangedFiles):
    files = FILES


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture
def http_files() -> Iterator[tuple[str, type[_Files]]]:
    handler = type("Files", (_Files,), {})  # counts of its own
    for url in _serve(handler):
        yield url, handler


@pytest.fixture
def http_no_ranges() -> Iterator[str]:
    handler = type("NoRanges", (_Files,), {"honour_range": False})
    yield from _serve(handler)


def count_words(obj: Any) -> int:
    return len(obj.data_stream.read().split())


def test_http_urls_are_read_by_ranges_inside_functions(executor: Any, http_files: Any) -> None:
    base, handler = http_files
    urls = [f"{base}/data/a.txt", f"{base}/data/b.txt"]
    fexec = pywren.FunctionExecutor(executor=executor)
    whole = fexec.map(count_words, urls).get_result()
    assert whole == [len(WORDS.split()), len(WORDS[:30_001].split())]
    assert not handler.ranges  # an object that is not chunked is one plain GET
    chunked = fexec.map(count_words, urls, obj_chunk_size=10_000)
    assert len(chunked) == -(-len(WORDS) // 10_000) + 4  # 30_001 bytes: 4 chunks
    assert sum(chunked.get_result()[:-4]) == whole[0] and sum(chunked.get_result()[-4:]) == whole[1]
    assert handler.ranges["/data/a.txt"] >= len(chunked) - 4
    total = fexec.map_reduce(count_words, [urls[0]], sum, obj_chunk_number=3)
    assert fexec.get_result(total) == whole[0]  # one reducer: one value, as Lithops gives


def test_http_chunks_need_a_server_that_honours_range(executor: Any, http_no_ranges: str) -> None:
    fexec = pywren.FunctionExecutor(executor=executor)
    futures = fexec.map(count_words, [f"{http_no_ranges}/data/a.txt"], obj_chunk_number=2)
    with pytest.raises(OSError, match=r"data/a\.txt: the server answered 200 to a ranged GET"):
        fexec.get_result(futures)
    with pytest.raises(FileNotFoundError, match="404"):
        fexec.map(count_words, [f"{http_no_ranges}/data/missing.txt"])


def test_pywren_ibm_program_runs_as_it_did(s3_endpoint: str, s3_bucket: str, storage_root: Any, caplog: Any):
    caplog.set_level(logging.WARNING, "dask_faas.compat")
    config = {
        "pywren": {"storage_bucket": s3_bucket},
        "ibm_cos": {"endpoint": s3_endpoint, "access_key": "testing", "secret_key": "testing"},
    }
    pw = pywren.ibm_cf_executor(config=config, rabbitmq_monitor=True, runtime_memory=256, workers=2)
    try:
        storage = pw.storage
        for i in range(3):
            storage.put_object(s3_bucket, f"in/part{i}.txt", WORDS[: 5000 * (i + 1)])

        def add(x: int, y: int) -> int:  # PyWren-IBM bound list items positionally
            return x + y

        pw.map(add, [[1, 2], [3, 4]])
        assert pw.get_result() == [3, 7]
        pw.map(add, [1, 2], extra_params=(10,))
        assert pw.get_result() == [11, 12]

        def words(obj: Any) -> int:
            return len(obj.data_stream.read().split())

        futures = pw.map_reduce(
            words,
            f"{s3_bucket}/in/",
            sum,
            chunk_size=4000,
            reducer_one_per_object=True,
            reducer_wait_local=True,
        )
        sizes = [len(WORDS[: 5000 * (i + 1)].split()) for i in range(3)]
        assert pw.get_result(futures) == sizes
        assert len(futures) == 2 + 3 + 4 + 3  # chunks of 5000, 10000, 15000 bytes, one reducer per object
        assert pw.map(words, f"cos://{s3_bucket}/in/part0.txt", chunk_n=2).get_result() != []
        storage.put_cobject(b"kept", key="in/cobject")
        assert (
            storage.get_cobject(pywren.storage.utils.CloudObject("ibm_cos", s3_bucket, "in/cobject"))
            == b"kept"
        )
        storage.delete_objects(s3_bucket, [k for k in storage.list_keys(s3_bucket, "in/")])
    finally:
        pw.close()
    messages = [r.getMessage() for r in caplog.records if "ignores" in r.getMessage()]
    assert any("rabbitmq_monitor" in m for m in messages) and any("reducer_wait_local" in m for m in messages)
    assert pw.executor.settings["memory-mb"] == 256


def test_pywren_and_ibm_configuration_become_settings() -> None:
    settings = faas_settings(
        {
            "pywren": {"compute_backend": "ibm_cf", "storage_backend": "ibm_cos", "storage_bucket": "b"},
            "ibm_cf": {
                "endpoint": "https://eu-de.functions.cloud.ibm.com",
                "namespace": "ns",
                "api_key": "u:k",
            },
            "ibm": {"iam_api_key": "iam"},
            "ibm_cos": {"endpoint": "https://s3.eu-de.cloud-object-storage.appdomain.cloud", "api_key": "x"},
        },
        None,
        None,
        {"runtime_memory": 512, "runtime_timeout": 120},
    )
    assert settings["backend"] == "openwhisk" and settings["storage"] == "s3"
    assert settings["openwhisk"] == {
        "api_host": "https://eu-de.functions.cloud.ibm.com",
        "namespace": "ns",
        "auth": "u:k",
        "api_key": "iam",
    }
    assert settings["s3"] == {
        "endpoint_url": "https://s3.eu-de.cloud-object-storage.appdomain.cloud",
        "bucket": "b",
    }
    assert (settings["memory_mb"], settings["timeout_s"]) == (512, 120)


def test_pywren_url_parameter_takes_http_inputs(executor: Any, http_files: Any) -> None:
    base, _ = http_files

    def words(url: Any) -> tuple[str, int]:  # PyWren-IBM's map_reduce_url.py
        return url.path, len(url.data_stream.read().split())

    pw = pywren.ibm_cf_executor(executor=executor)
    got = pw.map(words, [f"{base}/data/a.txt"], chunk_n=2).get_result()
    assert [path for path, _ in got] == [f"{base}/data/a.txt"] * 2
    assert sum(n for _, n in got) == len(WORDS.split())
    lithops_style = pywren.FunctionExecutor(executor=executor)  # Lithops 3: 'url' is a plain parameter
    assert lithops_style.map(lambda url: url.upper(), ["http://x"]).get_result() == ["HTTP://X"]
