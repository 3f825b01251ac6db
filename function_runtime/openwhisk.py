"""Entry point of an Apache OpenWhisk / IBM Cloud Functions action.

Two ways to deploy it, one action:

- ``main(args)`` is the action for OpenWhisk's own Python runtime (``kind: python:3.x``, ``main`` as
  the entry point): ``args`` is ``{"dask_faas": "<base64 of the sealed invocation>"}`` and the answer
  ``{"dask_faas": "<base64 of the sealed response>"}``; a payload the runtime refuses (bad signature,
  other protocol version, no signing key) is answered ``{"error": "<Type>: <message>"}``, which
  OpenWhisk reports as an application error.
- ``python -m function_runtime.openwhisk`` is the command of a Docker ("blackbox") action image: it
  serves OpenWhisk's action-container protocol with the standard library, as the platform's action
  proxies do. It listens on ``$__OW_LISTEN_HOST`` (default ``0.0.0.0``) port ``$PORT`` (default 8080):

  ``POST /init`` ``{"value": {"env": {...}, "code": ..., ...}}``
      exports ``value.env`` (the action's init parameters and the ``__OW_*`` variables) into the
      environment, ignores any code (the action is baked into the image) and answers 200
      ``{"ok": true}``; a second init answers 403 ``{"error": "Cannot initialize the action more
      than once."}`` unless ``PROXY_ALLOW_REINIT=1``.
  ``POST /run`` ``{"value": <params>, "activation_id": ..., "deadline": ..., ...}``
      exports every field but ``value`` as ``__OW_<FIELD>`` (as the Python action proxy does), calls
      :func:`main` with ``value`` and answers 200 with its result, or 502 ``{"error": ...}`` when it
      raised. One activation runs at a time (the action's concurrency is 1).

  Each answer is followed by OpenWhisk's log sentinel on stdout and stderr.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dask_faas.worker import warm_runtime

__all__ = ["main", "serve"]

#: What OpenWhisk's action proxies print after each activation, so the invoker can cut the logs.
LOG_SENTINEL = "XXX_THE_END_OF_A_WHISK_ACTIVATION_XXX"

_activation = threading.Lock()  # one activation at a time, like the action's concurrency of 1
_initialized = False


def main(args: dict[str, Any]) -> dict[str, Any]:
    """Run one invocation: ``{"dask_faas": base64 payload}`` -> ``{"dask_faas": base64 response}``.

    Parameters
    ----------
    args : dict
        The action's parameters; ``args["dask_faas"]`` holds the base64 of the sealed invocation.
        The activation's id (``__OW_ACTIVATION_ID``, set by the action proxy) goes into the
        invocation's record.

    Returns
    -------
    dict
        ``{"dask_faas": "<base64 of the sealed response>"}``, or ``{"error": "<Type>: <message>"}``
        for a payload the runtime refuses.

    Raises
    ------
    ValueError
        If ``args`` does not hold a base64 payload under ``"dask_faas"``.
    """
    if not isinstance(args, dict) or not isinstance(args.get("dask_faas"), str):
        raise ValueError("the action expects the parameter 'dask_faas' holding a base64 payload")
    try:
        return warm_runtime().handle_json(args, request_id=os.environ.get("__OW_ACTIVATION_ID"))
    except ValueError:
        raise
    except Exception as exc:  # refused by the runtime (signature, version, no key): the platform reports it
        return {"error": f"{type(exc).__name__}: {exc}"}


def _as_env(value: Any) -> str:
    """An environment value as OpenWhisk's proxies export it: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _init(message: Any) -> tuple[int, dict[str, Any]]:
    global _initialized
    if _initialized and os.environ.get("PROXY_ALLOW_REINIT") != "1":
        return 403, {"error": "Cannot initialize the action more than once."}
    value = message.get("value") if isinstance(message, dict) else None
    if not isinstance(value, dict):
        return 400, {"error": "The init request does not hold a 'value' object."}
    env = value.get("env") or {}
    if not isinstance(env, dict):
        return 400, {"error": "The init request's 'value.env' is not an object."}
    os.environ.update({str(key): _as_env(item) for key, item in env.items()})
    _initialized = True
    return 200, {"ok": True}


def _run(message: Any) -> tuple[int, Any]:
    args = message.get("value", {}) if isinstance(message, dict) else None
    if not isinstance(args, dict):
        return 404, {"error": "The action did not receive a dictionary or array as an argument."}
    for key, item in message.items():
        if key != "value":
            os.environ[f"__OW_{key.upper()}"] = _as_env(item)
    try:
        return 200, main(args)
    except Exception as exc:
        print(f"the action failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 502, {"error": f"{type(exc).__name__}: {exc}"}


class _ActionProxy(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()  # headers and body are two writes: answer without Nagle's delay
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        routes = {"/init": _init, "/run": _run}
        route = routes.get(self.path.split("?", 1)[0])
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if route is None:
            status, answer = 404, {"error": f"no route {self.path}"}
        else:
            try:
                message = json.loads(body) if body.strip() else {}
            except ValueError:
                message = None
            with _activation:
                status, answer = route(message if message is not None else {"value": None})
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        for stream in (sys.stdout, sys.stderr):
            stream.write(LOG_SENTINEL + "\n")
            stream.flush()

    def log_message(self, format: str, *args: Any) -> None:  # the platform keeps only the action's output
        pass


def serve() -> None:
    """Serve the action-container protocol on ``$__OW_LISTEN_HOST:$PORT`` until killed."""
    host = os.environ.get("__OW_LISTEN_HOST", "0.0.0.0")
    port = int(os.environ.get("PORT") or 8080)
    server = ThreadingHTTPServer((host, port), _ActionProxy)
    server.daemon_threads = True
    print(f"action proxy listening on {host}:{server.server_address[1]}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    serve()
