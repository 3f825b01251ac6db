"""Deploy the generic image as a Knative Service (IBM Code Engine, OpenShift Serverless): manifests.

``deploy`` and ``update`` write two manifests into the output directory and apply them with
``kubectl apply -f`` where ``kubectl`` exists (else they print that command):

- ``<service>-secret.yaml``, a Kubernetes ``Secret`` (mode 0600) holding the values of the variables
  whose names hold KEY, SECRET, TOKEN or PASSWORD: the signing key, the bearer token
  ``DASK_FAAS_HTTP_TOKEN`` (``faas.knative.token``, or a fresh one, printed), storage credentials;
- ``<service>.yaml``, the ``serving.knative.dev/v1`` ``Service``: image ``faas.knative.image``,
  ``containerConcurrency = faas.knative.instance-concurrency``, ``timeoutSeconds = faas.timeout-s``,
  the memory limit ``faas.memory-mb`` (also given to the runtime as ``DASK_FAAS_MEMORY_MB``: it
  enforces it on itself, so that a call past it fails with a MemoryError naming the limit rather
  than the container being OOMKilled), the other variables inline and the secret ones by
  ``secretKeyRef`` (no secret value is in this file), readiness and liveness probes on
  ``/health/readiness`` and ``/health/liveness`` (served by ``func_python``).

Clients then need ``faas.knative.url`` (the Service's URL, printed by ``kubectl get ksvc``) and
``faas.knative.token``.
"""

from __future__ import annotations

import math
import os
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from .. import __version__, config
from ..worker import MEMORY_ENV
from . import Deployer, DeployError, Printer, is_secret, require

__all__ = ["LABEL", "TOKEN_ENV", "KnativeDeployer", "secret_manifest", "service_manifest"]

#: The variable holding the bearer token the runtime requires (function_runtime/knative.py).
TOKEN_ENV = "DASK_FAAS_HTTP_TOKEN"
#: The label that marks the objects deployed by dask-faas.
LABEL = {"app.kubernetes.io/managed-by": "dask-faas"}
#: How long one kubectl command may take.
KUBECTL_TIMEOUT_S = 300


def service_manifest(
    name: str,
    image: str,
    environment: Mapping[str, str],
    secret_name: str,
    *,
    instance_concurrency: int,
    timeout_s: int,
    memory_mb: int,
) -> dict[str, Any]:
    """The Knative Service: secret variables by ``secretKeyRef`` to ``secret_name``, others inline."""
    env: list[dict[str, Any]] = []
    for key, value in environment.items():
        if is_secret(key):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
        else:
            env.append({"name": key, "value": str(value)})
    probe = {"periodSeconds": 10, "failureThreshold": 3}
    container = {
        "name": "dask-faas",
        "image": image,
        "ports": [{"name": "http1", "containerPort": 8080}],
        "env": env,
        "resources": {"limits": {"memory": f"{memory_mb}Mi"}, "requests": {"memory": f"{memory_mb}Mi"}},
        "readinessProbe": {"httpGet": {"path": "/health/readiness"}, **probe},
        "livenessProbe": {"httpGet": {"path": "/health/liveness"}, **probe},
    }
    return {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": {**LABEL, "dask-faas/version": __version__}},
        "spec": {
            "template": {
                "metadata": {"labels": dict(LABEL)},
                "spec": {
                    "containerConcurrency": instance_concurrency,
                    "timeoutSeconds": timeout_s,
                    "containers": [container],
                },
            }
        },
    }


def secret_manifest(name: str, environment: Mapping[str, str]) -> dict[str, Any]:
    """The Secret holding the secret variables of ``environment``."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "labels": dict(LABEL)},
        "type": "Opaque",
        "stringData": {k: str(v) for k, v in environment.items() if is_secret(k)},
    }


class KnativeDeployer(Deployer):
    """The Service ``faas.knative.service-name``, its manifests written to ``output``.

    The manifests go to the directory ``output`` (created if missing); ``kubectl`` runs when
    ``apply`` is true and it is installed, else its commands are printed.
    """

    platform = "Knative"

    def __init__(self, settings: Mapping[str, Any], out: Printer | None = None, **options: Any) -> None:
        super().__init__(settings, out, **options)
        self.section = section = settings.get("knative") or {}
        self.name = section.get("service-name") or "dask-faas"
        self.secret_name = f"{self.name}-env"

    @classmethod
    def target(cls, settings: Mapping[str, Any]) -> str:
        section = settings.get("knative") or {}
        where = f" at {section['url']}" if section.get("url") else ""
        return f"Knative service {section.get('service-name') or 'dask-faas'!r}{where}"

    def manifests(self, environment: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(service, secret)`` for ``environment`` plus the bearer token, the thread count and
        the memory limit (``DASK_FAAS_MEMORY_MB``)."""
        image = require(self.section, "image", "faas.knative.image")
        setting = "knative.instance-concurrency"  # named 'faas.knative.instance-concurrency' in errors
        concurrency = config.positive({setting: self.section.get("instance-concurrency", 1)}, setting, int)
        token = self.section.get("token")
        if not token:
            token = secrets.token_urlsafe(32)
            for line in (
                "faas.knative.token is not set: generated the service's bearer token. Clients need it:",
                "",
                "faas:",
                "  knative:",
                f"    token: {token}",
                "",
            ):
                self.out(line)
        memory_mb = config.positive(self.settings, "memory-mb", int)
        full = {
            **environment,
            TOKEN_ENV: token,
            "DASK_FAAS_INSTANCE_CONCURRENCY": str(concurrency),
            MEMORY_ENV: str(memory_mb),  # the runtime enforces the container's memory on itself
        }
        service = service_manifest(
            self.name,
            image,
            full,
            self.secret_name,
            instance_concurrency=concurrency,
            timeout_s=math.ceil(config.positive(self.settings, "timeout-s")),
            memory_mb=memory_mb,
        )
        return service, secret_manifest(self.secret_name, full)

    def write(self, environment: Mapping[str, str]) -> tuple[str, str]:
        """Write the manifests; return ``(service path, secret path)``."""
        service, secret = self.manifests(environment)
        os.makedirs(self.output, exist_ok=True)
        service_path = os.path.join(self.output, f"{self.name}.yaml")
        secret_path = os.path.join(self.output, f"{self.name}-secret.yaml")
        # the Secret holds keys: readable by its owner only, from its creation on
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(secret, f, sort_keys=False)
        with open(service_path, "w") as f:
            yaml.safe_dump(service, f, sort_keys=False)
        self.out(f"wrote {service_path} (the Service) and {secret_path} (its Secret: keep it private)")
        return service_path, secret_path

    def _kubectl(self, args: Sequence[str]) -> str | None:
        """Run ``kubectl args`` and return its output, or print the command and return None."""
        command = ["kubectl", *args]
        if not self.apply or shutil.which("kubectl") is None:
            self.out(f"run: {shlex.join(command)}")
            return None
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=KUBECTL_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeployError(f"{shlex.join(command)}: {exc}") from None
        if done.returncode != 0:
            raise DeployError(f"{shlex.join(command)} failed: {(done.stderr or done.stdout).strip()}")
        return done.stdout

    def deploy(self, environment: Mapping[str, str]) -> None:
        service_path, secret_path = self.write(environment)
        output = self._kubectl(["apply", "-f", secret_path, "-f", service_path])
        if output is not None:
            self.out(output.strip())
        self.out(
            "set faas.knative.url to the Service's URL: "
            f"kubectl get ksvc {self.name} -o jsonpath='{{.status.url}}'"
        )

    def update(self, environment: Mapping[str, str]) -> None:
        self.deploy(environment)  # kubectl apply replaces what differs

    def delete(self) -> None:
        for kind, name in (("ksvc", self.name), ("secret", self.secret_name)):
            output = self._kubectl(["delete", kind, name])
            if output is not None:
                self.out(output.strip())

    def list(self) -> list[dict[str, Any]] | None:
        selector = ",".join(f"{k}={v}" for k, v in LABEL.items())
        output = self._kubectl(["get", "ksvc", "-l", selector, "-o", "json"])
        if output is None:
            return None
        found = []
        for item in yaml.safe_load(output).get("items", []):
            status = item.get("status", {})
            ready = next(
                (c.get("status") for c in status.get("conditions", []) if c.get("type") == "Ready"), "?"
            )
            found.append({"name": item["metadata"]["name"], "url": status.get("url"), "ready": ready})
        return found
