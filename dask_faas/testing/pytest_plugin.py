"""``--dask-on-faas``: run a pytest session with Dask's own scheduler replaced by ``faas_get``.

Activate it with ``-p dask_faas.testing.pytest_plugin --dask-on-faas`` (without the option the
plugin does nothing). For the whole session it

- starts ONE :class:`~dask_faas.FaasExecutor` (the embedded local pool of 2 functions, local storage
  in a fresh temporary directory);
- routes the synchronous scheduler names (``"sync"``, ``"synchronous"``, ``"single-threaded"``),
  ``dask.get`` / ``dask.local.get_sync``, and every compute that names no scheduler (through
  ``dask.config`` ``scheduler``) to ``faas_get`` on that executor. Schedulers requested explicitly
  by another name (``"threads"``, ``"processes"``), a distributed ``Client`` or an executor passed
  as ``scheduler=`` are untouched;
- skips the tests in :data:`EXCLUDED`, which cannot pass when tasks run in other processes, each
  with its reason;
- at the end shuts the executor down, fails the session if anything was left in its storage, and
  reports ``dask-on-faas: N computes, M invocations, ...`` in the terminal summary.

The plugin also sets ``dataframe.shuffle.method`` to ``"tasks"``, as :func:`dask_faas.enable` does:
functions share no disk, so bag and dataframe shuffles that name no method go through tasks.

Example, Dask's own test modules on dask-faas (``docs/dask-test-suites.md``; run it from a directory
without a ``tests/`` folder, or pass the files by path as here, since pytest loads
``<cwd>/test*/conftest.py`` when no argument is a path)::

    SITE=$(python -c 'import dask, os; print(os.path.dirname(dask.__path__[0]))')
    python -m pytest -c /dev/null --rootdir "$SITE" -p no:cacheprovider \\
        -p dask_faas.testing.pytest_plugin --dask-on-faas \\
        "$SITE"/dask/tests/test_delayed.py "$SITE"/dask/bag/tests/test_bag.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Hashable, Mapping
from typing import Any

import pytest

__all__ = ["EXCLUDED", "SYNC_NAMES", "FaasRouter"]

#: Scheduler names routed to faas_get (the ones ``dask.base.named_schedulers`` maps to get_sync).
SYNC_NAMES = ("sync", "synchronous", "single-threaded")

#: Keywords of ``get_sync``/``get_async`` that change how tasks run in-process; a call that passes
#: one of them runs on Dask's own ``get_sync`` (and is counted as a fallback).
_IN_PROCESS_ONLY = ("get_id", "pack_exception", "raise_exception", "dumps", "loads")

#: Keywords every Dask scheduler-get receives and faas_get has no use for.
_IGNORED = ("num_workers", "pool", "chunksize")

_IDENTITY = (
    "relies on object identity of a value that went through a task; results come back from the "
    "function pickled, as equal copies"
)
_DISK_SHUFFLE = (
    "explicit shuffle='disk': the partd store lives on one machine's disk, which functions do not "
    "share; dask-faas refuses it (ConfigError)"
)
_BAG_TASK_SHUFFLE_GROUPER = (
    "groups by an index, not a callable: dask's task-based bag shuffle (the one functions can run; "
    "dask-faas refuses the disk shuffle) does not accept such groupers (TypeError under dask's own "
    "sync scheduler too, with shuffle='tasks')"
)
#: Tests that cannot pass when Dask's synchronous scheduler runs tasks as function invocations,
#: by ``"<module>::<test name>"`` (a name without parameters would exclude every parametrization;
#: tests/test_dask_suites.py checks that each entry matches exactly one collected test).
EXCLUDED: dict[str, str] = {
    "dask.tests.test_delayed::test_traverse_false": _IDENTITY + " (`res[0] is a`)",
    "dask.bag.tests.test_bag::test_bag_with_single_callable": _IDENTITY
    + " (a lambda compares equal only to itself)",
    "dask.bag.tests.test_bag::test_repartition_partition_size_complex_dtypes": _IDENTITY
    + " (lists of numpy arrays compare equal only when they hold the same arrays)",
    "dask.bag.tests.test_bag::test_to_delayed_optimize_graph": (
        "counts calls of a monkeypatched function in a closure variable of the test process; the "
        "tasks call it inside functions, in other processes"
    ),
    "dask.bag.tests.test_bag::test_from_delayed_iterator": (
        "a task returns a generator that three other tasks consume; a generator cannot be pickled, "
        "so it cannot travel between functions (dask's processes scheduler fails the same way)"
    ),
    "dask.bag.tests.test_bag::test_reductions_are_lazy": (
        "the graph holds a live generator as a partition, and the test checks state that the "
        "generator shares with a task in the same process; a generator cannot be pickled"
    ),
    "dask.bag.tests.test_bag::test_bag_groupby_none[synchronous-disk]": _DISK_SHUFFLE,
    "dask.bag.tests.test_bag::test_bag_groupby_dataclass[synchronous-disk-none_field]": _DISK_SHUFFLE,
    "dask.bag.tests.test_bag::test_bag_groupby_dataclass[synchronous-disk-no_none_fields]": _DISK_SHUFFLE,
    "dask.bag.tests.test_bag::test_groupby_with_indexer": _BAG_TASK_SHUFFLE_GROUPER,
    "dask.bag.tests.test_bag::test_msgpack_unicode": _BAG_TASK_SHUFFLE_GROUPER,
    "dask.bag.tests.test_bag::test_groupby_with_npartitions_changed": (
        "asserts that groupby(npartitions=1) is honoured, which only dask's disk shuffle does; "
        "functions share no disk, so bags shuffle through tasks"
    ),
    "dask.bag.tests.test_bag::test_temporary_directory": (
        "asserts that the disk shuffle writes .partd files into dask's temporary_directory; "
        "functions share no disk, so bags shuffle through tasks"
    ),
}

_OPTION = "--dask-on-faas"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dask-faas")
    group.addoption(
        _OPTION,
        action="store_true",
        default=False,
        help="route dask's synchronous scheduler and default computes through dask_faas.faas_get",
    )
    group.addoption(
        "--dask-on-faas-workers",
        type=int,
        default=2,
        help="size of the local function pool of --dask-on-faas (default 2)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("dask_on_faas"):
        session = DaskOnFaas(config.getoption("dask_on_faas_workers"))
        config.add_cleanup(session.close)  # also when the session never ran
        config.pluginmanager.register(session, "dask-on-faas-session")


class FaasRouter:
    """A Dask scheduler-get that runs every compute through ``faas_get`` on one executor.

    It accepts what callers of ``dask.local.get_sync`` pass: raw graphs with legacy tuples or task
    specs, a key or nested lists of keys, ``callbacks=``, ``rerun_exceptions_locally=``, ``cache=``
    (precomputed values, updated with the requested results, as ``get_async`` does).
    """

    def __init__(self, executor: Any, fallback: Any) -> None:
        self.executor = executor
        self.fallback = fallback
        self.computes = 0
        self.fallbacks = 0
        self._lock = threading.Lock()

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        import dask
        from dask._task_spec import DataNode

        from dask_faas import faas_get

        if any(name in kwargs for name in _IN_PROCESS_ONLY):
            with self._lock:
                self.fallbacks += 1
            return self.fallback(dsk, keys, **kwargs)
        for name in _IGNORED:
            kwargs.pop(name, None)
        cache = kwargs.pop("cache", None)
        if cache is None:
            cache = dask.config.get("cache", None)
        if cache:
            if not isinstance(dsk, Mapping):
                dsk = dsk.__dask_graph__()
            dsk = {**dsk, **{key: DataNode(key, value) for key, value in cache.items()}}
        with self._lock:
            self.computes += 1
        result = faas_get(dsk, keys, executor=self.executor, **kwargs)
        if cache is not None:
            _store(cache, keys, result)
        return result

    def __reduce__(self) -> Any:
        # dask.config may be pickled into other processes: there the router is dask's get_sync
        return (_local_get_sync, ())

    def __repr__(self) -> str:
        return f"<dask-on-faas router: {self.computes} computes>"


def _local_get_sync() -> Any:
    from dask.local import get_sync

    return get_sync


def _store(cache: Any, keys: Any, result: Any) -> None:
    if isinstance(keys, list):
        for key, value in zip(keys, result):  # noqa: B905 - results nest like keys
            _store(cache, key, value)
    elif isinstance(keys, Hashable):
        cache[keys] = result


class DaskOnFaas:
    """The session state of ``--dask-on-faas``: the executor, the patches and the counts."""

    def __init__(self, workers: int) -> None:
        import dask
        import dask.base
        import dask.local

        from dask_faas import FaasExecutor

        self.root = tempfile.mkdtemp(prefix="dask-on-faas-")
        self.executor = FaasExecutor(workers=workers, local_storage={"root": self.root})
        self.router = FaasRouter(self.executor, dask.local.get_sync)
        self.leftovers: list[str] = []
        self.invocations = 0
        self.excluded = 0
        self._closed = False
        self._patch = pytest.MonkeyPatch()
        for name in SYNC_NAMES:
            self._patch.setitem(dask.base.named_schedulers, name, self.router)
        self._patch.setattr(dask.local, "get_sync", self.router)
        self._patch.setattr(dask, "get", self.router)
        # as dask_faas.enable(): functions share no disk, so shuffles go through tasks
        self._config = dask.config.set({"scheduler": self.router, "dataframe.shuffle.method": "tasks"})

    # -- hooks ---------------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            reason = _exclusion(item)
            if reason is not None:
                self.excluded += 1
                item.add_marker(pytest.mark.skip(reason=f"dask-on-faas: {reason}"))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        import dask

        # a test that reset dask.config (refresh, or a clear) must not fall back to dask's schedulers
        if dask.config.get("scheduler", None) is None:
            dask.config.set(scheduler=self.router)
        if dask.config.get("dataframe.shuffle.method", None) is None:
            dask.config.set({"dataframe.shuffle.method": "tasks"})

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.close()
        if self.leftovers and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def close(self) -> None:
        """Shut the executor down, undo the patches, check and remove the storage (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.invocations = self.executor.stats["invocations"]
        try:
            self.executor.shutdown(wait=True, cancel_futures=True)
        finally:
            self._config.__exit__(None, None, None)
            self._patch.undo()
        for directory, _, files in os.walk(self.root):
            self.leftovers += [os.path.relpath(os.path.join(directory, f), self.root) for f in files]
        shutil.rmtree(self.root, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        router = self.router
        storage = (
            f"{len(self.leftovers)} objects LEFT in storage: {self.leftovers[:5]}"
            if self.leftovers
            else "storage clean"
        )
        terminalreporter.write_sep(
            "=",
            f"dask-on-faas: {router.computes} computes, {self.invocations} invocations, "
            f"{router.fallbacks} fallbacks to get_sync, {self.excluded} tests excluded, {storage}",
            red=bool(self.leftovers),
            green=not self.leftovers,
        )


def _exclusion(item: pytest.Item) -> str | None:
    module = getattr(getattr(item, "module", None), "__name__", None)
    if module is None:
        return None
    name = getattr(item, "originalname", None) or item.name
    return EXCLUDED.get(f"{module}::{item.name}") or EXCLUDED.get(f"{module}::{name}")
