"""``lithops.wait``: waiting on futures of any executor, and their results."""

from __future__ import annotations

from typing import Any

from ._binding import as_list
from ._futures import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, FuturesList, results_of, wait_for

__all__ = [
    "ALL_COMPLETED",
    "ALWAYS",
    "ANY_COMPLETED",
    "THREADPOOL_SIZE",
    "WAIT_DUR_SEC",
    "get_result",
    "wait",
]

#: Lithops' defaults (accepted; dask-faas waits on the futures themselves, without polling).
THREADPOOL_SIZE = 64
WAIT_DUR_SEC = 1


def wait(
    fs: Any,
    throw_except: bool = True,
    return_when: int = ALL_COMPLETED,
    download_results: bool = False,
    timeout: float | None = None,
    threadpool_size: int = THREADPOOL_SIZE,
    wait_dur_sec: float | None = WAIT_DUR_SEC,
    show_progressbar: bool = True,
    **_: Any,
) -> tuple[FuturesList, FuturesList]:
    """Wait for the futures ``fs``; ``(done, not_done)``.

    ``return_when``: :data:`ALL_COMPLETED`, :data:`ANY_COMPLETED`, :data:`ALWAYS` or a percentage.

    Raises
    ------
    TimeoutError
        After ``timeout`` seconds.
    Exception
        With ``throw_except``, the error of the first failed call.
    """
    done, not_done = wait_for(as_list(fs), return_when, timeout, throw_except)
    return FuturesList(done), FuturesList(not_done)


def get_result(
    fs: Any,
    throw_except: bool = True,
    timeout: float | None = None,
    threadpool_size: int = THREADPOOL_SIZE,
    wait_dur_sec: float | None = WAIT_DUR_SEC,
    show_progressbar: bool = True,
    **_: Any,
) -> Any:
    """The results of ``fs`` in order (one value for one future), futures returned by calls
    replaced by their results."""
    single = not isinstance(fs, list | tuple)
    results = results_of(as_list(fs), throw_except, timeout)
    return results[0] if single and len(results) == 1 else results
