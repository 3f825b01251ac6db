"""Deploy the Lambda image as an AWS Lambda function, through boto3's Lambda control plane.

``deploy`` is ``CreateFunction`` from ``faas.aws-lambda.image-uri`` (an image in ECR built from
``function_runtime/Dockerfile.lambda``) with the execution role ``faas.aws-lambda.role-arn``,
``MemorySize = faas.memory-mb``, ``Timeout = faas.timeout-s``, ``Architectures`` and the function's
environment; ``update`` is ``UpdateFunctionCode`` then ``UpdateFunctionConfiguration``, each waited
for with boto3's waiters (Lambda refuses a second update while one is in progress). Variables that
Lambda reserves (``AWS_ACCESS_KEY_ID``, ``AWS_REGION``...) are left out: a Lambda function gets its
credentials from its execution role, never from its configuration; ``--scoped-policy`` puts the
job-prefix policy on that role (IAM ``PutRolePolicy``, on ``faas.aws-lambda.iam-endpoint-url`` when set).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import boto3
import botocore.exceptions as bce

from .. import __version__, config
from . import Deployer, DeployError, Printer, require

__all__ = ["DESCRIPTION", "POLICY_NAME", "RESERVED", "TAG", "LambdaDeployer"]

#: Variables a Lambda function's configuration may not set (Lambda sets them itself).
RESERVED = frozenset(
    (
        *("_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV"),
        *("AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION"),
        *("AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME"),
        *("AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
        *("AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR"),
    )
)
#: The tag and the description that mark a function deployed by dask-faas.
TAG = "dask-faas"
DESCRIPTION = "dask-faas function runtime (dask-faas runtime deploy)"
_HINTS = {
    ("create_function", "ResourceConflictException"): "; update it: dask-faas runtime update",
    ("update_function_code", "ResourceNotFoundException"): "; deploy it: dask-faas runtime deploy",
}
#: The name of the inline role policy that ``--scoped-policy`` writes.
POLICY_NAME = "dask-faas-job-prefix"
#: How long the waiters wait for a function to become active or updated (1 s between polls).
WAIT = {"Delay": 1, "MaxAttempts": 300}


class LambdaDeployer(Deployer):
    """The function ``faas.aws-lambda.function-name`` (region, endpoint, profile from that section)."""

    platform = "AWS Lambda"

    def __init__(self, settings: Mapping[str, Any], out: Printer | None = None, **options: Any) -> None:
        super().__init__(settings, out, **options)
        self.section = section = settings.get("aws-lambda") or {}
        self.name = section.get("function-name") or "dask-faas"
        try:
            self._session = boto3.session.Session(
                profile_name=section.get("profile"), region_name=section.get("region-name")
            )
            self._client = self._session.client("lambda", endpoint_url=section.get("endpoint-url"))
        except bce.BotoCoreError as exc:
            raise DeployError(f"AWS Lambda: {exc} (faas.aws-lambda.region-name, profile)") from None

    @classmethod
    def target(cls, settings: Mapping[str, Any]) -> str:
        name = (settings.get("aws-lambda") or {}).get("function-name") or "dask-faas"
        return f"AWS Lambda function {name!r}"

    def _limits(self) -> dict[str, Any]:
        return {
            "MemorySize": config.positive(self.settings, "memory-mb", int),
            "Timeout": math.ceil(config.positive(self.settings, "timeout-s")),
        }

    def _variables(self, environment: Mapping[str, str]) -> dict[str, str]:
        left_out = sorted(set(environment) & RESERVED)
        if left_out:
            self.out(
                f"not set on the function: {', '.join(left_out)} (reserved by Lambda; the function uses "
                "the credentials of its execution role, faas.aws-lambda.role-arn)"
            )
        return {k: v for k, v in environment.items() if k not in RESERVED}

    def _call(self, operation: str, client: Any = None, **kwargs: Any) -> Any:
        try:
            return getattr(client or self._client, operation)(**kwargs)
        except bce.ClientError as exc:
            error = exc.response.get("Error", {})
            code, message = error.get("Code", ""), error.get("Message", str(exc))
            hint = _HINTS.get((operation, code), "")
            raise DeployError(f"AWS Lambda {operation} of {self.name!r}: {code}: {message}{hint}") from None
        except bce.BotoCoreError as exc:
            raise DeployError(f"AWS Lambda {operation} of {self.name!r}: {exc}") from None

    def _wait(self, waiter: str) -> dict[str, Any]:
        try:
            self._client.get_waiter(waiter).wait(FunctionName=self.name, WaiterConfig=WAIT)
        except bce.WaiterError as exc:
            state = (exc.last_response or {}).get("Configuration", {})
            reason = state.get("StateReason") or state.get("LastUpdateStatusReason") or exc
            raise DeployError(f"AWS Lambda function {self.name!r} did not become ready: {reason}") from None
        return self._call("get_function_configuration", FunctionName=self.name)

    def deploy(self, environment: Mapping[str, str]) -> None:
        image = require(self.section, "image-uri", "faas.aws-lambda.image-uri")
        role = require(self.section, "role-arn", "faas.aws-lambda.role-arn")
        self._call(
            "create_function",
            FunctionName=self.name,
            PackageType="Image",
            Code={"ImageUri": image},
            Role=role,
            Architectures=[self.section.get("architecture") or "x86_64"],
            Environment={"Variables": self._variables(environment)},
            Description=DESCRIPTION,
            Tags={TAG: __version__},
            **self._limits(),
        )
        self._report("created", self._wait("function_active_v2"))

    def update(self, environment: Mapping[str, str]) -> None:
        image = require(self.section, "image-uri", "faas.aws-lambda.image-uri")
        self._call(
            "update_function_code",
            FunctionName=self.name,
            ImageUri=image,
            Architectures=[self.section.get("architecture") or "x86_64"],
        )
        self._wait("function_updated_v2")
        role = {"Role": self.section["role-arn"]} if self.section.get("role-arn") else {}
        self._call(
            "update_function_configuration",
            FunctionName=self.name,
            Environment={"Variables": self._variables(environment)},
            Description=DESCRIPTION,
            **role,
            **self._limits(),
        )
        self._report("updated", self._wait("function_updated_v2"))

    def _report(self, what: str, cfg: Mapping[str, Any]) -> None:
        self.out(
            f"{what} AWS Lambda function {cfg['FunctionName']} ({cfg['FunctionArn']}): "
            f"{cfg['MemorySize']} MB, timeout {cfg['Timeout']} s, {'/'.join(cfg.get('Architectures', []))}, "
            f"state {cfg.get('State', '?')}"
        )

    def attach_policy(self, policy: Mapping[str, Any]) -> None:
        """Put ``policy`` on the execution role as the inline policy :data:`POLICY_NAME`."""
        role_arn = require(self.section, "role-arn", "faas.aws-lambda.role-arn")
        role = role_arn.rsplit("/", 1)[-1]
        iam = self._session.client("iam", endpoint_url=self.section.get("iam-endpoint-url"))
        try:
            document = json.dumps(policy)
            self._call("put_role_policy", iam, RoleName=role, PolicyName=POLICY_NAME, PolicyDocument=document)
        finally:
            iam.close()
        self.out(
            f"attached policy {POLICY_NAME} to the execution role {role}: storage confined to the job prefix"
        )

    def delete(self) -> None:
        self._call("delete_function", FunctionName=self.name)
        self.out(f"deleted AWS Lambda function {self.name}")

    def list(self) -> list[dict[str, Any]]:
        """Functions whose name starts with the function name, or described as dask-faas's.

        (``ListFunctions`` returns no tags; the description set with the tag marks them.)
        """
        found: list[dict[str, Any]] = []
        marker: dict[str, Any] = {}
        while True:
            page = self._call("list_functions", **marker)
            for cfg in page.get("Functions", []):
                if cfg["FunctionName"].startswith(self.name) or cfg.get("Description") == DESCRIPTION:
                    found.append(
                        {
                            "name": cfg["FunctionName"],
                            "memory_mb": cfg.get("MemorySize"),
                            "timeout_s": cfg.get("Timeout"),
                            "package": cfg.get("PackageType"),
                            "state": cfg.get("State", "?"),
                            "modified": cfg.get("LastModified"),
                        }
                    )
            if not page.get("NextMarker"):
                return found
            marker = {"Marker": page["NextMarker"]}

    def close(self) -> None:
        self._client.close()
