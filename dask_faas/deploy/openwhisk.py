"""Deploy the generic image as an OpenWhisk (IBM Cloud Functions) Docker action, through the REST API.

``deploy`` is ``PUT {api-host}/api/v1/namespaces/{namespace}/actions/{action}`` of a blackbox action
(image ``faas.openwhisk.image`` built from ``function_runtime/Dockerfile`` with
``--build-arg RUNTIME=openwhisk``), limits ``timeout`` (ms, from ``faas.timeout-s``) and ``memory``
(``faas.memory-mb``), and the function's environment as init parameters
(``{"key", "value", "init": true}``: the action container gets them at ``/init``, never in an
invocation's arguments); ``update`` is the same ``PUT`` with ``overwrite=true``. OpenWhisk
authenticates with Basic ``uuid:key`` (``faas.openwhisk.auth``); IBM Cloud Functions (``ibm_cf``)
with the IAM token of :class:`~dask_faas.backends.compute.openwhisk.IbmCloudFunctionsBackend`.
"""

from __future__ import annotations

import math
import urllib.parse
from collections.abc import Mapping
from typing import Any

import requests

from .. import __version__, config
from ..backends.compute.remote import Retryable
from ..exceptions import ConfigError, InvocationError
from . import Deployer, DeployError, Printer, require

__all__ = ["ANNOTATION", "IbmCloudFunctionsDeployer", "OpenWhiskDeployer"]

#: The annotation that marks an action deployed by dask-faas.
ANNOTATION = "dask-faas"
#: Seconds a control-plane request may take.
REQUEST_TIMEOUT_S = 60
_EXISTS = {409: "; update it: dask-faas runtime update"}
_MISSING = {404: "; deploy it: dask-faas runtime deploy"}


class OpenWhiskDeployer(Deployer):
    """The action ``faas.openwhisk.action`` of ``namespace`` at ``api-host``, with Basic auth."""

    platform = "OpenWhisk"

    def __init__(self, settings: Mapping[str, Any], out: Printer | None = None, **options: Any) -> None:
        super().__init__(settings, out, **options)
        self.section = section = settings.get("openwhisk") or {}
        self.api_host = str(require(section, "api-host", "faas.openwhisk.api-host")).rstrip("/")
        self.namespace = section.get("namespace") or "_"
        self.action = section.get("action") or "dask-faas"
        self._actions = (
            f"{self.api_host}/api/v1/namespaces/{urllib.parse.quote(self.namespace, safe='')}/actions"
        )
        self._session = requests.Session()
        self._session.trust_env = False  # never a proxy from the environment
        self._authenticate()

    def _authenticate(self) -> None:
        auth = str(require(self.section, "auth", "faas.openwhisk.auth"))
        user, sep, key = auth.partition(":")
        if not sep:
            raise ConfigError("setting 'faas.openwhisk.auth' must be 'uuid:key'")
        self._session.auth = (user, key)

    def headers(self) -> dict[str, str]:
        """Headers of every request (IBM Cloud Functions adds its IAM token)."""
        return {}

    @classmethod
    def target(cls, settings: Mapping[str, Any]) -> str:
        section = settings.get("openwhisk") or {}
        where = f" at {section['api-host']}" if section.get("api-host") else ""
        action = f"{section.get('namespace') or '_'}/{section.get('action') or 'dask-faas'}"
        return f"{cls.platform} action '{action}'{where}"

    @property
    def _label(self) -> str:
        return f"{self.platform} action '{self.namespace}/{self.action}' at {self.api_host}"

    def _request(
        self, method: str, what: str, path: str = "", hints: Mapping[int, str] | None = None, **kwargs: Any
    ) -> Any:
        """One REST request; its JSON answer, or a DeployError with OpenWhisk's ``error`` text."""
        url = f"{self._actions}/{urllib.parse.quote(path, safe='/')}" if path else self._actions
        try:
            answer = self._session.request(
                method, url, headers=self.headers(), timeout=REQUEST_TIMEOUT_S, **kwargs
            )
        except requests.RequestException as exc:
            raise DeployError(f"{what} {self._label}: {exc}") from None
        if answer.status_code >= 400:
            try:
                message = str(answer.json().get("error") or answer.text)
            except (ValueError, AttributeError):
                message = answer.text
            hint = (hints or {}).get(answer.status_code, "")
            raise DeployError(f"{what} {self._label}: {answer.status_code} {message.strip()[:500]}{hint}")
        return answer.json() if answer.content else None

    def _action(self, environment: Mapping[str, str]) -> dict[str, Any]:
        return {
            "exec": {"kind": "blackbox", "image": require(self.section, "image", "faas.openwhisk.image")},
            "limits": {
                "timeout": math.ceil(config.positive(self.settings, "timeout-s") * 1000),
                "memory": config.positive(self.settings, "memory-mb", int),
            },
            "parameters": [{"key": k, "value": v, "init": True} for k, v in environment.items()],
            # the action gets no API key of the namespace: a function holds no credential of the client's
            "annotations": [
                {"key": ANNOTATION, "value": __version__},
                {"key": "provide-api-key", "value": False},
            ],
        }

    def deploy(self, environment: Mapping[str, str]) -> None:
        body = self._action(environment)
        answer = self._request(
            "PUT", "creating", self.action, _EXISTS, json=body, params={"overwrite": "false"}
        )
        self._report("created", answer)

    def update(self, environment: Mapping[str, str]) -> None:
        body = self._action(environment)
        self._request("GET", "reading", self.action, _MISSING)  # 404: nothing to update
        answer = self._request("PUT", "updating", self.action, json=body, params={"overwrite": "true"})
        self._report("updated", answer)

    def _report(self, what: str, action: Mapping[str, Any]) -> None:
        limits = action.get("limits", {})
        self.out(
            f"{what} {self._label}: image {action.get('exec', {}).get('image')}, version "
            f"{action.get('version')}, {limits.get('memory')} MB, timeout {limits.get('timeout')} ms"
        )

    def delete(self) -> None:
        self._request("DELETE", "deleting", self.action, _MISSING)
        self.out(f"deleted {self._label}")

    def list(self) -> list[dict[str, Any]]:
        """Actions whose name starts with the action name, or annotated as dask-faas's."""
        found: dict[str, dict[str, Any]] = {}
        skip, page_size = 0, 200  # OpenWhisk's largest page
        while True:
            page = self._request("GET", "listing", params={"limit": page_size, "skip": skip}) or []
            fresh = 0
            for action in page:
                name = f"{action.get('namespace')}/{action.get('name')}"
                fresh += name not in found
                annotations = {a.get("key") for a in action.get("annotations", [])}
                if action.get("name", "").startswith(self.action) or ANNOTATION in annotations:
                    limits = action.get("limits", {})
                    found[name] = {
                        "name": name,
                        "version": action.get("version"),
                        "memory_mb": limits.get("memory"),
                        "timeout_ms": limits.get("timeout"),
                        "image": action.get("exec", {}).get("image"),
                    }
                else:
                    found.setdefault(name, {})
            if len(page) < page_size or not fresh:  # the last page (or a server that ignores skip)
                return [row for row in found.values() if row]
            skip += page_size

    def close(self) -> None:
        self._session.close()


class IbmCloudFunctionsDeployer(OpenWhiskDeployer):
    """IBM Cloud Functions: the IAM token of the ``ibm_cf`` backend instead of Basic auth."""

    platform = "IBM Cloud Functions"

    def _authenticate(self) -> None:
        from ..backends.compute.openwhisk import IbmCloudFunctionsBackend

        require(self.section, "api-key", "faas.openwhisk.api-key")
        self._backend = IbmCloudFunctionsBackend.from_settings({}, dict(self.settings))

    def headers(self) -> dict[str, str]:
        try:
            return self._backend.headers()
        except (InvocationError, Retryable) as exc:  # Retryable: the IAM endpoint did not answer
            raise DeployError(f"{self._label}: {exc}") from None

    def close(self) -> None:
        super().close()
        self._backend.close()
