"""What functions print and log comes back to the client (acceptance 3 of issue 11): ``ex.logs``,
``records.read_logs``, the size cap and its marker, forwarding; and no credential in any of it."""

from __future__ import annotations

import json
import logging
import sys

import dask
import pytest
from payloads import RecordingLocalBackend

from dask_faas import FaasExecutor, records
from dask_faas.backends.compute import registry as compute_registry
from dask_faas.protocol import new_key


def chatty(x: int) -> int:
    print(f"printed {x}")
    logging.getLogger("user.code").warning("logged %s", x)
    print(f"to stderr {x}", file=sys.stderr)
    return x + 1


def shout(n: int) -> int:
    print("y" * n)
    return n


def test_output_comes_back_through_ex_logs_and_read_logs(make_executor, tmp_path):
    ex = make_executor(logs={"directory": str(tmp_path / "logs")})
    future = ex.submit(chatty, 1)
    assert future.result(timeout=60) == 2
    assert list(ex.map(chatty, [2, 3])) == [3, 4]
    one = ex.logs(future)
    assert one.splitlines() == [
        one.splitlines()[0],
        "printed 1",
        "WARNING user.code: logged 1",
        "to stderr 1",
    ]
    assert one.startswith("--- call 0, attempt 0 (delivery ") and one.splitlines()[0].endswith(": chatty ---")
    everything = records.read_logs(ex.job_id, settings=ex.settings)
    assert everything == ex.logs() and everything.startswith(one)
    assert [f"printed {x}" in everything for x in (1, 2, 3)] == [True] * 3
    assert ex.logs("2") == records.read_logs(ex.job_id, "2", ex.settings) and "printed 3" in ex.logs("2")
    assert ex.job_id in records.log_jobs(ex.settings)
    df = ex.invocations()
    assert (df.log_bytes > 0).all()
    with pytest.raises(FileNotFoundError, match=f"call 9 of job {ex.job_id} in {tmp_path}/logs/"):
        ex.logs("9")
    with pytest.raises(FileNotFoundError, match="job nosuchjob"):
        records.read_logs("nosuchjob", settings=ex.settings)


def test_a_dask_task_s_output_is_headed_by_its_key_and_forwarded(make_executor, tmp_path, capsys):
    ex = make_executor(logs={"directory": str(tmp_path / "logs"), "forward": True})
    value = dask.delayed(chatty)(5, dask_key_name="chatty-5")
    assert dask.compute(value, scheduler=ex) == (6,)
    text = ex.logs()
    assert text.splitlines()[0].endswith(": chatty-5 ---") and "printed 5" in text
    forwarded = capsys.readouterr().out.splitlines()
    assert "[chatty-5] printed 5" in forwarded and "[chatty-5] WARNING user.code: logged 5" in forwarded


def test_a_big_print_is_truncated_at_the_cap_with_a_marker(make_executor, tmp_path):
    ex = make_executor(logs={"directory": str(tmp_path / "logs"), "max-bytes": 1000})
    assert ex.submit(shout, 5000).result(timeout=60) == 5000
    _, kept, marker = ex.logs().splitlines()
    assert kept == "y" * 1000
    # 4000 more y's and the newline print writes apart
    assert marker == "[dask-faas: output truncated at faas.logs.max-bytes=1000: 4001 more bytes dropped]"
    assert ex.invocations().log_bytes.iloc[0] == 1001 + len(marker) + 1


def test_no_capture_at_max_bytes_zero(make_executor, tmp_path):
    ex = make_executor(logs={"directory": str(tmp_path / "logs"), "max-bytes": 0})
    assert ex.submit(chatty, 1).result(timeout=60) == 2
    assert records.log_jobs(ex.settings) == []
    with pytest.raises(FileNotFoundError):
        ex.logs()


def test_old_jobs_logs_go_past_keep_jobs(tmp_path):
    (tmp_path / "logs" / "mine").mkdir(parents=True)
    (tmp_path / "logs" / "mine" / "notes.txt").write_text("kept")
    for _ in range(3):
        with FaasExecutor(workers=1, logs={"directory": str(tmp_path / "logs"), "keep-jobs": 2}) as ex:
            ex.submit(chatty, 0).result(timeout=60)
            last = ex.job_id
    jobs = records.log_jobs({"logs": {"directory": str(tmp_path / "logs")}})
    assert len(jobs) == 2 and jobs[-1] == last
    assert (tmp_path / "logs" / "mine" / "notes.txt").read_text() == "kept"  # not a job's: left alone


# -- sentinel credentials ----------------------------------------------------------------------

SENTINEL_KEY = "AKIALOGSSENTINEL0KEY"
SENTINEL_SECRET = "sentinel/logs/secret-never-seen-0123456"
SENTINEL_TOKEN = "sentinel-logs-session-token-0123456789"


def nosy(x: int) -> int:
    """Print and log what a function may see of its storage and context."""
    from dask_faas import worker

    context = worker.current()
    print("storage", context.storage, context.storage.locator())
    logging.getLogger("user.code").warning("context %r", context)
    return x


@pytest.mark.parametrize("kind", ["local", "aws_lambda"])
def test_sentinel_credentials_appear_in_no_log_record_report_or_payload(
    kind, request, s3_endpoint, s3_bucket, tmp_path
):
    s3 = {"bucket": s3_bucket, "endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    s3 |= {"key": SENTINEL_KEY, "secret": SENTINEL_SECRET, "token": SENTINEL_TOKEN}
    logs = {"directory": str(tmp_path / "logs")}
    if kind == "local":
        RecordingLocalBackend.seen = []
        compute_registry.register("recording-local", RecordingLocalBackend)
        key = new_key()
        settings = {"backend": "recording-local", "workers": 2, "signing_key": key.hex()}
    else:
        farm = request.getfixturevalue("platforms")
        settings, key = farm.settings(kind), farm.key
        emulator = farm.emulator(kind)
        seen_before = len(emulator.output())
    with FaasExecutor(storage="s3", s3=s3, inline_limit=1024, logs=logs, **settings) as ex:
        assert list(ex.map(nosy, [1, 2])) == [1, 2]
        assert dask.compute(dask.delayed(nosy)(3), scheduler=ex) == (3,)
        texts = [ex.logs(), repr(ex.last_report), str(ex.last_report), ex.invocations().to_csv()]
        texts += [repr(r) for r in ex.records.records()]
    assert "storage <S3Storage" in texts[0] and "context Context(" in texts[0]
    files = sorted((tmp_path / "logs").rglob("*"))
    assert files
    texts += [f.read_text() for f in files if f.is_file()]
    blobs = [t.encode() for t in texts]
    if kind == "local":
        blobs += RecordingLocalBackend.seen
        assert len(RecordingLocalBackend.seen) >= 6  # payloads and responses
    else:
        output = emulator.output()[seen_before:]
        assert "storage <S3Storage" in output  # what the function printed still reaches the platform's log
        blobs += [output.encode(), json.dumps(emulator.log()).encode()]
    for secret in (SENTINEL_KEY, SENTINEL_SECRET, SENTINEL_TOKEN, key.hex()):
        leaks = [blob[:200] for blob in blobs if secret.encode() in blob]
        assert not leaks, f"{secret} appears in {leaks}"
    assert not any(key in blob for blob in blobs), "the raw signing key appears"


# -- the capture itself, in this process -------------------------------------------------------


def test_calls_running_at_once_on_threads_keep_their_own_output():
    """As on a Knative instance serving several calls: each call's capture holds its own prints."""
    import threading

    from dask_faas.capture import OutputCapture

    started, texts = threading.Barrier(3), {}
    before = sys.stdout, sys.stderr

    def call(name: str) -> None:
        with OutputCapture(10_000) as capture:
            started.wait(timeout=30)
            for i in range(50):
                print(f"{name} {i}")
                logging.getLogger("user.code").warning("%s logged", name)
            started.wait(timeout=30)
        texts[name] = capture.text

    threads = [threading.Thread(target=call, args=(name,)) for name in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for name in ("a", "b", "c"):
        lines = texts[name].splitlines()
        assert lines.count(f"WARNING user.code: {name} logged") == 50
        assert [line for line in lines if not line.startswith("WARNING")] == [
            f"{name} {i}" for i in range(50)
        ]
    # the streams stay teed (once per process) and pass everything through outside calls
    assert [getattr(s, "original", s) for s in (sys.stdout, sys.stderr)] == list(before)


def test_outside_calls_the_streams_and_logging_pass_through(capfd):
    """Once a call captured, output and log records outside any call reach the process's streams
    as they did before: nothing is captured, and a record that no handler takes is still printed by
    logging's last resort (a function process's platform log)."""
    from dask_faas.capture import OutputCapture

    with OutputCapture(1000) as inside:
        print("in the call")
    print("after the call")
    root = logging.getLogger()
    others = [h for h in root.handlers if type(h).__module__ != "dask_faas.capture"]  # pytest's
    for handler in others:
        root.removeHandler(handler)
    try:
        logging.getLogger("dask_faas.test.outside").warning("a warning outside calls")
    finally:
        for handler in others:
            root.addHandler(handler)
    out, err = capfd.readouterr()
    assert inside.text == "in the call\n"
    assert "in the call" in out and "after the call" in out
    assert err.count("a warning outside calls") == 1  # as logging's last resort prints it
