"""Lithops' ``job_summary``: the invocation records of an executor, one row per job."""

from __future__ import annotations

from typing import Any


def job_summary(frame: Any) -> Any:
    """One row per job (the ``prefix`` of its records): calls, invocations (retries included),
    errors, first submission, last end and GB-s, from :func:`dask_faas.records.frame`."""
    if frame.empty:
        return frame
    spans = frame.assign(gb_s=frame["running_s"].fillna(0) * frame["memory_mb"] / 1024)
    return (
        spans.groupby("prefix")
        .agg(
            calls=("call", "nunique"),
            invocations=("call", "size"),
            errors=("outcome", lambda o: int((o == "error").sum())),
            submitted=("submitted", "min"),
            ended=("ended", "max"),
            gb_s=("gb_s", "sum"),
        )
        .reset_index()
    )
