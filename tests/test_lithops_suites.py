"""Lithops' own test modules, as the lithops wheel ships them, with ``lithops`` routed to the facade.

``dask_faas.testing.lithops_suites`` makes ``import lithops`` give :mod:`dask_faas.compat` while the
suites' files (``lithops/tests/*.py``, their ``conftest.py`` and ``functions.py``) are read from the
installed wheel, never copied here. They run in a pytest subprocess from a scratch directory (with
an empty ini file and the site-packages directory as rootdir, so that the wheel's conftest applies
and ours does not): on the embedded default (local pool, local storage in a fresh directory) and
on a moto server on loopback (a Lithops configuration file with an ``aws_s3`` section, given with
the suites' own ``--config`` option).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dask_faas.testing.lithops_suites import EXCLUDED, MODULES, wheel_tests_directory
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV

pytest.importorskip("lithops", reason="lithops is in the test extra")

#: Tests that pass, per module, on either storage (every test but the excluded ones).
EXPECTED_PASSED = {
    "test_map": 19,
    "test_map_reduce": 0,
    "test_call_async": 6,
    "test_storage": 13,
    "test_retries": 18,
    "test_future": 1,
}
#: Tests skipped with a reason from EXCLUDED, per module.
EXPECTED_EXCLUDED = {
    "test_map": 1,
    "test_map_reduce": 10,
    "test_call_async": 0,
    "test_storage": 0,
    "test_retries": 1,
    "test_future": 33,
}


def suite_command(*extra: str) -> list[str]:
    """The pytest command that runs the wheel's :data:`MODULES` against the facade."""
    tests = wheel_tests_directory()
    site = tests.parent.parent
    return [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        os.devnull,
        "--rootdir",
        str(site),
        "-p",
        "no:cacheprovider",
        "-p",
        "dask_faas.testing.lithops_suites",
        "--timeout=300",
        "-q",
        "-rfEs",
        *extra,
        *(str(tests / f"{module}.py") for module in MODULES),
    ]


def run_suites(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[str, float]:
    started = time.monotonic()
    environment = {
        **os.environ,
        **LOOPBACK_AWS_ENV,
        "DASK_FAAS__LOCAL_STORAGE__ROOT": str(tmp_path / "storage"),
        **(env or {}),
    }
    proc = subprocess.run(
        suite_command(*extra), cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=900
    )
    tail = "\n".join(proc.stdout.splitlines()[-60:]) + "\nstderr:\n" + proc.stderr[-1500:]
    assert proc.returncode == 0, f"Lithops' suites failed on dask-faas (exit {proc.returncode}):\n{tail}"
    return proc.stdout, time.monotonic() - started


def check_counts(stdout: str) -> None:
    summary = re.search(r"lithops-on-faas: (\d+) tests excluded, storage clean", stdout)
    assert summary, f"no clean lithops-on-faas summary line:\n{stdout[-3000:]}"
    assert int(summary[1]) == sum(EXPECTED_EXCLUDED.values()), summary[0]
    passed = re.search(r"(\d+) passed", stdout)
    assert passed and int(passed[1]) == sum(EXPECTED_PASSED.values()), stdout[-3000:]
    assert not re.search(r"\d+ (failed|error)", stdout), stdout[-3000:]
    skipped = re.findall(r"SKIPPED \[(\d+)\] .*?dask-faas: ", stdout)
    assert sum(map(int, skipped)) == sum(EXPECTED_EXCLUDED.values()), "a test skipped for another reason"


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_lithops_suites_on_the_embedded_default(tmp_path: Path) -> None:
    stdout, seconds = run_suites(tmp_path)
    check_counts(stdout)
    assert not any((tmp_path / "storage" / "dask-faas").glob("*")), "a job directory was left"
    print(f"embedded default: {sum(EXPECTED_PASSED.values())} passed in {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_lithops_suites_on_s3(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> None:
    config = tmp_path / "lithops.yaml"
    config.write_text(
        "lithops:\n"
        "  storage: aws_s3\n"
        f"  storage_bucket: {s3_bucket}\n"
        "aws:\n"
        "  access_key_id: testing\n"
        "  secret_access_key: testing\n"
        "aws_s3:\n"
        f"  endpoint: {s3_endpoint}\n"
        "  region: us-east-1\n"
    )
    stdout, seconds = run_suites(tmp_path, "--config", str(config))
    check_counts(stdout)
    print(f"S3 (moto): {sum(EXPECTED_PASSED.values())} passed in {seconds:.0f} s")


def test_every_exclusion_names_a_test_of_the_wheel() -> None:
    tests = wheel_tests_directory()
    for entry in EXCLUDED:
        module, _, rest = entry.partition("::")
        text = (tests / module).read_text()
        for name in rest.split("::"):
            assert re.search(rf"(def|class) {re.escape(name)}\b", text), entry
    assert {entry.split(".py")[0] for entry in EXCLUDED} <= set(MODULES)


def test_the_facade_replaces_lithops_in_the_suites(tmp_path: Path) -> None:
    """A suite file of our own beside the route: ``lithops`` is the facade, ``lithops.tests`` the wheel's."""
    probe = tmp_path / "test_probe.py"
    probe.write_text(
        "import lithops, lithops.tests.functions as functions, lithops.wait, lithops.storage.utils\n"
        "import dask_faas.compat\n"
        "def test_routed():\n"
        "    assert lithops is dask_faas.compat\n"
        "    assert functions.lithops is dask_faas.compat\n"
        "    assert lithops.wait.__name__ == 'wait'  # the function, as in Lithops\n"
        "    assert 'site-packages' in functions.__file__\n"
    )
    command = [
        sys.executable, "-m", "pytest", "-c", os.devnull, "--rootdir", str(tmp_path),
        "-p", "no:cacheprovider", "-p", "dask_faas.testing.lithops_suites", "-q", str(probe),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-1000:]
    assert "1 passed" in proc.stdout
