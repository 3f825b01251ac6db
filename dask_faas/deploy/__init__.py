"""Deployment of the function runtimes, kept apart from invocation (``dask-faas runtime ...``).

One seam, :class:`Deployer`: create, update, delete and list the function that a compute backend
invokes, on its platform's own control plane. Implementations, found by backend name
(``faas.backend``) through :data:`registry`, so that a platform's SDK is imported only when chosen:

- ``aws_lambda``: :class:`~dask_faas.deploy.aws_lambda.LambdaDeployer` (boto3's Lambda client);
- ``openwhisk``, ``ibm_cf``: :mod:`dask_faas.deploy.openwhisk` (the REST API's Docker actions);
- ``knative``, ``code_engine``: :class:`~dask_faas.deploy.knative.KnativeDeployer` (a Knative
  Service manifest and its Secret, applied with ``kubectl``).

A function's environment is what :class:`~dask_faas.FaasExecutor` computes for its backend
(:func:`deployment_environment`): ``faas.environment``, the storage's deployment variables and the
signing key ``DASK_FAAS_SIGNING_KEY``. The key is ``faas.signing-key``, or a fresh one that
:func:`signing_key` prints with the configuration line to keep, and writes nowhere else.

``--scoped-policy`` confines the function's storage credentials to the job prefix
(:mod:`dask_faas.deploy.policy`): :meth:`Deployer.attach_policy` attaches the policy where the
platform gives a function an identity of its own (Lambda's execution role) and otherwise prints it
for the user's own policy tooling (IBM COS, MinIO, Ceph).

This package imports no SDK and neither the executor nor a storage at import time:
:mod:`dask_faas.deploy.hello` is imported inside functions too.
"""

from __future__ import annotations

import abc
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from .. import protocol
from ..backends.registry import Registry
from ..exceptions import ConfigError, FaasError

__all__ = [
    "SECRET_WORDS",
    "DeployError",
    "Deployer",
    "Printer",
    "deployer_class",
    "deployment_environment",
    "is_secret",
    "registry",
    "require",
    "signing_key",
]

#: Parts of a variable name that mark its value as a secret (kept out of manifests and logs).
SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD")

registry = Registry("deployer", "faas.backend", "dask_faas.deploy")
registry.register("aws_lambda", "dask_faas.deploy.aws_lambda:LambdaDeployer")
registry.register("openwhisk", "dask_faas.deploy.openwhisk:OpenWhiskDeployer")
registry.register("ibm_cf", "dask_faas.deploy.openwhisk:IbmCloudFunctionsDeployer")
registry.register("knative", "dask_faas.deploy.knative:KnativeDeployer")
registry.register("code_engine", "dask_faas.deploy.knative:KnativeDeployer")

#: Where a deployer's progress lines go.
Printer = Callable[[str], None]


class DeployError(FaasError, RuntimeError):
    """The platform refused a deployment request; the message holds the platform's own message."""


def _stdout(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


class Deployer(abc.ABC):
    """Create, update, delete and list the dask-faas function of one platform.

    Parameters
    ----------
    settings : Mapping
        The effective ``faas`` settings (:func:`dask_faas.config.resolve`).
    out : callable, optional
        Where progress and hints go, one line per call (standard output by default).
    output : str
        Directory for the files a deployer writes (Knative's manifests).
    apply : bool
        Whether a deployer that drives a command-line tool (``kubectl``) runs it; if not, it
        prints the commands.

    Raises
    ------
    ConfigError
        Naming the setting, when one that every request needs is missing (``api-host``...).
    """

    #: The platform's name in messages.
    platform: ClassVar[str] = ""

    def __init__(
        self,
        settings: Mapping[str, Any],
        out: Printer | None = None,
        *,
        output: str = ".",
        apply: bool = True,
    ) -> None:
        self.settings = settings
        self.out: Printer = out or _stdout
        self.output, self.apply = output, apply

    @classmethod
    @abc.abstractmethod
    def target(cls, settings: Mapping[str, Any]) -> str:
        """What the settings point at, for messages (``"AWS Lambda function 'dask-faas'"``)."""

    @abc.abstractmethod
    def deploy(self, environment: Mapping[str, str]) -> None:
        """Create the function with ``environment``; a DeployError if it exists already."""

    @abc.abstractmethod
    def update(self, environment: Mapping[str, str]) -> None:
        """Replace the existing function's image, limits and ``environment``."""

    @abc.abstractmethod
    def delete(self) -> None:
        """Delete the function; a DeployError naming it if there is none."""

    @abc.abstractmethod
    def list(self) -> list[dict[str, Any]] | None:
        """The dask-faas functions of the platform, one mapping per function, ``name`` first;
        None when the deployer printed the command that lists them instead."""

    def attach_policy(self, policy: Mapping[str, Any]) -> None:
        """Confine the function's storage credentials with ``policy`` (an IAM policy document).

        Platforms without an identity of the function's own print the document and where it
        belongs: on the user or key whose credentials the function's environment holds.
        """
        self.out(
            f"{self.platform}: the function uses the storage credentials of its environment; attach "
            "this policy to the user (or HMAC key) that owns them, e.g. with `aws iam put-user-policy`, "
            "`mc admin policy create` (MinIO) or `radosgw-admin` (Ceph):"
        )
        for line in json.dumps(policy, indent=2).splitlines():
            self.out(line)

    def close(self) -> None:  # noqa: B027 (an optional hook, not part of the seam)
        """Release HTTP sessions and clients."""

    def __enter__(self) -> Deployer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def deployer_class(settings: Mapping[str, Any]) -> type[Deployer]:
    """The :class:`Deployer` of ``faas.backend``.

    Raises
    ------
    ConfigError
        For the local pool (nothing to deploy) or a backend without a deployer.
    """
    backend = settings["backend"]
    if backend == "local":
        raise ConfigError(
            "faas.backend is 'local': its functions are this machine's worker processes, there is "
            f"nothing to deploy; set 'faas.backend' to one of {', '.join(registry.names())}"
        )
    return registry.load(backend)


def require(section: Mapping[str, Any], name: str, setting: str) -> Any:
    """``section[name]``, or a ConfigError naming ``setting`` when it is unset."""
    value = section.get(name)
    if value in (None, ""):
        raise ConfigError(f"setting '{setting}' is not set (needed to deploy)")
    return value


def is_secret(name: str) -> bool:
    """Whether a variable's value is a secret: its name holds KEY, SECRET, TOKEN or PASSWORD."""
    upper = name.upper()
    return any(word in upper for word in SECRET_WORDS)


def signing_key(settings: Mapping[str, Any], out: Printer | None = None) -> bytes:
    """``faas.signing-key``, or a fresh key printed with the configuration line that keeps it.

    Raises
    ------
    ConfigError
        If ``faas.signing-key`` is not hexadecimal.
    """
    configured = settings.get("signing-key")
    if configured:
        try:
            return bytes.fromhex(str(configured))
        except ValueError:
            raise ConfigError("setting 'faas.signing-key' must be hexadecimal") from None
    key = protocol.new_key()
    for line in (
        "faas.signing-key is not set: generated a new one. The deployed function holds it, and clients",
        "need it: put these lines in your dask configuration (e.g. ~/.config/dask/faas.yaml):",
        "",
        "faas:",
        f"  signing-key: {key.hex()}",
        "",
    ):
        (out or _stdout)(line)
    return key


def deployment_environment(settings: Mapping[str, Any], key: bytes) -> dict[str, str]:
    """A function's environment, as :class:`~dask_faas.FaasExecutor` computes it for its backend
    (:func:`~dask_faas.executor.function_environment`)."""
    from ..backends.storage import storage_from_settings
    from ..executor import function_environment

    storage = storage_from_settings(dict(settings))
    try:
        return function_environment(dict(settings), storage, key)
    finally:
        storage.close()
