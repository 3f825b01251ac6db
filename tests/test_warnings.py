"""Warnings raised inside functions are issued again on the client, with the function-side location."""

from __future__ import annotations

import inspect
import warnings

import dask
import dask.bag as db
import pytest


class CustomWarning(UserWarning):
    """A warning class of the user's own module."""


def warn_and_return(x: int) -> int:
    warnings.warn(f"careful with {x}", CustomWarning, stacklevel=1)
    return x


WARN_LINE = inspect.getsourcelines(warn_and_return)[1] + 1


def warn_in_a_loop(n: int) -> int:
    for _ in range(n):
        warnings.warn("the same warning again", RuntimeWarning, stacklevel=1)
    return n


def test_a_warning_in_a_submitted_call_reaches_the_client(executor):
    with pytest.warns(CustomWarning, match="careful with 3") as record:
        assert executor.submit(warn_and_return, 3).result(timeout=60) == 3
    (w,) = [w for w in record if issubclass(w.category, CustomWarning)]
    assert w.filename == __file__ and w.lineno == WARN_LINE  # where the function raised it


def test_a_warning_in_a_dask_task_reaches_the_client(executor):
    with pytest.warns(CustomWarning, match="careful with 7"):
        assert dask.compute(dask.delayed(warn_and_return)(7), scheduler=executor) == (7,)
    with pytest.warns(CustomWarning, match="careful with"):
        assert (
            db.from_sequence(range(4), npartitions=4).map(warn_and_return).sum().compute(scheduler=executor)
            == 6
        )


def test_warnings_are_reported_once_per_call_site(executor):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's default: once per location
        assert list(executor.map(warn_in_a_loop, [1000] * 6)) == [1000] * 6
    assert [str(w.message) for w in record] == ["the same warning again"]


def test_client_filters_decide(executor):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("ignore", CustomWarning)
        assert executor.submit(warn_and_return, 1).result(timeout=60) == 1
    assert not record
    with warnings.catch_warnings():
        warnings.simplefilter("error", CustomWarning)
        with pytest.raises(CustomWarning, match="careful with 2"):
            executor.submit(warn_and_return, 2).result(timeout=60)


class TwoArgumentWarning(UserWarning):
    """A warning class that cannot be built from a message alone."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(f"{message} ({code})")


def warn_with_an_odd_class(x: int) -> int:
    warnings.warn(TwoArgumentWarning("odd", 7), stacklevel=1)
    return x


def warn_then_fail(marker: str) -> None:
    with open(marker, "a") as f:
        f.write("ran\n")
    warnings.warn("about to fail", CustomWarning, stacklevel=1)
    raise KeyError("the real error")


def test_a_warning_class_the_client_cannot_rebuild_does_not_fail_the_call(executor):
    with pytest.warns(UserWarning, match="TwoArgumentWarning: odd"):
        assert executor.submit(warn_with_an_odd_class, 10).result(timeout=60) == 10


def test_an_escalated_warning_neither_retries_nor_hides_the_functions_error(make_executor, tmp_path):
    ex = make_executor(retries=2, retry_backoff_s=0.01)
    marker = tmp_path / "runs"
    with warnings.catch_warnings():
        warnings.simplefilter("error", CustomWarning)
        with pytest.raises(CustomWarning, match="careful with 5"):
            ex.submit(warn_and_return, 5).result(timeout=60)
        assert ex.stats["retries"] == 0  # the call succeeded: nothing to retry
        with pytest.raises(KeyError, match="the real error"):
            ex.submit(warn_then_fail, str(marker)).result(timeout=60)
    assert marker.read_text().count("ran") == 3  # the function's own failure is retried as usual
