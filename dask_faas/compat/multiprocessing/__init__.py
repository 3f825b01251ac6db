"""``lithops.multiprocessing`` on dask-faas: ``multiprocessing``'s API over functions and object storage.

::

    from dask_faas.compat import multiprocessing as mp   # instead of: from lithops import multiprocessing

    with mp.Pool() as pool:
        pool.map(square, range(10))          # each chunk one invocation
    p = mp.Process(target=f, args=(q,)); p.start(); p.join()

Provided: :class:`Pool` (``pool``), :class:`Process`, ``current_process``, ``active_children``,
``cpu_count``, the start-method functions (``context``), :mod:`config` (Lithops' knobs),
:mod:`util`'s remote logs, and the shared state Lithops keeps in Redis, kept here in the job's
object storage (:mod:`state`, on the storage's conditional writes): ``Queue``, ``SimpleQueue``,
``JoinableQueue`` (``queues``), ``Pipe`` (``connection``), ``Lock``, ``RLock``, ``Semaphore``,
``BoundedSemaphore``, ``Event``, ``Condition``, ``Barrier`` (``synchronize``), ``Value``,
``Array``, ``RawValue``, ``RawArray`` (``sharedctypes``) and ``Manager`` (``managers``). They
pickle into functions (as arguments, or as module globals of the program) and act on the same
objects there; waiting on them polls the storage. ``_tasks`` is what runs inside the functions.
"""

from __future__ import annotations

from multiprocessing import AuthenticationError, BufferTooShort, ProcessError

from . import config, util
from .connection import Pipe
from .context import (
    FaasContext,
    allow_connection_pickling,
    freeze_support,
    get_all_start_methods,
    get_context,
    get_logger,
    get_start_method,
    log_to_stderr,
    reducer,
    set_executable,
    set_forkserver_preload,
    set_start_method,
)
from .managers import Manager
from .pool import AsyncResult, Pool, TimeoutError
from .process import Process, active_children, cpu_count, current_process, parent_process
from .queues import JoinableQueue, Queue, SimpleQueue
from .sharedctypes import Array, RawArray, RawValue, Value
from .synchronize import Barrier, BoundedSemaphore, Condition, Event, Lock, RLock, Semaphore

#: Lithops' name of the context class.
DefaultContext = FaasContext

__all__ = [
    "Array",
    "AsyncResult",
    "AuthenticationError",
    "Barrier",
    "BoundedSemaphore",
    "BufferTooShort",
    "Condition",
    "DefaultContext",
    "Event",
    "JoinableQueue",
    "Lock",
    "Manager",
    "Pipe",
    "Pool",
    "Process",
    "ProcessError",
    "Queue",
    "RLock",
    "RawArray",
    "RawValue",
    "Semaphore",
    "SimpleQueue",
    "TimeoutError",
    "Value",
    "active_children",
    "allow_connection_pickling",
    "config",
    "cpu_count",
    "current_process",
    "freeze_support",
    "get_all_start_methods",
    "get_context",
    "get_logger",
    "get_start_method",
    "log_to_stderr",
    "parent_process",
    "reducer",
    "set_executable",
    "set_forkserver_preload",
    "set_start_method",
    "util",
]
