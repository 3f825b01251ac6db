"""Knative Serving (IBM Code Engine, OpenShift Serverless): POST payloads to the service's URL.

The service runs ``function_runtime.knative`` (served by Knative Functions' ``func-python``
middleware); it requires the bearer token it was deployed with (``faas.knative.token``). Knative
scales instances by requests in flight, buffering them in its activator; 429 and 503 (no instance
ready yet, the activator's queue full) are sent again with backoff, and a refused connection too.
A 502 means the instance died while running the call (it crashed, or Kubernetes killed it past its
memory limit), a 504 that the call passed the service's ``timeoutSeconds``.
"""

from __future__ import annotations

from typing import Any

import requests
import requests.adapters

from ...exceptions import ConfigError, FunctionTimeoutError, IntegrityError, InvocationError, WorkerDiedError
from .base import ENVELOPE_BYTES, InvokeOptions
from .remote import RemoteBackend, Retryable, lost_connection, requests_never_sent, retry_after_s

__all__ = ["CodeEngineBackend", "KnativeBackend"]


class KnativeBackend(RemoteBackend):
    """Invoke a dask-faas Knative Service.

    Parameters
    ----------
    url : str
        The service's URL (``faas.knative.url``).
    token : str
        Its bearer token (``faas.knative.token``).
    concurrency : int
        Requests in flight at once (threads, and the size of the HTTP connection pool).
    throttle_deadline_s : float
        How long 429/503 answers are backed off before a call fails.
    """

    name = "knative"
    # Knative has no payload limit of its own; the ingress' request body limit is the one that bites
    max_payload_bytes = 32 * 2**20
    max_timeout_s = 3600.0  # Knative's max-revision-timeout-seconds default
    max_memory_mb = 32768

    def __init__(
        self, url: str, token: str, concurrency: int = 100, throttle_deadline_s: float = 900.0
    ) -> None:
        if not url:
            raise ConfigError(f"the {self.name} backend needs the service URL: set 'faas.knative.url'")
        if not token:
            raise ConfigError(
                f"the {self.name} backend needs the service's bearer token: set 'faas.knative.token'"
            )
        super().__init__(concurrency, throttle_deadline_s)
        self.url = url
        self._session = requests.Session()
        self._session.trust_env = False  # never a proxy from the environment between us and the service
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}

    @classmethod
    def inline_capacity(cls) -> int:
        """The body is the payload's raw bytes: only the envelope is deducted, no base64."""
        return cls.max_payload_bytes - ENVELOPE_BYTES

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> KnativeBackend:
        section = settings.get("knative") or {}
        return cls(
            section.get("url"),
            section.get("token"),
            concurrency=int(section.get("concurrency") or 100),
            throttle_deadline_s=float(settings.get("throttle-deadline-s") or 900),
        )

    def send(self, payload: bytes, options: InvokeOptions) -> bytes:
        try:
            answer = self._session.post(
                self.url,
                data=payload,
                headers=self._headers,
                timeout=(10, options.timeout_s + self.answer_grace_s),
            )
        except requests.ConnectionError as exc:
            if requests_never_sent(exc):
                raise Retryable(f"connection to {self.url} failed: {exc}") from None
            raise lost_connection(options.label, self.url, exc) from None
        except requests.Timeout:
            raise FunctionTimeoutError(
                f"{options.label}: no answer within its time limit timeout_s={options.timeout_s:g} "
                f"(+{self.answer_grace_s:g} s for a cold start) from {self.url}"
            ) from None
        status = answer.status_code
        if status == 200:
            return answer.content
        text = answer.text[:500].strip()
        if status in (429, 503):
            raise Retryable(f"{status} from {self.url}: {text}", retry_after_s(answer.headers))
        if status == 401:
            raise InvocationError(f"{options.label}: {self.url} refused the token (faas.knative.token)")
        if status == 403:
            raise IntegrityError(f"{options.label}: the function refused the payload's signature: {text}")
        if status == 502:
            raise WorkerDiedError(
                f"{options.label}: the instance died while running it (crashed, or was killed past its "
                f"memory limit; the call asked for memory_mb={options.memory_mb}): {text}"
            )
        if status == 504:
            raise FunctionTimeoutError(
                f"{options.label} exceeded the service's time limit (timeoutSeconds; the call's "
                f"timeout_s={options.timeout_s:g}) and was stopped: {text}"
            )
        raise InvocationError(f"{options.label}: {self.url} answered {status}: {text}")

    def close_transport(self) -> None:
        self._session.close()


class CodeEngineBackend(KnativeBackend):
    """IBM Code Engine: a Knative Service of IBM Cloud (the ``faas.knative`` settings apply)."""

    name = "code_engine"
    max_timeout_s = 600.0  # Code Engine applications' request timeout limit
    max_memory_mb = 49152
