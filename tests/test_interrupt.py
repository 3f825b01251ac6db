"""Ctrl-C during ``with FaasExecutor(...) as ex:`` ends the driver at once and leaves nothing behind.

Each test runs a real driver script in its own session (so it leads its own process group, as a
shell job does), waits until its calls are running in the local pool, and interrupts it with SIGINT:
sent to the whole group, as a terminal's Ctrl-C is, or to the driver alone. Then the driver must
have exited within a bound measured from the signal, the job's storage prefix must be empty, and no
process of the driver's group (the function processes included) may be left. The old failures were
intermittent (a release on a background thread killed by the interpreter's exit), so every scenario
runs several times.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import process_table

from dask_faas.backends.storage.local import LocalStorage

#: Seconds from the signal to the driver's exit. The target is 1 s; the old behaviour took about
#: 2 s per busy function process (4 s with 2 workers, 8 s with 4).
EXIT_BOUND_S = 3.0

DRIVER = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from dask_faas import FaasExecutor

    def busy(markers, index):
        Path(markers, f"{index}-{os.getpid()}").write_text("running")
        time.sleep(30)
        return index

    root, markers, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with FaasExecutor(workers=workers, storage="local", local_storage={"root": root}) as ex:
        print(ex.job_prefix, flush=True)
        futures = [ex.submit(busy, markers, i) for i in range(workers)]
        for future in futures:
            future.result()
""")


def _running_in_group(pgid: int) -> list[int]:
    table = process_table()
    return sorted(pid for pid, (state, _, group) in table.items() if group == pgid and state != "Z")


def _children(parent: int) -> list[int]:
    return [pid for pid, (_, ppid, _) in process_table().items() if ppid == parent]


def _running(pids: list[int]) -> list[int]:
    table = process_table()
    return [pid for pid in pids if pid in table and table[pid][0] != "Z"]


def _read_line(proc: subprocess.Popen[str], timeout_s: float, stderr: Path) -> str:
    """The driver's first line of output (its job prefix and pool pids)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
    line = proc.stdout.readline() if ready else ""
    assert line, f"the driver printed nothing within {timeout_s:g} s; stderr:\n{stderr.read_text()}"
    return line


def _wait_for_markers(markers: Path, count: int, proc: subprocess.Popen[str], stderr: Path) -> None:
    deadline = time.monotonic() + 60
    while len(list(markers.iterdir())) < count:
        assert proc.poll() is None, f"the driver exited early ({proc.returncode}):\n{stderr.read_text()}"
        assert time.monotonic() < deadline, f"only {len(list(markers.iterdir()))} of {count} calls started"
        time.sleep(0.02)


@pytest.fixture
def driver_group() -> Iterator[list[int]]:
    """Collects the process groups of the drivers a test starts; kills what is left at teardown."""
    groups: list[int] = []
    yield groups
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


@pytest.mark.parametrize("run", range(5))
@pytest.mark.parametrize("workers", [2, 4])
@pytest.mark.parametrize("target", ["group", "driver"])
def test_interrupt_exits_at_once_and_leaves_nothing_behind(
    target: str, workers: int, run: int, tmp_path: Path, driver_group: list[int]
) -> None:
    root, markers = tmp_path / "storage", tmp_path / "markers"
    root.mkdir()
    markers.mkdir()
    script, stderr = tmp_path / "driver.py", tmp_path / "stderr.txt"
    script.write_text(DRIVER)
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(root), str(markers), str(workers)],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=tmp_path,
            start_new_session=True,
        )
    driver_group.append(proc.pid)  # a session leader's group id is its pid
    try:
        prefix = _read_line(proc, 60, stderr).strip()
        _wait_for_markers(markers, workers, proc, stderr)
        # the function processes: the driver's children, and the ones that wrote the markers
        pool = sorted({*_children(proc.pid), *(int(m.name.split("-")[1]) for m in markers.iterdir())})
        storage = LocalStorage(root)
        stored = [key for key, _ in storage.list(prefix)]
        assert any(key.startswith(f"{prefix}/fn/") for key in stored), f"the job stored no function: {stored}"

        signalled = time.monotonic()
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the driver did not exit within 30 s of SIGINT; stderr:\n{stderr.read_text()}")
        took = time.monotonic() - signalled

        left = [key for key, _ in storage.list(prefix)]
        files = [str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()]
        survivors = _running_in_group(proc.pid)
        pool_left = _running(pool)
        report = f"took {took:.2f} s, exit code {proc.returncode}; stderr:\n{stderr.read_text()}"
        assert took <= EXIT_BOUND_S, f"the driver exited too late (bound {EXIT_BOUND_S} s): {report}"
        assert not left, f"objects left under the job prefix {prefix}: {left}; {report}"
        assert not files, f"files left in the storage root: {files}; {report}"
        assert not survivors, f"processes of the driver's group left running: {survivors}; {report}"
        assert not pool_left, f"function processes left running: {pool_left}; {report}"
        assert proc.returncode != 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
