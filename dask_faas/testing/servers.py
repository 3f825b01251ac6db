"""Start and steer the platform emulators, each a real server process on a free 127.0.0.1 port.

An emulator is a module of :mod:`dask_faas.testing` run as ``python -m <module> --port-file PATH
[options]``: it binds 127.0.0.1 on a free port, writes its base URL to ``PATH`` once it accepts
connections, and serves until SIGTERM. Besides the platform's public API, every emulator answers
three control routes (never part of any platform's API, used by tests and benchmarks only):

``GET /_emulator/health``
    200 once the server is up.
``POST /_emulator/config``
    A JSON object of fault and load knobs, merged into the current ones (see each emulator's
    ``KNOBS``); ``{"reset": true}`` restores the defaults and clears the log.
``GET /_emulator/log``
    A JSON list, one object per delivery of an invocation to a function instance (request id,
    instance, times of receipt, start and end on the emulator's ``time.time()`` clock, outcome).

:func:`start_emulator` starts one and returns an :class:`Emulator` handle.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Any

from .s3 import LOOPBACK_AWS_ENV, stop_process

__all__ = ["Emulator", "start_emulator"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class Emulator:
    """A running emulator process.

    Parameters
    ----------
    process : subprocess.Popen
        The server process.
    url : str
        Its base URL, ``http://127.0.0.1:<port>``.
    log_path : str
        Where its output goes.
    """

    def __init__(self, process: subprocess.Popen[bytes], url: str, log_path: str) -> None:
        self.process, self.url, self.log_path = process, url, log_path

    def configure(self, **knobs: Any) -> dict[str, Any]:
        """Merge ``knobs`` into the emulator's fault and load knobs; return the knobs now in force."""
        return self._request("POST", "/_emulator/config", knobs)

    def reset(self) -> None:
        """Default knobs, empty log (function instances already running stay warm)."""
        self._request("POST", "/_emulator/config", {"reset": True})

    def log(self) -> list[dict[str, Any]]:
        """One record per delivery of an invocation to an instance, oldest first."""
        return self._request("GET", "/_emulator/log")

    def output(self) -> str:
        """What the server process has printed so far (for failure messages)."""
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        """Stop the server and, through its own shutdown, every instance it started."""
        stop_process(self.process)

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with _OPENER.open(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


def start_emulator(
    module: str,
    *args: str,
    log_path: str | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Emulator:
    """Start ``python -m module --port-file F *args`` and wait until it answers its health route.

    Parameters
    ----------
    module : str
        The emulator's module, e.g. ``"dask_faas.testing.lambda_emulator"``.
    *args : str
        Its command-line options.
    log_path : str, optional
        File for its output (a fresh temporary file by default; never an unread pipe).
    env : dict, optional
        Extra environment variables (on top of this process's and the loopback AWS settings).

    Raises
    ------
    RuntimeError
        If it exits or does not answer within ``timeout_s``, with the end of its output.
    """
    workdir = tempfile.mkdtemp(prefix="dask-faas-emulator-")
    port_file = os.path.join(workdir, "url")
    log_path = log_path or os.path.join(workdir, "output.log")
    environment = {**os.environ, **LOOPBACK_AWS_ENV, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, "--port-file", port_file, *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,  # the terminal's Ctrl-C goes to the tests, not the emulator
        )
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with open(port_file) as f:
                url = f.read().strip()
        except FileNotFoundError:
            url = ""
        if url:
            try:
                _OPENER.open(url + "/_emulator/health", timeout=2).close()
                return Emulator(process, url, log_path)
            except (OSError, urllib.error.URLError):
                pass
        time.sleep(0.05)
    code = process.poll()
    stop_process(process)
    with open(log_path, errors="replace") as f:
        output = f.read()[-4000:]
    state = "did not answer" if code is None else f"exited with code {code}"
    raise RuntimeError(f"emulator {module} {state} within {timeout_s:.0f}s; output:\n{output}")
