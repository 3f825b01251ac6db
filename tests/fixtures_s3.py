"""Pytest plugin: S3-compatible servers on loopback (moto's server mode, as real subprocesses).

Loaded from ``tests/conftest.py`` with ``pytest_plugins = ["fixtures_s3"]``.

Fixtures
--------
s3_endpoint (session)       URL of a moto server that accepts any credentials
s3_bucket                   a fresh bucket on it, emptied and deleted afterwards
s3_module_bucket (module)   the same, shared by the tests of one module
s3_storage                  an S3Storage on that bucket
s3_endpoint_auth (session)  a second moto server that enforces IAM authentication (see below)
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from dask_faas.testing.s3 import LOOPBACK_AWS_ENV, start_moto_server, stop_process

__all__ = [
    "AuthS3",
    "enforce_auth",
    "s3_bucket",
    "s3_endpoint",
    "s3_endpoint_auth",
    "s3_module_bucket",
    "s3_storage",
]

DUMMY_ENV = LOOPBACK_AWS_ENV  # never the developer's ~/.aws, never a proxy for loopback
UNSET_ENV = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")
START_TIMEOUT_S = 30.0


class AuthS3(NamedTuple):
    """A moto server enforcing authentication, a bucket on it and credentials it accepts."""

    endpoint_url: str
    bucket: str
    key: str
    secret: str


def _post(url: str, data: bytes | None = None, timeout: float = 5.0) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    # not form-encoded: moto reads the raw body of /moto-api/reset-auth
    headers = {"Content-Type": "application/octet-stream"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with opener.open(request, timeout=timeout) as response:
        return response.read()


def enforce_auth(url: str) -> None:
    """Make the moto server at ``url`` check the signature and IAM policies of every later request."""
    _post(f"{url}/moto-api/reset-auth", data=b"0")


def _start_moto(log_dir: str, name: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m moto.server`` on a free loopback port; wait until it answers."""
    return start_moto_server(os.path.join(log_dir, f"{name}.log"), timeout_s=START_TIMEOUT_S)


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
        stop_process(proc)


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


@pytest.fixture(scope="module")
def s3_module_bucket(_s3_admin: Any) -> Iterator[str]:
    """A fresh bucket shared by the tests of one module; emptied and deleted afterwards."""
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
        enforce_auth(url)
        yield AuthS3(url, bucket, access["AccessKeyId"], access["SecretAccessKey"])
    finally:
        stop_process(proc)


def lithops_aws_s3_config(endpoint: str, bucket: str) -> dict[str, Any]:
    """A Lithops configuration whose storage is ``bucket`` on the moto server at ``endpoint``."""
    return {
        "lithops": {"backend": "localhost", "storage": "aws_s3"},
        "aws_s3": {
            "endpoint": endpoint,
            "access_key_id": "testing",
            "secret_access_key": "testing",
            "region": "us-east-1",
            "storage_bucket": bucket,
        },
    }
