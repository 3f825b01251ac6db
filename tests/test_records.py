"""Invocation records (acceptance 1 of issue 11): one row per invocation, retries included, whose
running times add up to the functions' own measurements; the ComputeReport's breakdown and cost."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest

from dask_faas import ConfigError, FaasExecutor, records
from dask_faas.scheduler import ComputeReport

SLEEP_S = 0.1


def timed(x: int) -> float:
    """Sleep a little and return the function's own measurement of its running time."""
    began = time.perf_counter()
    time.sleep(SLEEP_S)
    return time.perf_counter() - began


def fails_once(marker: str) -> str:
    path = Path(marker)
    if not path.exists():
        path.touch()
        raise ValueError(f"first attempt at {marker} fails")
    return "second time lucky"


def test_one_row_per_invocation_whose_running_times_add_up(make_executor, tmp_path):
    ex = make_executor(logs={"directory": str(tmp_path / "logs")})
    spans = list(
        dask.compute(*[dask.delayed(timed)(i, dask_key_name=f"timed-{i}") for i in range(4)], scheduler=ex)
    )
    spans += list(ex.map(timed, range(4)))
    df = ex.invocations()

    assert list(df.columns) == list(records.FIELDS)
    assert len(df) == ex.stats["invocations"] == 8, df
    assert set(df.outcome) == {"ok"} and set(df.platform) == {"local"} and not df.backup.any()
    # the functions' own measurements, within 5%
    assert df.running_s.sum() == pytest.approx(sum(spans), rel=0.05)
    graph, mapped = df[df.tasks.map(lambda t: t != ("timed",))], df[df.tasks.map(lambda t: t == ("timed",))]
    assert sorted(t for tasks in graph.tasks for t in tasks) == [f"timed-{i}" for i in range(4)]
    assert set(df.prefix) == {"timed"} and len(mapped) == 4
    assert df.job.nunique() == 1 and df.call.nunique() == 8 and set(df.attempt) == {0}
    for row in df.itertuples():
        assert row.submitted <= row.received and row.started <= row.ended
        assert re.fullmatch(r"\d+-\d+", row.request_id), row.request_id  # the local pool's pid-sequence
        assert row.bytes_in > 0 and row.bytes_out > 0 and row.memory_mb == 1024
        assert 0 < row.peak_memory_mb < 1024
        assert row.error is None and row.log_bytes == 0
    assert df.cold.sum() <= 2 and not df.cold.iloc[-1]  # each of the 2 processes starts cold once


def test_a_retried_call_has_a_row_per_attempt(make_executor, tmp_path):
    ex = make_executor(retries=1, retry_backoff_s=0.01)
    assert ex.submit(fails_once, str(tmp_path / "marker")).result(timeout=60) == "second time lucky"
    df = ex.invocations()
    assert list(df.attempt) == [0, 1] and list(df.outcome) == ["error", "ok"], df
    assert df.call.nunique() == 1
    assert "ValueError: first attempt at" in df.error.iloc[0] and df.error.isna().iloc[1]


def test_a_call_past_its_time_limit_is_recorded_lost(make_executor):
    ex = make_executor(timeout_s=1)
    with pytest.raises(Exception, match="timeout_s=1"):
        ex.submit(time.sleep, 10).result(timeout=60)
    (row,) = ex.invocations().itertuples()
    assert row.outcome == "lost" and "timeout_s=1" in row.error
    assert row.received is not None and row.running_s is None and row.request_id is None


def test_collecting_gathers_records_and_reports_of_nested_blocks(make_executor):
    ex = make_executor()
    with records.collecting() as outer:
        assert ex.submit(timed, 0).result(timeout=60) > 0
        with records.collecting() as inner:
            total = dask.delayed(sum)([dask.delayed(timed)(i) for i in range(3)])
            dask.compute(total, scheduler=ex)
    assert (
        len(outer.invocations) == ex.stats["invocations"]
        and len(inner.invocations) == len(outer.invocations) - 1
    )
    assert outer.computes == inner.computes == [ex.last_report]
    report = ex.last_report
    assert isinstance(report, ComputeReport)
    assert report.running_s == pytest.approx(sum(r.running_s for r in inner.invocations))
    assert report.running_s >= 3 * SLEEP_S
    assert report.gb_s == pytest.approx(report.running_s)  # memory_mb=1024: one GB
    assert report.cost_usd == 0.0  # the local pool's price
    assert report.queued_s > 0 and report.client_s >= 0
    assert report.storage_requests.get("put", 0) >= 1 and report.storage_requests.get("get", 0) >= 1
    text = str(report)
    assert "\n" not in text and "GB-s" in text and "storage requests" in text
    assert len(inner.frame()) == len(inner.invocations)


def test_records_off():
    with FaasExecutor(workers=1, records=False) as ex:
        assert ex.submit(timed, 1).result(timeout=60) > 0
        df = ex.invocations()
    assert df.empty and list(df.columns) == list(records.FIELDS)


def test_a_wrong_records_setting_names_it():
    with pytest.raises(ConfigError, match=r"faas\.records"):
        FaasExecutor(records="yes")


# -- cost --------------------------------------------------------------------------------------


def test_estimate_cost_by_hand():
    from dask_faas import config

    prices = config.resolve()["prices"]  # the defaults of faas.yaml
    requests = {"put": 2000, "get": 5000, "head": 1000, "list": 0, "delete": 7}
    # Lambda x86: 100 GB-s x 0.0000166667 + 1000 x 0.0000002 + 2 x 0.005 (PUT) + 6 x 0.0004 (GET, HEAD)
    x86 = records.estimate_cost(prices, "aws_lambda-x86_64", 100, 1000, requests)
    assert x86 == pytest.approx(0.00166667 + 0.0002 + 0.01 + 0.0024)
    # arm64: 100 x 0.0000133334 + 1000 x 0.0000002, no storage
    assert records.estimate_cost(prices, "aws_lambda-arm64", 100, 1000) == pytest.approx(0.00133334 + 0.0002)
    # Code Engine: memory 100 x 0.00000356, CPU 100 x 0.25 vCPU/GB x 0.00003431, 1000 x 0.000000538
    code_engine = records.estimate_cost(prices, "code_engine", 100, 1000)
    assert code_engine == pytest.approx(0.000356 + 0.00085775 + 0.000538)
    assert records.estimate_cost(prices, "local", 100, 1000, requests, storage="local") == 0
    assert records.price_key("aws_lambda", {"aws-lambda": {"architecture": "arm64"}}) == "aws_lambda-arm64"
    assert records.price_key("aws_lambda", {}) == "aws_lambda-x86_64"
    with pytest.raises(ConfigError, match=r"'faas\.prices' has no entry 'nowhere'"):
        records.estimate_cost(prices, "nowhere", 1, 1)
    with pytest.raises(ConfigError, match=r"faas\.prices\.local\.gb-s"):
        records.estimate_cost({"local": {"gb-s": "cheap"}}, "local", 1, 1)


def test_the_report_prices_from_the_users_own_table(make_executor):
    ex = make_executor(prices={"local": {"gb-s": 2.0, "request": 0.5}})
    dask.compute(dask.delayed(timed)(1), scheduler=ex)
    report = ex.last_report
    assert report.cost_usd == pytest.approx(2.0 * report.gb_s + 0.5 * report.invocations)
    assert report.cost_usd > 0.5


# -- on the platforms' emulators ---------------------------------------------------------------


@pytest.mark.parametrize("platform", ["aws_lambda", "openwhisk", "knative"])
def test_request_ids_are_the_platforms(platform, platforms, request, tmp_path):
    from fixtures_platforms import executor_settings

    emulator = platforms.emulator(platform)
    settings = executor_settings(request, platform, str(tmp_path), logs={"directory": str(tmp_path / "logs")})
    with FaasExecutor(**settings) as ex:
        spans = list(ex.map(timed, range(3)))
        spans += dask.compute(dask.delayed(timed)(9), scheduler=ex)
        df = ex.invocations()
    assert len(df) == ex.stats["invocations"] == 4 and set(df.outcome) == {"ok"}
    assert set(df.platform) == {platform}
    logged = {entry.get("request_id") for entry in emulator.log()}
    assert set(df.request_id) <= logged, (set(df.request_id), logged)
    assert df.running_s.sum() == pytest.approx(sum(spans), rel=0.05)


def test_a_delivery_the_platform_lost_is_recorded_lost(platforms, request, tmp_path):
    from fixtures_platforms import executor_settings

    emulator = platforms.emulator("aws_lambda")
    settings = executor_settings(request, "aws_lambda", str(tmp_path), start_deadline_s=1)
    emulator.configure(lose=1)  # the first invocation is accepted and never answered
    try:
        with FaasExecutor(**settings) as ex:
            assert ex.submit(timed, 1).result(timeout=60) > 0
            df = ex.invocations()
            stats = dict(ex.stats)
    finally:
        emulator.reset()
    assert stats["redeliveries"] == 1 and len(df) == stats["invocations"] == 2, (stats, df)
    assert list(df.outcome) == ["lost", "ok"] and df.call.nunique() == 1 and df.delivery.nunique() == 2
    lost = df.iloc[0]
    assert "delivered again" in lost.error and df.request_id.isna().iloc[0] and df.running_s.isna().iloc[0]


def test_own_prices_replace_the_defaults_of_names_with_underscores():
    from dask_faas import config

    for own in (
        {"aws_lambda-x86_64": {"gb-s": 1.0}},
        {"aws-lambda-x86-64": {"gb-s": 1.0}},
        {"code_engine": {"gb-s": 1.0, "vcpu-s": 0}},
    ):
        prices = config.resolve({"prices": own})["prices"]
        platform = next(iter(own))
        expected = 10.0 + (0.0000002 * 3 if "lambda" in platform else 0.000000538 * 3)
        # the own GB-second price; the request price of the default entry stays
        assert records.estimate_cost(prices, platform, 10, 3) == pytest.approx(expected), own
    with dask.config.set({"faas.prices.ibm_cf": {"gb-s": 2.0}}):
        assert records.estimate_cost(config.resolve()["prices"], "ibm_cf", 10, 0) == pytest.approx(20.0)


def test_the_peak_memory_of_a_process_started_by_a_large_one_is_its_own():
    """Linux keeps ``ru_maxrss`` across ``execve``: a function process started by a client of
    900 MiB would report 900 MiB. The peak is the process's own since the reset."""
    held = bytearray(900 * 2**20)  # the parent's pages, touched (zero-filled)
    code = (
        "from dask_faas import capture; capture.reset_peak_memory(); "
        "block = bytearray(50 * 2**20); print(capture.peak_memory_mb())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    peak = float(done.stdout)
    assert 50 <= peak < 300, (
        f"peak {peak} MiB for a process that allocated 50 MiB (its parent holds {len(held) >> 20})"
    )
