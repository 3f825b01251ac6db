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
