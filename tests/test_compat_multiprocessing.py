"""``lithops.multiprocessing`` through dask_faas.compat, checked against the standard library's
``multiprocessing`` running the same code (the oracle), on the embedded default."""

from __future__ import annotations

import ast
import importlib.util
import io
import multiprocessing as std_mp
import os
import time
from pathlib import Path

import dask
import pytest
from fixtures_s3 import lithops_aws_s3_config

from dask_faas.compat import FunctionExecutor
from dask_faas.compat import multiprocessing as mp
from dask_faas.compat.multiprocessing import config as mp_config
from dask_faas.compat.multiprocessing import util


def square(x):
    return x * x


def divide(x, y):
    return x / y


def add3(a, b, c=0):
    return a + b + c


def single(arg):
    return arg


def pid(_=None):
    return os.getpid()


def nap(seconds):
    time.sleep(seconds)
    return seconds


def initializer(a, b):
    global INIT
    INIT = (a, b)


def read_init(_):
    return INIT


def fail(code):
    if code == "raise":
        raise ValueError("boom")
    raise SystemExit(code)


def logged(n, stream):
    log = util.RemoteLogIOBuffer(stream)
    log.start()
    for i in range(4):
        print(f"call {n} line {i}", flush=True)
    log.stop()
    return n


def talk():
    print("spoken in the function", flush=True)
    raise RuntimeError("told you")


class Subclassed(mp.Process):
    def run(self):
        raise SystemExit(7)


class StdSubclassed(std_mp.Process):
    def run(self):
        raise SystemExit(7)


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(autouse=True)
def faas_defaults(storage_root):
    """Pools and processes make their executors from the ``faas`` settings: a local pool of 2 and
    a per-test storage root, which must be empty afterwards."""
    with dask.config.set({"faas.local-storage.root": str(storage_root), "faas.workers": 2}):
        yield
    assert files_under(storage_root) == []


@pytest.fixture(scope="module")
def std_pool():
    with std_mp.get_context("spawn").Pool(2) as pool:
        yield pool


def test_pool_results_and_order_match_multiprocessing(std_pool):
    with mp.Pool() as pool:
        for method, args in [
            ("map", (square, range(7))),
            ("map", (square, range(7), 3)),
            ("starmap", (add3, [(1, 2), (3, 4, 5)])),
            ("apply", (add3, (1, 2), {"c": 3})),
        ]:
            assert getattr(pool, method)(*args) == getattr(std_pool, method)(*args), method
        assert pool.map(square, []) == std_pool.map(square, []) == []
        assert list(pool.imap(square, range(9), chunksize=2)) == list(std_pool.imap(square, range(9), 2))
        unordered = list(pool.imap_unordered(square, range(9), chunksize=4))
        assert sorted(unordered) == sorted(std_pool.imap_unordered(square, range(9), 4))
        got = []
        result = pool.map_async(square, range(5), callback=got.append)
        result.wait(60)
        assert (
            result.ready()
            and result.successful()
            and got == [result.get()] == [std_pool.map(square, range(5))]
        )
        # the work ran in function processes, not here
        pids = [r.get(60) for r in [pool.apply_async(pid) for _ in range(3)]]
        assert os.getpid() not in pids


def test_pool_errors_and_timeouts_match_multiprocessing(std_pool):
    with mp.Pool() as pool:
        for p in (pool, std_pool):
            errors = []
            res = p.apply_async(divide, (1, 0), error_callback=errors.append)
            res.wait(60)
            assert res.ready() and not res.successful()
            with pytest.raises(ZeroDivisionError, match="division by zero"):
                res.get(60)
            assert [type(e) for e in errors] == [ZeroDivisionError]
        with pytest.raises(TypeError) as ours:
            pool.map(add3, [(1, 2, 3)])
        with pytest.raises(TypeError) as theirs:
            std_pool.map(add3, [(1, 2, 3)])
        assert str(ours.value) == str(theirs.value)
        slow = pool.apply_async(nap, (3,))
        with pytest.raises(std_mp.TimeoutError):
            slow.get(timeout=0.2)
        with pytest.raises(TimeoutError):  # the builtin, as Lithops' pool.py example catches
            slow.get(timeout=0.2)
        with pytest.raises(ValueError, match="not ready"):
            slow.successful()
        assert slow.get(60) == 3
        pool.close()
        with pytest.raises(ValueError, match="Pool not running"):
            pool.map(square, [1])


def test_imap_next_timeout_then_the_values(std_pool):
    with mp.Pool() as pool:
        for p in (pool, std_pool):
            ordered = p.imap(nap, [1.5, 0])
            with pytest.raises(std_mp.TimeoutError):
                ordered.next(timeout=0.05)
            assert list(ordered) == [1.5, 0]
            unordered = p.imap_unordered(nap, [1.5, 1.5])
            with pytest.raises(std_mp.TimeoutError):
                unordered.next(timeout=0.05)
            assert list(unordered) == [1.5, 1.5]


def test_initializer_runs_in_each_invocation_before_the_work():
    with std_mp.get_context("spawn").Pool(2, initializer, ("arg", 123)) as std_pool:
        expected = std_pool.map(read_init, [0] * 3)
    with mp.Pool(initializer=initializer, initargs=("arg", 123), maxtasksperchild=1) as pool:
        assert pool.map(read_init, [0] * 3) == expected == [("arg", 123)] * 3


def test_close_join_releases_the_executor(storage_root):
    pool = mp.Pool(processes=4)
    res = pool.map_async(square, range(4))
    pool.close()
    with pytest.raises(ValueError):
        pool.apply(square, (1,))
    pool.join()
    assert res.get(0) == [0, 1, 4, 9]


def test_calls_running_when_the_with_block_ends_go_on_as_in_lithops(storage_root):
    """Lithops' ``Pool.__exit__`` (``terminate``) interrupts no function: results of calls sent in
    the block are read after it (Lithops' barrier example does so); the executor is released, its
    storage emptied, once the last call has ended."""
    with mp.Pool() as pool:
        running = pool.apply_async(nap, (1.0,))
        mapped = pool.map_async(square, range(3))
    with pytest.raises(ValueError, match="Pool not running"):
        pool.apply(square, (1,))
    assert running.get(timeout=30) == 1.0
    assert mapped.get(timeout=30) == [0, 1, 4]
    deadline = time.monotonic() + 10
    while files_under(storage_root) and time.monotonic() < deadline:  # released by a thread
        time.sleep(0.05)


@pytest.mark.parametrize("code", ["raise", 0, 3])
def test_process_exitcodes_match_multiprocessing(code, capfd):
    ours = mp.Process(target=fail, args=(code,), name="mine")
    ours.start()
    ours.join(60)
    theirs = std_mp.get_context("spawn").Process(target=fail, args=(code,))
    theirs.start()
    theirs.join(60)
    assert ours.exitcode == theirs.exitcode
    assert not ours.is_alive() and ours.pid not in (None, os.getpid())
    assert mp.active_children() == []


def test_process_run_override_join_timeout_and_kwargs():
    ours, theirs = Subclassed(), StdSubclassed()
    ours.start()
    theirs.start()
    ours.join(60)
    theirs.join(60)
    assert ours.exitcode == theirs.exitcode == 7
    sleeper = mp.Process(target=nap, kwargs={"seconds": 2})
    sleeper.start()
    sleeper.join(0.1)
    assert sleeper.is_alive() and sleeper.exitcode is None and sleeper in mp.active_children()
    sleeper.join(60)
    assert sleeper.exitcode == 0 and not sleeper.is_alive()
    with pytest.raises(AssertionError):
        sleeper.start()


def test_remote_logs_arrive_complete_and_in_order(storage_root):
    with FunctionExecutor() as fexec:
        stream = fexec.executor_id
        out = io.StringIO()
        feed = util.RemoteLoggingFeed(stream, fexec.storage, out=out)
        feed.start()
        fexec.map(logged, [(n, stream) for n in range(4)])
        assert fexec.get_result() == list(range(4))
        feed.stop()
        lines = out.getvalue().splitlines()
        assert sorted(lines) == sorted(f"call {n} line {i}" for n in range(4) for i in range(4))
        for n in range(4):
            assert [line for line in lines if line.startswith(f"call {n} ")] == [
                f"call {n} line {i}" for i in range(4)
            ]
        assert list(fexec.storage.faas_storage.list(util.stream_prefix(stream))) == []


def test_stream_stdout_streams_a_process_output_and_traceback(capsys):
    mp_config.set_parameter(mp_config.STREAM_STDOUT, True)
    try:
        p = mp.Process(target=talk)
        p.start()
        p.join(60)
    finally:
        mp_config.set_parameter(mp_config.STREAM_STDOUT, False)
    out = capsys.readouterr().out
    assert p.exitcode == 1
    assert "spoken in the function" in out
    assert f"Process {p.name}:" in out and "RuntimeError: told you" in out


def test_config_knobs():
    with pytest.raises(KeyError):
        mp_config.set_parameter("NO_SUCH_KNOB", 1)
    with pytest.warns(UserWarning, match="EXPORT_EXECUTION_DETAILS"):
        mp_config.set_parameter(mp_config.EXPORT_EXECUTION_DETAILS, ".")
    mp_config.set_parameter(mp_config.EXPORT_EXECUTION_DETAILS, False)
    assert mp_config.get_parameter(mp_config.STREAM_STDOUT) is False


def test_every_name_of_lithops_multiprocessing_is_provided():
    """The names Lithops' ``multiprocessing`` exports (the ``__all__`` of the installed wheel's
    module, read from its source: importing it needs Redis's client) are all here."""
    spec = importlib.util.find_spec("lithops")
    assert spec is not None and spec.origin, "lithops (a test dependency) is not installed"
    source = Path(spec.origin).parent / "multiprocessing" / "__init__.py"
    tree = ast.parse(source.read_text())
    exported = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets)
    )
    assert len(exported) > 20
    missing = [name for name in exported if not hasattr(mp, name)]
    assert not missing, f"lithops.multiprocessing names the facade lacks: {missing}"


def test_managers_refuse_proxy_types_clearly():
    from dask_faas.compat.multiprocessing.managers import SyncManager

    with pytest.raises(NotImplementedError, match=r"register\(proxytype=\.\.\.\) is not supported"):
        SyncManager.register("get_weights", dict, proxytype=object)


def test_context_functions():
    assert mp.get_all_start_methods() == ["cloud"]
    assert mp.get_context().Pool is mp.Pool
    assert mp.get_context("spawn").Process is mp.Process
    with pytest.raises(ValueError):
        mp.get_context("nonsense")
    assert mp.cpu_count() == std_mp.cpu_count()
    assert mp.current_process().name == std_mp.current_process().name
    assert issubclass(mp.TimeoutError, std_mp.TimeoutError) and issubclass(mp.TimeoutError, TimeoutError)


def shout(x):
    print(f"item {x}", flush=True)
    return -x


def storage_name():
    return util.resolve_storage().name


def test_pool_on_a_moto_bucket_streams_stdout_and_leaves_nothing(s3_storage, s3_endpoint, capsys):
    lithops_config = lithops_aws_s3_config(s3_endpoint, s3_storage.bucket)
    mp_config.update({mp_config.LITHOPS_CONFIG: lithops_config, mp_config.STREAM_STDOUT: True})
    try:
        with mp.Pool() as pool:
            assert pool.apply(pid) != os.getpid()
            assert pool.apply(storage_name) == "s3"  # the function's logs go to the bucket
            assert pool.map(shout, range(5), chunksize=2) == [-x for x in range(5)]
            pool.close()
            pool.join()  # the feed prints what is left, then stops
    finally:
        mp_config.update({mp_config.LITHOPS_CONFIG: {}, mp_config.STREAM_STDOUT: False})
    lines = capsys.readouterr().out.splitlines()
    assert sorted(lines) == [f"item {x}" for x in range(5)]
    assert lines.index("item 0") < lines.index("item 1") and lines.index("item 2") < lines.index("item 3")
    assert list(s3_storage.list("")) == []
