"""The ``dask-faas`` command line."""

from __future__ import annotations

import calendar
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest

from dask_faas.backends.storage.local import LocalStorage
from dask_faas.backends.storage.s3 import S3Storage
from dask_faas.cli import main
from dask_faas.job import Job


def test_config_masks_credentials(capsys):
    with dask.config.set({"faas.s3.secret": "hunter2", "faas.s3.bucket": "data"}):
        assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "***" in out and "bucket: data" in out


def test_clean_lists_then_deletes_leftovers(storage_root, capsys):
    LocalStorage(storage_root).put("dask-faas/deadjob/out/1.0", b"left behind")
    with dask.config.set({"faas.local-storage.root": str(storage_root)}):
        assert main(["check"]) == 0
        assert main(["clean"]) == 0
        assert "dask-faas/deadjob/out/1.0" in capsys.readouterr().out
        assert main(["clean", "--yes"]) == 0
    assert "deleted 1 objects" in capsys.readouterr().out
    assert list(LocalStorage(storage_root).list()) == []


def test_an_unreachable_storage_is_reported(capsys):
    with dask.config.set({"faas.storage": "s3", "faas.s3.bucket": None}):
        assert main(["check"]) == 1
    assert "faas.s3.bucket" in capsys.readouterr().err


# -- the real entry points, as subprocesses ---------------------------------------------------------

BIN = Path(sys.executable).parent
COMMANDS = ("config", "check", "jobs", "storage", "clean", "logs", "hello", "runtime")
#: Credentials handed to the subprocesses' settings: no command may print them.
SENTINEL_KEY = "AKIACLISENTINELKEY42"
SENTINEL_SECRET = "cli-sentinel-secret-do-not-print"
TIMEOUT_S = 120


class Cli:
    """Runs ``dask-faas ...`` (or ``dask faas ...``) with settings from ``DASK_FAAS__...`` variables."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
        self.env["DASK_CONFIG"] = str(tmp_path / "dask-config")  # not the developer's config files
        for name, value in settings.items():
            self.env[f"DASK_FAAS__{name.upper()}"] = value
        self.outputs: list[str] = []

    def __call__(self, *argv: str, code: int = 0, dask: bool = False) -> str:
        """Standard output of the command; its exit code must be ``code``."""
        command = [str(BIN / "dask"), "faas"] if dask else [str(BIN / "dask-faas")]
        done = subprocess.run(
            [*command, *argv], env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )
        self.outputs += [done.stdout, done.stderr]
        assert done.returncode == code, (
            f"{command} {argv}: exit {done.returncode}\n{done.stdout}{done.stderr}"
        )
        return done.stdout if code == 0 else done.stderr


def local_cli(tmp_path: Path, root: Path) -> Cli:
    return Cli(tmp_path, local_storage__root=str(root), logs__directory=str(tmp_path / "logs"))


def s3_cli(tmp_path: Path, endpoint: str, bucket: str) -> Cli:
    return Cli(
        tmp_path,
        storage="s3",
        s3__bucket=bucket,
        s3__endpoint_url=endpoint,
        s3__region_name="us-east-1",
        s3__key=SENTINEL_KEY,
        s3__secret=SENTINEL_SECRET,
    )


def job_line(out: str, job: str) -> list[str]:
    """The cells of ``job``'s line in the output of ``jobs``."""
    (line,) = [line for line in out.splitlines() if line.startswith(job + " ")]
    return line.split(maxsplit=4)


def test_help_of_both_entry_points_lists_every_command(tmp_path):
    cli = Cli(tmp_path)
    for dask_ in (True, False):
        text = cli("--help", dask=dask_)
        assert text.startswith("usage: dask faas " if dask_ else "usage: dask-faas "), text
        for command in COMMANDS:
            assert re.search(rf"^\s+{command}\s", text, re.M), (command, text)
            assert f"dask-faas {command}" in text  # the module docstring's list, in the epilog
        storage = cli("storage", "--help", dask=dask_)
        for action in ("ls", "clean"):
            assert re.search(rf"^\s+{action}\s", storage, re.M), storage
    done = subprocess.run(
        [str(BIN / "dask"), "--help"], env=cli.env, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert done.returncode == 0 and re.search(r"^\s+faas\s", done.stdout, re.M), done.stdout
    assert "faas" not in done.stderr, done.stderr  # dask registered the command without a warning
    assert "the following arguments are required: COMMAND" in cli(dask=True, code=2)


CLIENT = """
import sys, time
from dask_faas import FaasExecutor
from dask_faas.backends.storage.local import LocalStorage

ex = FaasExecutor(workers=1, local_storage={"root": sys.argv[1]})
ex.submit(time.sleep, 600)
ex.submit(len, bytes(300_000))  # above faas.inline-limit: stored under the job
storage = LocalStorage(sys.argv[1])
while sum(size for _, size in storage.list(ex.job_prefix + "/")) < 300_000:
    time.sleep(0.01)
print(ex.job_prefix, flush=True)
time.sleep(600)
"""


def test_jobs_shows_the_job_of_a_killed_client(tmp_path, storage_root):
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    started = time.time()
    client = subprocess.Popen(
        [sys.executable, str(script), str(storage_root)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the pool's processes die with it
    )
    try:
        prefix = client.stdout.readline().strip()
    finally:
        os.killpg(client.pid, signal.SIGKILL)
        client.wait(timeout=TIMEOUT_S)
        client.stdout.close()
    assert prefix.startswith("dask-faas/"), prefix
    job = prefix.split("/")[1]
    left = list(LocalStorage(storage_root).list(prefix + "/"))
    size = sum(size for _, size in left)
    assert size >= 300_000

    cli = local_cli(tmp_path, storage_root)
    out = cli("jobs")
    assert out == cli("jobs", dask=True)
    _, objects, nbytes, uploads, modified = job_line(out, job)
    assert (int(objects), int(nbytes), int(uploads)) == (len(left), size, 0), out
    written = calendar.timegm(time.strptime(modified, "%Y-%m-%d %H:%M:%S"))
    assert int(started) - 1 <= written <= time.time() + 1, (modified, started)
    assert f"total: 1 jobs, {len(left)} objects, {size} bytes" in out, out


def lay_out_job(storage, key: bytes, size: int) -> str:
    """A job's objects as a running job writes them (its function, a stored value); never closed."""
    job = Job(storage, key, "dask-faas")
    job.function(len)
    job.put("out/1.0", b"x" * size)
    return job.id


@pytest.mark.parametrize("where", ["local", "s3"])
def test_storage_clean_deletes_only_the_jobs_named(where, request, tmp_path, storage_root):
    if where == "s3":
        endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
        storage = S3Storage(bucket, endpoint_url=endpoint, region_name="us-east-1")
        cli = s3_cli(tmp_path, endpoint, bucket)
    else:
        storage = LocalStorage(storage_root)
        cli = local_cli(tmp_path, storage_root)
    key = b"k" * 32
    first, second = lay_out_job(storage, key, 1000), lay_out_job(storage, key, 5000)
    storage.put("inputs/data.csv", b"a,b\n1,2\n")  # not under faas.prefix: never cleaned
    uploading = None
    if where == "s3":  # a job that only left an open multipart upload (S3 bills its parts)
        uploading = "c0ffee00c0ff"
        storage.client.create_multipart_upload(Bucket=bucket, Key=f"dask-faas/{uploading}/big")

    def keys(prefix: str) -> list[str]:
        return [k for k, _ in storage.list(prefix)]

    before = {job: keys(f"dask-faas/{job}/") for job in (first, second)}
    out = cli("jobs")
    for job in (first, second):
        sizes = [size for _, size in storage.list(f"dask-faas/{job}/")]
        assert job_line(out, job)[1:4] == [str(len(sizes)), str(sum(sizes)), "0"], out
    if uploading:
        assert job_line(out, uploading)[1:4] == ["0", "0", "1"], out
    listed = cli("storage", "ls", dask=True)
    assert all(k in listed for k in before[first] + before[second]) and "inputs/" not in listed, listed
    assert "inputs/data.csv" in cli("storage", "ls", "inputs/")

    shown = cli("storage", "clean", first)  # without --yes: a listing, nothing deleted
    assert all(k in shown for k in before[first]) and second not in shown, shown
    error = cli("storage", "clean", "--yes", first, "f00d", code=1, dask=True)
    assert error.startswith("dask faas storage clean: ") and "'f00d'" in error, error
    assert {job: keys(f"dask-faas/{job}/") for job in (first, second)} == before

    gone = cli("storage", "clean", "--yes", first)
    assert f"deleted {len(before[first])} objects under dask-faas/{first}/" in gone, gone
    assert keys(f"dask-faas/{first}/") == [] and keys(f"dask-faas/{second}/") == before[second]
    remaining = cli("jobs")
    assert first not in remaining and second in remaining, remaining

    cli("clean", "--yes")  # every job
    assert keys("dask-faas/") == [] and keys("inputs/") == ["inputs/data.csv"]
    assert storage.open_uploads("dask-faas/") == []
    assert "total: 0 jobs, 0 objects, 0 bytes" in cli("jobs")
    for text in cli.outputs:
        assert SENTINEL_KEY not in text and SENTINEL_SECRET not in text, text


def test_a_missing_bucket_is_named(tmp_path, s3_endpoint):
    cli = s3_cli(tmp_path, s3_endpoint, "no-such-bucket-for-the-cli")
    for command in (("jobs",), ("storage", "ls"), ("storage", "clean")):
        error = cli(*command, code=1)
        assert "no-such-bucket-for-the-cli" in error, error
    assert all(SENTINEL_SECRET not in text for text in cli.outputs)


def chatty(n: int) -> int:
    """Inside a function: print, log, and print past the cap."""
    import logging

    print(f"printed by call {n}")
    logging.getLogger("chatty").warning("logged by call %d", n)
    if n == 1:
        print("z" * 5000)
    return n


def test_logs_shows_what_a_real_job_printed(tmp_path, storage_root, make_executor):
    logs = tmp_path / "logs"
    ex = make_executor(logs={"directory": str(logs), "max-bytes": 1024})
    futures = [ex.submit(chatty, n) for n in range(2)]
    assert [f.result(timeout=TIMEOUT_S) for f in futures] == [0, 1]
    ex.shutdown()
    cli = local_cli(tmp_path, storage_root)

    assert ex.job_id in cli("logs").split()
    text = cli("logs", ex.job_id, dask=True)
    for n in range(2):
        assert f"printed by call {n}" in text and f"logged by call {n}" in text, text
    assert "output truncated at faas.logs.max-bytes=1024" in text and "z" * 5000 not in text, text
    assert text == ex.logs()
    calls = sorted(set(ex.invocations()["call"]))
    assert len(calls) == 2, calls
    one = cli("logs", ex.job_id, calls[0])
    assert one and one in text and len(one) < len(text), one

    error = cli("logs", "f00df00df00d", code=1)
    assert error.startswith("dask-faas logs: ") and "f00df00df00d" in error and str(logs) in error, error
    empty = Cli(tmp_path, logs__directory=str(tmp_path / "no-logs"))
    assert empty("logs") == "" and str(tmp_path / "no-logs") in empty.outputs[-1]
