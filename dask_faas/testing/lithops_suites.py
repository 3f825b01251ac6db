"""Run Lithops' own test modules, as the lithops wheel ships them, against :mod:`dask_faas.compat`.

Activate it with ``-p dask_faas.testing.lithops_suites``. From then on in the pytest process,
``import lithops`` (and ``lithops.wait``, ``lithops.storage``, ``lithops.storage.utils``,
``lithops.config``, ``lithops.executors``, ``lithops.retries``, ``lithops.future``, ...) gives
:mod:`dask_faas.compat` and its submodules, while ``lithops.tests`` and everything below it (the
suites, their ``conftest.py`` and ``functions.py``) are still read from the installed wheel. The
wheel's own ``lithops/__init__.py`` never runs. The plugin

- skips the tests in :data:`EXCLUDED`, each with its reason, and those of :data:`ONLINE` (which
  download public data sets over HTTPS) unless ``--lithops-online`` says they can be reached;
- at the end fails the session if a job of dask-faas left anything in its storage, and reports
  ``lithops-on-faas: N tests excluded, storage clean`` in the terminal summary.

The storage is chosen as Lithops' test suites choose it: ``--config lithops.yaml`` (a Lithops
configuration, e.g. ``lithops: {storage: aws_s3}`` and an ``aws_s3`` section with ``endpoint``,
``access_key_id``, ``secret_access_key`` and ``storage_bucket``), else the embedded default
(local storage, ``faas.local-storage.root``).

Example (from a directory without a ``tests/`` folder, files given by path)::

    SITE=$(python -c 'import importlib.util as u, os; print(os.path.dirname(os.path.dirname(
        u.find_spec("lithops").origin)))')
    python -m pytest -c /dev/null --rootdir "$SITE" -p no:cacheprovider \\
        -p dask_faas.testing.lithops_suites "$SITE"/lithops/tests/test_map.py
"""

from __future__ import annotations

import gc
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import pkgutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

__all__ = ["EXCLUDED", "MODULES", "ONLINE", "LithopsRoute", "wheel_tests_directory"]

#: Seconds the session waits for the jobs of executors the suites let go of to end.
_CLEANUP_S = 30.0
#: The suites of Lithops' wheel that run against the facade (Acceptance 1 of issue 12).
MODULES = (
    "test_map",
    "test_map_reduce",
    "test_call_async",
    "test_storage",
    "test_retries",
    "test_future",
)

_INTERNALS = (
    "tests Lithops' own status protocol (ResponseFuture built from a job namespace, polling call "
    "status objects through lithops.future.InternalStorage, mocked or patched): dask-faas futures "
    "are concurrent.futures answered by the dispatcher, with no status objects to poll"
)
_EXTRA_ENV = (
    "extra_env: dask-faas never sets environment variables per call (a warm function serves many "
    "jobs; credentials and configuration come from the function's deployment); it is accepted with "
    "a warning naming it"
)
_HTTP = (
    "reads five vocabulary files over HTTPS from a public AWS bucket: run with --lithops-online "
    "when they can be reached (tests/test_lithops_suites.py serves them through a loopback proxy)"
)

#: Tests of the wheel's suites that cannot pass on dask-faas, by ``"<module>::<test name>"``, each
#: with its reason (tests/test_lithops_suites.py checks that each entry matches a collected test).
EXCLUDED: dict[str, str] = {
    "test_map.py::TestMap::test_extra_env": _EXTRA_ENV,
    "test_retries.py::TestRetryingFutureUnit::test_status_and_result_reraise_on_error": (
        "its fake future holds the error only in Lithops' private ResponseFuture._exception tuple; "
        "dask-faas's RetryingFuture re-raises through the future's public result()/status()"
    ),
    **{
        f"test_future.py::{name}": _INTERNALS
        for name in (
            "TestStatsHelper",
            "TestResponseFutureState",
            "TestPickleHelper",
            "TestResponseFutureStatusAndResult",
        )
    },
}


#: Excluded without ``--lithops-online`` (their data sets are on the internet).
ONLINE: dict[str, str] = {"test_map_reduce.py::TestMapReduce": _HTTP}


def wheel_tests_directory() -> Path:
    """The ``lithops/tests`` directory of the installed lithops wheel (whose package is not run).

    Raises
    ------
    ModuleNotFoundError
        If lithops is not installed (``pip install dask-faas[test]``).
    """
    for finder in sys.meta_path:
        if isinstance(finder, LithopsRoute):
            return finder.tests
    spec = importlib.machinery.PathFinder.find_spec("lithops")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("lithops is not installed: pip install 'dask-faas[test]'")
    return Path(next(iter(spec.submodule_search_locations))) / "tests"


def _facade_modules() -> dict[str, ModuleType]:
    """``lithops[.x]`` -> the modules of :mod:`dask_faas.compat` (its public submodules)."""
    import dask_faas.compat as compat

    found = {"lithops": compat}
    for info in pkgutil.walk_packages(compat.__path__, "dask_faas.compat."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            try:
                module = importlib.import_module(info.name)
            except ModuleNotFoundError as exc:  # an optional dependency (joblib) is not installed:
                if (exc.name or "").startswith("dask_faas"):  # that module stays unrouted
                    raise
                continue
            found["lithops" + info.name[len("dask_faas.compat") :]] = module
    return found


class LithopsRoute(importlib.abc.MetaPathFinder):
    """Finds ``lithops.tests.*`` in the wheel (the facade's modules are in ``sys.modules``)."""

    def __init__(self) -> None:
        self.tests = wheel_tests_directory()

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        parts = name.split(".")
        if parts[:2] != ["lithops", "tests"]:
            return None
        where = self.tests.joinpath(*parts[2:])
        if where.is_dir():
            init = where / "__init__.py"
            return importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(where)])
        return importlib.util.spec_from_file_location(name, where.with_suffix(".py"))


def install() -> LithopsRoute:
    """Route ``lithops`` to :mod:`dask_faas.compat` in this process (once)."""
    for finder in sys.meta_path:
        if isinstance(finder, LithopsRoute):
            return finder
    route = LithopsRoute()
    for name in [n for n in sys.modules if n == "lithops" or n.startswith("lithops.")]:
        del sys.modules[name]
    sys.modules.update(_facade_modules())
    sys.meta_path.insert(0, route)
    return route


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("dask-faas").addoption(
        "--lithops-online",
        action="store_true",
        default=False,
        help="the suites' public HTTPS data sets can be reached (directly, or through HTTPS_PROXY)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: Any, args: Any) -> None:
    install()
    early_config.pluginmanager.register(_Session(), "lithops-on-faas-session")


class _Session:
    """Exclusions and the storage check of one pytest session."""

    def __init__(self) -> None:
        self.excluded = 0
        self.leftovers: list[str] = []

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        _by_value()
        excluded = EXCLUDED if config.getoption("lithops_online") else {**EXCLUDED, **ONLINE}
        for item in items:
            reason = _excluded(item.nodeid, excluded)
            if reason is not None:
                item.add_marker(pytest.mark.skip(reason=f"dask-faas: {reason}"))
                self.excluded += 1

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        # the suites never close their executors: their jobs end when they are collected, or
        # (those let go of while calls ran) released in a thread of their own: a bounded wait
        deadline = time.monotonic() + _CLEANUP_S
        while True:
            gc.collect()
            self.leftovers = _leftovers()
            if not self.leftovers or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if self.leftovers:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        state = "storage clean" if not self.leftovers else f"LEFT IN STORAGE: {self.leftovers[:5]}"
        terminalreporter.write_line(f"lithops-on-faas: {self.excluded} tests excluded, {state}")


def _by_value() -> None:
    """Pickle what the wheel's test modules define by value: a function process imports
    ``dask_faas.compat`` (what their ``lithops`` global is), never the wheel's ``lithops``."""
    import cloudpickle

    for name, module in list(sys.modules.items()):
        if name.startswith("lithops.tests"):
            cloudpickle.register_pickle_by_value(module)


def _excluded(nodeid: str, excluded: dict[str, str]) -> str | None:
    """The reason ``nodeid`` is excluded (an entry names a test, its class or its module)."""
    tail = nodeid.split("lithops/tests/")[-1]
    for entry, reason in excluded.items():
        if tail == entry or tail.startswith(entry + "::") or tail.startswith(entry + "["):
            return reason
    return None


def _leftovers() -> list[str]:
    """Keys left under dask-faas job prefixes in the storage the suites used."""
    import pytest as _pytest

    from dask_faas import config as faas_config
    from dask_faas.compat.config import extract_storage_config
    from dask_faas.compat.storage import Storage

    config = getattr(_pytest, "lithops_config", None)
    if config is None:
        return []
    storage = Storage(storage_config=extract_storage_config(config))
    prefix = faas_config.resolve()["prefix"].strip("/") + "/"
    return [key for key, _ in storage.faas_storage.list(prefix)]
