"""``lithops.retries``: :class:`RetryingFunctionExecutor`, retrying each failed call of a ``map``.

A wrapper of any executor with Lithops' ``map`` / ``wait`` / ``clean`` (a
:class:`~dask_faas.compat.FunctionExecutor`), as in Lithops: a call that failed is mapped again
with the same input, up to ``retries`` times (``lithops.retries`` of the executor's configuration
by default). dask-faas's own ``faas.retries`` retries inside the executor instead.
"""

from __future__ import annotations

from typing import Any

from ._futures import ALL_COMPLETED, ALWAYS, ANY_COMPLETED

__all__ = ["RetryingFunctionExecutor", "RetryingFuture"]


class RetryingFuture:
    """The future of one call that is mapped again when it fails.

    Parameters
    ----------
    response_future : ResponseFuture
        The future of the current attempt (attribute ``response_future``).
    map_function : callable
        The mapped function.
    input : object
        The call's element of the iterdata.
    retries : int, optional
        How many times the call may be mapped again (default 0).
    **kwargs
        The other keywords of the ``map`` (given again on every retry).
    """

    def __init__(
        self, response_future: Any, map_function: Any, input: Any, retries: int | None = None, **kwargs: Any
    ) -> None:
        self.response_future = response_future
        self.map_function = map_function
        self.input = input
        self.retries = retries or 0
        self.map_kwargs = kwargs
        self.failure_count = 0
        self.cancelled = False

    def _inc_failure_count(self) -> None:
        self.failure_count += 1

    def _should_retry(self) -> bool:
        return not self.cancelled and self.failure_count <= self.retries

    def _retry(self, function_executor: Any) -> None:
        self.response_future = function_executor.map(self.map_function, [self.input], **self.map_kwargs)[0]

    def cancel(self) -> None:
        """Give up further retries (a running attempt is left alone)."""
        self.cancelled = True

    @property
    def done(self) -> bool:
        return self.response_future.done

    @property
    def error(self) -> bool:
        return self.response_future.error

    @property
    def stats(self) -> Any:
        return self.response_future.stats

    def status(
        self, throw_except: bool = True, internal_storage: Any = None, check_only: bool = False
    ) -> Any:
        """The current attempt's status (its error raised with ``throw_except``)."""
        return self.response_future.status(throw_except=throw_except)

    def result(self, throw_except: bool = True, internal_storage: Any = None) -> Any:
        """The current attempt's value (its error raised with ``throw_except``)."""
        return self.response_future.result(throw_except=throw_except)


class RetryingFunctionExecutor:
    """An executor whose ``map`` retries each failed call (Lithops' ``RetryingFunctionExecutor``).

    Parameters
    ----------
    executor : FunctionExecutor
        The executor the calls run on (its ``config`` gives the default ``lithops.retries``).
    """

    def __init__(self, executor: Any) -> None:
        self.executor = executor
        self.config = executor.config

    def __enter__(self) -> RetryingFunctionExecutor:
        self.executor.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.executor.__exit__(exc_type, exc_value, traceback)

    def _retries_to_use(self, retries: int | None) -> int:
        if retries is not None:
            return retries
        return (self.config.get("lithops") or {}).get("retries", 0)

    def map(
        self,
        map_function: Any,
        map_iterdata: Any,
        chunksize: int | None = None,
        extra_args: Any = None,
        extra_env: Any = None,
        runtime_memory: int | None = None,
        obj_chunk_size: int | None = None,
        obj_chunk_number: int | None = None,
        obj_newline: str | None = "\n",
        timeout: float | None = None,
        include_modules: Any = None,
        exclude_modules: Any = None,
        retries: int | None = None,
    ) -> list[RetryingFuture]:
        """``map`` on the executor; each call is mapped again on failure, ``retries`` times at most."""
        budget = self._retries_to_use(retries)
        map_kwargs = dict(
            chunksize=chunksize,
            extra_args=extra_args,
            extra_env=extra_env,
            runtime_memory=runtime_memory,
            obj_chunk_size=obj_chunk_size,
            obj_chunk_number=obj_chunk_number,
            obj_newline=obj_newline,
            timeout=timeout,
            include_modules=include_modules,
            exclude_modules=exclude_modules,
        )
        futures = self.executor.map(map_function, map_iterdata, **map_kwargs)
        items = list(map_iterdata)
        return [
            RetryingFuture(f, map_function=map_function, input=i, retries=budget, **map_kwargs)
            for i, f in zip(items, futures, strict=False)
        ]

    def wait(
        self,
        fs: list[RetryingFuture],
        throw_except: bool = True,
        return_when: int = ALL_COMPLETED,
        download_results: bool = False,
        timeout: float | None = None,
        threadpool_size: int = 64,
        wait_dur_sec: float | None = 1,
        show_progressbar: bool = True,
    ) -> tuple[list[RetryingFuture], list[RetryingFuture]]:
        """Wait for ``fs``, mapping failed calls again while they have retries left; ``(done, pending)``."""
        lookup = {id(f.response_future): f for f in fs}
        while True:
            done, pending = self.executor.wait(
                [f.response_future for f in fs],
                throw_except=throw_except,
                return_when=return_when,
                download_results=download_results,
                timeout=timeout,
                threadpool_size=threadpool_size,
                wait_dur_sec=wait_dur_sec,
                show_progressbar=show_progressbar,
            )
            finished = []
            waiting = [lookup[id(r)] for r in pending]
            for response in done:
                future = lookup[id(response)]
                if not response.error:
                    finished.append(future)
                    continue
                future._inc_failure_count()
                if not future._should_retry():
                    finished.append(future)
                    continue
                future._retry(self.executor)
                lookup[id(future.response_future)] = future
                waiting.append(future)
            if (
                return_when == ALWAYS
                or (return_when == ANY_COMPLETED and finished)
                or (return_when == ALL_COMPLETED and not waiting)
            ):
                return finished, waiting

    def clean(
        self,
        fs: Any = None,
        cs: Any = None,
        clean_cloudobjects: bool = True,
        clean_fn: bool = False,
        force: bool = False,
    ) -> None:
        self.executor.clean(fs, cs, clean_cloudobjects, clean_fn, force)
