"""An Apache OpenWhisk / IBM Cloud Functions emulator: the controller's REST API over real action containers.

Run as ``python -m dask_faas.testing.openwhisk_emulator --port-file F [--auth UUID:KEY]
[--api-key IBM_KEY] [--namespace NS] [--concurrency N] [--blocking-window-s S]`` (see
:mod:`dask_faas.testing.servers`). It implements, with OpenWhisk's status codes, JSON shapes and
error texts (``core/controller`` and ``common/scala`` of apache/openwhisk):

- actions: ``PUT /api/v1/namespaces/{ns}/actions/{name}[?overwrite=true]`` (Docker actions,
  ``exec.kind == "blackbox"``), ``GET`` one or the list, ``DELETE``; parameters with ``"init": true``
  go to the container's ``/init`` as ``value.env``, the others are merged into each invocation;
- invocations: ``POST .../actions/{name}[?blocking=true[&result=true]]`` and the activation records
  ``GET .../activations[/{id}]``; the namespace's concurrency limit (429), the 1 MB request (413) and
  result limits, the action's time and memory limits, containers dying mid-run;
- authentication: Basic ``uuid:key`` and, for IBM Cloud Functions, IAM bearer tokens from
  ``POST /identity/token``.

Every action container is a real process, ``sys.executable -m function_runtime.openwhisk`` (the
Docker action's command) in its own process group, with a clean environment and a fresh empty
working directory, driven over HTTP through ``/init`` and ``/run``: warm containers are reused, one
activation at a time each. Their output goes to this process's output, prefixed with the container
id. SIGTERM (or an action's update or delete, or a limit) kills their process groups; containers are
also started with a parent-death signal, so none outlives an emulator that is killed outright.
This module is the entry point, the REST layer and the controller's state; the actions' validation
is :mod:`~dask_faas.testing.openwhisk_actions`, the containers and their pool
:mod:`~dask_faas.testing.openwhisk_containers`.

Besides the knobs shared by every emulator (docs/platforms-wire.md), :data:`KNOBS` holds
``blocking_window_s`` (how long a blocking invoke waits before answering 202) and ``token_ttl_s``
(the lifetime of the IAM tokens issued from now on). ``GET /_emulator/counters`` counts the token
requests, tokens issued, invoke requests and throttled answers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import re
import secrets
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .openwhisk_actions import NOT_FOUND, Action, HttpError, malformed, ms, parse_action
from .openwhisk_containers import (
    APPLICATION_ERROR,
    MAX_PAYLOAD_BYTES,
    STATUS,
    SUCCESS,
    WHISK_ERROR,
    ContainerPool,
)
from .servers import KNOBS as SHARED_KNOBS
from .servers import Controls, LoopbackHandler, LoopbackServer, publish_url

__all__ = ["GUEST_AUTH", "KNOBS", "MAX_PAYLOAD_BYTES", "main"]

#: The ``guest`` namespace's key of OpenWhisk's standalone and development deployments.
GUEST_AUTH = (
    "23bc46b1-71f6-4ed5-8c54-816aa4f8c502:123zO3xZCLrMN6v2BKK1dXYFpXlPkccOFqm12CdAsMgRU4VrNZ9lyGVCGuMDGIwP"
)
#: Fault and load knobs and their defaults: the shared ones, ``blocking_window_s`` (by default
#: ``--blocking-window-s``) and ``token_ttl_s``.
KNOBS: dict[str, Any] = {**SHARED_KNOBS, "blocking_window_s": 60.0, "token_ttl_s": 3600.0}
MAX_RECORDS = 100_000  # activation records kept
IAM_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
# OpenWhisk's texts (org.apache.openwhisk.http.Messages and pekko-http's defaults)
AUTH_INVALID = "The supplied authentication is invalid"
AUTH_MISSING = "The resource requires authentication, which was not supplied with the request"


def _too_many(count: int, allowed: int) -> str:
    return f"Too many concurrent requests in flight (count: {count}, allowed: {allowed})."


# -- the platform ---------------------------------------------------------------------------------


@dataclass
class _Plan:
    """What the knobs decided for one invocation."""

    lose: bool = False
    duplicate: bool = False
    kill_after_s: float | None = None
    latency_s: float = 0.0
    load_delay_s: float | None = None
    window_s: float = 60.0
    #: A duplicated invocation's two deliveries meet here once each holds its own container.
    both_placed: threading.Barrier | None = None


class OpenWhisk:
    """The controller and invoker state: actions, containers, activations, knobs and the log."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.namespace = args.namespace
        self.auth = args.auth
        self.api_key = args.api_key
        self.concurrency = args.concurrency
        self.maxima = (args.max_timeout_ms, args.max_memory_mb)
        self.url = ""
        self.lock = threading.Lock()
        defaults = {**KNOBS, "blocking_window_s": args.blocking_window_s}
        self.controls = Controls(defaults, self.lock, on_reset=lambda: self.counters.clear())
        self.actions: dict[tuple[str, str], Action] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.counters: Counter[str] = Counter()
        self.tokens: dict[str, float] = {}
        self.in_flight = 0
        self._token_secret = secrets.token_bytes(32)
        self.pool = ContainerPool(self.lock, self._is_current)

    # -- auth ---------------------------------------------------------------------------------

    def authenticate(self, header: str | None, ns: str) -> str:
        """The namespace a request acts on, or raise 401/403."""
        challenge = {"WWW-Authenticate": 'Basic realm="OpenWhisk secure realm"'}
        scheme, _, credentials = (header or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(credentials, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                given = None
            if given is None or not hmac.compare_digest(given.encode(), self.auth.encode()):
                raise HttpError(401, AUTH_INVALID, challenge)
            if ns not in ("_", self.namespace):
                raise HttpError(403, f"The supplied authentication is not authorized to access '{ns}'.")
        elif scheme.lower() == "bearer":
            with self.lock:
                expires = self.tokens.get(credentials)
            if expires is None or time.time() >= expires:
                raise HttpError(401, AUTH_INVALID, challenge)
        else:
            raise HttpError(401, AUTH_MISSING, challenge)
        return self.namespace if ns == "_" else ns

    def issue_token(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        """IBM Cloud IAM's ``POST /identity/token`` for an API key."""
        with self.lock:
            self.counters["token_requests"] += 1
            ttl = float(self.controls.knobs["token_ttl_s"])
        if form.get("grant_type", [""])[0] != IAM_GRANT:
            return 400, {"errorCode": "BXNIM0103E", "errorMessage": "Unsupported grant type.", "context": {}}
        key = form.get("apikey", [""])[0]
        if not key:
            return 400, {"errorCode": "BXNIM0107E", "errorMessage": "API key is missing.", "context": {}}
        if self.api_key is None or not hmac.compare_digest(key.encode(), self.api_key.encode()):
            return 400, {
                "errorCode": "BXNIM0415E",
                "errorMessage": "Provided API key could not be found.",
                "context": {},
            }
        now = time.time()
        claims = {"iat": int(now), "exp": int(now + ttl), "iss": self.url + "/identity", "sub": "emulator"}
        parts = [
            base64.urlsafe_b64encode(json.dumps(p).encode()).rstrip(b"=")
            for p in ({"alg": "HS256", "typ": "JWT"}, claims)
        ]
        signature = hmac.new(self._token_secret, b".".join(parts), hashlib.sha256).digest()
        token = b".".join([*parts, base64.urlsafe_b64encode(signature).rstrip(b"=")]).decode()
        with self.lock:
            self.tokens[token] = now + ttl
            self.counters["tokens_issued"] += 1
        body = {
            "access_token": token,
            "refresh_token": "not_supported",
            "token_type": "Bearer",
            "expires_in": int(ttl),
            "expiration": int(now + ttl),
            "scope": "ibm openid",
        }
        return 200, body

    # -- actions ------------------------------------------------------------------------------

    def action(self, ns: str, name: str) -> Action:
        with self.lock:
            action = self.actions.get((ns, name))
        if action is None:
            raise HttpError(404, NOT_FOUND)
        return action

    def put_action(self, ns: str, name: str, body: Any, overwrite: bool) -> Action:
        with self.lock:
            old = self.actions.get((ns, name))
            if old is not None and not overwrite:
                raise HttpError(409, "resource already exists")
            action = parse_action(ns, name, body, old, self.maxima)
            self.actions[(ns, name)] = action
        if old is not None:
            self.pool.stop(lambda c: c.key[:2] == (ns, name), "updated")
        return action

    def delete_action(self, ns: str, name: str) -> Action:
        with self.lock:
            action = self.actions.pop((ns, name), None)
        if action is None:
            raise HttpError(404, NOT_FOUND)
        self.pool.stop(lambda c: c.key[:2] == (ns, name), "deleted")
        return action

    def list_actions(self, ns: str) -> list[dict[str, Any]]:
        with self.lock:
            actions = [a for (n, _), a in self.actions.items() if n == ns]
        return [{k: v for k, v in a.to_json().items() if k != "parameters"} for a in actions]

    # -- knobs and log ------------------------------------------------------------------------

    def _log(self, record: dict[str, Any]) -> None:
        self.controls.record(record)

    def _is_current(self, key: tuple[str, str, int]) -> bool:
        """Whether ``(namespace, action, revision)`` is the action's current revision (lock held)."""
        action = self.actions.get(key[:2])
        return action is not None and action.revision == key[2]

    def close(self) -> None:
        """Kill every container's process group and wait (a bounded time) until they are reaped."""
        self.pool.close()

    # -- invocations --------------------------------------------------------------------------

    def invoke(
        self, ns: str, name: str, payload: dict[str, Any], blocking: bool, result_only: bool, auth: str | None
    ) -> tuple[int, Any, dict[str, str]]:
        """Accept one invocation; answer ``(status, body, headers)`` as the controller does."""
        action = self.action(ns, name)
        received = time.time()
        with self.lock:
            self.counters["invoke_requests"] += 1
            knobs = self.controls.knobs
            retry = {} if knobs["retry_after_s"] is None else {"Retry-After": f"{knobs['retry_after_s']:g}"}
            if knobs["throttle"] > 0 or self.in_flight >= self.concurrency:
                throttled = knobs["throttle"] > 0
                knobs["throttle"] -= throttled
                self.counters["throttled"] += 1
                count = max(self.in_flight, self.concurrency) if throttled else self.in_flight
                raise HttpError(429, _too_many(count, self.concurrency), retry)
            loading = knobs["load_delay_s"] is not None
            lose, duplicate, kill = (
                _take(knobs, flag, not loading) for flag in ("lose", "duplicate", "kill")
            )
            plan = _Plan(
                lose=lose,
                duplicate=duplicate,
                kill_after_s=float(knobs["kill_after_s"]) if kill else None,
                latency_s=float(knobs["latency_s"]),
                load_delay_s=knobs["load_delay_s"],
                window_s=float(knobs["blocking_window_s"]),
                both_placed=threading.Barrier(2) if duplicate else None,
            )
            if not plan.lose:
                self.in_flight += 1
        aid = uuid.uuid4().hex
        headers = {"x-openwhisk-activation-id": aid}
        accepted = (202, {"activationId": aid}, headers)
        if plan.lose:
            self._log(_log_record(aid, None, received, None, None, None, "lost"))
            if blocking:
                time.sleep(plan.window_s)
            return accepted
        done = threading.Event()
        if plan.load_delay_s is not None:
            work = lambda: self._load(action, aid, received, float(plan.load_delay_s), done)  # noqa: E731
            if blocking and plan.load_delay_s <= plan.window_s:
                work()
            else:
                threading.Timer(0, work).start()
        else:
            env, args = action.split(payload)
            start = lambda dup: self._activate(action, aid, env, args, received, plan, auth, dup, done)  # noqa: E731
            threading.Thread(target=start, args=(False,), daemon=True).start()
            if plan.duplicate:
                threading.Thread(target=start, args=(True,), daemon=True).start()
        if not blocking or not done.wait(plan.window_s):
            return accepted
        with self.lock:
            record = self.records[aid]
        code = STATUS.index(record["response"]["status"])
        status = 200 if code == SUCCESS else 500 if code == WHISK_ERROR else 502
        return status, record["response"]["result"] if result_only else record, headers

    def _load(self, action: Action, aid: str, received: float, delay: float, done: threading.Event) -> None:
        time.sleep(delay)
        ended = time.time()
        self._log(_log_record(aid, None, received, received, ended, None, "load"))  # before the answer
        self._finish(action, aid, received, received, ended, SUCCESS, {"dask_faas": ""}, {}, done)

    def _finish(
        self,
        action: Action,
        aid: str,
        received: float,
        start: float,
        end: float,
        code: int,
        result: dict[str, Any],
        extra: dict[str, Any],
        done: threading.Event,
    ) -> None:
        path = f"{action.namespace}/{action.name}"
        annotations = [
            {"key": "path", "value": path},
            {"key": "waitTime", "value": max(0, ms(start) - ms(received))},
            {"key": "kind", "value": "blackbox"},
            {"key": "timeout", "value": bool(extra.get("timeout"))},
            {
                "key": "limits",
                "value": {k: action.limits[k] for k in ("timeout", "memory", "logs", "concurrency")},
            },
        ]
        if extra.get("init_ms") is not None:
            annotations.append({"key": "initTime", "value": extra["init_ms"]})
        record = {
            "namespace": action.namespace,
            "name": action.name,
            "subject": action.namespace,
            "activationId": aid,
            "start": ms(start),
            "end": ms(end),
            "duration": ms(end) - ms(start),
            "response": {
                "status": STATUS[code],
                "success": code == SUCCESS,
                "result": result,
            },
            "logs": [],
            "version": action.version,
            "publish": False,
            "annotations": annotations,
        }
        if extra.get("size") is not None:
            record["response"]["size"] = extra["size"]
        with self.lock:
            self.records[aid] = record
            if len(self.records) > MAX_RECORDS:  # load mode: keep the newest
                del self.records[next(iter(self.records))]
            self.in_flight -= 1
        done.set()

    def _activate(
        self,
        action: Action,
        aid: str,
        env: dict[str, Any],
        args: dict[str, Any],
        received: float,
        plan: _Plan,
        auth: str | None,
        duplicate: bool,
        done: threading.Event,
    ) -> None:
        """Deliver one activation to a container (a duplicate delivery's answer is only logged)."""
        time.sleep(plan.latency_s)
        timeout_ms = action.limits["timeout"]
        ow_env = {
            "namespace": action.namespace,
            "action_name": f"/{action.namespace}/{action.name}",
            "action_version": action.version,
            "activation_id": aid,
            "transaction_id": uuid.uuid4().hex,
        }
        if auth and action.annotation("provide-api-key", True) not in (False, "false"):
            ow_env["api_key"] = auth
        container, cold = self.pool.acquire((action.namespace, action.name, action.revision), self.url)
        if plan.both_placed is not None:  # two instances: neither is given back before both are placed
            with contextlib.suppress(threading.BrokenBarrierError):
                plan.both_placed.wait(timeout=120)
        start = time.time()
        init_ms = None
        code, result, outcome = SUCCESS, {}, "ok"
        if container is None:
            code, result, outcome = (
                WHISK_ERROR,
                {"error": "Failed to provision resources to run the action."},
                "error",
            )
        elif cold:
            init_env = {k: _env_text(v) for k, v in env.items()} | {
                f"__OW_{k.upper()}": v
                for k, v in (ow_env | {"deadline": str(ms(time.time()) + timeout_ms)}).items()
            }
            value = {"name": action.name, "binary": action.exec["binary"], "main": "main", "env": init_env}
            value |= {"code": action.exec["code"]} if "code" in action.exec else {}
            code, result, outcome = self.pool.call(
                container, "/init", {"value": value}, action.limits, None, init=True
            )
            init_ms = ms(time.time()) - ms(start)
        if container is not None and code == SUCCESS:
            started = time.time()
            body = {"value": args, **ow_env, "deadline": str(ms(started) + timeout_ms)}
            code, result, outcome = self.pool.call(
                container, "/run", body, action.limits, plan.kill_after_s, init=False
            )
        end = time.time()
        extra = {"init_ms": init_ms, "timeout": outcome == "timeout", "size": len(json.dumps(result))}
        if container is not None:
            self.pool.release(container, healthy=code in (SUCCESS, APPLICATION_ERROR))
        instance = container.cid if container is not None else None
        if duplicate:
            self._log(_log_record(aid, instance, received, start, end, cold, "duplicate"))
            return
        self._log(_log_record(aid, instance, received, start, end, cold, outcome))  # before the answer
        self._finish(action, aid, received, start, end, code, result, extra, done)


def _take(knobs: dict[str, Any], flag: str, allowed: bool) -> bool:
    """Whether this invocation takes one of the next-N ``flag`` faults (and count it down)."""
    if allowed and knobs[flag] > 0:
        knobs[flag] -= 1
        return True
    return False


def _env_text(value: Any) -> str:
    """How the invoker stringifies init parameters (``containerInitializer``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"))


def _log_record(
    aid: str,
    instance: str | None,
    received: float,
    started: float | None,
    ended: float | None,
    cold: bool | None,
    outcome: str,
) -> dict[str, Any]:
    return {
        "request_id": aid,
        "instance": instance,
        "received": received,
        "started": started,
        "ended": ended,
        "cold": cold,
        "outcome": outcome,
    }


# -- HTTP -----------------------------------------------------------------------------------------

_NS = r"/api/v1/namespaces/(?P<ns>[^/]+)"
_ROUTES = [
    ("GET", re.compile(r"/api/v1/namespaces/?"), "namespaces"),
    ("GET", re.compile(_NS + r"/actions/?"), "list_actions"),
    ("GET", re.compile(_NS + r"/actions/(?P<name>[^/]+(?:/[^/]+)?)"), "get_action"),
    ("PUT", re.compile(_NS + r"/actions/(?P<name>[^/]+(?:/[^/]+)?)"), "put_action"),
    ("DELETE", re.compile(_NS + r"/actions/(?P<name>[^/]+(?:/[^/]+)?)"), "delete_action"),
    ("POST", re.compile(_NS + r"/actions/(?P<name>[^/]+(?:/[^/]+)?)"), "invoke"),
    ("GET", re.compile(_NS + r"/activations/?"), "list_activations"),
    ("GET", re.compile(_NS + r"/activations/(?P<aid>[0-9a-f]+)(?P<part>/result|/logs)?"), "get_activation"),
]
_MAX_DRAINED = 64 * 2**20  # a larger request body is not read: the connection is closed instead


class Handler(LoopbackHandler):
    """Routes of the controller, IAM and the emulator's control routes."""

    timeout = 300  # an idle keep-alive connection gives its thread back
    ow: OpenWhisk

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        self._tid, self._consumed = uuid.uuid4().hex, False
        try:
            status, body, headers = self._route(method, url.path, query)
        except HttpError as exc:
            status, body, headers = exc.status, {"error": exc.message, "code": self._tid}, exc.headers
        except Exception as exc:  # an emulator bug: say so, as the controller's 500 would
            print(f"emulator error on {method} {self.path}: {exc!r}", file=sys.stderr, flush=True)
            status, body, headers = 500, {"error": f"Internal server error: {exc!r}", "code": self._tid}, {}
        if not self._consumed:  # a refused request's body must not be read as the next request
            self._body()
        self._send(status, body, headers)

    def _body(self, limit: int | None = None) -> bytes:
        """The request body (read once); 413 past ``limit`` bytes."""
        length = int(self.headers.get("Content-Length") or 0)
        if self._consumed:
            return b""
        self._consumed = True
        too_large = limit is not None and length > limit
        if length > _MAX_DRAINED:
            self.close_connection = True
            data = b""
        else:
            data = self.rfile.read(length)
        if too_large:
            raise HttpError(413, f"Request larger than allowed: {length} > {limit} bytes.")
        return data

    def _json(self, limit: int | None = None) -> Any:
        data = self._body(limit)
        if not data.strip():
            return None
        try:
            return json.loads(data)
        except ValueError as exc:
            raise malformed(str(exc)) from None

    def _route(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        ow = self.ow
        if path.startswith("/_emulator/"):
            return self._control(method, path)
        if path == "/identity/token" and method == "POST":
            form = urllib.parse.parse_qs(self._body().decode("utf-8", "replace"))
            status, body = ow.issue_token(form)
            return status, body, {}
        for route_method, pattern, name in _ROUTES:  # noqa: B007 (the matching route's name is used)
            match = pattern.fullmatch(path)
            if match and route_method == method:
                break
        else:
            raise HttpError(404, NOT_FOUND)
        groups = {k: urllib.parse.unquote(v) for k, v in match.groupdict().items() if v is not None}
        auth = self.headers.get("Authorization")
        ns = ow.authenticate(auth, groups.get("ns", "_"))
        basic = ow.auth if (auth or "").lower().startswith("basic") else None
        if name == "namespaces":
            return 200, [ow.namespace], {}
        if name == "list_actions":
            return 200, ow.list_actions(ns), {}
        if name == "get_action":
            return 200, ow.action(ns, groups["name"]).to_json(), {}
        if name == "put_action":
            body = self._json()
            return (
                200,
                ow.put_action(ns, groups["name"], body, query.get("overwrite") == "true").to_json(),
                {},
            )
        if name == "delete_action":
            return 200, ow.delete_action(ns, groups["name"]).to_json(), {}
        if name == "invoke":
            payload = self._json(limit=MAX_PAYLOAD_BYTES)
            if payload is not None and not isinstance(payload, dict):
                raise malformed("the parameters must be a JSON object")
            blocking, result_only = query.get("blocking") == "true", query.get("result") == "true"
            return ow.invoke(ns, groups["name"], payload or {}, blocking, result_only, basic)
        if name == "list_activations":
            with ow.lock:
                records = [r for r in ow.records.values() if r["namespace"] == ns]
            limit = int(query.get("limit", 30))
            return 200, [{k: v for k, v in r.items() if k != "response"} for r in records[::-1][:limit]], {}
        with ow.lock:
            record = ow.records.get(groups["aid"])
        if record is None or record["namespace"] != ns:
            raise HttpError(404, NOT_FOUND)
        part = groups.get("part")
        return 200, record["response"] if part == "/result" else {"logs": []} if part else record, {}

    def _control(self, method: str, path: str) -> tuple[int, Any, dict[str, str]]:
        ow = self.ow

        def counters() -> dict[str, int]:
            with ow.lock:
                return dict(ow.counters)

        body = self._body() if method == "POST" else b""
        extra = {("GET", "/_emulator/counters"): counters}
        status, answer = ow.controls.route(method, path, body, extra=extra)
        return status, answer, {}

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_answer(status, [("Content-Type", "application/json"), *headers.items()], data)


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM, then kill every container."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--auth", default=GUEST_AUTH, help="the namespace's uuid:key for Basic auth")
    parser.add_argument("--api-key", default=None, help="the IBM Cloud API key IAM exchanges for tokens")
    parser.add_argument("--namespace", default="guest")
    parser.add_argument("--concurrency", type=int, default=1000, help="concurrent activations per namespace")
    parser.add_argument("--blocking-window-s", type=float, default=60.0)
    # IBM Cloud Functions' action limits (the client's max_timeout_s and max_memory_mb); Apache
    # OpenWhisk's default deployment allows 300000 ms and 512 MB
    parser.add_argument("--max-timeout-ms", type=int, default=600000)
    parser.add_argument("--max-memory-mb", type=int, default=2048)
    args = parser.parse_args(argv)
    ow = OpenWhisk(args)
    handler = type("BoundHandler", (Handler,), {"ow": ow})
    server = LoopbackServer(handler)
    ow.url = server.url

    def stop(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    publish_url(args.port_file, ow.url)
    print(f"openwhisk emulator on {ow.url}, namespace {ow.namespace}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        ow.close()
        server.server_close()


if __name__ == "__main__":
    main()
