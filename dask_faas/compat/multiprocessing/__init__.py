"""``lithops.multiprocessing`` on dask-faas: ``multiprocessing``'s Pool and Process over functions.

::

    from dask_faas.compat import multiprocessing as mp   # instead of: from lithops import multiprocessing

    with mp.Pool() as pool:
        pool.map(square, range(10))          # each chunk one invocation
    p = mp.Process(target=f, args=(1,)); p.start(); p.join()

Provided: :class:`Pool` (``pool``), :class:`Process`, ``current_process``, ``active_children``,
``cpu_count``, the start-method functions (``context``), :mod:`config` (Lithops' knobs) and
:mod:`util`'s remote logs through object storage. The shared-state primitives (queues, pipes,
locks, values, managers: ``unsupported.NAMES``) raise ``NotImplementedError``: Lithops keeps them
in Redis, dask-faas keeps object storage as the only shared state.

Modules: ``pool``, ``process``, ``context``, ``config``, ``util``, ``unsupported``, ``managers``
(whose managers raise too); ``_tasks`` is
what runs inside the functions.
"""

from __future__ import annotations

from multiprocessing import AuthenticationError, BufferTooShort, ProcessError

from . import config, util
from .context import get_all_start_methods, get_context, get_start_method, set_start_method
from .pool import AsyncResult, Pool, TimeoutError
from .process import Process, active_children, cpu_count, current_process
from .unsupported import NAMES as _UNSUPPORTED
from .unsupported import unsupported

Queue = unsupported("Queue")
SimpleQueue = unsupported("SimpleQueue")
JoinableQueue = unsupported("JoinableQueue")
Pipe = unsupported("Pipe")
Lock = unsupported("Lock")
RLock = unsupported("RLock")
Semaphore = unsupported("Semaphore")
BoundedSemaphore = unsupported("BoundedSemaphore")
Event = unsupported("Event")
Condition = unsupported("Condition")
Barrier = unsupported("Barrier")
Value = unsupported("Value")
Array = unsupported("Array")
RawValue = unsupported("RawValue")
RawArray = unsupported("RawArray")
Manager = unsupported("Manager")

__all__ = [
    "AsyncResult",
    "AuthenticationError",
    "BufferTooShort",
    "Pool",
    "Process",
    "ProcessError",
    "TimeoutError",
    "active_children",
    "config",
    "cpu_count",
    "current_process",
    "get_all_start_methods",
    "get_context",
    "get_start_method",
    "set_start_method",
    "util",
    *_UNSUPPORTED,
]
