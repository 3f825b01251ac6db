"""Dask's own test modules, with dask's synchronous scheduler routed through ``faas_get``.

The modules ship inside the dask wheel; ``dask_faas.testing.pytest_plugin --dask-on-faas`` runs every
compute that uses the synchronous scheduler, ``dask.get``, or no explicit scheduler as function
invocations on one local pool. They run in a subprocess: from a scratch directory (pytest would
otherwise load this directory's conftest.py for its fixtures), with an empty ini file (``-c``) and
the site-packages directory as rootdir, so that dask's own ``conftest.py`` applies and ours does not.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dask_faas.testing.pytest_plugin import EXCLUDED

MODULES = (
    "dask.tests.test_delayed",
    "dask.bag.tests.test_bag",
    "dask.bag.tests.test_text",
    "dask.array.tests.test_reductions",
)

#: Tests that fail under dask's own scheduler as well, with this invocation: not dask-faas's business.
BASELINE_FAILURES = {
    "dask/array/tests/test_reductions.py::test_nanquantile_all_nan": (
        "expects numpy's RuntimeWarning to be raised as an error, which needs dask's own pytest "
        "configuration (filterwarnings = error:::numpy[.*]), not shipped in the wheel"
    ),
}


def dask_suite_command(*extra: str) -> list[str]:
    """The pytest command that runs :data:`MODULES` on dask-faas (``extra`` goes before the files)."""
    files = [importlib.util.find_spec(module).origin for module in MODULES]
    site = str(Path(importlib.util.find_spec("dask").origin).parent.parent)
    deselect = [f"--deselect={nodeid}" for nodeid in BASELINE_FAILURES]
    return [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        os.devnull,
        "--rootdir",
        site,
        "-p",
        "no:cacheprovider",
        "-p",
        "dask_faas.testing.pytest_plugin",
        "--dask-on-faas",
        "--timeout=300",
        "-q",
        "-rfE",
        *deselect,
        *extra,
        *files,
    ]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_dask_suites_pass_on_faas(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = subprocess.run(
        dask_suite_command(), cwd=tmp_path, capture_output=True, text=True, timeout=1100, check=False
    )
    seconds = time.monotonic() - started
    # stdout holds pytest's report; stderr also gets what functions print (numpy warnings, ...)
    tail = "\n".join(proc.stdout.splitlines()[-40:]) + "\nstderr:\n" + proc.stderr[-1500:]
    assert proc.returncode == 0, f"dask's suites failed on dask-faas (exit {proc.returncode}):\n{tail}"
    summary = re.search(
        r"dask-on-faas: (\d+) computes, (\d+) invocations, (\d+) fallbacks to get_sync, "
        r"(\d+) tests excluded, storage clean",
        proc.stdout,
    )
    assert summary, f"no clean dask-on-faas summary line:\n{tail}"
    computes, invocations, _, excluded = map(int, summary.groups())
    assert computes > 1000 and invocations >= computes, summary[0]
    assert excluded == len(EXCLUDED), f"stale entries in EXCLUDED? {summary[0]}"
    outcome = re.search(r"(\d+) passed", proc.stdout)
    assert outcome and int(outcome[1]) > 800, tail
    print(f"{summary[0]}; {outcome[0]} in {seconds:.0f} s")


_ROUTING_TESTS = """
import os

import dask
import dask.bag as db
import pytest
import dask.local
from dask import delayed


def inc(x):
    return x + 1


def computes(request):
    session = request.config.pluginmanager.get_plugin("dask-on-faas-session")
    if session is None:
        pytest.skip("without --dask-on-faas")
    return session.router.computes


def test_sync_names_and_defaults_run_in_functions(request):
    before = computes(request)
    for name in ("sync", "synchronous", "single-threaded"):
        assert delayed(os.getpid)().compute(scheduler=name) != os.getpid()
    with dask.config.set(scheduler="sync"):
        assert delayed(os.getpid)().compute() != os.getpid()
    assert delayed(os.getpid)().compute() != os.getpid()  # delayed's default: threads
    assert db.from_sequence([1, 2], npartitions=2).map(inc).sum().compute() == 5  # bag's: processes
    assert computes(request) - before == 6


def test_explicit_threads_untouched(request):
    before = computes(request)
    assert delayed(os.getpid)().compute(scheduler="threads") == os.getpid()
    assert computes(request) == before


def test_get_sync_callers(request):
    before = computes(request)
    dsk = {"x": 1, "y": (inc, "x"), ("z", 0): (sum, ["x", "y"])}
    assert dask.get(dsk, "y") == 2
    assert dask.get(dsk, [["y"], [("z", 0)]]) == ((2,), (3,))
    assert dask.local.get_sync(dsk, "y", num_workers=1, rerun_exceptions_locally=False) == 2
    cache = {"x": 10}
    assert dask.local.get_sync(dsk, ["y", ("z", 0)], cache=cache) == (11, 21)
    assert cache["y"] == 11
    assert computes(request) - before == 4


def test_without_option_nothing_changes(request):
    if request.config.pluginmanager.get_plugin("dask-on-faas-session") is None:
        assert delayed(os.getpid)().compute(scheduler="sync") == os.getpid()
        assert dask.get({"x": (os.getpid,)}, "x") == os.getpid()
"""


def test_plugin_routes_sync_and_default_computes(tmp_path: Path) -> None:
    (tmp_path / "test_routing.py").write_text(_ROUTING_TESTS)
    base = [sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(tmp_path)]
    base += ["-p", "no:cacheprovider", "-p", "dask_faas.testing.pytest_plugin", "-q", "test_routing.py"]
    on = subprocess.run([*base, "--dask-on-faas"], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert on.returncode == 0, on.stdout[-4000:] + on.stderr[-2000:]
    assert re.search(r"dask-on-faas: 10 computes, \d+ invocations, 0 fallbacks.*storage clean", on.stdout)
    off = subprocess.run(base, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert off.returncode == 0, off.stdout[-4000:] + off.stderr[-2000:]
    assert "dask-on-faas" not in off.stdout and "1 passed, 3 skipped" in off.stdout, off.stdout
