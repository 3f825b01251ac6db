"""AWS Lambda: synchronous ``Invoke`` of a function deployed from the dask-faas Lambda image.

The function runs ``function_runtime.aws_lambda.handler`` under AWS's runtime interface client
(``python -m awslambdaric function_runtime.aws_lambda.handler``); deploy it with
``dask-faas runtime deploy``. Credentials, region and profile come from the user's normal AWS
configuration (``faas.aws-lambda.profile``, ``region-name``, ``endpoint-url`` to override them).

Lambda's answers map onto the project's errors: a throttled invoke (429
``TooManyRequestsException``) and a platform that is busy or updating are sent again with backoff
(:class:`~dask_faas.backends.compute.remote.RemoteBackend`); ``Sandbox.Timedout`` becomes
:class:`~dask_faas.exceptions.FunctionTimeoutError`, ``Runtime.OutOfMemory``
:class:`~dask_faas.exceptions.FunctionMemoryError`, ``Runtime.ExitError``
:class:`~dask_faas.exceptions.WorkerDiedError`, each naming the call and the limit.
"""

from __future__ import annotations

import json
import math
import threading
from typing import Any

import boto3
import botocore.config
import botocore.exceptions as bce

from ...exceptions import (
    ConfigError,
    FunctionMemoryError,
    FunctionTimeoutError,
    InvocationError,
    PayloadTooLargeError,
    WorkerDiedError,
)
from .base import InvokeOptions
from .remote import RemoteBackend, Retryable, decode, encode, lost_connection, retry_after_s

__all__ = ["AwsLambdaBackend"]

#: Lambda's error codes that mean "not now": the call is sent again with backoff.
_NOT_NOW = {
    "TooManyRequestsException",
    "ServiceException",
    "ResourceNotReadyException",
    "EC2ThrottledException",
    "SnapStartNotReadyException",
    "ResourceConflictException",  # the function is being created or updated
}


class AwsLambdaBackend(RemoteBackend):
    """Invoke a deployed AWS Lambda function.

    Parameters
    ----------
    function_name : str
        Name or ARN of the function (``faas.aws-lambda.function-name``).
    qualifier : str, optional
        Version or alias.
    region_name, endpoint_url, profile : str, optional
        Override the AWS configuration (``endpoint_url`` for an emulator or a private endpoint).
    concurrency : int
        Invocations in flight at once (threads, and HTTP connections in the pool).
    throttle_deadline_s : float
        How long throttling is backed off before a call fails.

    Raises
    ------
    ConfigError
        If the function does not exist or cannot be read, naming it and the region.
    """

    name = "aws_lambda"
    max_payload_bytes = 6 * 2**20
    max_timeout_s = 900.0
    max_memory_mb = 10240

    def __init__(
        self,
        function_name: str,
        *,
        qualifier: str | None = None,
        region_name: str | None = None,
        endpoint_url: str | None = None,
        profile: str | None = None,
        concurrency: int = 1000,
        throttle_deadline_s: float = 900.0,
    ) -> None:
        super().__init__(concurrency, throttle_deadline_s)
        self.function_name, self.qualifier = function_name, qualifier
        self._session = boto3.session.Session(profile_name=profile, region_name=region_name)
        self._endpoint_url = endpoint_url
        self._clients: dict[int, Any] = {}
        self._clients_lock = threading.Lock()
        self._transport_closed = False
        where = f"{function_name!r} in {self._session.region_name or 'the default region'}"
        try:
            cfg = self._client(60).get_function_configuration(**self._target())
        except bce.ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            hint = "; deploy it with: dask-faas runtime deploy" if code == "ResourceNotFoundException" else ""
            raise ConfigError(
                f"AWS Lambda function {where} (faas.aws-lambda.function-name): {exc}{hint}"
            ) from None
        except bce.BotoCoreError as exc:
            raise ConfigError(f"AWS Lambda function {where}: {exc}") from None
        #: The deployed function's limits: its Timeout (s) and MemorySize (MB).
        self.timeout_s, self.memory_mb = float(cfg["Timeout"]), int(cfg["MemorySize"])

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> AwsLambdaBackend:
        section = settings.get("aws-lambda") or {}
        return cls(
            section.get("function-name") or "dask-faas",
            qualifier=section.get("qualifier"),
            region_name=section.get("region-name"),
            endpoint_url=section.get("endpoint-url"),
            profile=section.get("profile"),
            concurrency=int(section.get("concurrency") or 1000),
            throttle_deadline_s=float(settings.get("throttle-deadline-s") or 900),
        )

    def _target(self) -> dict[str, str]:
        qualifier = {"Qualifier": self.qualifier} if self.qualifier else {}
        return {"FunctionName": self.function_name, **qualifier}

    def _client(self, read_timeout_s: float) -> Any:
        """A Lambda client whose reads wait ``read_timeout_s`` (one per distinct timeout)."""
        seconds = math.ceil(read_timeout_s)
        with self._clients_lock:
            if self._transport_closed:
                raise InvocationError(f"the {self.name} backend is closed")
            client = self._clients.get(seconds)
            if client is None:
                config = botocore.config.Config(
                    max_pool_connections=self.concurrency,
                    read_timeout=seconds,
                    connect_timeout=10,
                    retries={"total_max_attempts": 1},  # backoff is ours, within the throttle deadline
                    tcp_keepalive=True,
                )
                client = self._session.client("lambda", endpoint_url=self._endpoint_url, config=config)
                self._clients[seconds] = client
        return client

    def send(self, payload: bytes, options: InvokeOptions) -> bytes:
        client = self._client(options.timeout_s + self.answer_grace_s)
        try:
            answer = client.invoke(**self._target(), Payload=json.dumps(encode(payload)).encode())
        except bce.ClientError as exc:
            raise self._refused(exc, options) from None
        except bce.ReadTimeoutError:
            raise FunctionTimeoutError(
                f"{options.label}: no answer within its time limit timeout_s={options.timeout_s:g} "
                f"(+{self.answer_grace_s:g} s for a cold start); the Lambda function's own Timeout is "
                f"{self.timeout_s:g} s"
            ) from None
        except (bce.EndpointConnectionError, bce.ConnectTimeoutError) as exc:  # never sent
            raise Retryable(f"connection failed: {exc}") from None
        except bce.ConnectionClosedError as exc:
            raise lost_connection(options.label, "Lambda", exc) from None
        body = answer["Payload"].read()
        if "FunctionError" in answer:
            raise self._function_error(body, options)
        try:
            result = json.loads(body)
        except ValueError:
            raise InvocationError(f"{options.label}: Lambda answered no JSON: {body[:200]!r}") from None
        return decode(result, options.label)

    def _refused(self, exc: bce.ClientError, options: InvokeOptions) -> Exception:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", str(exc))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        if code in _NOT_NOW or status == 429:
            return Retryable(f"{status} {code}: {message}", retry_after_s(headers))
        if code in ("RequestTooLargeException", "SerializedRequestEntityTooLargeException") or status == 413:
            return PayloadTooLargeError(f"{options.label}: Lambda refused the payload (too large): {message}")
        return InvocationError(f"{options.label}: Lambda refused the invoke ({code}): {message}")

    def _function_error(self, body: bytes, options: InvokeOptions) -> InvocationError:
        try:
            error = json.loads(body)
        except ValueError:
            error = {"errorMessage": body[:500].decode(errors="replace")}
        kind, message = str(error.get("errorType", "")), str(error.get("errorMessage", ""))
        if kind == "Sandbox.Timedout" or "Task timed out" in message:
            limit = min(options.timeout_s, self.timeout_s)
            return FunctionTimeoutError(
                f"{options.label} exceeded its time limit timeout_s={limit:g} (the Lambda function's "
                f"Timeout is {self.timeout_s:g} s) and was stopped: {message}"
            )
        if kind == "Runtime.OutOfMemory":
            return FunctionMemoryError(
                f"{options.label} exceeded its memory limit memory_mb={self.memory_mb} (the Lambda "
                f"function's MemorySize) and was stopped: {message}"
            )
        if kind == "Runtime.ExitError":
            return WorkerDiedError(f"{options.label}: the Lambda instance died while running it: {message}")
        return InvocationError(f"{options.label}: the function runtime refused it: {kind}: {message}")

    def close_transport(self) -> None:
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
            self._transport_closed = True
        for client in clients:
            client.close()
