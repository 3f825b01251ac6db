"""``dask-faas hello``: one trivial call through the configured backend and storage.

:func:`platform_facts` is the function that runs remotely (this module imports only the standard
library at import time, so a function imports it cheaply, by reference: the runtime image has
dask-faas); :func:`hello` builds a :class:`~dask_faas.FaasExecutor` from the configuration, calls
it once and reports its answer and the round trip.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["hello", "platform_facts"]

_calls = 0
_calls_lock = threading.Lock()
#: Variables that tell which platform a function runs on, and what they are called there.
_PLATFORM_HINTS = (
    ("AWS_LAMBDA_FUNCTION_NAME", "aws_lambda"),
    ("__OW_ACTION_NAME", "openwhisk"),
    ("K_SERVICE", "knative"),
)


def platform_facts() -> dict[str, Any]:
    """Where this call ran: Python, process id, host, platform, and whether the process was warm.

    ``warm`` is true when this process had run :func:`platform_facts` before (a reused instance).
    """
    global _calls
    with _calls_lock:
        _calls += 1
        calls = _calls
    found = next(((name, env) for env, name in _PLATFORM_HINTS if os.environ.get(env)), None)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.machine()}",
        "platform": found[0] if found else "local",
        "function": os.environ.get(found[1]) if found else None,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "warm": calls > 1,
        "calls_in_process": calls,
    }


def hello(settings: dict[str, Any], out: Callable[[str], None] = print) -> int:
    """Run :func:`platform_facts` once through ``FaasExecutor()``; print it and the latency.

    Returns
    -------
    int
        0 when the call came back, 1 (after printing why, on standard error) otherwise.
    """
    from ..exceptions import ConfigError
    from ..executor import FaasExecutor
    from . import registry

    backend = settings["backend"]
    try:
        target = "the local pool" if backend == "local" else registry.load(backend).target(settings)
    except ConfigError:  # a backend without a deployer
        target = f"backend {backend!r}"
    bound = float(settings["timeout-s"]) + 4 * float(settings["start-deadline-s"]) + 60
    started = time.perf_counter()
    try:
        with FaasExecutor() as executor:
            ready = time.perf_counter()
            future = executor.submit(platform_facts)
            if not cf.wait([future], timeout=bound).done:
                future.cancel()
                print(f"dask-faas hello: {target} ({backend}): no answer within {bound:g} s", file=sys.stderr)
                return 1
            facts = future.result()
            answered = time.perf_counter()
    except Exception as exc:
        print(f"dask-faas hello: {target} ({backend}): {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    where = f" ({facts['function']})" if facts.get("function") else ""
    out(
        f"hello from {target} ({backend}): Python {facts['python']} ({facts['implementation']}, "
        f"{facts['system']}) on {facts['platform']}{where}, pid {facts['pid']}, "
        f"{'warm' if facts['warm'] else 'cold'} start"
    )
    out(
        f"round trip: {(answered - ready) * 1000:.1f} ms (the executor started in "
        f"{(ready - started) * 1000:.1f} ms)"
    )
    out(json.dumps(facts, sort_keys=True))
    return 0
