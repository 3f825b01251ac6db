"""The three examples run as a user runs them (``python examples/<name>.py ...``), at small sizes.

Each runs in a subprocess on the embedded default (local pool, a local storage directory of the
test) or with its job and data in a bucket of the moto server on loopback; the test reads what the
script prints and checks that it left nothing behind in the storage.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT_S = 120  # a bound against hangs; each run takes a few seconds


def run_example(name: str, *args: str, root: Path) -> str:
    """Run ``examples/<name>`` with ``args``; its stdout (the test fails on a non-zero exit)."""
    env = {
        **os.environ,
        "DASK_FAAS__LOCAL_STORAGE__ROOT": str(root),
        "DASK_FAAS__LOGS__DIRECTORY": str(root.parent / "logs"),  # not the user's ~/.cache
        "PYTHONUNBUFFERED": "1",
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, (
        f"{name} {' '.join(args)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    )
    return done.stdout


def files_under(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


def field(output: str, label: str) -> str:
    """The text after ``label :`` on its line of the example's report."""
    match = re.search(rf"^{re.escape(label)}\s*: (.*)$", output, re.MULTILINE)
    assert match, f"no {label!r} line in:\n{output}"
    return match.group(1)


def test_monte_carlo_at_a_small_size(storage_root):
    out = run_example(
        "monte_carlo.py", "--draws", "200000", "--chunks", "6", "--workers", "2", root=storage_root
    )
    assert field(out, "invocations") == "6 (pool of 2 function processes)"
    assert "(200,000 draws)" in field(out, "Monte Carlo estimate")
    assert "within 3" in field(out, "difference")  # the exit code says so too
    assert float(field(out, "Black-Scholes")) == pytest.approx(8.021352, abs=1e-6)
    assert files_under(storage_root) == []


def test_monte_carlo_help_names_its_size_arguments(storage_root):
    out = run_example("monte_carlo.py", "--help", root=storage_root)
    assert "--draws" in out and "--chunks" in out and "--workers" in out


def test_etl_csv_on_local_storage_writes_csv(storage_root):
    out = run_example(
        "etl_csv.py", "--objects", "2", "--rows", "2000", "--blocksize", "32KB", "--format", "csv",
        "--workers", "2", root=storage_root,
    )  # fmt: skip
    assert field(out, "check") == "equal to pandas on the downloaded objects"
    partitions = int(re.search(r"\((\d+) partitions\)", field(out, "input")).group(1))
    assert partitions > 2  # 32 KB blocks split each object of ~100 KB
    assert field(out, "output").startswith(f"{partitions} csv objects under {storage_root}")
    assert re.match(r"\d+ tasks \(\d+ after fusion\) ran in \d+ invocations", field(out, "report"))
    assert field(out, "cleanup").endswith("objects removed (--keep keeps them)")
    assert files_under(storage_root) == []


def test_etl_csv_in_an_s3_bucket_writes_parquet(storage_root, s3_endpoint, s3_storage):
    out = run_example(
        "etl_csv.py", "--endpoint-url", s3_endpoint, "--bucket", s3_storage.bucket, "--objects", "2",
        "--rows", "2000", "--blocksize", "64KB", "--workers", "2", root=storage_root,
    )  # fmt: skip
    assert field(out, "input").startswith(f"s3://{s3_storage.bucket}/etl-example/")
    assert "parquet objects under s3://" in field(out, "output")
    assert field(out, "check") == "equal to pandas on the downloaded objects"
    assert list(s3_storage.list("")) == []  # data, results and the job prefix are gone
    assert files_under(storage_root) == []


def test_images_on_local_storage(storage_root):
    out = run_example("images.py", "--images", "4", "--size", "16", "--workers", "2", root=storage_root)
    assert field(out, "invocations") == "4 (one per image)"
    assert field(out, "images").startswith("4 PNGs under ")
    assert field(out, "processed").startswith("4 arrays of (16, 16, 3) float32")
    assert files_under(storage_root) == []


def test_images_in_an_s3_bucket(storage_root, s3_endpoint, s3_storage):
    out = run_example(
        "images.py", "--images", "3", "--size", "8", "--workers", "2", "--endpoint-url", s3_endpoint,
        "--bucket", s3_storage.bucket, root=storage_root,
    )  # fmt: skip
    assert field(out, "images").startswith(f"3 PNGs under s3://{s3_storage.bucket}/images-example/")
    assert field(out, "processed").startswith("3 arrays of (8, 8, 3) float32")
    assert list(s3_storage.list("")) == []
