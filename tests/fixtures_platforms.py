"""Pytest plugin: the FaaS platform emulators, each started once per session, with a deployed function.

Loaded from ``tests/conftest.py``. Every emulator is a real server process on a free 127.0.0.1
port (:mod:`dask_faas.testing.servers`) running our real entry points as real processes: the Lambda
emulator through AWS's ``awslambdaric`` and the Lambda Runtime API, the OpenWhisk emulator through
``/init`` and ``/run`` of action containers, and Knative's runtime under ``func-python`` behind a
round-robin router. The deployed function's environment holds the session's signing key and the
credentials of the S3 test server, as ``dask-faas runtime deploy`` would write them; the storage's
bucket, endpoint or local root travel in each payload's locator, so one deployment serves every
test.

Fixtures
--------
platforms (session)   a :class:`Platforms`: ``platforms.settings(name)`` gives the FaasExecutor
                      settings of a platform (its emulator started on first use)
PLATFORMS             the names of the platforms
EXECUTOR_KINDS        ``"local"`` and the platforms (marked slow), to parametrize executor fixtures
executor_settings()   the FaasExecutor settings of one kind: the local pool on local storage, or a
                      platform on the S3 test server
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from dask_faas import config, protocol
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV
from dask_faas.testing.servers import Emulator, start_emulator
from dask_faas.worker import MEMORY_ENV

__all__ = [
    "EXECUTOR_KINDS",
    "FUNCTION_MEMORY_MB",
    "PLATFORMS",
    "Platforms",
    "executor_settings",
    "lambda_variables",
    "platforms",
]

#: The remote platforms, each with its emulator.
PLATFORMS = ("aws_lambda", "openwhisk", "knative")
#: The embedded default and every platform (slow: CI runs them), for ``pytest.fixture(params=...)``.
EXECUTOR_KINDS = ["local", *(pytest.param(name, marks=pytest.mark.slow) for name in PLATFORMS)]

#: What every deployed function gets besides the signing key: the project's default function
#: environment and the S3 test server's dummy credentials (functions never get the developer's).
FUNCTION_ENV = {
    **{k: str(v) for k, v in config.resolve()["environment"].items()},
    **{
        k: v for k, v in LOOPBACK_AWS_ENV.items() if k.startswith(("AWS_ACCESS", "AWS_SECRET", "AWS_DEFAULT"))
    },
    "NO_PROXY": "127.0.0.1,localhost",
}
LAMBDA_ROLE = "arn:aws:iam::123456789012:role/dask-faas"
#: The memory of the deployed function on every platform (MiB).
FUNCTION_MEMORY_MB = 1024


def lambda_variables(environment: dict[str, str]) -> dict[str, str]:
    """A deployment environment as Lambda takes it: ``AWS_*`` names are Lambda's own (reserved);
    a function's AWS credentials come from its execution role (the emulator's dummy keys)."""
    return {k: v for k, v in environment.items() if not k.startswith("AWS_")}


OPENWHISK_AUTH = "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:" + "x" * 64


class Platforms:
    """The session's emulators and deployed functions, started on first use.

    Parameters
    ----------
    workdir : str
        Directory for the emulators' logs and files.
    """

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.key = protocol.new_key()
        self.environment = {**FUNCTION_ENV, protocol.KEY_ENV: self.key.hex()}
        self.knative_token = secrets.token_urlsafe(24)
        self._emulators: dict[str, Emulator] = {}
        self._settings: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def emulator(self, name: str) -> Emulator:
        """The emulator of platform ``name`` (started and deployed to on first use)."""
        self.settings(name)
        return self._emulators[name]

    def settings(self, name: str, concurrency: int = 8, **more: Any) -> dict[str, Any]:
        """FaasExecutor keywords that run on platform ``name``'s deployed function."""
        with self._lock:
            if name not in self._settings:
                self._settings[name] = getattr(self, f"_start_{name}")()
        base = self._settings[name]
        section = name.replace("_", "-") if name != "aws_lambda" else "aws-lambda"
        sections = {section.replace("-", "_"): {**base[section], "concurrency": concurrency}}
        return {"backend": name, "signing_key": self.key.hex(), **sections, **more}

    def _log(self, name: str) -> str:
        return os.path.join(self.workdir, f"{name}.log")

    def _start_aws_lambda(self) -> dict[str, Any]:
        import boto3

        emulator = self._emulators["aws_lambda"] = start_emulator(
            "dask_faas.testing.lambda_emulator", log_path=self._log("lambda")
        )
        client = boto3.session.Session().client("lambda", endpoint_url=emulator.url, region_name="us-east-1")
        client.create_function(
            FunctionName="dask-faas",
            PackageType="Image",
            Code={"ImageUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda"},
            Role=LAMBDA_ROLE,
            MemorySize=FUNCTION_MEMORY_MB,
            Timeout=300,
            Environment={"Variables": lambda_variables(self.environment)},
        )
        client.close()
        section = {"function-name": "dask-faas", "endpoint-url": emulator.url, "region-name": "us-east-1"}
        return {"aws-lambda": section}

    def _start_openwhisk(self) -> dict[str, Any]:
        import requests

        emulator = self._emulators["openwhisk"] = start_emulator(
            "dask_faas.testing.openwhisk_emulator", "--auth", OPENWHISK_AUTH, log_path=self._log("openwhisk")
        )
        user, _, key = OPENWHISK_AUTH.partition(":")
        action = {
            "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:test"},
            "annotations": [{"key": "provide-api-key", "value": False}],
            "limits": {"timeout": 300_000, "memory": FUNCTION_MEMORY_MB},
            "parameters": [{"key": k, "value": v, "init": True} for k, v in self.environment.items()],
        }
        with requests.Session() as session:
            session.trust_env = False
            answer = session.put(
                f"{emulator.url}/api/v1/namespaces/_/actions/dask-faas?overwrite=true",
                json=action,
                auth=(user, key),
                timeout=30,
            )
            answer.raise_for_status()
        return {"openwhisk": {"api-host": emulator.url, "auth": OPENWHISK_AUTH, "action": "dask-faas"}}

    def _start_knative(self) -> dict[str, Any]:
        env_file = os.path.join(self.workdir, "knative-env.json")
        # the Service's environment as `dask-faas runtime deploy` writes it: the token, and the
        # container's memory limit for the runtime to enforce on itself
        variables = {"DASK_FAAS_HTTP_TOKEN": self.knative_token, MEMORY_ENV: str(FUNCTION_MEMORY_MB)}
        with open(env_file, "w") as f:
            json.dump({**self.environment, **variables}, f)
        emulator = self._emulators["knative"] = start_emulator(
            "dask_faas.testing.knative_router",
            *("--env-file", env_file, "--instances", "2", "--memory-mb", str(FUNCTION_MEMORY_MB)),
            log_path=self._log("knative"),
        )
        return {"knative": {"url": emulator.url, "token": self.knative_token}}

    def close(self) -> None:
        for emulator in self._emulators.values():
            emulator.stop()


def executor_settings(
    request: pytest.FixtureRequest, kind: str, local_root: str, **more: Any
) -> dict[str, Any]:
    """FaasExecutor keywords of ``kind``: ``"local"`` (2 warm processes, local storage in
    ``local_root``) or a platform of :data:`PLATFORMS` (its emulator, the S3 test server's module bucket).
    """
    if kind == "local":
        return {"workers": 2, "local_storage": {"root": local_root}, **more}
    farm: Platforms = request.getfixturevalue("platforms")
    s3 = {
        "bucket": request.getfixturevalue("s3_module_bucket"),
        "endpoint_url": request.getfixturevalue("s3_endpoint"),
        "region_name": "us-east-1",
        "key": "testing",
        "secret": "testing",
    }
    return farm.settings(kind, storage="s3", s3=s3, **more)


@pytest.fixture(scope="session")
def platforms(_s3_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platforms]:
    """The session's platform emulators (started on first use), stopped at the end."""
    farm = Platforms(str(tmp_path_factory.mktemp("platforms")))
    try:
        yield farm
    finally:
        farm.close()
