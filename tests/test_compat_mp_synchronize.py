"""Storage-backed locks, semaphores, events, conditions, barriers and shared ctypes of
``dask_faas.compat.multiprocessing``, checked against the standard library's ``multiprocessing``
running the same scenarios and programs (the oracle), on the embedded default (local function pool,
local storage) and on a moto S3 bucket."""

from __future__ import annotations

import ctypes
import functools
import gc
import multiprocessing as std_mp
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import dask
import pytest
from fixtures_s3 import lithops_aws_s3_config

from dask_faas.compat.multiprocessing import Pool, sharedctypes, synchronize
from dask_faas.compat.multiprocessing import config as mp_config
from dask_faas.compat.multiprocessing.sharedctypes import RawArray, RawValue, Value
from dask_faas.compat.multiprocessing.state import ROOT, Space
from dask_faas.compat.multiprocessing.synchronize import Condition, Lock, Semaphore

#: Ours, under the names of ``multiprocessing``.
OURS = SimpleNamespace(
    **{name: getattr(synchronize, name) for name in synchronize.__all__},
    **{name: getattr(sharedctypes, name) for name in ("Array", "RawArray", "RawValue", "Value")},
)
WAIT_S = 60  # a safety net only: nothing here should take that long


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.fixture(autouse=True)
def faas_defaults(storage_root):
    """Shared objects go to a per-test local storage root, which is empty once they are gone."""
    with dask.config.set({"faas.local-storage.root": str(storage_root), "faas.workers": 2}):
        yield
    gc.collect()
    assert files_under(storage_root) == []


@pytest.fixture(scope="module")
def std_ctx():
    """The standard library's spawn context (its resource tracker is started by conftest)."""
    return std_mp.get_context("spawn")


def raised(call) -> str | None:
    """The name of the exception ``call()`` raises (``None`` if none)."""
    try:
        call()
    except Exception as err:
        return type(err).__name__
    return None


def in_thread(call):
    """Run ``call`` in another thread; what it returned."""
    out = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    return out[0]


# -- one process, several threads: the same scenario on both --------------------------------------


def lock_scenario(m):
    log = []
    lock = m.Lock()
    log += [lock.acquire(), lock.acquire(False), lock.acquire(True, 0.05), lock.acquire(timeout=0)]
    lock.release()
    log.append(raised(lock.release))
    with lock as entered:
        log += [entered, in_thread(lambda: lock.acquire(False))]
    lock.acquire()
    log.append(in_thread(lambda: raised(lock.release)))  # any thread may release a Lock
    log.append(lock.acquire(False))
    lock.release()
    rlock = m.RLock()
    log += [rlock.acquire(), rlock.acquire(), rlock.acquire(False)]
    log += in_thread(lambda: [rlock.acquire(True, 0.05), raised(rlock.release)])
    rlock.release()
    rlock.release()
    log.append(in_thread(lambda: rlock.acquire(False)))  # still held: 1 level left
    rlock.release()
    log += [raised(rlock.release), in_thread(lambda: rlock.acquire(False))]
    return log


def semaphore_scenario(m):
    log = []
    sem = m.Semaphore(2)
    log += [sem.get_value(), sem.acquire(), sem.acquire(), sem.acquire(False), sem.acquire(timeout=0.05)]
    log.append(sem.get_value())
    for _ in range(3):
        sem.release()
    log.append(sem.get_value())
    with sem as entered:
        log += [entered, sem.get_value()]
    bounded = m.BoundedSemaphore(1)
    log += [bounded.acquire(), bounded.get_value(), raised(bounded.release), bounded.get_value()]
    log += [raised(bounded.release), bounded.get_value(), raised(lambda: m.Semaphore("2"))]
    return log


def event_scenario(m):
    event = m.Event()
    log = [event.is_set(), event.wait(0.05), event.wait(0)]
    setter = threading.Timer(0.1, event.set)
    setter.start()
    log += [event.wait(WAIT_S), event.is_set(), event.wait()]
    setter.join()
    event.clear()
    log += [event.is_set(), event.wait(0.01)]
    event.set()
    event.set()
    log.append(event.is_set())
    return log


def condition_scenario(m):
    cond = m.Condition()
    log = [raised(cond.wait), raised(cond.notify), raised(cond.notify_all)]
    with cond:
        log += [cond.wait(0.05), cond.wait_for(lambda: 0, 0.05)]
    # notify(2) of 3 waiters: 2 are notified, the third times out
    waiting, results = [], []

    def waiter():
        with cond:
            waiting.append(1)
            results.append(cond.wait(3.0))  # long enough for the notify to come first

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        with cond:  # each waiter appended and waits (the lock is free again) before we get here
            if len(waiting) == 3:
                cond.notify(2)
                break
        time.sleep(0.01)
    for thread in threads:
        thread.join(WAIT_S)
    log.append(sorted(results))
    # wait releases every level of the (recursive) lock, and takes them all back
    box = []

    def producer():
        with cond:
            box.append("item")
            cond.notify_all()

    with cond, cond:
        thread = threading.Thread(target=producer)
        thread.start()
        log.append(cond.wait_for(lambda: list(box), WAIT_S))
        log.append(in_thread(lambda: cond.acquire(False)))  # held again
    thread.join(WAIT_S)
    log.append(in_thread(lambda: [cond.acquire(False), cond.release()]))
    return log


def barrier_scenario(m):
    actions = []
    barrier = m.Barrier(3, action=lambda: actions.append("action"))
    log = [barrier.parties, barrier.n_waiting, barrier.broken]

    def generation(n, timeout=None):
        out = []
        threads = [
            threading.Thread(target=lambda: out.append(raised_or_index(barrier, timeout))) for _ in range(n)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S)
        return sorted(out, key=str)

    log += [generation(3), generation(3), actions[:]]
    log += [generation(1, timeout=0.05), barrier.broken, generation(1), barrier.n_waiting]
    barrier.reset()
    log += [barrier.broken, generation(3)]
    # abort while one waits
    out = []
    thread = threading.Thread(target=lambda: out.append(raised_or_index(barrier, WAIT_S)))
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while barrier.n_waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.append(barrier.n_waiting)
    barrier.abort()
    thread.join(WAIT_S)
    log += [out, barrier.broken]
    # an action that raises: its caller gets its error, the others a broken barrier
    failing = m.Barrier(2, action=lambda: 1 / 0)
    barrier = failing
    log += [generation(2), failing.broken]
    return log


def raised_or_index(barrier, timeout):
    try:
        return barrier.wait(timeout)
    except (threading.BrokenBarrierError, ZeroDivisionError) as err:
        return type(err).__name__


def ctypes_scenario(m):
    log = []
    value = m.RawValue("i", 7)
    log.append(value.value)
    value.value += 1
    log.append(value.value)
    value.value = 2**40 + 3  # wraps, as a C int does
    log += [value.value, raised(lambda: setattr(value, "value", "x"))]
    double = m.Value("d", 1.5)
    with double.get_lock():
        double.value *= 2
    log += [double.value, double.get_obj().value, double.acquire(), double.release()]
    with double as entered:
        log.append(entered)
    log += [m.Value(ctypes.c_bool).value, m.Value("u", "x").value, m.Value("c").value]
    log += [m.Value(ctypes.c_uint8, 300).value, m.Value("i", lock=False).value]
    log.append(raised(lambda: m.Value("i", lock=False).get_lock()))
    lock = m.Lock()
    log.append(m.Value("i", 1, lock=lock).get_lock() is lock)
    array = m.Array("i", [4, 8, 15, 16, 23, 42])
    array[0] = 45
    array[1] += 1
    log += [array[:], array[2:4], array[::-1], array[-1], len(array), list(array), array.get_obj()[:]]
    array[:] = range(6)
    array[1:5:2] = [9, 9]
    log.append(array[:])
    log += [raised(lambda: array[6]), raised(lambda: array["x"]), raised(lambda: array.__setitem__(0, "x"))]
    log.append(raised(lambda: array.__setitem__(slice(0, 2), [1])))
    log.append(m.RawArray("d", 3)[:])
    text = m.Array("c", b"hello")
    log += [text.value, text.raw, text[:], text[1], list(text)]
    text.value = b"HI"
    log += [text.value, text.raw, text[:]]
    text[0] = b"J"
    text[1] = 65
    log += [text.value, raised(lambda: setattr(text, "value", b"too long!"))]
    raw = m.RawArray("c", b"abc")
    raw.raw = b"xyz"
    log += [raw.value, raw.raw, m.RawArray("u", "hey").value]
    for bad in (
        lambda: m.RawValue("x"),
        lambda: m.RawValue(int),
        lambda: m.RawValue(["i"]),
        lambda: m.RawValue("i", 1, 2),
        lambda: m.RawArray("i", -1),
        lambda: m.RawArray("i", 2.5),
        lambda: m.RawArray("i", ["a"]),
        lambda: m.Value("i", lock=object()),
    ):
        log.append(raised(bad))
    return log


@pytest.mark.parametrize(
    "scenario", [lock_scenario, semaphore_scenario, event_scenario, condition_scenario, barrier_scenario]
)
def test_synchronisation_scenarios_match_multiprocessing(scenario):
    assert scenario(OURS) == scenario(std_mp)


def test_shared_ctypes_scenario_matches_multiprocessing():
    assert ctypes_scenario(OURS) == ctypes_scenario(std_mp)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="initial value must be >= 0, not -1"):
        Semaphore(-1)
    with pytest.raises(ValueError):
        threading.Semaphore(-1)  # threading's kind (multiprocessing's own is an OSError)
    with pytest.raises(ValueError, match="at least 1 party, not 0"):
        synchronize.Barrier(0)
    with pytest.raises(TypeError, match=r"storage-backed Lock or RLock.*process-local"):
        Condition(threading.Lock())
    with pytest.raises(TypeError, match=r"storage-backed Lock or RLock.*process-local"):
        Value("i", lock=std_mp.Lock())
    with pytest.raises(TypeError, match=r"'x' is neither a typecode .* nor a ctypes type"):
        RawValue("x")
    with pytest.raises(NotImplementedError, match=r"simple ctypes types only.*not c_char_p"):
        RawValue(ctypes.c_char_p)
    with pytest.raises(ValueError, match=r"released too many times.*is not held"):
        Lock().release()


MAKERS = [
    Lock,
    synchronize.RLock,
    Semaphore,
    synchronize.Event,
    Condition,
    lambda: synchronize.Barrier(2),
    lambda: RawValue("i"),
    lambda: Value("i"),
    lambda: sharedctypes.Array("c", 3),
]


@pytest.mark.parametrize("make", MAKERS)
def test_a_memory_storage_refuses_clearly(make):
    with (
        dask.config.set({"faas.storage": "memory"}),
        pytest.raises(
            NotImplementedError, match=r"memory storage .* functions in other processes cannot reach it"
        ),
    ):
        make()


def test_state_lives_under_its_space_and_goes_with_the_object(storage_root):
    from dask_faas.backends.storage.local import LocalStorage

    storage = LocalStorage(storage_root)
    sem, value, cond = Semaphore(3), Value("q", 5), Condition()
    with cond:  # a count, a value and the condition's held lock (a free lock has no object)
        assert len(list(storage.list(ROOT + "/"))) == 3
    copy = cloudpickle.loads(cloudpickle.dumps(sem))
    assert copy.acquire() and sem.get_value() == 2  # the copy works on the same state
    copy.release()
    del copy
    gc.collect()
    assert sem.get_value() == 3  # a copy going away deletes nothing
    manager = Space("manager")
    in_manager = Lock(space=manager.child("lock"))
    assert in_manager.acquire()
    del sem, value, cond
    gc.collect()
    keys = [key for key, _ in storage.list(ROOT + "/")]
    assert len(keys) == 1 and keys[0].startswith(manager.prefix)
    del in_manager
    gc.collect()
    assert len(list(storage.list(ROOT + "/"))) == 1  # the manager's space is deleted with it only
    manager.close()
    assert list(storage.list(ROOT + "/")) == []


# -- across the function processes of the local pool ----------------------------------------------


def count_up(value, times, locked):
    for _ in range(times):
        if locked:
            with value.get_lock():
                value.value += 1
        else:
            value.value += 1


def run_std_processes(ctx, target, argses):
    processes = [ctx.Process(target=target, args=args) for args in argses]
    for process in processes:
        process.start()
    for process in processes:
        process.join(WAIT_S)
    return [process.exitcode for process in processes]


def test_a_value_lock_excludes_across_functions(std_ctx):
    ours, raw = Value("i", 0), RawValue("i", 0)
    with Pool() as pool:
        pool.starmap(count_up, [(ours, 50, True)] * 4)
        pool.starmap(count_up, [(raw, 50, False)] * 4)  # may lose updates, as in shared memory
    theirs = std_ctx.Value("i", 0)
    assert run_std_processes(std_ctx, count_up, [(theirs, 50, True)] * 4) == [0] * 4
    assert ours.value == theirs.value == 200
    assert 0 < raw.value <= 200


def crowd(sem, inside, seen, index, hold):
    with sem:
        with inside.get_lock():
            inside.value += 1
            seen[index] = inside.value
        time.sleep(hold)
        with inside.get_lock():
            inside.value -= 1


def test_a_semaphore_of_two_admits_at_most_two_functions(std_ctx):
    def run(m, start):
        sem, inside, seen = m.Semaphore(2), m.Value("i", 0), m.Array("i", 4)
        start(crowd, [(sem, inside, seen, i, 0.3) for i in range(4)])
        return sem.get_value(), inside.value, min(seen[:]) >= 1 and max(seen[:]) <= 2

    with dask.config.set({"faas.workers": 4}), Pool() as pool:
        ours = run(OURS, pool.starmap)
    assert ours == run(std_ctx, lambda target, argses: run_std_processes(std_ctx, target, argses))
    assert ours == (2, 0, True)


def handshake(cond, ready, box):
    ready.set()
    with cond:
        notified = cond.wait_for(lambda: box.value != 0, WAIT_S)
        box.value = -box.value if notified else 1


def test_a_condition_and_an_event_between_a_function_and_the_client(std_ctx):
    def run(m, start):
        cond, ready, box = m.Condition(), m.Event(), m.RawValue("i", 0)
        finish = start(handshake, (cond, ready, box))
        assert ready.wait(WAIT_S)
        with cond:
            box.value = 7
            cond.notify()
        finish()
        return box.value

    def in_std_process(target, args):
        process = std_ctx.Process(target=target, args=args)
        process.start()
        return lambda: process.join(WAIT_S)

    with Pool() as pool:
        ours = run(OURS, lambda target, args: pool.apply_async(target, args).get)
    assert ours == run(std_ctx, in_std_process) == -7


def meet(barrier, delay):
    time.sleep(delay)
    return barrier.wait(WAIT_S)


def bump(value):
    value.value += 1


def test_a_barrier_of_two_functions_is_reusable_and_runs_its_action_once_a_generation():
    passed = RawValue("i", 0)
    barrier = synchronize.Barrier(2, action=functools.partial(bump, passed))
    with Pool() as pool:
        for generation in range(1, 3):
            assert sorted(pool.starmap(meet, [(barrier, 0), (barrier, 0.2)])) == [0, 1]
            assert passed.value == generation
    assert (barrier.n_waiting, barrier.broken) == (0, False)


def try_others_rlock(rlock):
    return [rlock.acquire(False), raised(rlock.release), rlock.acquire(True, 0.05)]


def test_an_rlock_held_by_the_client_is_not_a_functions_to_take_or_release():
    ours, theirs = synchronize.RLock(), std_mp.RLock()
    assert ours.acquire() and ours.acquire() and theirs.acquire() and theirs.acquire()
    with Pool() as pool:
        assert pool.apply(try_others_rlock, (ours,)) == in_thread(lambda: try_others_rlock(theirs))
    for lock in (ours, theirs):
        lock.release()
        lock.release()
    with Pool() as pool:
        assert pool.apply(try_others_rlock, (ours,)) == in_thread(lambda: try_others_rlock(theirs))


# -- Lithops' example programs (examples/multiprocessing), on both ---------------------------------

STD_IMPORTS = """\
from multiprocessing import Pool, Process, Lock, Semaphore, Barrier, Value, RawValue, Array, RawArray
"""
OUR_IMPORTS = """\
import dask
dask.config.set({{"faas.local-storage.root": {root!r}, "faas.workers": 4}})
from dask_faas.compat.multiprocessing import Pool, Process
from dask_faas.compat.multiprocessing.synchronize import Lock, Semaphore, Barrier
from dask_faas.compat.multiprocessing.sharedctypes import Value, RawValue, Array, RawArray
"""
#: Lithops' programs, with their globals (inherited by the standard library's forked processes,
#: captured by the pickled ``__main__`` functions on dask-faas); a RawArray instead of lock.py's
#: SimpleQueue, shorter sleeps, and outputs that do not depend on time.
PROGRAMS = {
    "lock": """
        import time

        def f(i):
            with lock:
                stamps[2 * i] = time.time()
                time.sleep(0.2)
                stamps[2 * i + 1] = time.time()

        if __name__ == "__main__":
            lock = Lock()
            n = 3
            stamps = RawArray("d", 2 * n)
            with Pool() as p:
                res = p.map_async(f, range(n))
                res.get()
            spans = sorted(zip(stamps[::2], stamps[1::2]))
            print(all(end <= start for (_, end), (start, _) in zip(spans, spans[1:])))
        """,
    "semaphore": """
        import time

        def f(i):
            with sem:
                with inside.get_lock():
                    inside.value += 1
                    most[i] = inside.value
                time.sleep(0.3)
                with inside.get_lock():
                    inside.value -= 1

        if __name__ == "__main__":
            sem, inside, most = Semaphore(value=2), Value("i", 0), Array("i", 4)
            with Pool(4) as p:
                p.map(f, range(4))
            print(max(most[:]) <= 2, min(most[:]) >= 1, inside.value)
        """,
    "barrier": """
        import time

        def f():
            return barrier.wait()

        if __name__ == "__main__":
            n = 2
            barrier = Barrier(n)
            async_results = []
            with Pool(processes=2) as p:
                async_results.append(p.apply_async(f, ()))
                time.sleep(0.5)
                async_results.append(p.apply_async(f, ()))
                print(sorted(res.get() for res in async_results))
            print(barrier.n_waiting, not barrier.broken)
        """,
    "counter": """
        def incr(proc_id):
            for _ in range(25):
                v.value += 1

        def sync_incr(proc_id):
            for _ in range(25):
                with v.get_lock():
                    v.value += 1

        if __name__ == '__main__':
            v = RawValue('i', 0)
            print(v.value)
            with Pool() as p:
                res = p.map_async(incr, [str(i) for i in range(4)])
                p.close()
                res.get()
                p.join()
            print(0 < v.value <= 100)
            v = Value('i')
            print(v.value)
            with Pool() as p:
                res = p.map_async(sync_incr, [str(i) for i in range(4)])
                p.close()
                res.get()
                p.join()
            print(v.value)
        """,
    "c_types": """
        def replace(index, value):
            a[index] = value

        def add(index, value):
            a[index] += value

        def to_upper():
            my_str.value.upper()

        if __name__ == '__main__':
            x = [4, 8, 15, 16, 23, 42]
            a = Array('i', x)
            my_str = Array('c', b'hello')
            p = Process(target=replace, args=(0, 45))
            p.start()
            p.join()
            print(a[0])
            with Pool() as p:
                res = p.starmap_async(add, [(i, 1) for i in range(len(a))])
                p.close()
                res.wait()
                p.join()
            print(a[:])
            a[:] = [i for i in range(len(a))]
            print(a[2:4])
            print(my_str.value)
            p = Process(target=to_upper)
            p.start()
            p.join()
            print(my_str[:])
            for char in my_str.value:
                print(bytes([char]))
        """,
}


def run_program(path: Path, imports: str, body: str) -> str:
    path.write_text(imports + textwrap.dedent(body))
    done = subprocess.run(
        [sys.executable, str(path)], capture_output=True, text=True, timeout=120, cwd=path.parent
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_lithops_example_programs_print_what_multiprocessing_prints(name, tmp_path, storage_root):
    theirs = run_program(tmp_path / "std.py", STD_IMPORTS, PROGRAMS[name])
    ours = run_program(tmp_path / "ours.py", OUR_IMPORTS.format(root=str(storage_root)), PROGRAMS[name])
    assert ours == theirs
    assert "False" not in theirs


# -- on a moto S3 bucket --------------------------------------------------------------------------


def test_a_lock_and_a_value_on_a_moto_bucket(s3_storage, s3_endpoint):
    """On S3 (moto); one function at a time: moto checks a conditional PUT's condition, then writes,
    without a lock between the two, so concurrent compare-and-swaps can both pass there (S3 itself
    serializes them). Concurrency is tested on local storage."""
    with dask.config.set({"faas.workers": 1}):
        config = lithops_aws_s3_config(s3_endpoint, s3_storage.bucket)
        mp_config.set_parameter(mp_config.LITHOPS_CONFIG, config)
        try:
            value, lock, stamps = Value("i", 0), Lock(), RawArray("d", 4)
            assert list(s3_storage.list(ROOT + "/"))  # the state is in the bucket
            with Pool() as pool:
                pool.starmap(count_up, [(value, 10, True)] * 3)
                pool.starmap(hold_lock, [(lock, stamps, i) for i in range(2)])
            assert value.value == 30
            (_, first_end), (second_start, _) = sorted(zip(stamps[::2], stamps[1::2], strict=True))
            assert first_end <= second_start
            del value, lock, stamps
            gc.collect()
        finally:
            mp_config.set_parameter(mp_config.LITHOPS_CONFIG, {})
        assert list(s3_storage.list("")) == []


def hold_lock(lock, stamps, index):
    with lock:
        stamps[2 * index] = time.time()
        time.sleep(0.2)
        stamps[2 * index + 1] = time.time()
