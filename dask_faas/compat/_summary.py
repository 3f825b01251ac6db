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


def records_of(frame: Any, futures: list[Any] | None) -> Any:
    """The rows of ``frame`` (invocation records) of the calls of ``futures`` (None: all)."""
    if futures is None or frame.empty:
        return frame
    tasks = {f.task for f in futures if f.task is not None}
    return frame[frame["tasks"].map(lambda names: bool(tasks.intersection(names)))]


def call_stats(frame: Any, task: str | None) -> dict[str, Any]:
    """Lithops' statistics of the call named ``task`` in the invocation records ``frame``: those of
    its last attempt that answered (``{}`` if there is none).

    ``host_submit_tstamp`` / ``host_result_done_tstamp`` (the client's clock), ``worker_start_tstamp``
    / ``worker_end_tstamp`` (the function's), ``worker_exec_time`` (seconds between them),
    ``worker_func_exec_time`` (the user's function), ``worker_cold_start``,
    ``worker_peak_memory_end`` (bytes), ``activation_id`` (the platform's request id),
    ``func_result_size``, ``runtime_memory``, ``attempts``.
    """
    if frame.empty or task is None:
        return {}
    rows = frame[frame["tasks"].map(lambda names: task in names)]
    answered = rows[rows["outcome"].isin(["ok", "error"])]
    if answered.empty:
        return {}
    last = answered.iloc[-1]

    def number(value: Any) -> float | None:
        return None if value is None or value != value else float(value)  # NaN: unknown

    started, ended = number(last["started"]), number(last["ended"])
    peak = number(last["peak_memory_mb"])
    return {
        "host_submit_tstamp": number(last["submitted"]),
        "host_result_done_tstamp": number(last["received"]),
        "worker_start_tstamp": started,
        "worker_end_tstamp": ended,
        "worker_exec_time": None if started is None or ended is None else ended - started,
        "worker_func_exec_time": number(last["running_s"]),
        "worker_cold_start": None
        if last["cold"] is None or last["cold"] != last["cold"]
        else bool(last["cold"]),
        "worker_peak_memory_end": None if peak is None else int(peak * 2**20),
        "activation_id": last["request_id"],
        "func_result_size": int(last["bytes_out"]),
        "runtime_memory": int(last["memory_mb"]),
        "attempts": len(rows),
    }
