"""Apache OpenWhisk and IBM Cloud Functions: blocking invokes of a Docker action through the REST API.

The action runs ``function_runtime.openwhisk`` (the action-container protocol, ``/init`` and
``/run``). An invoke blocks up to OpenWhisk's blocking window (60 s); a call that runs longer is
answered 202 with its activation id, and the activation is then polled to its end (backing off from
50 ms to 2 s between polls). 429 (too many activations in flight) is sent again with backoff.
OpenWhisk authenticates with Basic ``uuid:key`` (``faas.openwhisk.auth``); IBM Cloud Functions
(backend ``ibm_cf``) with an IAM token, exchanged for the ``api-key`` and reused until shortly
before it expires.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any

import requests
import requests.adapters

from ...exceptions import (
    ConfigError,
    FunctionMemoryError,
    FunctionTimeoutError,
    InvocationError,
    PayloadTooLargeError,
    WorkerDiedError,
)
from .base import InvokeOptions
from .remote import (
    RemoteBackend,
    Retryable,
    decode,
    encode,
    lost_connection,
    requests_never_sent,
    retry_after_s,
)

__all__ = ["IbmCloudFunctionsBackend", "OpenWhiskBackend"]

#: Polls of a running activation: first interval, growth, largest interval (seconds).
POLL_FIRST_S, POLL_GROWTH, POLL_MAX_S = 0.05, 1.5, 2.0


class OpenWhiskBackend(RemoteBackend):
    """Invoke a dask-faas OpenWhisk action.

    Parameters
    ----------
    api_host : str
        The API's base URL (``faas.openwhisk.api-host``).
    auth : str
        ``uuid:key`` of the namespace (``faas.openwhisk.auth``).
    namespace, action : str
        Where the action is.
    concurrency : int
        Activations in flight at once.
    throttle_deadline_s : float
        How long 429 answers are backed off before a call fails.
    """

    name = "openwhisk"
    max_payload_bytes = 2**20
    max_timeout_s = 600.0
    max_memory_mb = 2048

    def __init__(
        self,
        api_host: str,
        auth: str | None,
        namespace: str = "_",
        action: str = "dask-faas",
        concurrency: int = 1000,
        throttle_deadline_s: float = 900.0,
    ) -> None:
        if not api_host:
            raise ConfigError(f"the {self.name} backend needs 'faas.openwhisk.api-host'")
        super().__init__(concurrency, throttle_deadline_s)
        self.api_host = api_host.rstrip("/")
        base = f"{self.api_host}/api/v1/namespaces/{urllib.parse.quote(namespace, safe='')}"
        self._invoke_url = f"{base}/actions/{urllib.parse.quote(action, safe='/')}"
        self._activations_url = f"{base}/activations"
        self._session = requests.Session()
        self._session.trust_env = False
        adapter = requests.adapters.HTTPAdapter(pool_connections=1, pool_maxsize=concurrency)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        if auth is not None:
            user, sep, key = auth.partition(":")
            if not sep:
                raise ConfigError("'faas.openwhisk.auth' must be 'uuid:key'")
            self._session.auth = (user, key)

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> OpenWhiskBackend:
        section = settings.get("openwhisk") or {}
        if not section.get("auth"):
            raise ConfigError("the openwhisk backend needs 'faas.openwhisk.auth' ('uuid:key')")
        return cls(
            section.get("api-host"),
            section["auth"],
            section.get("namespace") or "_",
            section.get("action") or "dask-faas",
            int(section.get("concurrency") or 1000),
            float(settings.get("throttle-deadline-s") or 900),
        )

    def headers(self) -> dict[str, str]:
        """Headers of every request (IBM Cloud Functions adds its IAM token here)."""
        return {}

    def renew_credentials(self) -> bool:
        """After a 401: drop credentials that may have expired; whether sending again may help."""
        return False

    def send(self, payload: bytes, options: InvokeOptions) -> bytes:
        deadline = time.monotonic() + options.timeout_s + self.answer_grace_s
        answer = self._request(
            "POST", self._invoke_url, options, deadline, json=encode(payload), blocking="true"
        )
        status = answer.status_code
        if status == 202:
            return self._poll(answer.json()["activationId"], options, deadline)
        if status in (200, 502):
            try:
                record = answer.json()
            except ValueError:  # a gateway's 502, not OpenWhisk's activation record
                raise InvocationError(
                    f"{options.label}: {self.api_host} answered {status}: {answer.text[:300].strip()}"
                ) from None
            return self._result(record, options)
        text = answer.text[:500].strip()
        if status == 401 and self.renew_credentials():
            raise Retryable(f"401 with an expired token: {text}")
        if status == 413:
            raise PayloadTooLargeError(f"{options.label}: OpenWhisk refused the payload as too large: {text}")
        if status in (401, 403):
            raise InvocationError(f"{options.label}: OpenWhisk refused the credentials ({status}): {text}")
        raise InvocationError(f"{options.label}: OpenWhisk answered {status}: {text}")

    def _request(
        self, method: str, url: str, options: InvokeOptions, deadline: float, **kwargs: Any
    ) -> requests.Response:
        params = {k: kwargs.pop(k) for k in ("blocking",) if k in kwargs}
        wait = deadline - time.monotonic()
        if wait <= 0:
            raise self._timed_out(options)
        try:
            answer = self._session.request(
                method, url, params=params, headers=self.headers(), timeout=(10, wait), **kwargs
            )
        except requests.ConnectionError as exc:
            if requests_never_sent(exc) or method == "GET":  # polling the record is safe to repeat
                raise Retryable(f"connection to {self.api_host} failed: {exc}") from None
            raise lost_connection(options.label, self.api_host, exc) from None
        except requests.Timeout:
            raise self._timed_out(options) from None
        if answer.status_code in (429, 503):
            reason = f"{answer.status_code}: {answer.text[:200].strip()}"
            raise Retryable(reason, retry_after_s(answer.headers))
        return answer

    def _poll(self, activation: str, options: InvokeOptions, deadline: float) -> bytes:
        """Poll a running activation until it ends or the call's deadline passes."""
        interval = POLL_FIRST_S
        while True:
            if self._stop.wait(min(interval, max(0.0, deadline - time.monotonic()))):
                raise InvocationError(f"{options.label}: stopped waiting, the {self.name} backend was closed")
            try:
                answer = self._request("GET", f"{self._activations_url}/{activation}", options, deadline)
            except Retryable:
                answer = None  # throttled polls just wait longer
            if answer is not None and answer.status_code == 200:
                return self._result(answer.json(), options)
            if answer is not None and answer.status_code != 404:
                raise InvocationError(
                    f"{options.label}: polling activation {activation} answered {answer.status_code}: "
                    f"{answer.text[:300].strip()}"
                )
            interval = min(POLL_MAX_S, interval * POLL_GROWTH)

    def _result(self, record: dict[str, Any], options: InvokeOptions) -> bytes:
        response = record.get("response") or {}
        result = response.get("result") or {}
        if response.get("success"):
            return decode(result, options.label)
        error = str(result.get("error", result)) if isinstance(result, dict) else str(result)
        activation = record.get("activationId", "?")
        if "exceeded its time limits" in error:
            raise FunctionTimeoutError(
                f"{options.label} exceeded its time limit (the action's; the call's "
                f"timeout_s={options.timeout_s:g}) and was stopped: {error} (activation {activation})"
            )
        if "exhausted its memory" in error:
            raise FunctionMemoryError(
                f"{options.label} exceeded its memory limit (the action's; the call asked for "
                f"memory_mb={options.memory_mb}) and was stopped: {error} (activation {activation})"
            )
        if "exited unexpectedly" in error:
            raise WorkerDiedError(f"{options.label}: the action container died: {error}")
        return decode(result, options.label)  # raises, with the runtime's error

    def _timed_out(self, options: InvokeOptions) -> FunctionTimeoutError:
        return FunctionTimeoutError(
            f"{options.label}: no answer within its time limit timeout_s={options.timeout_s:g} "
            f"(+{self.answer_grace_s:g} s for a cold start) from {self.api_host}"
        )

    def close_transport(self) -> None:
        self._session.close()


class IbmCloudFunctionsBackend(OpenWhiskBackend):
    """IBM Cloud Functions: OpenWhisk with IAM authentication (``faas.openwhisk.api-key``).

    The API key is exchanged for an access token at ``faas.openwhisk.iam-endpoint``; the token is
    reused by every request until one minute before it expires, then exchanged again (once, however
    many threads need it).
    """

    name = "ibm_cf"
    #: Renew the token this many seconds before it expires.
    RENEW_BEFORE_S = 60.0

    def __init__(self, api_host: str, api_key: str, iam_endpoint: str, **kwargs: Any) -> None:
        if not api_key:
            raise ConfigError("the ibm_cf backend needs 'faas.openwhisk.api-key' (an IBM Cloud API key)")
        super().__init__(api_host, None, **kwargs)
        self._api_key, self._iam = api_key, iam_endpoint.rstrip("/")
        self._token: tuple[str, float] | None = None
        self._token_lock = threading.Lock()

    @classmethod
    def from_settings(cls, environment: dict[str, str], settings: dict[str, Any]) -> IbmCloudFunctionsBackend:
        section = settings.get("openwhisk") or {}
        return cls(
            section.get("api-host"),
            section.get("api-key"),
            section.get("iam-endpoint") or "https://iam.cloud.ibm.com",
            namespace=section.get("namespace") or "_",
            action=section.get("action") or "dask-faas",
            concurrency=int(section.get("concurrency") or 1000),
            throttle_deadline_s=float(settings.get("throttle-deadline-s") or 900),
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def renew_credentials(self) -> bool:
        """Drop the cached token (revoked or expired early); the next request exchanges a new one."""
        with self._token_lock:
            renew, self._token = self._token is not None, None
        return renew

    def token(self) -> str:
        """The IAM access token, exchanged for the API key when missing or about to expire.

        Raises
        ------
        InvocationError
            Naming the IAM endpoint, when the exchange fails.
        """
        with self._token_lock:
            if self._token is not None and time.monotonic() < self._token[1]:
                return self._token[0]
            try:
                answer = self._session.post(
                    f"{self._iam}/identity/token",
                    data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": self._api_key},
                    headers={"Accept": "application/json"},
                    timeout=30,
                )
            except requests.RequestException as exc:
                raise Retryable(f"IAM token exchange at {self._iam} failed: {exc}") from None
            if answer.status_code == 429 or answer.status_code >= 500:
                reason = f"IAM token exchange at {self._iam} answered {answer.status_code}"
                raise Retryable(reason, retry_after_s(answer.headers))
            if answer.status_code != 200:
                raise InvocationError(
                    f"IAM token exchange at {self._iam} answered {answer.status_code}: {answer.text[:200]}"
                )
            body = answer.json()
            lifetime = float(body.get("expires_in", 3600))
            self._token = (body["access_token"], time.monotonic() + max(0.0, lifetime - self.RENEW_BEFORE_S))
            return self._token[0]
