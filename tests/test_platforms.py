"""What remote platforms do to calls, through each platform's emulator and the S3 test server.

A long call that started is not sent again, user modules the runtime image cannot import, and
OpenWhisk's own credentials kept from the action: each test checks the result, the emulator's own
record of deliveries and that nothing is left in storage. The platform faults (throttling, a lost
or duplicated delivery, payloads above the platform's limit) are rows 6 to 9 of
``tests/test_faults.py``.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures_platforms import PLATFORMS, Platforms, executor_settings

from dask_faas import FaasExecutor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


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


def test_a_long_call_that_started_is_not_sent_again(platform, platforms, on):
    ex = on(platform, start_deadline_s=1.5)
    assert ex.submit(time.sleep, 3).result(timeout=60) is None  # its start mark says it started
    assert ex.stats["redeliveries"] == 0, ex.stats
    assert len(deliveries(platforms, platform, "ok")) == 1


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
