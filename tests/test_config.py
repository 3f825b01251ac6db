"""Settings come from dask.config, env and keywords; wrong ones fail before any invocation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import dask
import pytest
from conftest import child_pids

from dask_faas import ConfigError, FaasExecutor
from dask_faas.config import exception_types, resolve


def test_defaults_ship_under_the_faas_key():
    settings = resolve()
    assert settings["backend"] == "local" and settings["storage"] == "local"
    assert settings["retries"] == 0 and settings["timeout-s"] > 0 and settings["memory-mb"] > 0


def test_keywords_override_dask_config_and_sections_merge():
    with dask.config.set({"faas.retries": 3, "faas.s3.bucket": "from-config"}):
        settings = resolve({"timeout_s": 5, "s3": {"endpoint_url": "http://127.0.0.1:9"}})
    assert settings["retries"] == 3 and settings["timeout-s"] == 5
    assert settings["s3"]["bucket"] == "from-config"
    assert settings["s3"]["endpoint-url"] == "http://127.0.0.1:9"


def test_environment_variables_override_defaults():
    code = (
        "import json, dask_faas.config as c; s = c.resolve(); "
        "print(json.dumps([s['retries'], s['s3']['bucket']]))"
    )
    env = {**os.environ, "DASK_FAAS__RETRIES": "4", "DASK_FAAS__S3__BUCKET": "from-env"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [4, "from-env"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"backend": "lamdba"}, "faas.backend"),
        ({"storage": "gcs"}, "faas.storage"),
        ({"timeout": 3}, "timeout_s"),
        ({"timeout_s": -1}, "faas.timeout-s"),
        ({"memory_mb": "lots"}, "faas.memory-mb"),
        ({"retries": -1}, "faas.retries"),
        ({"workers": 0}, "faas.workers"),
        ({"storage": "s3"}, "faas.s3.bucket"),
        ({"storage": "memory"}, "faas.storage"),
        ({"retry_on": "NoSuchError"}, "faas.retry-on"),
        ({"retry_on": ["ValueError", "json.NoSuchError"]}, "faas.retry-on"),
        ({"retry_on": (ValueError, int)}, "faas.retry-on"),
        ({"backups": "sometimes"}, "faas.backups"),
    ],
)
def test_a_wrong_setting_fails_before_any_invocation_naming_it(settings, named, storage_root):
    before = child_pids()
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        FaasExecutor(local_storage={"root": str(storage_root)}, **settings)
    assert child_pids() == before  # no function process was started


def test_unknown_backend_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'local'"):
        FaasExecutor(backend="locl")


def test_a_missing_bucket_fails_before_any_invocation(s3_endpoint):
    before = child_pids()
    with pytest.raises(ConfigError, match=r"faas\.s3\.bucket"):
        FaasExecutor(storage="s3", s3={"bucket": "no-such-bucket", "endpoint_url": s3_endpoint})
    assert child_pids() == before


def test_refused_credentials_fail_before_any_invocation(s3_endpoint_auth):
    before = child_pids()
    s3 = {"bucket": s3_endpoint_auth.bucket, "endpoint_url": s3_endpoint_auth.endpoint_url}
    with pytest.raises(PermissionError, match=r"faas\.s3\.key"):
        FaasExecutor(storage="s3", s3={**s3, "key": s3_endpoint_auth.key, "secret": "wrong"})
    assert child_pids() == before


def test_the_environment_setting_reaches_the_functions_and_no_credential_does(make_executor):
    import os

    ex = make_executor(environment={"DASK_FAAS_TEST_FLAG": "on"})
    assert ex.submit(os.getenv, "DASK_FAAS_TEST_FLAG").result(timeout=60) == "on"
    assert ex.submit(os.getenv, "OPENBLAS_NUM_THREADS").result(timeout=60) == "1"


def test_settings_entered_before_the_first_import_do_not_erase_the_defaults():
    code = (
        "import dask\n"
        "with dask.config.set({'faas.s3': {'bucket': 'early'}}):\n"
        "    import dask_faas.config as c\n"
        "    assert c.resolve()['s3']['bucket'] == 'early'\n"
        "assert c.resolve()['timeout-s'] == 300 and c.resolve()['s3']['bucket'] is None\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_retry_on_takes_exception_types_or_their_names():
    assert exception_types({"retry-on": None}, "retry-on") is None
    assert exception_types({"retry-on": KeyError}, "retry-on") == (KeyError,)
    named = exception_types({"retry-on": ["ValueError", "json.JSONDecodeError", OSError]}, "retry-on")
    assert named == (ValueError, json.JSONDecodeError, OSError)
    with dask.config.set({"faas.retry-on": ["TimeoutError"]}):
        assert exception_types(resolve(), "retry-on") == (TimeoutError,)
    # backups: "auto" by default (on for platforms deployed beforehand: tests/test_faults.py, row 21)
    assert resolve()["backups"] == "auto"
