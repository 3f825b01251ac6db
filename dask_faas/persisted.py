"""Results that ``dask.persist`` leaves in object storage: duck-typed Dask futures."""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any

from .protocol import Ref
from .tasks import Inline, load

if TYPE_CHECKING:
    from .executor import FaasExecutor

__all__ = ["FaasFuture", "find"]

#: The persisted results still referenced somewhere: by (executor id, key), and by key alone.
_OWN: weakref.WeakValueDictionary[tuple[int, Hashable], FaasFuture] = weakref.WeakValueDictionary()
_ANY: weakref.WeakValueDictionary[Hashable, FaasFuture] = weakref.WeakValueDictionary()


def find(key: Hashable, executor: FaasExecutor) -> Ref | Inline | None:
    """The stored reference of a persisted ``key`` for a compute on ``executor``, if any.

    Dask's graph optimizations may inline a persisted collection's futures into the tasks that use
    them, so the engine looks up keys that no graph node defines here.

    Raises
    ------
    ValueError
        If ``key`` was persisted by another executor.
    """
    future = _OWN.get((id(executor), key)) or _ANY.get(key)
    return None if future is None else future.reference(executor)


class FaasFuture:
    """A persisted result: a reference to an object in the job's storage (or a small inline value).

    Dask recognises it as a future (``__dask_future__``), so a persisted collection's graph holds
    these instead of data, and a later compute on the same executor reads them without recomputing.
    The object is deleted when the future is garbage-collected or the executor shuts down.
    """

    __dask_future__ = True

    def __init__(self, key: Hashable, value: Ref | Inline, executor: FaasExecutor) -> None:
        self.key = key
        self._value = value
        self._executor = weakref.ref(executor)
        _OWN[id(executor), key] = _ANY[key] = self
        if isinstance(value, Ref):
            weakref.finalize(self, executor._job.delete, value)

    def reference(self, executor: FaasExecutor) -> Ref | Inline:
        """The stored reference, for a compute on ``executor``.

        Raises
        ------
        ValueError
            If the data was persisted by another executor, or that executor has shut down.
        """
        owner = self._executor()
        if owner is not executor or owner._shutdown:
            raise ValueError(
                f"the data of {self.key!r} was persisted by another FaasExecutor, or by one that has "
                "shut down: compute it again, or compute on the executor that persisted it"
            )
        return self._value

    def result(self) -> Any:
        """Fetch the value."""
        owner = self._executor()
        if owner is None:
            raise ValueError(f"the executor that persisted {self.key!r} is gone")
        return load(self._value, owner._job)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("dask-faas-future", self.key, getattr(self._value, "key", None))

    def __repr__(self) -> str:
        where = self._value.key if isinstance(self._value, Ref) else "inline"
        return f"<FaasFuture {self.key!r} at {where}>"
