"""Faults and bad input (issue 10's matrix): rows implemented so far.

Storage faults come from :class:`~dask_faas.testing.s3.CountingProxy` in front of the moto server
(loopback only), which answers a seeded share of requests ``503 SlowDown`` itself, as S3 does when
it sheds load; the client and the function processes both talk to S3 through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from dask_faas import FaasExecutor, StorageError
from dask_faas.testing.s3 import CountingProxy

pytestmark = pytest.mark.timeout(300)


def checksum(data: bytes) -> int:
    return sum(data) % 65_521


@pytest.fixture
def flaky_s3(s3_endpoint: str, s3_bucket: str) -> Iterator[tuple[CountingProxy, dict[str, Any]]]:
    """A proxy of the S3 test server that can answer 503 SlowDown, and the storage settings through it."""
    with CountingProxy(s3_endpoint, seed=10) as proxy:
        settings = {
            "storage": "s3",
            "s3": {
                "bucket": s3_bucket,
                "endpoint_url": proxy.url,
                "region_name": "us-east-1",
                "key": "testing",
                "secret": "testing",
            },
            "inline_limit": 1024,  # every argument and result goes through storage
        }
        yield proxy, settings


@pytest.mark.slow
def test_row10_with_30_percent_of_requests_answered_503_the_results_are_equal(
    flaky_s3: tuple[CountingProxy, dict[str, Any]], make_executor: Callable[..., FaasExecutor]
) -> None:
    proxy, settings = flaky_s3
    proxy.fail_ratio = 0.3
    blobs = [bytes([i]) * 4096 for i in range(16)]
    for _ in range(3):  # the storage check (HeadBucket) of each executor is retried too
        ex = make_executor(**settings)
        assert list(ex.map(checksum, blobs)) == [checksum(b) for b in blobs]
        ex.shutdown()
    assert proxy.refused > 0, "no request was refused: the test tested nothing"


@pytest.mark.slow
def test_row10_when_storage_keeps_answering_503_the_error_names_bucket_and_key(
    flaky_s3: tuple[CountingProxy, dict[str, Any]], make_executor: Callable[..., FaasExecutor]
) -> None:
    proxy, settings = flaky_s3
    ex = make_executor(**settings)
    proxy.fail_ratio = 1.0
    with pytest.raises(StorageError) as info:
        ex.submit(checksum, b"x" * 8192)  # the argument goes to storage at submit
    message = str(info.value)
    bucket = settings["s3"]["bucket"]
    assert f"s3://{bucket}/{ex.job_prefix}/" in message, message
    assert "SlowDown" in message and "HTTP 503" in message and "attempts" in message, message
    assert isinstance(info.value, OSError)
    proxy.fail_ratio = 0.0  # the job's prefix can be emptied at teardown
