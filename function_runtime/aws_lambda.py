"""Entry point of the AWS Lambda function: the handler that AWS's runtime interface client calls.

The project's Lambda image runs it with AWS's own runtime interface client (``awslambdaric``, from
PyPI), whose loop fetches each event from the Lambda Runtime API and posts the handler's answer back::

    ENTRYPOINT ["python", "-m", "awslambdaric"]
    CMD ["function_runtime.aws_lambda.handler"]

The event is the Invoke request's JSON body, ``{"dask_faas": "<base64 of the sealed invocation>"}``;
the handler answers ``{"dask_faas": "<base64 of the sealed response>"}``. A payload that the worker
refuses (bad signature, other protocol version) raises out of the handler, so ``awslambdaric``
reports it on ``/runtime/invocation/{id}/error`` and Invoke answers with
``X-Amz-Function-Error: Unhandled`` and ``{"errorType": "IntegrityError", ...}``.

One :class:`~dask_faas.worker.Runtime` is made at the first invocation (its signing key comes from the
function's configuration) and kept warm for the life of the process. Standard output and error are
left as ``awslambdaric`` sets them: what functions print goes to the function's log.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from dask_faas.worker import Runtime

__all__ = ["handler"]

_runtime: Runtime | None = None


def _warm_runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime.from_environ()
    return _runtime


def handler(event: Any, context: Any) -> dict[str, str]:
    """Run one invocation: ``{"dask_faas": base64 payload}`` -> ``{"dask_faas": base64 response}``.

    Parameters
    ----------
    event : dict
        The Invoke request's body, parsed by ``awslambdaric``.
    context : awslambdaric.lambda_context.LambdaContext
        The invocation's context (unused: deadlines travel in the payload).

    Raises
    ------
    dask_faas.exceptions.IntegrityError, dask_faas.exceptions.ProtocolError
        For a payload the worker refuses.
    ValueError
        For an event that holds no base64 payload.
    """
    encoded = event.get("dask_faas") if isinstance(event, dict) else None
    if not isinstance(encoded, str):
        raise ValueError("the event is not a dask-faas invocation: expected {'dask_faas': '<base64>'}")
    try:
        payload = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the event's dask_faas payload is not base64: {exc}") from None
    response = _warm_runtime().handle(payload)
    return {"dask_faas": base64.b64encode(response).decode("ascii")}
