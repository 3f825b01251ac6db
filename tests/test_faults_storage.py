"""Faults and bad input, the storage rows of issue 10's matrix (11, 12 and 13), to be merged into
``tests/test_faults.py``.

Faults come from :class:`~dask_faas.testing.s3.CountingProxy`, a fault-injecting HTTP proxy in front
of the moto server (loopback only): connection resets, stalls past the client's read timeout,
truncated bodies, and stale or lagging reads after a PUT. Executors use ``storage="s3"`` through
the proxy, and so do the local pool's functions (the storage locator names the proxy). Every row
also checks that the job prefix is empty afterwards (``make_executor``), that no multipart upload
is open in the bucket (:func:`open_uploads`), and that its wall time stays under a bound that
catches a hang (:func:`bounded`).
"""

from __future__ import annotations

import concurrent.futures as cf
import io
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import dask
import pandas as pd
import pytest
from faults_kit import bounded, open_uploads

import dask_faas
from dask_faas import ConfigError, FaasExecutor, StorageError
from dask_faas.backends.storage.s3 import READ_ATTEMPTS, S3Storage
from dask_faas.testing.s3 import CountingProxy

pytestmark = pytest.mark.timeout(300)

#: The read timeout of the clients in these rows, below the proxy's stalls.
READ_TIMEOUT_S = 1.0
STALL_S = 2.5


@pytest.fixture
def proxy(s3_endpoint: str, s3_bucket: str) -> Iterator[CountingProxy]:
    """A fault-injecting proxy of the moto server; afterwards no multipart upload is open."""
    with CountingProxy(s3_endpoint, seed=11) as running:
        running.stall_s = STALL_S
        yield running
    assert not open_uploads(s3_endpoint, s3_bucket), "multipart uploads left open"


@pytest.fixture
def s3_settings(proxy: CountingProxy, s3_bucket: str) -> dict[str, Any]:
    """``faas.s3`` settings of the bucket through the proxy, with a short read timeout."""
    return {
        "bucket": s3_bucket,
        "endpoint-url": proxy.url,
        "region-name": "us-east-1",
        "key": "testing",
        "secret": "testing",
        "read-timeout": READ_TIMEOUT_S,
    }


@pytest.fixture
def on_s3(
    s3_settings: dict[str, Any], make_executor: Callable[..., FaasExecutor]
) -> Iterator[Callable[..., FaasExecutor]]:
    """``on_s3(**settings)``: an executor whose storage (and its functions') is the bucket through
    the proxy; ``dask_faas.read_csv`` reads through the proxy as well (the ``faas.s3`` settings)."""

    def make(**settings: Any) -> FaasExecutor:
        settings.setdefault("inline_limit", 1024)  # arguments and results go through storage
        return make_executor(storage="s3", s3=dict(s3_settings), **settings)

    with dask.config.set({"faas.s3": dict(s3_settings)}):
        yield make


@pytest.fixture
def direct(s3_endpoint: str, s3_bucket: str) -> Iterator[Any]:
    """A boto3 client of the moto server itself (no proxy, no faults) for setting up and checking."""
    client = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    yield client
    client.close()


def proxied(proxy: CountingProxy, bucket: str, **options: Any) -> S3Storage:
    """An S3 storage of ``bucket`` through the proxy."""
    return S3Storage(bucket, endpoint_url=proxy.url, region_name="us-east-1", **options)


def table(rows: int, names: tuple[str, str] = ("a", "b"), seed: int = 0) -> bytes:
    """A CSV object of ``rows`` rows of two integer columns (fixed width, so versions are equal in size)."""
    lines = [",".join(names)] + [
        f"{(i * 7 + seed) % 1000:04d},{(i * 13 + seed) % 997:04d}" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def checksum(data: bytes) -> int:
    return sum(data) % 65_521


def blob(i: int) -> bytes:
    return bytes([i % 251]) * (3000 + i)


# -- row 11: read timeouts, resets and truncated bodies --------------------------------------------


def test_row11_read_timeouts_resets_and_truncated_bodies_are_retried_and_the_results_are_equal(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any
) -> None:
    parts = [table(1500, seed=i) for i in range(6)]
    for i, data in enumerate(parts):
        direct.put_object(Bucket=s3_bucket, Key=f"in/data-{i}.csv", Body=data)
    expected = pd.concat([pd.read_csv(io.BytesIO(data)) for data in parts], ignore_index=True)
    with bounded():
        ex = on_s3()
        proxy.truncate_ratio, proxy.reset_ratio, proxy.stall_ratio = 0.15, 0.05, 0.02
        for blocksize in (None, 5000):  # whole objects (a short body would lose rows) and ranges
            df = dask_faas.read_csv(f"s3://{s3_bucket}/in/data-*.csv", blocksize=blocksize)
            got = df.compute(scheduler=ex)
            pd.testing.assert_frame_equal(got.reset_index(drop=True), expected)
        blobs = [blob(i) for i in range(24)]
        assert list(ex.map(checksum, blobs)) == [checksum(b) for b in blobs]
        ex.shutdown()
        proxy.truncate_ratio = proxy.reset_ratio = proxy.stall_ratio = 0.0
    faults = proxy.faults()
    assert faults["truncated"] and faults["resets"] and faults["stalls"], faults


def test_row11_a_body_shorter_than_its_length_or_range_is_read_again_and_never_returned(
    proxy: CountingProxy, s3_bucket: str, direct: Any
) -> None:
    data = bytes(range(256)) * 64
    direct.put_object(Bucket=s3_bucket, Key="short/obj", Body=data)
    storage = proxied(proxy, s3_bucket)
    try:
        with bounded():
            proxy.truncate_ratio = 0.5  # some answers short: every read still whole
            for start, end in [(None, None), (10, 9000), (100, None), (0, 1 << 30)]:
                assert storage.get("short/obj", start, end) == data[start:end]
            assert proxy.truncated > 0
            proxy.truncate_ratio = 1.0  # every answer short: an error, never the half
            before = proxy.truncated
            for start, end in [(None, None), (10, 9000)]:
                with pytest.raises(StorageError) as info:
                    storage.get("short/obj", start, end)
                message = str(info.value)
                assert (
                    f"s3://{s3_bucket}/short/obj" in message and f"after {READ_ATTEMPTS} attempts" in message
                )
                assert "HTTP 20" in message and "no part of it was used" in message, message
            assert proxy.truncated - before == 2 * READ_ATTEMPTS
    finally:
        proxy.truncate_ratio = 0.0
        storage.close()


def test_row11_a_read_that_stalls_past_the_read_timeout_is_retried_then_fails_naming_the_object(
    proxy: CountingProxy, s3_bucket: str, direct: Any
) -> None:
    data = b"x" * 50_000
    direct.put_object(Bucket=s3_bucket, Key="slow/obj", Body=data)
    storage = proxied(proxy, s3_bucket, read_timeout=0.5)
    try:
        with bounded():
            proxy.stall_ratio, proxy.stall_s = 0.3, 1.5
            assert all(
                storage.get("slow/obj", i, i + 20_000) == data[i : i + 20_000] for i in range(0, 40_000, 4000)
            )
            assert proxy.stalls > 0
            proxy.stall_ratio = 1.0
            with pytest.raises(StorageError) as info:
                storage.get("slow/obj")
            message = str(info.value)
            assert f"s3://{s3_bucket}/slow/obj" in message and "attempts" in message, message
            assert "ReadTimeout" in message, message
    finally:
        proxy.stall_ratio = 0.0
        storage.close()


# -- row 12: stale reads after an overwrite ---------------------------------------------------------


def test_row12_a_stale_read_of_an_overwritten_input_is_read_again_and_the_old_bytes_never_used(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str
) -> None:
    old, new = table(3000, ("a", "b"), seed=1), table(3000, ("x", "y"), seed=2)
    assert len(old) == len(new)  # only the version tells them apart
    writer = proxied(proxy, s3_bucket)  # through the proxy: it keeps the old version to serve
    try:
        writer.put("in/data.csv", old)
        proxy.stale_reads = 3  # the next 3 GETs after each PUT come from the version before it
        writer.put("in/data.csv", new)
        proxy.stale_reads = 0
    finally:
        writer.close()
    with bounded():
        ex = on_s3()
        df = dask_faas.read_csv(f"s3://{s3_bucket}/in/data.csv", blocksize=8000)
        assert list(df.columns) == ["x", "y"]  # the header came from the new version
        got = df.compute(scheduler=ex)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), pd.read_csv(io.BytesIO(new)))
    faults = proxy.faults()
    assert faults["preconditions"] == 3 and faults["stale"] == 0, faults  # refused, never used


def chunk_text(obj: Any) -> bytes:
    return obj.data_stream.read()


def test_row12_a_lithops_style_map_over_an_overwritten_object_reads_only_the_new_version(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str
) -> None:
    import dask_faas.compat as lithops

    old, new = table(3000, ("a", "b"), seed=1), table(3000, ("x", "y"), seed=2)
    writer = proxied(proxy, s3_bucket)
    try:
        writer.put("in/lines.csv", old)
        proxy.stale_reads = 4  # no header sample here: the functions' own ranged reads meet them
        writer.put("in/lines.csv", new)
        proxy.stale_reads = 0
    finally:
        writer.close()
    with bounded():
        ex = on_s3()
        fexec = lithops.FunctionExecutor(executor=ex)
        futures = fexec.map(chunk_text, f"s3://{s3_bucket}/in/lines.csv", obj_chunk_size=6000)
        chunks = fexec.get_result(futures)
    assert len(chunks) > 4 and b"".join(chunks) == new
    faults = proxy.faults()
    assert faults["preconditions"] == 4 and faults["stale"] == 0, faults


def test_row12_an_input_overwritten_between_planning_and_reading_fails_naming_it(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any
) -> None:
    direct.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=table(3000, seed=1))
    with bounded():
        ex = on_s3()
        df = dask_faas.read_csv(f"s3://{s3_bucket}/in/data.csv", blocksize=8000)
        direct.put_object(Bucket=s3_bucket, Key="in/data.csv", Body=table(3000, seed=2))  # after planning
        with pytest.raises(StorageError) as info:
            df.compute(scheduler=ex)
    message = str(info.value)
    assert f"s3://{s3_bucket}/in/data.csv" in message and "HTTP 412" in message, message
    assert "written again after it was listed" in message, message


def test_row12_our_write_once_keys_read_before_they_are_visible_are_read_again(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor]
) -> None:
    proxy.stale_reads = 2  # every new key: its first 2 GETs answer 404, as a lagging replica
    with bounded():
        ex = on_s3()
        blobs = [blob(i) for i in range(12)]
        assert list(ex.map(checksum, blobs)) == [checksum(b) for b in blobs]
        ex.shutdown()
    proxy.stale_reads = 0
    faults = proxy.faults()
    assert faults["lagged"] > 0 and faults["stale"] == 0, faults  # write-once: never an old version


def test_row12_a_key_that_never_appears_fails_naming_it_within_the_bound(
    proxy: CountingProxy, s3_bucket: str
) -> None:
    storage = proxied(proxy, s3_bucket, read_after_write_s=0.5)
    try:
        with bounded(30), pytest.raises(FileNotFoundError) as info:
            storage.get("never/there")
        assert f"s3://{s3_bucket}/never/there" in str(info.value)
        assert len(proxy.count(lambda method, path, rng: method == "GET" and "never/there" in path)) > 0
        assert proxy.count(lambda method, path, rng: method == "GET" and "never/there" in path)["GET"] > 1
    finally:
        storage.close()


# -- row 13: missing bucket, missing key, refused credentials ---------------------------------------


def test_row13_a_missing_bucket_fails_before_any_invocation_naming_it_and_the_setting(
    proxy: CountingProxy, s3_settings: dict[str, Any], make_executor: Callable[..., FaasExecutor]
) -> None:
    with bounded(60):
        with pytest.raises(ConfigError) as info:
            make_executor(storage="s3", s3={**s3_settings, "bucket": "no-such-bucket-13"})
        message = str(info.value)
        assert "'no-such-bucket-13'" in message and "faas.s3.bucket" in message, message
        with pytest.raises(FileNotFoundError) as missing:
            dask_faas.read_csv("s3://no-such-bucket-13/data.csv", storage_options=_options(s3_settings))
        assert "s3://no-such-bucket-13/data.csv" in str(missing.value)
    assert not proxy.count(lambda method, path, rng: method in ("PUT", "POST"))  # nothing was written


def test_row13_a_missing_key_fails_at_planning_before_any_invocation_naming_the_object(
    on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any
) -> None:
    direct.put_object(Bucket=s3_bucket, Key="in/present.csv", Body=table(10))
    with bounded(60):
        ex = on_s3()
        for url in (f"s3://{s3_bucket}/in/missing.csv", f"s3://{s3_bucket}/in/*.tsv"):
            with pytest.raises(FileNotFoundError) as info:
                dask.compute(dask_faas.read_csv(url), scheduler=ex)
            assert url in str(info.value)
        assert ex.stats["invocations"] == 0


def test_row13_refused_credentials_fail_before_any_invocation_naming_the_setting(
    s3_endpoint_auth: Any, make_executor: Callable[..., FaasExecutor]
) -> None:
    wrong = {
        "bucket": s3_endpoint_auth.bucket,
        "endpoint-url": s3_endpoint_auth.endpoint_url,
        "region-name": "us-east-1",
        "key": s3_endpoint_auth.key,
        "secret": "not-the-secret",
    }
    with bounded(60):
        with pytest.raises(PermissionError) as info:
            make_executor(storage="s3", s3=wrong)
        message = str(info.value)
        assert f"s3://{s3_endpoint_auth.bucket}" in message and "faas.s3.key / faas.s3.secret" in message
        assert "not-the-secret" not in message
        ex = make_executor()  # local storage; the input's credentials are refused at planning
        url = f"s3://{s3_endpoint_auth.bucket}/in/data.csv"
        with pytest.raises(PermissionError) as refused:
            dask.compute(dask_faas.read_csv(url, storage_options=_options(wrong)), scheduler=ex)
        assert url in str(refused.value) and "not-the-secret" not in str(refused.value)
        assert ex.stats["invocations"] == 0
    auth = boto3.session.Session().client(
        "s3",
        endpoint_url=s3_endpoint_auth.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id=s3_endpoint_auth.key,
        aws_secret_access_key=s3_endpoint_auth.secret,
    )
    try:
        assert not auth.list_multipart_uploads(Bucket=s3_endpoint_auth.bucket).get("Uploads")
    finally:
        auth.close()


def _options(settings: dict[str, Any]) -> dict[str, Any]:
    """s3fs-style ``storage_options`` of ``faas.s3`` settings."""
    names = {"endpoint-url": "endpoint_url", "region-name": "region_name", "key": "key", "secret": "secret"}
    return {names[k]: v for k, v in settings.items() if k in names}


# -- nothing left open: multipart uploads under the job prefix ---------------------------------------


def test_an_upload_left_open_under_the_job_prefix_is_aborted_when_the_job_ends(
    proxy: CountingProxy, on_s3: Callable[..., FaasExecutor], s3_bucket: str, direct: Any, s3_endpoint: str
) -> None:
    with bounded(60):
        ex = on_s3()
        assert ex.submit(checksum, b"x" * 4096).result() == checksum(b"x" * 4096)
        key = f"{ex.job_prefix}/out/interrupted-large-write"  # as a function killed mid-upload leaves it
        upload = direct.create_multipart_upload(Bucket=s3_bucket, Key=key)
        direct.upload_part(
            Bucket=s3_bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * 1024
        )
        outside = direct.create_multipart_upload(Bucket=s3_bucket, Key="elsewhere/big")
        assert set(open_uploads(s3_endpoint, s3_bucket)) == {key, "elsewhere/big"}
        ex.shutdown()
    assert open_uploads(s3_endpoint, s3_bucket) == ["elsewhere/big"]  # only the job's own
    direct.abort_multipart_upload(Bucket=s3_bucket, Key="elsewhere/big", UploadId=outside["UploadId"])


def test_row10_a_sustained_30_percent_of_503s_outlasts_botocores_retry_quota(
    proxy: CountingProxy, s3_bucket: str
) -> None:
    """botocore's standard mode stops retrying once its client-side quota is spent (each 5xx retry
    costs 14 of 500 tokens, a success gives 1 back): at 30% transient 503s that is a few hundred
    requests into a warm function's life. Every read and write must still succeed."""
    storage = proxied(proxy, s3_bucket)
    storage.put("dask-faas/quota/k", b"x" * 100)
    proxy.fail_ratio, proxy.fail_code = 0.3, "ServiceUnavailable"
    try:
        with bounded(), cf.ThreadPoolExecutor(8) as pool:
            reads = list(pool.map(lambda i: storage.get("dask-faas/quota/k", 0, 50), range(1500)))
            writes = list(pool.map(lambda i: storage.put(f"dask-faas/quota/w{i}", b"y"), range(300)))
    finally:
        proxy.fail_ratio = 0.0
    assert reads == [b"x" * 50] * 1500 and len(writes) == 300
    assert proxy.refused > 400, "too few 503s to spend the quota: the test tested nothing"
    storage.delete_prefix("dask-faas/quota/")
    storage.close()
