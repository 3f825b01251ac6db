"""``multiprocessing.Barrier`` in object storage: one :class:`~.state.Register` of the generation.

The register holds the generation being filled, how many have arrived in it, whether the barrier
is broken and the last generation that passed. An arrival is one compare-and-swap; the last one
of a generation runs the action and lets the generation pass; the others poll until it has.
"""

from __future__ import annotations

import operator
import threading
import time
from collections.abc import Callable
from typing import Any

from .state import Register, Space, poll

__all__ = ["Barrier", "BrokenBarrierError"]

BrokenBarrierError = threading.BrokenBarrierError


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _rebuild(
    space: Space, parties: int, action: Callable[[], object] | None, timeout: float | None
) -> Barrier:
    barrier = Barrier.__new__(Barrier)
    barrier._attach(space, parties, action, timeout)
    return barrier


class Barrier:
    """A barrier for ``parties`` processes (``multiprocessing.Barrier``), reusable generation after
    generation.

    Its register holds the generation being filled, how many have arrived in it, whether the
    barrier is broken and the last generation that passed.

    Parameters
    ----------
    parties : int
        How many :meth:`wait` calls a generation needs (``>= 1``).
    action : callable, optional
        Called by the last arrival of each generation before the others go on; if it raises, the
        barrier breaks.
    timeout : float, optional
        The default timeout of :meth:`wait`.
    space : Space, optional
        Where its state goes (default: a new space of its own in the default storage).
    """

    kind = "barrier"

    def __init__(
        self,
        parties: int,
        action: Callable[[], object] | None = None,
        timeout: float | None = None,
        *,
        space: Space | None = None,
    ) -> None:
        parties = operator.index(parties)
        if parties < 1:
            raise ValueError(f"a barrier needs at least 1 party, not {parties}")
        params = {"parties": parties, "action": action, "timeout": timeout}
        self._attach(space if space is not None else Space(self.kind), **params)
        self._state.write({"gen": 0, "count": 0, "broken": False, "passed": -1})

    def _attach(
        self, space: Space, parties: int, action: Callable[[], object] | None, timeout: float | None
    ) -> None:
        self._space, self._parties, self._action, self._timeout = space, parties, action, timeout
        self._state = Register(space, "state")

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (self._space, self._parties, self._action, self._timeout)

    def wait(self, timeout: float | None = None) -> int:
        """Wait until ``parties`` calls have arrived; this call's arrival index, ``0`` to
        ``parties - 1``.

        Raises
        ------
        threading.BrokenBarrierError
            If the barrier is or becomes broken (:meth:`abort`, a timeout, a failed action) or is
            reset while this call waits.
        """
        timeout = self._timeout if timeout is None else timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        parties = self._parties

        def enter(s: dict[str, Any]) -> tuple[dict[str, Any], tuple[Any, ...]]:
            if s["broken"]:
                return s, ("broken",)
            if s["count"] >= parties:  # the last arrival is running the action
                return s, ()
            return {**s, "count": s["count"] + 1}, ("in", s["gen"], s["count"])

        entered = poll(lambda: self._state.update(enter), _left(deadline))
        if entered is None:
            self.abort()
            raise BrokenBarrierError
        if entered[0] == "broken":
            raise BrokenBarrierError
        _, gen, index = entered
        if index == parties - 1:
            return self._release(gen, index)

        def settled() -> dict[str, Any] | None:
            s = self._state.read()
            return s if s["passed"] >= gen or s["broken"] or s["gen"] != gen else None

        state = poll(settled, _left(deadline))
        if state is None:  # timed out: break this generation, unless it passed meanwhile

            def breaking(s: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
                if s["gen"] != gen or s["broken"]:
                    return s, s
                broken = {**s, "broken": True}
                return broken, broken

            state = self._state.update(breaking)
        if state["passed"] >= gen:
            return index
        raise BrokenBarrierError

    def _release(self, gen: int, index: int) -> int:
        try:
            if self._action is not None:
                self._action()
        except BaseException:
            self._state.update(lambda s: ({**s, "broken": True}, None) if s["gen"] == gen else (s, None))
            raise

        def passing(s: dict[str, Any]) -> tuple[dict[str, Any], bool]:
            if s["gen"] != gen or s["broken"]:  # aborted or reset during the action
                return s, False
            return {"gen": gen + 1, "count": 0, "broken": False, "passed": gen}, True

        if not self._state.update(passing):
            raise BrokenBarrierError
        return index

    def reset(self) -> None:
        """Return the barrier to empty and unbroken; the calls waiting raise ``BrokenBarrierError``."""
        self._state.update(lambda s: ({**s, "gen": s["gen"] + 1, "count": 0, "broken": False}, None))

    def abort(self) -> None:
        """Break the barrier: the calls waiting, and those to come until :meth:`reset`, raise
        ``BrokenBarrierError``."""
        self._state.update(lambda s: (s, None) if s["broken"] else ({**s, "broken": True}, None))

    @property
    def parties(self) -> int:
        """How many calls a generation needs."""
        return self._parties

    @property
    def n_waiting(self) -> int:
        """How many calls wait in the generation being filled (0 while broken)."""
        state = self._state.read()
        return 0 if state["broken"] or state["count"] >= self._parties else int(state["count"])

    @property
    def broken(self) -> bool:
        """Whether the barrier is broken."""
        return bool(self._state.read()["broken"])

    def __repr__(self) -> str:
        return f"<Barrier of {self._parties} at {self._space.prefix}>"
