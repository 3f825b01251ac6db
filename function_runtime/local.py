"""Entry point of the local warm pool: one process, many invocations, framed over pipes.

Started by :class:`dask_faas.backends.compute.local.LocalBackend` as ``python -m function_runtime.local``
with the deployment's environment (signing key, storage credentials). It reads frames
``<8-byte big-endian length><4-byte big-endian memory_mb><payload>`` from stdin (``memory_mb`` is
the call's memory limit, 0 for none: the runtime enforces it in this process, see
:class:`dask_faas.worker.MemoryLimit`) and answers each with a frame ``<8-byte length><reply>`` on
the original stdout, whose first byte says ``0`` (a sealed response follows) or ``1`` (the runtime
itself failed, an error text follows, as a platform's "unhandled function error"). The function's
own prints go to stderr, so they cannot corrupt the protocol (and, while a call runs, into its
response too). Once started (its imports done) it writes one byte ``R``, so that the pool starts
the first call's time limit only then. A frame of length 0 (or the end of stdin) stops it. The
platform's request id of an invocation is ``<pid>-<n>``, its sequence number in the process.

SIGINT is ignored. A terminal's Ctrl-C goes to its whole foreground process group, which includes
the pool, but a function (as on any remote platform) is stopped by its platform, not by the client's
terminal: the client's interrupt closes the pool, which ends this process (end of stdin, SIGTERM).
"""

from __future__ import annotations

import os
import signal
import struct
import sys

_HEADER = struct.Struct(">QI")  # payload length, the call's memory_mb (0: none)
_LENGTH = struct.Struct(">Q")
_READY = b"R"  # written once the process can take calls


def _read_exactly(fd: int, n: int) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 24))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    """Serve invocations until stdin closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # before the imports, which take most of the start-up
    from dask_faas.worker import Runtime

    runtime = Runtime.from_environ()
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # print() inside functions goes to stderr
    sys.stdout = sys.stderr
    stdin_fd = sys.stdin.fileno()
    try:
        _write_all(reply_fd, _READY)  # started: the first call's time limit begins now
    except BrokenPipeError:  # the pool closed before this process started: nothing to serve
        return
    sequence = 0  # the request id of an invocation is <pid>-<sequence>
    while True:
        header = _read_exactly(stdin_fd, _HEADER.size)
        if header is None:
            return
        length, memory_mb = _HEADER.unpack(header)
        if length == 0:
            return
        payload = _read_exactly(stdin_fd, length)
        if payload is None:
            return
        sequence += 1
        try:
            request_id = f"{os.getpid()}-{sequence}"
            reply = b"\0" + runtime.handle(payload, memory_mb=memory_mb or None, request_id=request_id)
        except Exception as exc:  # a payload the runtime refuses: answer, stay warm
            reply = b"\1" + f"{type(exc).__name__}: {exc}".encode()
        try:
            _write_all(reply_fd, _LENGTH.pack(len(reply)) + reply)
        except BrokenPipeError:  # the pool closed while this call ran: nobody waits for the answer
            return


if __name__ == "__main__":
    main()
