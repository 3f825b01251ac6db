"""Entry point for Knative Serving (IBM Code Engine, OpenShift Serverless): HTTP on ``$PORT``.

Run as ``python -m function_runtime.knative`` in the service's image. The HTTP server is Knative
Functions' own Python middleware, ``func_python`` (hypercorn underneath): it answers
``GET /health/liveness`` and ``/health/readiness``, runs the lifespan (:meth:`Function.start`,
:meth:`Function.stop`) and stops gracefully on SIGTERM. Every other request reaches
:meth:`Function.handle`:

- ``POST`` with a sealed invocation as its body and ``Authorization: Bearer <DASK_FAAS_HTTP_TOKEN>``
  -> 200, ``application/octet-stream``, the sealed response;
- a missing or wrong token -> 401 with ``WWW-Authenticate: Bearer``, decided from the headers alone:
  the body is never read, nothing is unpickled;
- a payload whose signature fails (``IntegrityError``) -> 403; another protocol version
  (``ProtocolError``) -> 400; a POST without a body -> 400; any other method -> 405; anything else
  that goes wrong -> 500 with the error text.

The container's memory limit, ``DASK_FAAS_MEMORY_MB`` (``dask-faas runtime deploy`` writes it from
the Service's ``resources.limits.memory``) or else the cgroup's limit when readable, is enforced by
the process on itself from :meth:`Function.start` on (:class:`dask_faas.worker.MemoryLimit`): an
allocation past it fails at once with ``MemoryError``, answered as a ``FunctionMemoryError`` naming
the call and ``memory_mb=``, instead of Kubernetes OOMKilling the container (a 502 to the client
and every call of the instance lost). The limit is the instance's: calls running at once share it.

``Runtime.handle`` is CPU-bound: it runs on ``DASK_FAAS_INSTANCE_CONCURRENCY`` threads (default 1,
the Service's ``containerConcurrency``), off the event loop, so the health checks answer while calls
run; a request beyond that many waits for a thread. The service must set ``DASK_FAAS_HTTP_TOKEN``
(it refuses to start without it) and ``DASK_FAAS_SIGNING_KEY``. It listens on ``LISTEN_ADDRESS``
(func_python's setting) if set, else on port ``$PORT`` (Knative's, default 8080) of host
``DASK_FAAS_LISTEN_HOST`` (default: all interfaces).
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import func_python.http

from dask_faas.worker import Runtime

TOKEN_ENV = "DASK_FAAS_HTTP_TOKEN"
CONCURRENCY_ENV = "DASK_FAAS_INSTANCE_CONCURRENCY"
HOST_ENV = "DASK_FAAS_LISTEN_HOST"
_TEXT = b"text/plain; charset=utf-8"


class Function:
    """The function instance that ``func_python`` serves (its ``new()`` protocol).

    Parameters
    ----------
    token : str
        The bearer token every invocation must carry.
    threads : int
        How many invocations run at once.
    """

    def __init__(self, token: str, threads: int) -> None:
        self._token = token.encode()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="dask-faas-call")
        self._runtime: Runtime | None = None

    def start(self, env: dict[str, str]) -> None:
        """Make the runtime (signing key from ``DASK_FAAS_SIGNING_KEY``, the container's memory
        enforced from now on); the instance is then ready."""
        self._runtime = Runtime.from_environ()

    def stop(self) -> None:
        """Take no more calls (those running end on their threads)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def alive(self) -> bool:
        """``/health/liveness``: the event loop answers."""
        return True

    def ready(self) -> bool:
        """``/health/readiness``: the runtime is made."""
        return self._runtime is not None

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Answer one HTTP request (ASGI)."""
        if scope["method"] != "POST":
            return await _respond(send, 405, b"only POST is allowed\n", ((b"allow", b"POST"),))
        headers = dict(scope["headers"])  # names are lower case in ASGI
        scheme, _, token = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self._token):
            detail = b"missing or wrong bearer token\n"
            return await _respond(send, 401, detail, ((b"www-authenticate", b"Bearer"),))
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        payload = b"".join(chunks)
        if self._runtime is None:
            return await _respond(send, 503, b"the runtime has not started\n")
        if not payload:
            return await _respond(send, 400, b"the request has no body (a sealed invocation)\n")
        try:
            loop = asyncio.get_running_loop()
            # the CloudEvent's id, else the request id Knative's ingress (or its router) set
            request_id = (headers.get(b"ce-id") or headers.get(b"x-request-id") or b"").decode() or None
            call = functools.partial(self._runtime.handle, payload, request_id=request_id)
            reply = await loop.run_in_executor(self._pool, call)
        except Exception as exc:
            kinds = {cls.__name__ for cls in type(exc).__mro__}  # the worker's exception types, by name
            status = 403 if "IntegrityError" in kinds else 400 if "ProtocolError" in kinds else 500
            return await _respond(send, status, f"{type(exc).__name__}: {exc}\n".encode())
        await _respond(send, 200, reply, content_type=b"application/octet-stream")


async def _respond(
    send: Any,
    status: int,
    body: bytes,
    headers: tuple[tuple[bytes, bytes], ...] = (),
    content_type: bytes = _TEXT,
) -> None:
    fields = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": fields})
    await send({"type": "http.response.body", "body": body})


def new() -> Function:
    """The function instance, configured from the environment (``func_python``'s constructor).

    Raises
    ------
    RuntimeError
        If ``DASK_FAAS_HTTP_TOKEN`` is not set.
    """
    token = os.environ.get(TOKEN_ENV, "")
    if not token:
        raise RuntimeError(
            f"{TOKEN_ENV} is not set: the Knative runtime refuses to serve invocations without a bearer "
            "token (set it in the service's environment, and give the client the same token)"
        )
    return Function(token, int(os.environ.get(CONCURRENCY_ENV) or 1))


def listen_address(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """func_python's ``LISTEN_ADDRESS``: as given, else ``$PORT`` on ``DASK_FAAS_LISTEN_HOST``."""
    if environ.get("LISTEN_ADDRESS"):
        return environ["LISTEN_ADDRESS"]
    port, host = environ.get("PORT") or "8080", environ.get(HOST_ENV) or ""
    if not host:
        return f"[::]:{port},0.0.0.0:{port}"  # func_python's default, on Knative's port
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def main() -> None:
    """Serve until SIGTERM."""
    try:
        new()
        Runtime.from_environ()  # the signing key, checked before the server starts
    except Exception as exc:
        sys.exit(f"function_runtime.knative: {exc}")
    os.environ["LISTEN_ADDRESS"] = listen_address()
    func_python.http.serve(new)


if __name__ == "__main__":
    main()
