"""The contract between the client and its functions: versioned, signed messages.

Three kinds of bytes cross the client/function boundary, all signed with an HMAC-SHA256 key that is
set once on the function's deployment (an environment variable) and never travels in a payload:

- an :class:`Invocation` (the payload), sealed by :func:`seal`;
- a :class:`Response`, sealed by :func:`seal`;
- a stored object (function body, large arguments, large results), tagged by :func:`sign_blob`,
  whose tag also covers the object's key, so an object cannot be swapped for another.

A sealed message is ``MAGIC | version (1 byte) | tag (32 bytes) | body``; the tag is checked *before*
the body is unpickled, so a forged payload never reaches :mod:`pickle`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import secrets
from dataclasses import dataclass, field
from typing import Any

from .exceptions import IntegrityError, ProtocolError

__all__ = [
    "JSON_FIELD",
    "KEY_ENV",
    "VERSION",
    "Invocation",
    "Ref",
    "Response",
    "new_key",
    "seal",
    "sign_blob",
    "start_mark_name",
    "unseal",
    "verify_blob",
]

#: Protocol version; bumped on any incompatible change of the classes below.
VERSION = 4
MAGIC = b"DFAAS"
#: Environment variable holding the hex signing key in a function's deployment.
KEY_ENV = "DASK_FAAS_SIGNING_KEY"
#: The field of a JSON event (Lambda, OpenWhisk) that holds a sealed message in base64.
JSON_FIELD = "dask_faas"
_TAG = 32
_HEADER = len(MAGIC) + 1


def new_key() -> bytes:
    """A fresh random 256-bit signing key."""
    return secrets.token_bytes(32)


def key_from_environ(environ: os._Environ[str] | dict[str, str] = os.environ) -> bytes:
    """The signing key of this function deployment, from ``DASK_FAAS_SIGNING_KEY``."""
    value = environ.get(KEY_ENV)
    if not value:
        raise IntegrityError(f"the function has no signing key: {KEY_ENV} is not set")
    return bytes.fromhex(value)


@dataclass(frozen=True)
class Ref:
    """A reference to a signed object in storage.

    Parameters
    ----------
    key : str
        The object's key in the job's storage.
    size : int
        Its size in bytes (signature excluded).
    """

    key: str
    size: int


@dataclass(frozen=True)
class Invocation:
    """One invocation payload: apply one function to a batch of argument tuples.

    Parameters
    ----------
    job : str
        Job id; its storage prefix is ``prefix``.
    call : str
        Call id, unique within the job.
    attempt : int
        Attempt number (0 first); outputs are written under per-attempt keys.
    function : Ref
        The cloudpickled function, content-addressed in storage (uploaded once per job).
    args : bytes or Ref
        Cloudpickled ``list[tuple[args, kwargs]]``, inline or in storage.
    storage : dict
        :meth:`~dask_faas.backends.storage.base.Storage.locator` of the job's storage.
    prefix : str
        The job's storage prefix; outputs go under it.
    inline_limit : int
        Results larger than this many bytes are written to storage instead of returned inline.
    delivery : str
        A nonce of this delivery of the attempt. Platforms deliver at least once, and the client sends
        an attempt again when it never started (its start deadline); every name a function writes holds
        call, attempt, delivery and a nonce of its own execution (:attr:`dask_faas.worker.Context.tag`),
        so neither two deliveries nor a platform's duplicate of one ever write the same object.
    start_mark_s : float, optional
        If the call is still running this many seconds after it started, the function writes the
        start mark :func:`start_mark_name` (the client looks for it only at the start deadline of a
        call it has no answer for, to tell a call that never started from a long one).
    """

    job: str
    call: str
    attempt: int
    function: Ref
    args: bytes | Ref
    storage: dict[str, Any]
    prefix: str
    inline_limit: int
    delivery: str = "0"
    start_mark_s: float | None = None
    log_bytes: int = 0
    version: int = VERSION


@dataclass(frozen=True)
class Response:
    """What a function answers.

    Parameters
    ----------
    call, attempt
        Echo of the invocation.
    ok : bool
        True when ``value`` holds results, False when it holds a pickled error.
    value : bytes or Ref
        Cloudpickled ``list`` of results (``ok``) or ``(exception, traceback_text)``.
    stats : dict
        Measurements of the call: ``pid``, ``seconds`` (the whole handling), ``warm``, ``started``
        and ``ended`` (the function's clock, epoch s), ``running_s`` (the user's code), ``bytes_in``
        and ``bytes_out``, ``peak_memory_mb``, ``request_id`` (the platform's), ``requests``
        (storage requests by kind) and so on.
    warnings : bytes
        The warnings the function raised (:meth:`~dask_faas.serialize.WarningRecorder.dumps`), issued again
        on the client.
    logs : str
        What the function printed and logged (see :attr:`Invocation.log_bytes`).
    """

    call: str
    attempt: int
    ok: bool
    value: bytes | Ref
    stats: dict[str, Any] = field(default_factory=dict)
    warnings: bytes = b""
    logs: str = ""
    version: int = VERSION


def start_mark_name(call: str, attempt: int, delivery: str) -> str:
    """The job-relative name of the start mark of one delivery (see :attr:`Invocation.start_mark_s`)."""
    return f"run/{call}.{attempt}.{delivery}"


def _tag(key: bytes, *parts: bytes | memoryview) -> bytes:
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(part)
    return mac.digest()


def seal(message: Invocation | Response, key: bytes) -> bytes:
    """Serialize and sign ``message``."""
    body = pickle.dumps(message, protocol=5)
    return b"".join((MAGIC, bytes((VERSION,)), _tag(key, body), body))


def unseal(data: bytes | memoryview, key: bytes, what: str = "message") -> Any:
    """Verify and deserialize a sealed message.

    Raises
    ------
    IntegrityError
        If ``data`` is not a dask-faas message or its signature does not match ``key``.
    ProtocolError
        If it was sealed by another protocol version.
    """
    view = memoryview(data)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise IntegrityError(f"{what} is not a dask-faas message (bad magic bytes)")
    version = view[len(MAGIC)]
    if version != VERSION:
        raise ProtocolError(
            f"{what} uses protocol version {version}, this side speaks {VERSION}: "
            "deploy the same dask-faas version on the client and the function runtime"
        )
    tag, body = view[_HEADER : _HEADER + _TAG], view[_HEADER + _TAG :]
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise IntegrityError(f"{what} has an invalid signature (tampered, or signed with another key)")
    return pickle.loads(body)


def sign_blob(data: bytes | memoryview, key: bytes, name: str) -> bytes:
    """Prefix ``data`` with a tag binding it to its storage key ``name``."""
    return _tag(key, name.encode(), b"\0", data) + bytes(data)


def verify_blob(blob: bytes, key: bytes, name: str) -> memoryview:
    """Check the tag of a stored object read from ``name`` and return its data.

    Raises
    ------
    IntegrityError
        If the object was changed, moved from another key, or signed with another key.
    """
    view = memoryview(blob)
    data = view[_TAG:]
    if len(view) < _TAG or not hmac.compare_digest(view[:_TAG], _tag(key, name.encode(), b"\0", data)):
        raise IntegrityError(f"stored object {name!r} failed its signature check (tampered?)")
    return data
