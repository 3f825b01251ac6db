"""What remote platforms do to calls, through each platform's emulator and the S3 test server.

Throttling, a call accepted and never run, a duplicated delivery, payloads above the platform's
limit, and user modules the runtime image cannot import: each test steers the emulator's fault knobs
(``dask_faas.testing.servers``) and checks the result, the emulator's own record of deliveries and
that nothing is left in storage.
"""

from __future__ import annotations

import importlib
import random
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dask
import pytest
from fixtures_platforms import PLATFORMS, Platforms, executor_settings

from dask_faas import FaasExecutor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def square(x: int) -> int:
    return x * x


def token(_: Any) -> float:
    """A different value at every run: a duplicated delivery must not mix two of them."""
    return random.random()


def echo_size(data: bytes) -> bytes:
    return data + data[:1]


@pytest.fixture(params=PLATFORMS)
def platform(request: pytest.FixtureRequest, platforms: Platforms) -> Iterator[str]:
    """A platform's name; its emulator's knobs are reset afterwards."""
    emulator = platforms.emulator(request.param)
    emulator.reset()
    yield request.param
    emulator.reset()


@pytest.fixture
def on(
    request: pytest.FixtureRequest, make_executor: Callable[..., FaasExecutor]
) -> Callable[..., FaasExecutor]:
    """``on(platform, **settings)``: an executor on the platform (checked empty at teardown)."""
    return lambda platform, **settings: make_executor(**executor_settings(request, platform, "", **settings))


def deliveries(platforms: Platforms, platform: str, outcome: str | None = None) -> list[dict[str, Any]]:
    records = platforms.emulator(platform).log()
    return [r for r in records if outcome is None or r["outcome"] == outcome]


def test_throttling_is_backed_off_and_every_call_runs_once(platform, platforms, on):
    ex = on(platform)
    platforms.emulator(platform).configure(throttle=6, retry_after_s=0.05)
    assert list(ex.map(square, range(12))) == [x * x for x in range(12)]
    ran = deliveries(platforms, platform, "ok")
    assert len(ran) == 12, f"each call must run exactly once: {len(ran)} deliveries ran"
    assert ex.stats["invocations"] == 12 and ex.stats["retries"] == 0 and ex.stats["redeliveries"] == 0


def test_a_call_accepted_but_never_run_is_sent_again_after_its_start_deadline(platform, platforms, on):
    ex = on(platform, start_deadline_s=2)
    platforms.emulator(platform).configure(lose=1)
    assert ex.submit(square, 7).result(timeout=60) == 49
    assert ex.stats["redeliveries"] == 1, ex.stats
    assert len(deliveries(platforms, platform, "ok")) == 1


def test_a_long_call_that_started_is_not_sent_again(platform, platforms, on):
    ex = on(platform, start_deadline_s=1.5)
    assert ex.submit(time.sleep, 3).result(timeout=60) is None  # its start mark says it started
    assert ex.stats["redeliveries"] == 0, ex.stats
    assert len(deliveries(platforms, platform, "ok")) == 1


def test_a_duplicated_delivery_yields_one_result(platform, platforms, on):
    ex = on(platform)
    platforms.emulator(platform).configure(duplicate=1)
    value = ex.submit(token, 0).result(timeout=60)
    assert isinstance(value, float)
    deadline = time.monotonic() + 30  # the duplicate may still be running when the first answers
    while len(records := deliveries(platforms, platform)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(records) == 2, f"the emulator delivered the call twice: {records}"
    # a graph whose tasks run twice in one invocation's duplicate: the results stay dask's own
    platforms.emulator(platform).configure(duplicate=3)
    x = dask.delayed(square)(3)
    parts = [dask.delayed(square)(i) for i in range(4)]
    total = dask.delayed(sum)([x, *parts])
    assert dask.compute(total, scheduler=ex)[0] == 9 + sum(i * i for i in range(4))


def test_arguments_and_results_above_the_payload_limit_go_through_storage(platform, on):
    ex = on(platform, inline_limit=1 << 30)  # asked for everything inline: the platform's limit wins
    assert ex.session.inline_limit <= type(ex.backend).inline_capacity() < ex.backend.max_payload_bytes
    data = random.randbytes(type(ex.backend).max_payload_bytes + 2**20)
    assert ex.submit(echo_size, data).result(timeout=120) == data + data[:1]


def test_a_module_the_functions_cannot_import_runs_remotely(platform, on, tmp_path: Path):
    name = f"user_module_{platform}"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            @dataclass
            class Point:
                x: int
                y: int

            def norm1(p):
                return abs(p.x) + abs(p.y)

            def shift(p, d):
                return Point(p.x + d, p.y + d)
            """
        )
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module(name)
        ex = on(platform)
        assert ex.submit(module.norm1, module.Point(3, -4)).result(timeout=60) == 7
        moved = ex.submit(module.shift, module.Point(1, 2), 10).result(timeout=60)
        assert moved == module.Point(11, 12) and type(moved) is module.Point
        off = on(platform, ship_modules=False)
        with pytest.raises(ModuleNotFoundError, match=name):
            off.submit(module.norm1, module.Point(1, 1)).result(timeout=60)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)


def test_an_openwhisk_action_gets_no_api_key_of_the_namespace(platforms, on):
    """OpenWhisk hands an action its namespace's API key unless told not to: ours are told."""
    import os

    ex = on("openwhisk")
    assert ex.submit(os.environ.get, "__OW_API_KEY").result(timeout=60) is None
