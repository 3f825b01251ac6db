"""Shared fixtures: real executors on loopback, and the checks every test must leave clean.

After every test: no function process started by the test is still running, and every executor the
test made through ``make_executor`` has shut down with its job prefix empty.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from typing import Any

import dask
import pytest

from dask_faas.testing import instances

pytest_plugins = ["fixtures_s3", "fixtures_platforms"]


@pytest.fixture(autouse=True, scope="session")
def logs_in_a_temporary_directory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The job logs of the session go to a directory of its own, not the user's ``~/.cache``
    (``faas.logs.directory``, here and in the subprocesses the tests start)."""
    directory = tmp_path_factory.mktemp("job-logs")
    before = os.environ.get("DASK_FAAS__LOGS__DIRECTORY")
    os.environ["DASK_FAAS__LOGS__DIRECTORY"] = str(directory)
    with dask.config.set({"faas.logs.directory": str(directory)}):
        yield directory
    if before is None:
        del os.environ["DASK_FAAS__LOGS__DIRECTORY"]
    else:
        os.environ["DASK_FAAS__LOGS__DIRECTORY"] = before


def process_table() -> dict[int, tuple[str, int, int]]:
    """``pid -> (state, parent pid, process group)`` of every process, from /proc."""
    return instances.process_table()


def child_pids() -> set[int]:
    """Live (non-zombie) child processes of this test process, from /proc."""
    me = os.getpid()
    return {
        pid
        for pid, (state, parent, _) in process_table().items()
        if parent == me and state != "Z" and not _is_test_server(str(pid))
    }


def hold_memory(megabytes: int) -> int:
    """Inside a function: keep ``megabytes`` resident (every page touched) for 30 s."""
    block = bytearray(megabytes * 2**20)
    for i in range(0, len(block), 4096):  # touch every page: resident, not just reserved
        block[i] = 1
    time.sleep(30)
    return len(block)


def _is_test_server(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    return b"moto.server" in cmdline or b"dask_faas.testing." in cmdline


@pytest.fixture(autouse=True, scope="session")
def std_resource_tracker() -> None:
    """The standard library's resource tracker, started before any test looks for the processes it
    leaves: the tests that run stdlib ``multiprocessing`` as an oracle start it, and it lives on
    with the test process, like the test servers."""
    resource_tracker.ensure_running()


@pytest.fixture(autouse=True)
def no_leftover_processes(std_resource_tracker: None) -> Iterator[None]:
    """Fail a test that leaves a process of its own running (after a short grace period)."""
    before = child_pids()
    yield
    deadline = time.monotonic() + 10
    while (left := child_pids() - before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left running after the test: {sorted(left)}"


@pytest.fixture
def storage_root(tmp_path: Path) -> Path:
    """Root directory of a local storage for one test."""
    root = tmp_path / "storage"
    root.mkdir()
    return root


@pytest.fixture
def make_executor(storage_root: Path) -> Iterator[Callable[..., Any]]:
    """Build ``FaasExecutor``s (local pool of 2, local storage by default); check their cleanup.

    At teardown every executor is shut down, and its job prefix must be empty.
    """
    from dask_faas import FaasExecutor
    from dask_faas.backends.storage import storage_from_settings

    made: list[FaasExecutor] = []

    def make(**settings: Any) -> FaasExecutor:
        settings.setdefault("workers", 2)
        if settings.get("storage", "local") == "local":
            settings.setdefault("local_storage", {"root": str(storage_root)})
        executor = FaasExecutor(**settings)
        made.append(executor)
        return executor

    yield make
    for executor in made:
        executor.shutdown(wait=True, cancel_futures=True)
        storage = storage_from_settings(executor.settings)  # the executor closed its own
        left = list(storage.list(executor.job_prefix))
        assert not left, f"job prefix {executor.job_prefix} not empty after shutdown: {left[:5]}"


@pytest.fixture
def executor(make_executor: Callable[..., Any]) -> Any:
    """A ``FaasExecutor`` on the embedded default (2 warm processes, local storage)."""
    return make_executor()
