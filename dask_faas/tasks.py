"""What a function does with a batch of Dask graph tasks: fetch inputs, run, keep outputs.

The client (:mod:`dask_faas.scheduler`) holds references, not data: a task's inputs arrive as
:class:`~dask_faas.protocol.Ref` (a signed object in storage, fetched here) or :class:`Inline` (a small
pickled value carried in the payload). Each output is pickled once and either returned inline, when
small, or written to storage under a per-call, per-attempt name, so a retried or duplicated
invocation never overwrites what another attempt wrote.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from . import serialize, worker
from .protocol import Ref
from .store import SignedStore

__all__ = ["Inline", "key_name", "load", "run_tasks"]


@dataclass(frozen=True)
class Inline:
    """A small pickled value that travels inside messages instead of through storage."""

    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


def key_name(key: Hashable) -> str:
    """A storage-safe, fixed-length name for a Dask key."""
    return hashlib.blake2b(repr(key).encode(), digest_size=12).hexdigest()


def load(value: Any, store: SignedStore) -> Any:
    """The Python value behind a reference (plain values pass through)."""
    if isinstance(value, Inline):
        return serialize.loads(value.data)
    if isinstance(value, Ref):
        return serialize.loads(store.fetch(value))
    return value


def run_tasks(
    batch: list[tuple[Hashable, Any, dict[Hashable, Any]]], compute: str, inline_limit: int
) -> list[tuple[Hashable, Inline | Ref]]:
    """Run ``(key, task, inputs)`` triples inside a function; return a reference to each output.

    Parameters
    ----------
    batch : list
        Independent tasks (``dask._task_spec`` nodes) with references to their inputs.
    compute : str
        Name of the compute under the job prefix; outputs are written below it.
    inline_limit : int
        Outputs up to this many pickled bytes come back inline.

    Raises
    ------
    Exception
        The first task's exception, with the failing key in its ``dask_faas_key`` attribute.
    """
    context = worker.current()
    store = context.store.child(compute)
    loaded: dict[Hashable, Any] = {}
    outputs = []
    for key, task, inputs in batch:
        try:
            data = {}
            for dep, ref in inputs.items():
                if dep not in loaded:
                    loaded[dep] = load(ref, context.store)
                data[dep] = loaded[dep]
            value = task(data)
        except Exception as exc:
            exc.dask_faas_key = key  # type: ignore[attr-defined]
            raise
        pickled = serialize.dumps(value)
        if len(pickled) <= inline_limit:
            outputs.append((key, Inline(pickled)))
        else:
            name = f"{key_name(key)}.{context.call}.{context.attempt}"
            outputs.append((key, store.put(name, pickled)))
    return outputs
