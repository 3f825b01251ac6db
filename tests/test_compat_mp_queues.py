"""Storage-backed queues, pipes and managers of ``dask_faas.compat.multiprocessing``, checked against
the standard library's ``multiprocessing`` running the same scenarios (the oracle), with functions
on the local pool's real processes, and once on a moto S3 server."""

from __future__ import annotations

import gc
import multiprocessing as std_mp
import queue
import threading
import time
from multiprocessing.managers import SyncManager as StdSyncManager
from pathlib import Path

import dask
import numpy as np
import pytest
from fixtures_s3 import lithops_aws_s3_config

from dask_faas.compat.multiprocessing import Pool, Process
from dask_faas.compat.multiprocessing import config as mp_config
from dask_faas.compat.multiprocessing.connection import Pipe
from dask_faas.compat.multiprocessing.managers import BaseManager, Manager, SyncManager
from dask_faas.compat.multiprocessing.queues import JoinableQueue, Queue, SimpleQueue
from dask_faas.compat.multiprocessing.state import ROOT

SPAWN = std_mp.get_context("spawn")


def shared_files(root: Path) -> list[Path]:
    return [p for p in (root / ROOT).rglob("*") if p.is_file()]


@pytest.fixture(autouse=True)
def faas_defaults(storage_root):
    """Shared state goes to a per-test local storage root, with nothing left under ``dask-faas-mp/``
    once the test's objects are gone."""
    with dask.config.set({"faas.local-storage.root": str(storage_root), "faas.workers": 2}):
        yield
    gc.collect()
    assert shared_files(storage_root) == []


def outcome(call, *args, **kwargs):
    """What a call did: its value, or the type (and message) of what it raised."""
    try:
        return ("value", call(*args, **kwargs))
    except (queue.Empty, queue.Full) as err:
        return ("raised", type(err).__name__)
    except Exception as err:
        return ("raised", type(err).__name__, str(err).split(" <")[0])


# -- queues: the same scenarios on stdlib's and ours ------------------------------------------


def queue_scenario(q):
    steps = [outcome(q.put, "a"), outcome(q.put, ["b", None])]
    steps += [
        outcome(q.qsize),
        outcome(q.full),
        outcome(q.put_nowait, "c"),
        outcome(q.put, "c", timeout=0.05),
    ]
    steps += [outcome(q.get, timeout=30), outcome(q.get, True, 30), outcome(q.qsize), outcome(q.full)]
    steps += [outcome(q.get_nowait), outcome(q.get, timeout=0.05), outcome(q.get, False)]
    steps += [outcome(q.put, None), outcome(q.get, timeout=30), outcome(q.empty)]
    steps += [outcome(q.join_thread), outcome(q.close), outcome(q.put, 1), outcome(q.get, timeout=1)]
    steps += [outcome(q.join_thread), outcome(q.cancel_join_thread)]
    return steps


def joinable_scenario(q):
    steps = [outcome(q.put, 1), outcome(q.put, 2), outcome(q.get, timeout=30), outcome(q.task_done)]
    steps += [outcome(q.get, timeout=30), outcome(q.task_done), outcome(q.join), outcome(q.task_done)]
    return steps


def simple_scenario(q):
    steps = [outcome(q.empty), outcome(q.put, {"x": 1}), outcome(q.get), outcome(q.empty)]
    steps += [outcome(q.close), outcome(q.put, 1), outcome(q.get), outcome(q.empty)]
    return steps


def blocked_put_scenario(q):
    """A put into a full queue waits until a get makes room, then goes through."""
    q.put("first")
    putter = threading.Thread(target=q.put, args=("second",), kwargs={"timeout": 60})
    putter.start()
    got = [q.get(timeout=60), q.get(timeout=60)]
    putter.join(60)
    return got, putter.is_alive()


def test_queue_semantics_match_multiprocessing():
    assert queue_scenario(Queue(2)) == queue_scenario(std_mp.Queue(2))
    assert (
        blocked_put_scenario(Queue(1))
        == blocked_put_scenario(std_mp.Queue(1))
        == (["first", "second"], False)
    )
    assert joinable_scenario(JoinableQueue()) == joinable_scenario(std_mp.JoinableQueue())
    assert simple_scenario(SimpleQueue()) == simple_scenario(std_mp.SimpleQueue())
    assert Queue.Empty is queue.Empty and Queue.Full is queue.Full
    with pytest.raises(TypeError, match="maxsize must be an int, not str"):
        Queue("3")


def produce(q, producer, count):
    for i in range(count):
        q.put((producer, i))
    return producer


def consume(q):
    got = []
    while (item := q.get(timeout=120)) is not None:
        got.append(item)
    return got


def check_delivery(per_consumer, producers, count):
    """Every item delivered once, each producer's items in the order it put them."""
    everything = [item for got in per_consumer for item in got]
    assert sorted(everything) == sorted((p, i) for p in range(producers) for i in range(count))
    for got in per_consumer:
        for p in range(producers):
            mine = [i for who, i in got if who == p]
            assert mine == sorted(mine)


def test_queue_from_3_producers_to_2_consumers_delivers_each_item_once():
    producers, count = 3, 15
    q = Queue()
    with dask.config.set({"faas.workers": 5}), Pool() as pool:
        consumers = [pool.apply_async(consume, (q,)) for _ in range(2)]
        made = pool.starmap(produce, [(q, p, count) for p in range(producers)])
        assert made == list(range(producers))
        for _ in consumers:
            q.put(None)
        ours = [c.get(180) for c in consumers]
    check_delivery(ours, producers, count)
    assert q.qsize() == 0 and q.empty()

    std_q = SPAWN.Queue()
    procs = [SPAWN.Process(target=produce, args=(std_q, p, count)) for p in range(producers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    for _ in range(2):
        std_q.put(None)
    theirs = [consume(std_q), consume(std_q)]
    check_delivery(theirs, producers, count)
    assert sorted(i for got in ours for i in got) == sorted(i for got in theirs for i in got)


def work(q, items):
    for i in range(items):
        q.put(f"Working hard ... {i}")


def drain(q):
    got = []
    while True:
        try:
            got.append(q.get(timeout=1))
        except queue.Empty:
            return got


def put_one(q):
    q.put([42, None, "hello World"])


def test_process_and_client_share_queues_as_lithops_examples_do():
    # buffered_queue.py: the process puts, ends, then the client drains until Empty
    ours, theirs = Queue(), SPAWN.Queue()
    for make, q in ((Process, ours), (SPAWN.Process, theirs)):
        p = make(target=work, args=(q, 5))
        p.start()
        p.join(60)
        assert p.exitcode == 0
    assert drain(ours) == drain(theirs) == [f"Working hard ... {i}" for i in range(5)]
    # simple_queue.py
    simple = SimpleQueue()
    p = Process(target=put_one, args=(simple,))
    p.start()
    assert simple.get() == [42, None, "hello World"]
    p.join(60)


def confirm(q):
    while (task := q.get(timeout=60)) != -1:
        q.task_done()
        if task >= 10:
            raise ValueError(task)
    q.task_done()


def test_joinable_queue_join_waits_for_task_done_across_a_process():
    q = JoinableQueue()
    p = Process(target=confirm, args=(q,))
    p.start()
    for x in range(10):
        q.put(x)
    q.join(timeout=120)  # (a safety net: stdlib's join() has no timeout)
    assert q.qsize() == 0
    q.put(-1)
    p.join(60)
    assert p.exitcode == 0
    q.join(timeout=60)
    q.put(11)
    with pytest.raises(TimeoutError, match="unfinished"):
        q.join(timeout=0.1)
    assert q.get_nowait() == 11


# -- pipes -------------------------------------------------------------------------------------


def pipe_scenario(a, b):
    steps = [outcome(a.send, [42, None, "hello"]), outcome(b.recv), outcome(b.poll), outcome(b.poll, 0.05)]
    steps += [outcome(b.send_bytes, b"abcdef", 1, 3), outcome(a.recv_bytes)]
    steps += [outcome(b.send_bytes, b"abc", 4), outcome(b.send_bytes, b"abc", 0, 5)]
    buf = bytearray(8)
    steps += [outcome(b.send_bytes, b"xyz"), outcome(a.recv_bytes_into, buf, 2), ("buf", bytes(buf))]
    steps += [outcome(b.send_bytes, b"123456789"), outcome(a.recv_bytes_into, bytearray(4))]
    steps += [outcome(a.send, "one"), outcome(a.send, "two"), outcome(b.poll, 10), outcome(b.recv)]
    steps += [outcome(a.close), ("closed", a.closed, b.closed), outcome(a.recv), outcome(a.send, 1)]
    steps += [outcome(b.recv), outcome(b.poll), outcome(b.recv), outcome(b.send, 1)]
    steps += [outcome(b.close), outcome(b.close)]
    return steps


def one_way_scenario(reader, writer):
    steps = [("modes", reader.readable, reader.writable, writer.readable, writer.writable)]
    steps += [outcome(reader.send, 1), outcome(writer.recv), outcome(writer.poll)]
    steps += [
        outcome(writer.send_bytes, b"too long"),
        outcome(reader.recv_bytes, 3),
        ("closed", reader.closed),
    ]
    return steps


def test_pipe_semantics_match_multiprocessing():
    ours, theirs = pipe_scenario(*Pipe()), pipe_scenario(*std_mp.Pipe())
    assert ours == theirs
    assert one_way_scenario(*Pipe(duplex=False)) == one_way_scenario(*std_mp.Pipe(duplex=False))


def send_and_close(conn):
    conn.send([42, None, "hello"])
    conn.send_bytes(b"raw")
    conn.close()


def send_only(conn):
    conn.send("not closed: the call's end closes it")


SENT = {send_and_close: [[42, None, "hello"], b"raw"], send_only: ["not closed: the call's end closes it"]}


def test_pipe_between_a_process_and_the_client_ends_with_eof():
    for make_pipe, make_process in ((Pipe, Process), (std_mp.Pipe, SPAWN.Process)):
        for target in (send_and_close, send_only):
            parent, child = make_pipe()
            p = make_process(target=target, args=(child,))
            p.start()
            child.close()  # the parent's copy only: the process' copy stays open
            received = [parent.recv()]
            if target is send_and_close:
                received.append(parent.recv_bytes())
            assert received == SENT[target]
            assert parent.poll(60)  # EOF is readable
            with pytest.raises(EOFError):
                parent.recv()
            p.join(60)
            assert p.exitcode == 0


# -- managers ----------------------------------------------------------------------------------


def fill(d, lst):
    d[1] = "1"
    d["2"] = 2
    d[0.25] = None
    lst.reverse()


def negative(x):
    return -x


def dict_list_scenario(d, lst):
    steps = [outcome(d.update, {"a": 1}, b=2), outcome(d.setdefault, "a", 9), outcome(d.setdefault, "c")]
    steps += [outcome(d.pop, "b"), outcome(d.pop, "zz", "default"), outcome(d.pop, "zz"), outcome(d.get, "a")]
    steps += [outcome(d.__getitem__, "missing"), outcome(d.__delitem__, "missing"), outcome(d.keys)]
    steps += [
        outcome(d.items),
        outcome(d.values),
        ("len", len(d)),
        ("in", "a" in d, "q" in d),
        ("it", list(d)),
    ]
    steps += [("str", str(d)), outcome(d.copy), outcome(d.popitem), outcome(d.clear), outcome(d.popitem)]
    steps += [outcome(lst.append, 3), outcome(lst.extend, [1, 2]), outcome(lst.insert, 0, 7)]
    steps += [outcome(lst.remove, 1), outcome(lst.remove, 99), outcome(lst.sort), ("list", list(lst))]
    steps += [outcome(lst.sort, key=negative), outcome(lst.index, 3), outcome(lst.count, 2)]
    steps += [outcome(lst.pop), outcome(lst.pop, 0), outcome(lst.__getitem__, 5), outcome(lst.__getitem__, 0)]
    lst += [5, 6]
    steps += [("iadd", list(lst)), ("add", lst + [0]), ("mul", lst * 2), ("slice", lst[1:])]  # noqa: RUF005
    lst[0] = "first"
    del lst[1]
    lst *= 2
    steps += [("list", list(lst)), ("len", len(lst)), ("str", str(lst)), ("rev", list(reversed(lst)))]
    return steps


def namespace_value_array_scenario(manager):
    ns = manager.Namespace(b=2, a=1)
    ns.c = [3]
    steps = [("ns", ns.a, ns.c, str(ns)), outcome(getattr, ns, "zz"), outcome(delattr, ns, "zz")]
    del ns.b
    steps += [("ns", str(ns))]
    v = manager.Value("i", 3)
    v.value = 8
    steps += [("v", v.value, v.get(), str(v))]
    a = manager.Array("i", [1, 2, 3])
    a[0] = 10
    steps += [("a", len(a), a[0], list(a), a[1:], str(a)), outcome(a.__setitem__, 1, "x")]
    steps += [outcome(a.__getitem__, 9)]
    return steps


def test_manager_objects_match_multiprocessing():
    with Manager() as ours, std_mp.Manager() as theirs:
        assert dict_list_scenario(ours.dict(), ours.list([4])) == dict_list_scenario(
            theirs.dict(), theirs.list([4])
        )
        assert namespace_value_array_scenario(ours) == namespace_value_array_scenario(theirs)
        with pytest.raises(TypeError):  # stdlib's server raises it too, sent back as a RemoteError
            ours.Array("i", ["x"])
        # manager.py, Lithops' example: a process changes a dict and a list
        results = []
        for manager, make_process in ((ours, Process), (theirs, SPAWN.Process)):
            d, lst = manager.dict(), manager.list(range(10))
            p = make_process(target=fill, args=(d, lst))
            p.start()
            p.join(60)
            results.append((dict(d), list(lst)))
        assert results[0] == results[1] == ({1: "1", "2": 2, 0.25: None}, list(range(9, -1, -1)))


def record(d, lst, i):
    lst.append(i)
    d[i] = i * i
    d.setdefault("first", i)
    return i


def test_manager_dict_and_list_mutated_concurrently_lose_no_update():
    calls = [(i,) for i in range(24)]
    with Manager() as manager, dask.config.set({"faas.workers": 4}), Pool() as pool:
        d, lst = manager.dict(), manager.list()
        assert pool.starmap(record, [(d, lst, *c) for c in calls]) == list(range(24))
        ours = (sorted(lst), {k: v for k, v in d.items() if k != "first"}, "first" in d)
    with std_mp.Manager() as manager, SPAWN.Pool(2) as pool:
        d, lst = manager.dict(), manager.list()
        pool.starmap(record, [(d, lst, *c) for c in calls])
        theirs = (sorted(lst), {k: v for k, v in d.items() if k != "first"}, "first" in d)
    assert ours == theirs
    assert len(ours[0]) == 24


class ParameterServer:
    def __init__(self, dim):
        self.params = np.zeros(dim)

    def get_params(self):
        return self.params

    def update_params(self, grad):
        self.params += grad


class OurPSManager(SyncManager):
    pass


class StdPSManager(StdSyncManager):
    pass


OurPSManager.register("ParameterServer", ParameterServer)
StdPSManager.register("ParameterServer", ParameterServer)


def train(parameter_server, lock):
    for _ in range(10):
        with lock:
            parameter_server.get_params()
            time.sleep(0.01)
            parameter_server.update_params(np.ones(10))


class NoLock:
    """Our proxies' method calls are atomic by themselves: no lock is needed for no lost update."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return None


def test_parameter_server_registered_class_counts_every_update():
    std = StdPSManager()
    std.start()
    try:
        ps = std.ParameterServer(10)
        with SPAWN.Pool(2) as pool:
            pool.starmap(train, [(ps, std.Lock())] * 5)
        expected = ps.get_params()
    finally:
        std.shutdown()
    manager = OurPSManager()
    manager.start()
    ps = manager.ParameterServer(10)
    assert ps.get_params().tolist() == [0.0] * 10
    with dask.config.set({"faas.workers": 5}), Pool() as pool:
        pool.starmap(train, [(ps, NoLock())] * 5)
    assert ps.get_params().tolist() == expected.tolist() == [50.0] * 10
    with pytest.raises(AttributeError, match="not exposed"):
        ps.params  # noqa: B018  (a proxy exposes methods only, as multiprocessing's AutoProxy)
    assert "ParameterServer" not in dir(SyncManager) and "ParameterServer" not in dir(BaseManager)
    manager.shutdown()
    with pytest.raises(FileNotFoundError):
        ps.get_params()


def synchronization_scenario(manager):
    lock, rlock, event = manager.Lock(), manager.RLock(), manager.Event()
    steps = [lock.acquire(), lock.acquire(False), lock.release(), lock.acquire(timeout=1), lock.release()]
    steps += [rlock.acquire(), rlock.acquire(), rlock.release(), rlock.release()]
    steps += [event.is_set(), event.wait(0.05), event.set(), event.is_set(), event.wait(1), event.clear()]
    semaphore, bounded = manager.Semaphore(2), manager.BoundedSemaphore(1)
    steps += [semaphore.acquire(), semaphore.acquire(), semaphore.acquire(False), semaphore.release()]
    steps += [bounded.acquire(), bounded.acquire(False), bounded.release()]
    condition = manager.Condition(manager.Lock())
    with condition:
        steps += [condition.notify_all(), condition.wait(0.05)]
    steps += [manager.Barrier(1).wait(timeout=5)]
    return steps


def test_manager_synchronization_objects_and_the_parameter_server_with_a_lock():
    pytest.importorskip("dask_faas.compat.multiprocessing.synchronize")
    with Manager() as ours, std_mp.Manager() as theirs:
        assert synchronization_scenario(ours) == synchronization_scenario(theirs)
    with OurPSManager() as manager:
        ps = manager.ParameterServer(10)
        with dask.config.set({"faas.workers": 5}), Pool() as pool:
            pool.starmap(train, [(ps, manager.Lock())] * 5)
        assert ps.get_params().tolist() == [50.0] * 10


def test_manager_lifecycle_errors_match_multiprocessing():
    for make in (SyncManager, StdSyncManager):
        manager = make()
        assert outcome(manager.dict)[:2] == ("raised", "AssertionError")
        manager.start()
        assert outcome(manager.start) == ("raised", "ProcessError", "Already started server")
        manager.shutdown()
        assert outcome(manager.start) == ("raised", "ProcessError", "Manager has shut down")
    with pytest.raises(TypeError, match="initializer must be a callable"):
        SyncManager().start(initializer=3)
    with pytest.raises(NotImplementedError, match="proxytype"):
        OurPSManager.register("Other", dict, proxytype=object)
    OurPSManager.register("Nothing")
    with Manager() as manager, pytest.raises(AttributeError):
        manager.Nothing()  # registered on the subclass only
    with OurPSManager() as manager, pytest.raises(ValueError, match="registered without a callable"):
        manager.Nothing()


# -- leftovers, storage ------------------------------------------------------------------------


def test_nothing_is_left_after_gc_close_and_shutdown(storage_root):
    q, pipe, manager = Queue(), Pipe(), Manager()
    storage = q.space.storage
    q.put(1)
    pipe[0].send("x")
    d = manager.dict(a=1)
    manager.Queue().put(2)
    manager.JoinableQueue().put(3)
    manager.list([1])
    assert len(list(storage.list(ROOT + "/"))) > 10
    manager.shutdown()
    with pytest.raises(FileNotFoundError):
        d["a"]
    for conn in pipe:
        conn.close()
    del q, pipe, conn
    gc.collect()
    assert list(storage.list(ROOT + "/")) == []


def test_memory_storage_is_refused_clearly():
    with dask.config.set({"faas.storage": "memory"}):
        for make in (Queue, SimpleQueue, JoinableQueue, Pipe, Manager):
            with pytest.raises(NotImplementedError, match=r"lives in this process only.*'local' or 's3'"):
                make()


def add_to(d, q, i):
    d[i] = q.get(timeout=60)
    return i


def test_queue_and_manager_dict_on_a_moto_bucket(s3_storage, s3_endpoint):
    """On S3 (moto); one function at a time: moto checks a conditional PUT's condition, then writes,
    without a lock between the two, so concurrent compare-and-swaps can both pass there (S3 itself
    serializes them). Concurrency is tested on local storage."""
    with dask.config.set({"faas.workers": 1}):
        mp_config.update({mp_config.LITHOPS_CONFIG: lithops_aws_s3_config(s3_endpoint, s3_storage.bucket)})
        try:
            q = Queue()
            assert q.space.storage.name == "s3"
            p = Process(target=work, args=(q, 3))
            p.start()
            p.join(60)
            assert drain(q) == [f"Working hard ... {i}" for i in range(3)]
            with Manager() as manager, Pool() as pool:
                d, items = manager.dict(), manager.Queue()
                for i in range(4):
                    items.put(i * 10)
                assert sorted(pool.starmap(add_to, [(d, items, i) for i in range(4)])) == list(range(4))
                assert sorted(d.values()) == [0, 10, 20, 30] and sorted(d.keys()) == [0, 1, 2, 3]
            del q, p
            gc.collect()
        finally:
            mp_config.update({mp_config.LITHOPS_CONFIG: {}})
        assert list(s3_storage.list("")) == []
