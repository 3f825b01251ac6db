"""Faults matrix rows 2 and 21, and the retry policy: which failures are invoked again, and
speculative backups of stragglers (to be merged into ``tests/test_faults.py``).

Runs are counted from outside the code under test: every run of a function leaves a file in a
directory of the test's own (``tmp_path``), and the executor's ``stats`` count invocations. A
straggler is made slow by its environment, not by its argument: the first run of item 0 finds no
marker file, creates it and sleeps; every other run of it (the backup) runs at the usual speed.
Row 21 runs on the local pool and on every platform emulator, on a versioned S3 bucket of its own,
so that the outputs each run wrote can be counted after they were deleted. Every test leaves the
job prefix empty (``make_executor``) and no process behind (``conftest.no_leftover_processes``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from faults_kit import bounded, wait_until
from fixtures_platforms import EXECUTOR_KINDS, executor_settings

from dask_faas import ConfigError, FaasExecutor, IntegrityError, WorkerDiedError
from dask_faas.backends.storage.local import LocalStorage

pytestmark = pytest.mark.timeout(300)


def runs(markers: Path, prefix: str = "run-") -> list[str]:
    return sorted(p.name for p in markers.iterdir() if p.name.startswith(prefix))


# -- functions ------------------------------------------------------------------------------------


class Flaky(Exception):
    """The user's own exception."""


def fail_first_runs(markers: str, failures: int, how: str, x: int) -> int:
    """Fail the first ``failures`` runs (counted by files in ``markers``): raise ``how`` (an
    exception's name) or, for ``"kill"``, SIGKILL the function's own process."""
    done = len([n for n in os.listdir(markers) if n.startswith("run-")])
    Path(markers, f"run-{done}-{os.getpid()}").touch()
    if done < failures:
        if how == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise {"Flaky": Flaky, "ValueError": ValueError, "KeyError": KeyError}[how](f"run {done} of {x}")
    return x * x


def big(markers: str, n: int) -> bytes:
    Path(markers, f"run-{time.time_ns()}-{os.getpid()}").touch()
    return b"r" * n


def straggle(
    markers: str, item_s: float, straggler_s: float, slow: tuple[int, ...], backup: str, x: int
) -> bytes:
    """Take ``item_s``; the first run of an item in ``slow`` takes ``straggler_s`` instead (it
    creates the marker that tells later runs they are not first). ``backup`` is what a later run
    of a slow item does: ``"run"`` at the usual speed, ``"raise"``, or ``"sleep"`` (``straggler_s``
    too). With ``backup="original-raises"`` the first run raises after its sleep instead of
    returning. Returns 4 KiB, so that every run writes its result to storage."""
    Path(markers, f"run-{x}-{os.getpid()}-{time.time_ns()}").touch()
    first = False
    if x in slow:
        try:
            os.close(os.open(os.path.join(markers, f"straggler-{x}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            first = True
        except FileExistsError:
            pass
    if first:
        time.sleep(straggler_s)
        Path(markers, f"finished-{x}").touch()
        if backup == "original-raises":
            raise Flaky(f"the original run of {x} failed")
    elif x in slow and backup == "raise":
        raise Flaky(f"the backup of {x} failed")
    elif x in slow and backup in ("sleep", "original-raises"):
        time.sleep(straggler_s)
    else:
        time.sleep(item_s)
    return bytes([x]) * 4096


def straggle_storing(markers: str, x: int) -> Any:
    """As the graph engine's tasks do: write an object named with the run's tag and return its
    reference. The first run of item 0 takes 10 s, every other run 0.3 s."""
    from dask_faas import worker

    first = False
    if x == 0:
        try:
            os.close(os.open(os.path.join(markers, "straggler-0"), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            first = True
        except FileExistsError:
            pass
    time.sleep(10.0 if first else 0.3)
    context = worker.current()
    ref = context.store.put(f"side/{x}.{context.tag}", bytes([x]) * 100)
    if first:
        Path(markers, "finished-0").touch()
    return ref


# -- row 2: the first two attempts fail, retries=2 -------------------------------------------------


@pytest.mark.parametrize("how", ["Flaky", "kill"], ids=["user-exception", "killed-process"])
def test_row2_two_failed_attempts_and_retries_2_give_the_result_in_exactly_three_invocations(
    make_executor, tmp_path, how
):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=2, retry_backoff_s=0.01)
        assert ex.submit(fail_first_runs, str(markers), 2, how, 7).result(timeout=60) == 49
        assert len(runs(markers)) == 3, runs(markers)
        assert ex.stats["invocations"] == 3 and ex.stats["retries"] == 2, ex.stats


def test_row2_with_one_retry_two_failures_fail_the_call_after_two_invocations(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=1, retry_backoff_s=0.01)
        with pytest.raises(Flaky, match=r"^run 1 of 7$"):
            ex.submit(fail_first_runs, str(markers), 2, "Flaky", 7).result(timeout=60)
        assert len(runs(markers)) == 2 and ex.stats["invocations"] == 2, ex.stats


# -- the retry policy -----------------------------------------------------------------------------


def test_a_user_exception_outside_retry_on_is_not_retried(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=3, retry_backoff_s=0.01, retry_on=(KeyError, Flaky))
        with pytest.raises(ValueError, match=r"^run 0 of 1$"):
            ex.submit(fail_first_runs, str(markers), 1, "ValueError", 1).result(timeout=60)
        assert len(runs(markers)) == 1, "a ValueError is not in retry_on: one invocation"
        assert ex.stats["invocations"] == 1 and ex.stats["retries"] == 0, ex.stats
        # one in retry_on is (a subclass too: KeyError is a LookupError)
        for name in ("KeyError", "Flaky"):
            for marker in markers.iterdir():
                marker.unlink()
            assert ex.submit(fail_first_runs, str(markers), 1, name, 3).result(timeout=60) == 9
            assert len(runs(markers)) == 2


def test_retry_on_by_name_and_lookup_error_covers_key_error(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=1, retry_backoff_s=0.01, retry_on=["LookupError"])
        assert ex.submit(fail_first_runs, str(markers), 1, "KeyError", 4).result(timeout=60) == 16
        assert ex.stats["retries"] == 1


def test_a_platform_failure_is_retried_whatever_retry_on_says(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(retries=1, retry_backoff_s=0.01, retry_on=(KeyError,))
        assert ex.submit(fail_first_runs, str(markers), 1, "kill", 5).result(timeout=60) == 25
        assert len(runs(markers)) == 2 and ex.stats["retries"] == 1, ex.stats
        # and past the retries, the platform's failure names the call and its attempt
        for marker in markers.iterdir():
            marker.unlink()
        with pytest.raises(WorkerDiedError, match=r"attempt 1\).*fail_first_runs"):
            ex.submit(fail_first_runs, str(markers), 5, "kill", 5).result(timeout=60)


def test_retry_on_per_call_through_the_session(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor()  # retries=0 by default: the call's options decide
        session = ex.session
        function = session.function(fail_first_runs)
        options = replace(session.options, retries=2, retry_backoff_s=0.01, retry_on=(Flaky,))
        call = [((str(markers), 2, "Flaky", 6), {})]
        assert session.submit(function, call, unwrap=True, options=options).result(timeout=60) == 36
        assert len(runs(markers)) == 3
        for marker in markers.iterdir():
            marker.unlink()
        narrow = replace(options, retry_on=(KeyError,))
        with pytest.raises(Flaky):
            session.submit(function, call, unwrap=True, options=narrow).result(timeout=60)
        assert len(runs(markers)) == 1
        with pytest.raises(ConfigError, match="retry_on must be a tuple of exception types"):
            session.submit(function, call, options=replace(options, retry_on=(ValueError, "KeyError")))


class TamperingStorage(LocalStorage):
    """A local storage whose reads of results are altered in transit (one flipped byte)."""

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        data = super().get(key, start, end)
        if "/out/" in key:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data


def test_an_integrity_error_is_never_retried(make_executor, storage_root, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(storage=TamperingStorage(storage_root), inline_limit=1000, retries=3)
        assert ex.submit(big, str(markers), 10).result(timeout=60) == b"r" * 10  # inline: untouched
        with pytest.raises(IntegrityError, match=r"stored object '.*/out/1\.0\.[0-9a-f]+-[0-9a-f]+' failed"):
            ex.submit(big, str(markers), 10_000).result(timeout=60)
        assert len(runs(markers)) == 2, "the tampered result was retried"
        assert ex.stats["invocations"] == 2 and ex.stats["retries"] == 0, ex.stats


# -- row 21: stragglers and their backups ---------------------------------------------------------

#: Row 21's calls: ITEMS siblings of ITEM_S each, the straggler 20 times slower (10 at least,
#: as the row asks; the margin keeps the job's end before it independent of a loaded machine).
ITEMS, ITEM_S, STRAGGLER_S = 12, 0.5, 10.0


@pytest.fixture(params=EXECUTOR_KINDS)
def kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """``"local"`` or a platform; a platform's emulator knobs are reset before and after."""
    emulator = (
        request.getfixturevalue("platforms").emulator(request.param) if request.param != "local" else None
    )
    if emulator is not None:
        emulator.reset()
    yield request.param
    if emulator is not None:
        emulator.reset()


@pytest.fixture
def versioned_bucket(s3_endpoint: str, s3_bucket: str) -> Iterator[tuple[Any, str]]:
    """A fresh S3 bucket that keeps every version of every object, and an admin client of it;
    emptied of every version afterwards."""
    admin = boto3.session.Session().client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    admin.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        yield admin, s3_bucket
    finally:
        listing = admin.list_object_versions(Bucket=s3_bucket)
        entries = [*listing.get("Versions", []), *listing.get("DeleteMarkers", [])]
        for start in range(0, len(entries), 1000):
            chunk = entries[start : start + 1000]
            admin.delete_objects(
                Bucket=s3_bucket,
                Delete={"Objects": [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in chunk]},
            )
        admin.close()


def on_bucket(request: pytest.FixtureRequest, kind: str, bucket: str, **more: Any) -> dict[str, Any]:
    """Executor settings of ``kind`` whose storage is ``bucket`` on the S3 test server."""
    s3 = {
        "bucket": bucket,
        "endpoint_url": request.getfixturevalue("s3_endpoint"),
        "region_name": "us-east-1",
        "key": "testing",
        "secret": "testing",
    }
    if kind == "local":
        return {"workers": 3, "storage": "s3", "s3": s3, **more}
    settings = executor_settings(request, kind, "", **more)
    settings["s3"] = s3
    return settings


def outputs(admin: Any, bucket: str, prefix: str) -> tuple[int, int]:
    """``(versions written, objects still there)`` of the results stored under ``prefix``."""
    listing = admin.list_object_versions(Bucket=bucket, Prefix=f"{prefix}/out/")
    versions = listing.get("Versions", [])
    return len(versions), sum(v["IsLatest"] for v in versions)


def straggler_map(
    ex: FaasExecutor, markers: Path, slow: tuple[int, ...] = (0,), backup: str = "run"
) -> list[bytes]:
    return list(
        ex.map(
            straggle,
            *zip(*[(str(markers), ITEM_S, STRAGGLER_S, slow, backup, x) for x in range(ITEMS)], strict=True),
        )
    )


def expected() -> list[bytes]:
    return [bytes([x]) * 4096 for x in range(ITEMS)]


def test_row21_a_straggler_is_backed_up_the_first_result_wins_and_its_outputs_are_deleted(
    request, kind, versioned_bucket, make_executor, tmp_path
):
    admin, bucket = versioned_bucket
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        # backups: the default on the platforms ("auto"), set for the local pool
        more = {"backups": True} if kind == "local" else {}
        ex = make_executor(**on_bucket(request, kind, bucket, inline_limit=1024, **more))
        assert straggler_map(ex, markers) == expected()
        assert not (markers / "finished-0").exists(), "the job waited for the straggler"
        assert ex.stats["backups"] >= 1 and ex.stats["backups_won"] >= 1, ex.stats
        assert ex.stats["invocations"] == ITEMS + ex.stats["backups"], ex.stats
        assert len(runs(markers, "run-0-")) == 2, "item 0 ran twice: the straggler and its backup"
        # the straggler ends, and what it wrote is deleted when its answer arrives
        wait_until((markers / "finished-0").exists, 60, "the straggler did not end")
        runs_total = ITEMS + ex.stats["backups"]
        wait_until(
            lambda: outputs(admin, bucket, ex.job_prefix) == (runs_total, 0),
            60,
            f"every run's result written once and deleted: {outputs(admin, bucket, ex.job_prefix)}",
        )


def test_row21_with_backups_off_the_job_waits_for_the_straggler(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, inline_limit=1024)  # the local pool's default: no backups
        assert ex.settings["backups"] == "auto"
        assert straggler_map(ex, markers) == expected()
        assert (markers / "finished-0").exists(), "the job ended before the straggler"
        assert ex.stats["backups"] == 0 and ex.stats["invocations"] == ITEMS, ex.stats
        assert len(runs(markers, "run-0-")) == 1


def test_row21_a_failing_backup_does_not_fail_the_call_whose_original_runs(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, inline_limit=1024, backups=True)
        assert straggler_map(ex, markers, backup="raise") == expected()
        assert (markers / "finished-0").exists(), "the result is the original's"
        assert ex.stats["backups"] == 1 and ex.stats["backups_won"] == 0, ex.stats
        assert ex.stats["retries"] == 0 and len(runs(markers, "run-0-")) == 2, ex.stats


def test_row21_a_failing_original_does_not_fail_the_call_whose_backup_runs(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, inline_limit=1024, backups=True)
        assert straggler_map(ex, markers, backup="original-raises") == expected()
        assert ex.stats["backups"] == 1 and ex.stats["backups_won"] == 1, ex.stats
        assert ex.stats["retries"] == 0 and len(runs(markers, "run-0-")) == 2, ex.stats


def test_row21_backups_are_bounded_to_a_share_of_the_calls(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=4, inline_limit=1024, backups=True)
        assert straggler_map(ex, markers, slow=(0, 1, 2)) == expected()
        # three stragglers among 12 calls, and a tenth of 12 (at least one) backed up
        assert ex.stats["backups"] == 1, ex.stats
        assert ex.stats["invocations"] == ITEMS + 1, ex.stats


def test_row21_what_the_losing_run_stored_under_its_tag_is_deleted(make_executor, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    with bounded():
        ex = make_executor(workers=3, backups=True)
        refs = list(ex.map(straggle_storing, [str(markers)] * ITEMS, range(ITEMS)))
        assert not (markers / "finished-0").exists() and ex.stats["backups_won"] == 1, ex.stats

        def stored(x: int) -> list[str]:
            return [key for key, _ in ex.storage.list(f"{ex.job_prefix}/side/{x}.")]

        assert [stored(x) for x in range(ITEMS)] == [[ref.key] for ref in refs]
        # the straggler ends and stores its object; its answer comes and the object is deleted
        wait_until((markers / "finished-0").exists, 60, "the straggler did not end")
        wait_until(lambda: stored(0) == [refs[0].key], 60, f"the losing run's object is left: {stored(0)}")
