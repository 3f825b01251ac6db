"""Time limits of calls in flight: the deadline watcher, and the rule that tells a straggler.

:class:`Deadlines` is the one thread that acts on calls at their deadlines (a started invocation
unanswered past its time limit, an attempt that never started, a call that became a straggler).
:class:`BackupRule` and :class:`Stragglers` decide when a call is a straggler: a deadline relative to
the calls it was submitted with, after which :class:`~dask_faas.dispatch.Dispatcher` invokes it
again (a speculative backup, as MapReduce and cubed do).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .session import CallOptions

__all__ = ["MAX_REDELIVERIES", "BackupRule", "Deadlines", "Stragglers", "deadline_grace_s", "longest_call_s"]

#: How many times one attempt is delivered again because it did not start within its start deadline.
MAX_REDELIVERIES = 3

logger = logging.getLogger("dask_faas")


def deadline_grace_s(timeout_s: float) -> float:
    """How long past its ``timeout_s`` a started invocation may stay unanswered before it is failed."""
    return max(5.0, 0.1 * timeout_s)


def longest_call_s(
    options: CallOptions,
    answer_grace_s: float = 0.0,
    start_deadline_s: float = 0.0,
    throttle_deadline_s: float = 0.0,
    backups: bool = False,
) -> float:
    """How long a waiter may wait for a call once started: every attempt up to its deadline (with
    the platform's ``answer_grace_s``, the re-deliveries after a missed ``start_deadline_s`` and the
    time it may be throttled; twice that with ``backups``, as a backup sent just before its
    original's deadline has a deadline of its own), the backoffs between them, and one more grace
    for the outcome to reach the waiter."""
    grace = deadline_grace_s(options.timeout_s)
    backoff = sum(options.retry_backoff_s * 2**a * 1.5 for a in range(options.retries))
    attempt = options.timeout_s + answer_grace_s + grace + MAX_REDELIVERIES * start_deadline_s
    attempt += throttle_deadline_s
    if backups:
        attempt *= 2
    return (options.retries + 1) * attempt + backoff + grace


class Watched(Protocol):
    """What a deadline is set for: something that can say what it is, for the log."""

    def describe(self) -> str: ...


class Deadlines:
    """One thread that calls actions at their deadlines (started on the first deadline set).

    The heap holds only times and numbers; what is being watched is in a dict that a discarded
    deadline leaves at once, so an answered call's future and arguments are never kept alive here.
    An action runs on the watcher's thread, without its lock held; one that raises is logged and
    the watcher goes on.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int]] = []
        self._watched: dict[int, tuple[Any, Callable[[Any], None]]] = {}
        self._numbers = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def add(self, subject: Watched, seconds: float, action: Callable[[Any], None]) -> int:
        """Call ``action(subject)`` in ``seconds`` unless :meth:`discard` is called first with the
        number this returns (after :meth:`close`, nothing is ever called)."""
        return self.add_at(subject, time.monotonic() + seconds, action)

    def add_at(self, subject: Watched, deadline: float, action: Callable[[Any], None]) -> int:
        """:meth:`add` at the ``time.monotonic()`` time ``deadline`` (one in the past: at once,
        after the deadlines earlier than it)."""
        number = next(self._numbers)
        with self._cond:
            if self._closed:
                return number
            self._watched[number] = (subject, action)
            earliest = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, number))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="dask-faas-deadlines", daemon=True)
                self._thread.start()
            elif earliest:
                self._cond.notify()
        return number

    def discard(self, number: int | None) -> None:
        """Forget the deadline ``number`` (None, or one already passed or discarded: nothing)."""
        if number is not None:
            with self._cond:
                self._watched.pop(number, None)
                if len(self._heap) > 2 * len(self._watched) + 1024:  # drop discarded entries
                    self._heap = [entry for entry in self._heap if entry[1] in self._watched]
                    heapq.heapify(self._heap)

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and (self._heap[0][1] not in self._watched or self._heap[0][0] <= now):
                    _, number = heapq.heappop(self._heap)
                    watched = self._watched.pop(number, None)
                    if watched is not None:
                        subject, action = watched
                        self._cond.release()
                        try:
                            action(subject)
                        except Exception:  # the watcher must outlive any one call
                            logger.exception("dask-faas: deadline of %s", subject.describe())
                        finally:
                            self._cond.acquire()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def close(self) -> None:
        """Call no more actions; forget every deadline."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._watched.clear()
            self._cond.notify()


@dataclass(frozen=True)
class BackupRule:
    """When a call is a straggler worth invoking again (cubed's rule, with a floor and a cap).

    A call is backed up once it has run longer than ``slowdown`` times the median duration of its
    finished siblings (and at least ``min_s``), provided its group holds at least ``min_siblings``
    calls of which at least the share ``min_done`` have finished; a group never has more than
    ``max_share`` of its calls backed up (at least one).

    Parameters
    ----------
    min_siblings : int
        Calls a group must hold before any of them is backed up.
    min_done : float
        Share of the group's calls that must have finished.
    slowdown : float
        How many times the median a call must have run.
    min_s : float
        A call that ran less than this is never a straggler (a backup of a short call gains little
        and costs an invocation).
    max_share : float
        Most backups per group, as a share of its calls.
    """

    min_siblings: int = 10
    min_done: float = 0.5
    slowdown: float = 3.0
    min_s: float = 1.0
    max_share: float = 0.1

    def most_backups(self, calls: int) -> int:
        """How many calls of a group of ``calls`` may be backed up."""
        return max(1, int(self.max_share * calls))


class _Siblings:
    """One group of sibling calls: how many there are, how long the finished ones took."""

    def __init__(self) -> None:
        self.calls = 0  # submitted in the group
        self.outstanding = 0  # not finished yet (the group is dropped at 0)
        self.finished = 0  # finished with a result
        self.backups = 0
        self.running: set[Any] = set()  # runs sent and not ended, watched for stragglers
        self.armed = False  # whether the running ones have their straggler deadlines
        self._durations: list[float] = []  # sorted

    def finish(self, seconds: float | None) -> None:
        self.finished += 1
        if seconds is not None:
            bisect.insort(self._durations, seconds)

    def median_s(self) -> float | None:
        n, middle = len(self._durations), len(self._durations) // 2
        if not n:
            return None
        return self._durations[middle] if n % 2 else sum(self._durations[middle - 1 : middle + 1]) / 2

    def straggler_after_s(self, rule: BackupRule) -> float | None:
        median = self.median_s()
        if (
            median is None
            or self.calls < rule.min_siblings
            or self.finished < rule.min_done * self.calls
            or self.backups >= rule.most_backups(self.calls)
        ):
            return None
        return max(rule.slowdown * median, rule.min_s)


class Stragglers:
    """Which running calls are stragglers, by a :class:`BackupRule` over groups of siblings.

    A *run* is any hashable object (by identity) with a ``group`` attribute (its siblings) and a
    ``describe()`` method. The caller reports the life of its groups and runs (:meth:`join` and
    :meth:`leave` a group, a run :meth:`sent`, :meth:`stopped` or :meth:`finished`); once a group
    qualifies, each run of it watched here gets a deadline on ``deadlines`` at which ``on_straggler``
    is called with it, from the deadline thread. That callback asks :meth:`take`, which says
    whether the run still is a straggler and then counts the backup. Thread-safe.

    Parameters
    ----------
    rule : BackupRule
        When a run is a straggler.
    deadlines : Deadlines
        The watcher that calls ``on_straggler``.
    on_straggler : callable
        Called with a run that ran past its straggler deadline.
    """

    def __init__(self, rule: BackupRule, deadlines: Deadlines, on_straggler: Callable[[Any], None]) -> None:
        self.rule, self._deadlines, self._on_straggler = rule, deadlines, on_straggler
        self._lock = threading.Lock()
        self._groups: dict[Hashable, _Siblings] = {}
        self._sent: dict[Any, float] = {}  # run -> time.monotonic() of its send
        self._watches: dict[Any, int] = {}  # run -> its straggler deadline

    def join(self, group: Hashable) -> None:
        """A call of ``group`` was submitted."""
        with self._lock:
            siblings = self._groups.setdefault(group, _Siblings())
            siblings.calls += 1
            siblings.outstanding += 1

    def leave(self, group: Hashable) -> None:
        """A call of ``group`` is done (its future settled): a group lives while calls are out."""
        with self._lock:
            siblings = self._groups.get(group)
            if siblings is not None:
                siblings.outstanding -= 1
                if not siblings.outstanding:
                    del self._groups[group]

    def sent(self, run: Any, watch: bool = True) -> None:
        """``run`` was sent (or sent again after a backoff); ``watch``: it may be backed up."""
        with self._lock:
            self._sent[run] = time.monotonic()
            siblings = self._groups.get(run.group)
            if siblings is None or not watch:
                return
            siblings.running.add(run)
            if siblings.armed:
                self._arm(run, siblings)

    def stopped(self, run: Any) -> None:
        """``run`` ended, or is held back (throttled)."""
        with self._lock:
            self._sent.pop(run, None)
            siblings = self._groups.get(run.group)
            if siblings is not None:
                siblings.running.discard(run)
            number = self._watches.pop(run, None)
        self._deadlines.discard(number)

    def finished(self, run: Any, seconds: float | None) -> None:
        """``run`` answered with the result of its call, which took the function ``seconds``: it
        counts for its siblings' median.

        The median is of the functions' own durations (a platform's queue and cold starts are no
        part of a call's work), compared with the time a running call has had since its send (the
        client cannot tell when a platform started it): a call that waits long in a platform's
        queue can be taken for a straggler, one reason why backups are capped at a share of the
        calls.
        """
        with self._lock:
            siblings = self._groups.get(run.group)
            if siblings is None:
                return
            siblings.finish(seconds)
            if siblings.armed or siblings.straggler_after_s(self.rule) is None:
                return
            siblings.armed = True
            for other in sorted(siblings.running, key=self._sent.__getitem__):  # the oldest first
                self._arm(other, siblings)

    def take(self, run: Any) -> float | None:
        """At ``run``'s straggler deadline: how long it has run when it is a straggler still (its
        backup is counted), or None (its deadline set again when the median grew meanwhile)."""
        with self._lock:
            self._watches.pop(run, None)
            siblings, sent = self._groups.get(run.group), self._sent.get(run)
            if siblings is None or sent is None or run not in siblings.running:
                return None
            after = siblings.straggler_after_s(self.rule)
            if after is None:  # no longer qualifies (more calls, backups used up)
                siblings.armed = False  # the next result looks again
                return None
            ran = time.monotonic() - sent
            if ran < after:
                self._arm(run, siblings)
                return None
            siblings.backups += 1
            siblings.running.discard(run)
            return ran

    def _arm(self, run: Any, siblings: _Siblings) -> None:
        """With the lock held: set ``run``'s straggler deadline, unless it has one."""
        after = siblings.straggler_after_s(self.rule)
        if after is None or run in self._watches:
            return
        # an absolute time, past due ones included: the longest-running straggler comes first
        self._watches[run] = self._deadlines.add_at(run, self._sent[run] + after, self._on_straggler)
