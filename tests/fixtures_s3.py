"""Pytest plugin: S3-compatible servers on loopback (moto's server mode, as real subprocesses).

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["fixtures_s3"]``.

Fixtures
--------
s3_endpoint (session)       URL of a moto server that accepts any credentials
s3_bucket                   a fresh bucket on it, emptied and deleted afterwards
s3_storage                  an S3Storage on that bucket
s3_endpoint_auth (session)  a second moto server that enforces IAM authentication (see below)
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

__all__ = ["AuthS3", "s3_bucket", "s3_endpoint", "s3_endpoint_auth", "s3_storage"]

DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # never read the developer's ~/.aws, never go through a proxy for loopback
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "NO_PROXY": "127.0.0.1,localhost",
    "no_proxy": "127.0.0.1,localhost",
}
UNSET_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")
START_TIMEOUT_S = 30.0


class AuthS3(NamedTuple):
    """A moto server enforcing authentication, a bucket on it and credentials it accepts."""

    endpoint_url: str
    bucket: str
    key: str
    secret: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, data: bytes | None = None, timeout: float = 5.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # not form-encoded: moto reads the raw body of /moto-api/reset-auth
    headers = {"Content-Type": "application/octet-stream"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with opener.open(request, timeout=timeout) as response:
        return response.read()


def _start_moto(log_dir: str, name: str, attempts: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m moto.server`` on a free loopback port; wait until it answers.

    Another process may take the free port before the server binds it: then the server exits at
    once, and it is started again on another port.
    """
    for attempt in range(attempts):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        # a file, not a pipe: werkzeug logs every request, and an unread pipe would block the server
        log_path = os.path.join(log_dir, f"{name}-{attempt}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy(),
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                _post(f"{url}/moto-api/data.json", timeout=1.0)
                return proc, url
            except urllib.error.HTTPError:
                return proc, url  # it answered
            except OSError:
                time.sleep(0.05)
        exit_code = proc.poll()
        _stop(proc)
        with open(log_path, errors="replace") as f:
            output = f.read()[-4000:]
        if exit_code is None or "in use" not in output or attempt == attempts - 1:
            state = "did not answer" if exit_code is None else f"exited with code {exit_code}"
            raise RuntimeError(
                f"moto server on {url} {state} within {START_TIMEOUT_S:.0f}s; output:\n{output}"
            )
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="session")
def _s3_env() -> Iterator[None]:
    """Dummy AWS credentials for the servers and clients, restored after the session."""
    with pytest.MonkeyPatch.context() as mp:
        for name in UNSET_ENV:
            mp.delenv(name, raising=False)
        for name, value in DUMMY_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def _s3_logs(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="session")
def s3_endpoint(_s3_env: None, _s3_logs: str) -> Iterator[str]:
    """URL of a moto S3 server (subprocess on 127.0.0.1) that accepts any credentials."""
    proc, url = _start_moto(_s3_logs, "moto")
    try:
        yield url
    finally:
        _stop(proc)


def _client(endpoint_url: str, service: str = "s3") -> Any:
    import boto3

    return boto3.session.Session().client(service, endpoint_url=endpoint_url, region_name="us-east-1")


def _drop_bucket(client: Any, bucket: str) -> None:
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", ())]
            if keys:
                client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except client.exceptions.NoSuchBucket:
        pass


@pytest.fixture(scope="session")
def _s3_admin(s3_endpoint: str) -> Iterator[Any]:
    """A boto3 client of the moto server, for the fixtures."""
    client = _client(s3_endpoint)
    yield client
    client.close()


@pytest.fixture
def s3_bucket(_s3_admin: Any) -> Iterator[str]:
    """A fresh, uniquely named bucket; its objects and itself are deleted afterwards."""
    bucket = f"test-{uuid.uuid4().hex[:20]}"
    _s3_admin.create_bucket(Bucket=bucket)
    try:
        yield bucket
    finally:
        _drop_bucket(_s3_admin, bucket)


@pytest.fixture
def s3_storage(s3_endpoint: str, s3_bucket: str) -> Iterator[Any]:
    """``S3Storage`` on a fresh bucket of the moto server."""
    from dask_faas.backends.storage.s3 import S3Storage

    storage = S3Storage(
        bucket=s3_bucket,
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        key="testing",
        secret="testing",
    )
    try:
        yield storage
    finally:
        storage.close()


@pytest.fixture(scope="session")
def s3_endpoint_auth(_s3_env: None, _s3_logs: str) -> Iterator[AuthS3]:
    """A second moto server that checks signatures and IAM policies of every request.

    Moto authenticates only after ``INITIAL_NO_AUTH_ACTION_COUNT`` requests (infinite by default).
    The server starts open; an IAM user with an S3 policy, its access key and a bucket are created,
    then ``POST /moto-api/reset-auth`` with ``0`` turns authentication on for every later request:
    unknown access keys get ``InvalidAccessKeyId``, wrong secrets ``SignatureDoesNotMatch`` (403).
    """
    proc, url = _start_moto(_s3_logs, "moto-auth")
    try:
        iam = _client(url, "iam")
        iam.create_user(UserName="dask-faas-test")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }
        iam.put_user_policy(UserName="dask-faas-test", PolicyName="s3", PolicyDocument=json.dumps(policy))
        access = iam.create_access_key(UserName="dask-faas-test")["AccessKey"]
        iam.close()
        bucket = f"auth-{uuid.uuid4().hex[:20]}"
        s3 = _client(url)
        s3.create_bucket(Bucket=bucket)
        s3.close()
        _post(f"{url}/moto-api/reset-auth", data=b"0")
        yield AuthS3(url, bucket, access["AccessKeyId"], access["SecretAccessKey"])
    finally:
        _stop(proc)
