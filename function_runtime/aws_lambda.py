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
left as ``awslambdaric`` sets them: what functions print goes to the function's log (and, teed
while the call runs, into the response, see :mod:`dask_faas.capture`).
"""

from __future__ import annotations

from typing import Any

from dask_faas.worker import warm_runtime

__all__ = ["handler"]


def handler(event: Any, context: Any) -> dict[str, str]:
    """Run one invocation: ``{"dask_faas": base64 payload}`` -> ``{"dask_faas": base64 response}``.

    Parameters
    ----------
    event : dict
        The Invoke request's body, parsed by ``awslambdaric``.
    context : awslambdaric.lambda_context.LambdaContext
        The invocation's context: its ``aws_request_id`` goes into the invocation's record
        (deadlines travel in the payload).

    Raises
    ------
    dask_faas.exceptions.IntegrityError, dask_faas.exceptions.ProtocolError
        For a payload the worker refuses.
    ValueError
        For an event that holds no base64 payload.
    """
    return warm_runtime().handle_json(event, request_id=context.aws_request_id)
