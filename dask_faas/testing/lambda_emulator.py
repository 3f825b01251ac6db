"""An emulator of AWS Lambda's public API on loopback, running function images as real processes.

Run as ``python -m dask_faas.testing.lambda_emulator --port-file F [--account-concurrency N]`` (see
:mod:`dask_faas.testing.servers`); point boto3's ``lambda`` client at it with ``endpoint_url``.

Data plane: ``Invoke`` (``RequestResponse`` and ``DryRun``; ``Event`` is refused with a 400;
``LogType: Tail`` answers ``X-Amz-Log-Result``). Control plane, as a deploy command calls it:
``CreateFunction`` (container images only), ``GetFunction``, ``GetFunctionConfiguration``,
``UpdateFunctionCode``, ``UpdateFunctionConfiguration``, ``DeleteFunction``, ``ListFunctions`` and
``Put/Get/DeleteFunctionConcurrency``. Functions are ``Active`` and updates ``Successful`` at once.
Errors have Lambda's shapes: ``x-amzn-ErrorType: <code>``, ``{"Type": "User", "message": ...}``.

Every image runs the project's Lambda image command, ``python -m awslambdaric
function_runtime.aws_lambda.handler`` (``python`` being this interpreter), unless the function's
``ImageConfig`` gives an ``EntryPoint`` or a ``Command``. Each instance is a process of that command
in its own process group, talking to the Lambda Runtime API on its own port
(:mod:`~dask_faas.testing.lambda_runtime_api`), with a clean environment: ``PATH``, ``LANG``, ``TZ``,
``PYTHONUNBUFFERED``, a fresh ``HOME``, ``TMPDIR`` and working directory, the function's variables and
those Lambda sets (``AWS_LAMBDA_FUNCTION_NAME``, ``AWS_REGION``, ``_HANDLER``, ..., and the execution
role's credentials, here this server's own ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and
``AWS_SESSION_TOKEN``). As on Lambda, a function's variables may not set those reserved names.

Cold start per new instance, warm reuse of idle ones (most recent first), one invocation at a time
per instance; at most the function's reserved concurrency busy, or for functions without one, the
account's concurrency less all reservations, shared; beyond that 429. Limits as Lambda enforces them:
the timeout and the memory size kill the instance's process group (``Sandbox.Timedout``,
``Runtime.OutOfMemory``), a death mid-call is ``Runtime.ExitError``, a request over 6291456 bytes is
413 and a response over 6291556 bytes ``Function.ResponseSizeTooLarge``. A killed instance is
replaced on demand; updating or deleting a function retires its instances (idle ones at once, busy
ones when their call ends). SIGTERM kills every instance's process group and exits.

Fault and load knobs (``POST /_emulator/config``) are :data:`KNOBS`, as docs/platforms-wire.md
describes them; ``GET /_emulator/log`` has one record per delivery: ``request_id``, ``function``,
``instance``, ``received``, ``started``, ``ended``, ``cold``, ``outcome``.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import secrets
import select
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .lambda_runtime_api import Delivery, Fleet, Instance, Result, platform_error
from .servers import KNOBS as SHARED_KNOBS
from .servers import Controls, LoopbackHandler, LoopbackServer, publish_url, read_body

__all__ = ["KNOBS", "LambdaEmulator", "main"]

ACCOUNT_ID = "123456789012"
#: Largest Invoke request body (synchronous invocation).
MAX_REQUEST_BYTES = 6291456
#: The project's Lambda image: ENTRYPOINT and CMD.
DEFAULT_ENTRYPOINT = ("python", "-m", "awslambdaric")
DEFAULT_COMMAND = ("function_runtime.aws_lambda.handler",)
#: Variables Lambda sets and a function's configuration may not.
# fmt: off
RESERVED_VARIABLES = frozenset((
    "_HANDLER", "_X_AMZN_TRACE_ID", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE", "AWS_LAMBDA_LOG_GROUP_NAME", "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API", "LAMBDA_TASK_ROOT", "LAMBDA_RUNTIME_DIR",
))
# fmt: on
#: Fault and load knobs, with their defaults (docs/platforms-wire.md): the shared ones.
KNOBS: dict[str, Any] = dict(SHARED_KNOBS)
_ENV_REFUSED = "Lambda was unable to configure your environment variables because the environment variables "

Answer = tuple[int, dict[str, str], bytes]


class ApiError(Exception):
    """An error answer in Lambda's shape: ``x-amzn-ErrorType: <code>`` and a JSON body."""

    def __init__(self, status: int, code: str, message: str, key: str = "message", **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code = status, code
        self.headers: dict[str, str] = extra.pop("headers", {})
        self.body = {**extra, "Type": "User", key: message}


def _invalid(message: str) -> ApiError:
    return ApiError(400, "InvalidParameterValueException", message)


def _validation(value: Any, member: str, constraint: str) -> ApiError:
    message = f"Value '{value}' at '{member}' failed to satisfy constraint: Member must {constraint}"
    return ApiError(400, "ValidationException", f"1 validation error detected: {message}")


def _throttled(reason: str, retry_after: float | None) -> ApiError:
    headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
    return ApiError(429, "TooManyRequestsException", "Rate Exceeded.", Reason=reason, headers=headers)


@dataclass
class Function:
    """One function's configuration and its busy count."""

    name: str
    arn: str
    role: str
    image_uri: str
    memory_mb: int = 128
    timeout_s: int = 3
    variables: dict[str, str] = field(default_factory=dict)
    architectures: list[str] = field(default_factory=lambda: ["x86_64"])
    image_config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    last_modified: str = ""
    revision: str = ""  # a new one per update: instances are kept per revision
    reserved: int | None = None
    busy: int = 0

    def touch(self) -> str:
        """Start a new revision (RevisionId, LastModified); return the previous RevisionId."""
        now = datetime.datetime.now(datetime.UTC)
        self.last_modified = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"
        previous, self.revision = self.revision, str(uuid.uuid4())
        return previous

    def command(self) -> list[str]:
        """The instance's argv: the image's entry point and command (``python`` is this interpreter)."""
        entry = self.image_config.get("EntryPoint") or DEFAULT_ENTRYPOINT
        argv = [*entry, *(self.image_config.get("Command") or DEFAULT_COMMAND)]
        if re.fullmatch(r"python(3(\.\d+)?)?", argv[0]):
            argv[0] = sys.executable
        return argv

    def configuration(self) -> dict[str, Any]:
        """The ``FunctionConfiguration`` shape."""
        config: dict[str, Any] = {
            "FunctionName": self.name,
            "FunctionArn": self.arn,
            "Role": self.role,
            "CodeSize": 0,
            "Description": self.description,
            "Timeout": self.timeout_s,
            "MemorySize": self.memory_mb,
            "LastModified": self.last_modified,
            "CodeSha256": hashlib.sha256(self.image_uri.encode()).hexdigest(),
            "Version": "$LATEST",
            "TracingConfig": {"Mode": "PassThrough"},
            "RevisionId": self.revision,
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Image",
            "Architectures": list(self.architectures),
            "EphemeralStorage": {"Size": 512},
            "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
            "LoggingConfig": {"LogFormat": "Text", "LogGroup": f"/aws/lambda/{self.name}"},
        }
        if self.variables:
            config["Environment"] = {"Variables": dict(self.variables)}
        if self.image_config:
            config["ImageConfigResponse"] = {"ImageConfig": dict(self.image_config)}
        return config


@dataclass(frozen=True)
class Call:
    """A control-plane request: the function named in its path, its query and its JSON body."""

    name: str
    query: dict[str, str]
    request: dict[str, Any]


class LambdaEmulator:
    """The emulated account: functions, knobs, the delivery log and the fleet of instances.

    Parameters
    ----------
    account_concurrency : int
        The account's concurrency limit (Lambda's default quota is 1000).
    region : str
        The region in ARNs and in the instances' ``AWS_REGION``.
    """

    def __init__(self, account_concurrency: int = 1000, region: str = "us-east-1") -> None:
        self.account_concurrency, self.region = account_concurrency, region
        self.lock = threading.Lock()
        self.functions: dict[str, Function] = {}
        self.controls = Controls(KNOBS, self.lock)  # knobs and log, under the same lock
        self.fleet = Fleet()
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        self._role_credentials = {k: os.environ[k] for k in names if os.environ.get(k)}

    def route(
        self, method: str, path: str, query: dict[str, str], headers: Any, body: bytes | None
    ) -> Answer:
        """Answer one request (the handler holds the connection open for a ``(0, {}, b"")``)."""
        if path.startswith("/_emulator/"):
            return self._control(method, path, body)
        for verb, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if match is None or verb != method:
                continue
            function = urllib.parse.unquote(match.groupdict().get("name", ""))
            if name == "invoke":
                return self.invoke(function, query, headers, body)
            if body is None:
                raise ApiError(413, "RequestEntityTooLargeException", "Request entity too large")
            try:
                request = json.loads(body or b"{}")
            except ValueError as exc:
                raise ApiError(400, "SerializationException", f"Invalid JSON body: {exc}") from None
            status, answer = getattr(self, name)(Call(function, query, request))
            return (
                status,
                {"Content-Type": "application/json"},
                b"" if answer is None else json.dumps(answer).encode(),
            )
        raise ApiError(404, "UnknownOperationException", f"Unknown operation {method} {path}")

    def _control(self, method: str, path: str, body: bytes | None) -> Answer:
        status, answer = self.controls.route(method, path, body, health={"status": "ok"})
        return status, {"Content-Type": "application/json"}, json.dumps(answer).encode()

    # -- control plane -----------------------------------------------------------------------------

    def create_function(self, call: Call) -> tuple[int, Any]:
        """``POST /2015-03-31/functions``: CreateFunction (container images)."""
        request = call.request
        name = str(request.get("FunctionName", ""))
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise _validation(name, "functionName", "satisfy regular expression pattern: [a-zA-Z0-9-_]+")
        if request.get("PackageType", "Zip") != "Image" or not (request.get("Code") or {}).get("ImageUri"):
            raise _invalid(
                "This emulator runs container images only: give PackageType Image and Code.ImageUri."
            )
        fn = Function(name, self._arn(name), str(request.get("Role", "")), request["Code"]["ImageUri"])
        self._configure(fn, request)
        fn.touch()
        with self.lock:
            if name in self.functions:
                raise ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
            self.functions[name] = fn
            return 201, fn.configuration()

    def get_function(self, call: Call) -> tuple[int, Any]:
        """``GET /2015-03-31/functions/{name}``: GetFunction."""
        with self.lock:
            fn = self._get(call.name, call.query.get("Qualifier"))
            repository = re.sub(r"(@sha256:.*|:[^:/]*)$", "", fn.image_uri)
            digest = hashlib.sha256(fn.image_uri.encode()).hexdigest()
            code = {
                "RepositoryType": "ECR",
                "ImageUri": fn.image_uri,
                "ResolvedImageUri": f"{repository}@sha256:{digest}",
            }
            answer = {"Configuration": fn.configuration(), "Code": code}
            if fn.reserved is not None:
                answer["Concurrency"] = {"ReservedConcurrentExecutions": fn.reserved}
            return 200, answer

    def get_configuration(self, call: Call) -> tuple[int, Any]:
        """``GET /2015-03-31/functions/{name}/configuration``: GetFunctionConfiguration."""
        with self.lock:
            return 200, self._get(call.name, call.query.get("Qualifier")).configuration()

    def update_code(self, call: Call) -> tuple[int, Any]:
        """``PUT /2015-03-31/functions/{name}/code``: UpdateFunctionCode (ImageUri)."""
        if not call.request.get("ImageUri"):
            raise _invalid("Please provide ImageUri when updating a function with packageType Image.")

        def change(fn: Function) -> None:
            self._configure(fn, {k: v for k, v in call.request.items() if k == "Architectures"})
            fn.image_uri = call.request["ImageUri"]

        return self._update(call, change)

    def update_configuration(self, call: Call) -> tuple[int, Any]:
        """``PUT /2015-03-31/functions/{name}/configuration``: UpdateFunctionConfiguration."""
        return self._update(call, lambda fn: self._configure(fn, call.request))

    def delete_function(self, call: Call) -> tuple[int, Any]:
        """``DELETE /2015-03-31/functions/{name}``: DeleteFunction (204)."""
        with self.lock:
            fn = self._get(call.name)
            if call.query.get("Qualifier") not in (None, "$LATEST"):
                raise _invalid("This emulator has no versions or aliases to delete: only $LATEST.")
            del self.functions[fn.name]
        self.fleet.retire(fn.revision)
        return 204, None

    def list_functions(self, call: Call) -> tuple[int, Any]:
        """``GET /2015-03-31/functions``: ListFunctions (``Marker``/``MaxItems`` pages)."""
        start = int(call.query.get("Marker") or 0)
        count = max(1, min(int(call.query.get("MaxItems") or 50), 50))
        with self.lock:
            names = sorted(self.functions)
            page = [self.functions[n].configuration() for n in names[start : start + count]]
        answer: dict[str, Any] = {"Functions": page}
        if start + count < len(names):
            answer["NextMarker"] = str(start + count)
        return 200, answer

    def put_concurrency(self, call: Call) -> tuple[int, Any]:
        """``PUT /2017-10-31/functions/{name}/concurrency``: PutFunctionConcurrency."""
        value = call.request.get("ReservedConcurrentExecutions")
        if not isinstance(value, int) or value < 0:
            raise _invalid("ReservedConcurrentExecutions must be an integer >= 0.")
        with self.lock:
            fn = self._get(call.name)
            others = sum(f.reserved or 0 for f in self.functions.values() if f is not fn)
            minimum = min(100, self.account_concurrency // 10)
            if self.account_concurrency - others - value < minimum:
                raise _invalid(
                    "Specified ReservedConcurrentExecutions for function decreases account's "
                    f"UnreservedConcurrentExecution below its minimum value of [{minimum}]."
                )
            fn.reserved = value
        return 200, {"ReservedConcurrentExecutions": value}

    def delete_concurrency(self, call: Call) -> tuple[int, Any]:
        """``DELETE /2017-10-31/functions/{name}/concurrency``: DeleteFunctionConcurrency."""
        with self.lock:
            self._get(call.name).reserved = None
        return 204, None

    def get_concurrency(self, call: Call) -> tuple[int, Any]:
        """``GET /2019-09-30/functions/{name}/concurrency``: GetFunctionConcurrency."""
        with self.lock:
            fn = self._get(call.name)
            return 200, {} if fn.reserved is None else {"ReservedConcurrentExecutions": fn.reserved}

    def _update(self, call: Call, change: Callable[[Function], None]) -> tuple[int, Any]:
        with self.lock:
            fn = self._get(call.name)
            if call.request.get("RevisionId") not in (None, fn.revision):
                raise ApiError(
                    412,
                    "PreconditionFailedException",
                    "The Revision Id provided does not match the latest Revision Id. "
                    "Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
                )
            change(fn)
            previous = fn.touch()
            answer = fn.configuration()
        self.fleet.retire(previous)
        return 200, answer

    @staticmethod
    def _configure(fn: Function, request: dict[str, Any]) -> None:
        """Validate and apply the configuration fields of a create or an update."""
        memory, timeout = request.get("MemorySize", fn.memory_mb), request.get("Timeout", fn.timeout_s)
        for member, value, low, high in (("MemorySize", memory, 128, 10240), ("Timeout", timeout, 1, 900)):
            if not isinstance(value, int) or not low <= value <= high:
                raise _invalid(
                    f"'{member}' value failed to satisfy constraint: "
                    f"Member must have value between {low} and {high} (got {value})."
                )
        architectures = request.get("Architectures") or fn.architectures
        if architectures not in (["x86_64"], ["arm64"]):
            raise _validation(architectures, "architectures", "satisfy enum value set: [x86_64, arm64]")
        variables = fn.variables
        if "Environment" in request:
            given = (request["Environment"] or {}).get("Variables") or {}
            variables = {str(k): str(v) for k, v in given.items()}
            if reserved := sorted(set(variables) & RESERVED_VARIABLES):
                raise _invalid(
                    f"{_ENV_REFUSED}you have provided contains reserved keys that are currently not "
                    f"supported for modification. Reserved keys used in this request: {','.join(reserved)}"
                )
            if sum(len(k) + len(v) for k, v in variables.items()) > 4096:
                raise _invalid(
                    f"{_ENV_REFUSED}you have provided exceeded the 4KB limit. "
                    f"String measured: {json.dumps(variables)}"
                )
        fn.memory_mb, fn.timeout_s, fn.variables, fn.architectures = memory, timeout, variables, architectures
        if "ImageConfig" in request:
            fn.image_config = {k: v for k, v in (request["ImageConfig"] or {}).items() if v}
        fn.role = str(request.get("Role", fn.role))
        fn.description = str(request.get("Description", fn.description))

    def _arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{name}"

    def _get(self, raw: str, qualifier: str | None = None) -> Function:
        """The function named by a name, a partial or a full ARN, with an optional qualifier."""
        parts = raw.split(":")
        if raw.startswith("arn:"):
            parts = parts[6:]
        elif len(parts) >= 3 and parts[1] == "function":
            parts = parts[2:]
        name, qualifier = parts[0] if parts else "", qualifier or (parts[1] if len(parts) > 1 else None)
        fn = self.functions.get(name)
        if fn is None or qualifier not in (None, "$LATEST"):
            arn = self._arn(name) + (f":{qualifier}" if qualifier else "")
            raise ApiError(404, "ResourceNotFoundException", f"Function not found: {arn}", key="Message")
        return fn

    # -- data plane --------------------------------------------------------------------------------

    def invoke(self, name: str, query: dict[str, str], headers: Any, body: bytes | None) -> Answer:
        """``POST /2015-03-31/functions/{name}/invocations``."""
        received, request_id = time.time(), str(uuid.uuid4())
        qualifier = query.get("Qualifier")
        with self.lock:
            fn = self._get(name, qualifier)
        if body is None:
            message = (
                f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
            )
            raise ApiError(413, "RequestEntityTooLargeException", message)
        kind = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        if kind not in ("RequestResponse", "Event", "DryRun"):
            raise _validation(
                kind, "invocationType", "satisfy enum value set: [Event, RequestResponse, DryRun]"
            )
        if kind == "Event":
            raise _invalid("InvocationType Event is not supported by this emulator: use RequestResponse.")
        try:
            json.loads(body or b"{}")
        except ValueError as exc:
            message = f"Could not parse request body into json: Could not parse payload into json: {exc}"
            raise ApiError(400, "InvalidRequestContentException", message) from None
        answer = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
        if kind == "DryRun":
            return 204, answer, b""
        knobs = self._take_knobs()
        if knobs["throttle"]:
            raise _throttled("ReservedFunctionConcurrentInvocationLimitExceeded", knobs["retry_after_s"])
        if knobs["lose"]:
            self._record(request_id, fn, None, received, None, None, False, "lost")
            return 0, {}, b""
        self._acquire(fn, knobs["retry_after_s"])
        try:
            if knobs["load_delay_s"] is not None:
                started = time.time()
                time.sleep(knobs["load_delay_s"])
                self._record(request_id, fn, None, received, started, time.time(), False, "load")
                result, log = Result("ok", b'{"dask_faas": ""}'), ""
            else:
                arn = fn.arn + (f":{qualifier}" if qualifier else "")
                result, log = self._deliver(fn, request_id, body or b"{}", arn, received, knobs)
        finally:
            with self.lock:
                fn.busy -= 1
        answer["Content-Type"] = result.content_type
        if result.function_error:
            answer["X-Amz-Function-Error"] = "Unhandled"
        if headers.get("X-Amz-Log-Type") == "Tail":
            answer["X-Amz-Log-Result"] = base64.b64encode(log.encode()).decode()
        return 200, answer, result.payload

    def _take_knobs(self) -> dict[str, Any]:
        """The knobs for one invocation: the counted ones it consumes (``True``), and the others."""
        counted = ("throttle", "lose", "duplicate", "kill")
        with self.lock:
            current = self.controls.knobs
            knobs = {**current, **dict.fromkeys(counted, False)}
            for knob in counted:
                if current[knob] > 0:
                    current[knob] -= 1
                    knobs[knob] = True
                    if knob in ("throttle", "lose"):  # the invocation goes no further
                        break
            return knobs

    def _acquire(self, fn: Function, retry_after: float | None) -> None:
        """Take a concurrency slot for ``fn`` or raise the 429."""
        with self.lock:
            if fn.reserved is not None:
                if fn.busy >= min(fn.reserved, self.account_concurrency):
                    raise _throttled("ReservedFunctionConcurrentInvocationLimitExceeded", retry_after)
            else:
                functions = self.functions.values()
                reserved = sum(f.reserved for f in functions if f.reserved is not None)
                busy = sum(f.busy for f in functions if f.reserved is None)
                if busy >= self.account_concurrency - reserved:
                    raise _throttled("ConcurrentInvocationLimitExceeded", retry_after)
            fn.busy += 1

    def _deliver(
        self, fn: Function, request_id: str, event: bytes, arn: str, received: float, knobs: dict[str, Any]
    ) -> tuple[Result, str]:
        """Deliver to a warm or a new instance of ``fn``'s current revision (to two of them for the
        duplicate knob); the first delivery's result and log tail."""
        if knobs["latency_s"]:
            time.sleep(knobs["latency_s"])
        with self.lock:
            revision, memory, timeout = fn.revision, fn.memory_mb, fn.timeout_s
            command, environment = fn.command(), self._environment(fn)
        deliveries = []
        for _ in range(2 if knobs["duplicate"] else 1):  # both taken first: two distinct instances
            delivery = Delivery(request_id, event, arn, timeout)
            try:
                instance, cold = self.fleet.take(revision, fn.name, command, environment)
            except OSError as exc:
                message = f"{delivery.label} fork/exec {command[0]}: {exc.strerror or exc}"
                delivery.settle(platform_error("error", "Runtime.InvalidEntrypoint", message))
                instance, cold = None, True
            deliveries.append((delivery, instance, cold))

        def run(
            delivery: Delivery, instance: Instance | None, cold: bool, kill_after: Any, copy: bool
        ) -> None:
            if instance is not None:
                self.fleet.run(instance, delivery, memory, kill_after)
                with self.lock:
                    current = self.functions.get(fn.name) is fn and fn.revision == revision
                self.fleet.release(revision, instance, keep=current)
            assert delivery.result is not None
            outcome = "duplicate" if copy else delivery.result.outcome
            instance_id = None if instance is None else instance.id
            self._record(
                request_id, fn, instance_id, received, delivery.started, delivery.ended, cold, outcome
            )

        if len(deliveries) == 2:
            threading.Thread(target=run, args=(*deliveries[1], None, True), daemon=True).start()
        first = deliveries[0][0]
        run(*deliveries[0], knobs["kill_after_s"] if knobs["kill"] else None, False)
        assert first.result is not None
        return first.result, first.log_tail()

    def _environment(self, fn: Function) -> dict[str, str]:
        base = {
            "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PYTHONUNBUFFERED": "1",
        }
        platform = {
            "AWS_LAMBDA_FUNCTION_NAME": fn.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"{time.strftime('%Y/%m/%d')}/[$LATEST]{secrets.token_hex(16)}",
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "_HANDLER": next(iter(fn.image_config.get("Command") or DEFAULT_COMMAND), ""),
            **self._role_credentials,
        }
        return {**base, **fn.variables, **platform}

    def _record(
        self,
        request_id: str,
        fn: Function,
        instance: str | None,
        received: float,
        started: float | None,
        ended: float | None,
        cold: bool,
        outcome: str,
    ) -> None:
        record = {"request_id": request_id, "function": fn.name, "instance": instance, "received": received}
        record.update(started=started, ended=ended, cold=cold, outcome=outcome)
        self.controls.record(record)


_FUNCTION = r"/(?P<name>[^/]+)"
_ROUTES = [
    (verb, re.compile(pattern), name)
    for verb, pattern, name in (
        ("POST", rf"/2015-03-31/functions{_FUNCTION}/invocations/?", "invoke"),
        ("POST", r"/2015-03-31/functions/?", "create_function"),
        ("GET", r"/2015-03-31/functions/?", "list_functions"),
        ("GET", rf"/2015-03-31/functions{_FUNCTION}/?", "get_function"),
        ("DELETE", rf"/2015-03-31/functions{_FUNCTION}/?", "delete_function"),
        ("GET", rf"/2015-03-31/functions{_FUNCTION}/configuration/?", "get_configuration"),
        ("PUT", rf"/2015-03-31/functions{_FUNCTION}/configuration/?", "update_configuration"),
        ("PUT", rf"/2015-03-31/functions{_FUNCTION}/code/?", "update_code"),
        ("PUT", rf"/2017-10-31/functions{_FUNCTION}/concurrency/?", "put_concurrency"),
        ("DELETE", rf"/2017-10-31/functions{_FUNCTION}/concurrency/?", "delete_concurrency"),
        ("GET", rf"/2019-09-30/functions{_FUNCTION}/concurrency/?", "get_concurrency"),
    )
]


class _Server(LoopbackServer):
    emulator: LambdaEmulator
    stopping = False


class _Handler(LoopbackHandler):
    wbufsize = 1 << 16  # headers and a small body leave in one segment (flushed after each request)
    server: _Server

    def _handle(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            body = read_body(self, MAX_REQUEST_BYTES)
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        try:
            query = dict(urllib.parse.parse_qsl(url.query))
            status, headers, data = self.server.emulator.route(
                self.command, url.path, query, self.headers, body
            )
        except ApiError as exc:
            headers = {"x-amzn-ErrorType": exc.code, **exc.headers}
            status, data = exc.status, json.dumps(exc.body).encode()
            headers["Content-Type"] = "application/json"
        except Exception as exc:
            traceback.print_exc()
            error = {"Type": "Service", "Message": f"{type(exc).__name__}: {exc}"}
            status, data = 500, json.dumps(error).encode()
            headers = {"x-amzn-ErrorType": "ServiceException", "Content-Type": "application/json"}
        if status == 0:  # a lost invocation
            self._hold()
            return
        headers.setdefault("x-amzn-RequestId", str(uuid.uuid4()))
        self.send_answer(status, headers.items(), data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def _hold(self) -> None:
        """Keep the request open and unanswered until the client closes its connection (or we stop)."""
        self.close_connection = True
        while not self.server.stopping:
            if select.select([self.connection], [], [], 0.5)[0]:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return
                except OSError:
                    return
                time.sleep(0.5)


def main(argv: list[str] | None = None) -> None:
    """Serve the emulator on a free 127.0.0.1 port until SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m dask_faas.testing.lambda_emulator", description=__doc__)
    parser.add_argument("--port-file", required=True, help="where to write the base URL once serving")
    parser.add_argument(
        "--account-concurrency", type=int, default=1000, help="the account's concurrency limit"
    )
    parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    args = parser.parse_args(argv)
    emulator = LambdaEmulator(args.account_concurrency, args.region)
    server = _Server(_Handler)
    server.emulator = emulator
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, name="serve", daemon=True).start()
    url = server.url
    publish_url(args.port_file, url)
    print(
        f"[emulator] AWS Lambda emulator on {url}, account concurrency {args.account_concurrency}", flush=True
    )
    while not stop.wait(0.5):
        pass
    print("[emulator] stopping: killing every instance", flush=True)
    server.stopping = True
    emulator.fleet.close()
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
