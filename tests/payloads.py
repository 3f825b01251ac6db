"""Real sealed payloads for the tests: a job in local storage, its invocations and their responses.

:class:`Payloads` does what a :class:`~dask_faas.FaasExecutor` does around one call, with the public
functions of ``protocol``, ``serialize`` and ``job``: it writes a job to a
:class:`~dask_faas.backends.storage.local.LocalStorage`, seals :class:`~dask_faas.protocol.Invocation`
messages of a function with the job's key (the function uploaded with ``ship_modules=True``, so the
tests' own functions travel by value: a platform's runtime image cannot import them), gives the
environment a deployment carries, wraps a payload for the JSON platforms (``{"dask_faas": base64}``)
and decodes the sealed :class:`~dask_faas.protocol.Response` a function sends back::

    payloads = Payloads(tmp_path, "knative")
    call, body = payloads.payload(operator.add, 1, 2)
    assert payloads.decode(post(body), call) == 3
    payloads.close()
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from dask_faas import protocol, serialize
from dask_faas.backends.compute.local import LocalBackend
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.job import Job
from dask_faas.protocol import Invocation, Ref, Response


class Sealed(NamedTuple):
    """A sealed invocation: the call id it carries and its bytes."""

    call: str
    body: bytes


class Payloads:
    """A job in a local storage root, sealed invocations of it, and the decoding of their responses.

    Parameters
    ----------
    root : Path
        Root directory of the job's :class:`~dask_faas.backends.storage.local.LocalStorage`.
    name : str
        Root of the job's prefix in the storage.

    Attributes
    ----------
    storage : LocalStorage
        The job's storage.
    key : bytes
        The job's signing key.
    job : Job
        The job (``ship_modules=True``).
    environment : dict of str to str
        What a deployment of the function carries: the storage settings and the signing key.
    """

    def __init__(self, root: Path, name: str = "tests") -> None:
        self.storage = LocalStorage(root)
        self.key = protocol.new_key()
        self.job = Job(self.storage, self.key, name, ship_modules=True)
        self.environment = {**self.storage.deployment_environment(), protocol.KEY_ENV: self.key.hex()}
        self._calls = itertools.count()

    def payload(
        self, fn: Callable[..., Any], *args: Any, key: bytes | None = None, inline_limit: int = 2**16
    ) -> Sealed:
        """A sealed invocation of ``fn(*args)`` (attempt 0, a new call id).

        Parameters
        ----------
        fn : callable
            The function; uploaded to the job once.
        *args
            Its arguments.
        key : bytes, optional
            Seal with this key instead of the job's (a payload the function must refuse).
        inline_limit : int
            Largest result the function sends inline rather than through the storage.

        Returns
        -------
        Sealed
            The call id and the sealed bytes.
        """
        call = str(next(self._calls))
        invocation = Invocation(
            job=self.job.id,
            call=call,
            attempt=0,
            function=self.job.function(fn),
            args=serialize.dumps_arguments(
                getattr(fn, "__name__", "fn"), [(args, {})], ship=self.job.ship_modules
            ),
            storage=self.job.locator,
            prefix=self.job.prefix,
            inline_limit=inline_limit,
        )
        return Sealed(call, protocol.seal(invocation, key or self.key))

    def event(
        self, fn: Callable[..., Any], *args: Any, key: bytes | None = None, inline_limit: int = 2**16
    ) -> tuple[str, dict[str, str]]:
        """:meth:`payload` as the JSON platforms' event: the call id and ``{"dask_faas": base64}``."""
        call, body = self.payload(fn, *args, key=key, inline_limit=inline_limit)
        return call, {protocol.JSON_FIELD: base64.b64encode(body).decode("ascii")}

    def response(self, body: bytes, call: str | None = None) -> Response:
        """Unseal a response; with ``call``, assert that it answers attempt 0 of that call."""
        response: Response = protocol.unseal(body, self.key, what="response")
        if call is not None:
            assert (response.call, response.attempt) == (call, 0), "the response answers another call"
        return response

    def decode(self, body: bytes, call: str | None = None) -> Any:
        """The function's value from a sealed response (``call`` as in :meth:`response`).

        Raises
        ------
        Exception
            The function's own exception, when the call failed.
        """
        response = self.response(body, call)
        value = self.job.fetch(response.value) if isinstance(response.value, Ref) else response.value
        if not response.ok:
            raise serialize.loads_error(value)
        return serialize.loads(value)[0]

    def decode_event(self, event: Mapping[str, Any], call: str | None = None) -> Any:
        """:meth:`decode` of a JSON platform's result ``{"dask_faas": base64}``."""
        return self.decode(base64.b64decode(event[protocol.JSON_FIELD]), call)

    def close(self) -> None:
        """Close the job; assert that it left nothing under its prefix."""
        self.job.close()
        left = list(self.storage.list(self.job.prefix))
        assert not left, f"job prefix not empty after the job closed: {left}"


class RecordingLocalBackend(LocalBackend):
    """The real local pool, keeping a copy of every payload and response it carries."""

    seen: list[bytes] = []

    def invoke(self, payload: bytes, options: Any) -> Any:
        self.seen.append(payload)
        future = super().invoke(payload, options)
        future.add_done_callback(lambda f: f.exception() or self.seen.append(f.result()))
        return future
