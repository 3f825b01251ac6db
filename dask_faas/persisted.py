"""Results that ``dask.persist`` leaves in object storage: duck-typed Dask futures."""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from typing import Any

from .protocol import Ref
from .session import Session
from .tasks import Inline, load

__all__ = ["FaasFuture", "find"]

#: The persisted results still referenced somewhere: by (session id, key), and by key alone.
_OWN: weakref.WeakValueDictionary[tuple[int, Hashable], FaasFuture] = weakref.WeakValueDictionary()
_ANY: weakref.WeakValueDictionary[Hashable, FaasFuture] = weakref.WeakValueDictionary()


def find(key: Hashable, session: Session) -> Ref | Inline | None:
    """The stored reference of a persisted ``key`` for a compute on ``session``, if any.

    Dask's graph optimizations may inline a persisted collection's futures into the tasks that use
    them, so the engine looks up keys that no graph node defines here.

    Raises
    ------
    ValueError
        If ``key`` was persisted by another executor.
    """
    future = _OWN.get((id(session), key)) or _ANY.get(key)
    return None if future is None else future.reference(session)


class FaasFuture:
    """A persisted result: a reference to an object in the job's storage (or a small inline value).

    Dask recognises it as a future (``__dask_future__``), so a persisted collection's graph holds
    these instead of data, and a later compute on the same executor reads them without recomputing.
    The object is deleted when the future is garbage-collected or the executor shuts down.
    """

    __dask_future__ = True

    def __init__(self, key: Hashable, value: Ref | Inline, session: Session) -> None:
        self.key = key
        self._value = value
        self._session = session
        _OWN[id(session), key] = _ANY[key] = self
        if isinstance(value, Ref):
            weakref.finalize(self, session.store.delete, value)

    def reference(self, session: Session) -> Ref | Inline:
        """The stored reference, for a compute on ``session`` (an executor's ``session``).

        Raises
        ------
        ValueError
            If the data was persisted by another executor, or that executor has shut down.
        """
        if self._session is not session or session.closed:
            raise ValueError(
                f"the data of {self.key!r} was persisted by another FaasExecutor, or by one that has "
                "shut down: compute it again, or compute on the executor that persisted it"
            )
        return self._value

    def result(self) -> Any:
        """Fetch the value.

        Raises
        ------
        ValueError
            If the executor that persisted it has shut down (its data was deleted).
        """
        if self._session.closed:
            raise ValueError(f"the executor that persisted {self.key!r} has shut down")
        return load(self._value, self._session.store)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return ("dask-faas-future", self.key, getattr(self._value, "key", None))

    def __repr__(self) -> str:
        where = self._value.key if isinstance(self._value, Ref) else "inline"
        return f"<FaasFuture {self.key!r} at {where}>"
