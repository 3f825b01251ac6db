"""What every row of the faults matrix checks (tests/test_faults*.py): a bound on its wall time, no
multipart upload left open, and a wait for a condition with a deadline."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import boto3

__all__ = ["ROW_BOUND_S", "bounded", "open_uploads", "wait_until"]

#: A row that takes longer than this hangs somewhere (the rows take seconds; the bound is wide
#: because CI shares 2 cores with the emulators).
ROW_BOUND_S = 120.0


@contextlib.contextmanager
def bounded(seconds: float = ROW_BOUND_S) -> Iterator[None]:
    """Fail when the block takes longer than ``seconds`` (a hang, not a slow machine)."""
    started = time.monotonic()
    yield
    took = time.monotonic() - started
    assert took < seconds, f"the row took {took:.1f} s, past its bound of {seconds:g} s"


def open_uploads(endpoint: str, bucket: str) -> list[str]:
    """Keys of the multipart uploads still open in ``bucket``."""
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        return [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]
    finally:
        client.close()


def wait_until(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms; fail naming ``what`` when it is not true within ``seconds``."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {seconds:g} s"
        time.sleep(0.05)
