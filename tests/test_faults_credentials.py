"""Rows 18 and 19 of the faults matrix: credentials scoped to the job prefix, and sentinel credentials
that appear nowhere.

Row 19 runs against a moto server of this module's own that enforces IAM: an admin user (the
client's credentials) and functions whose credentials carry exactly the policy that ``dask-faas
runtime policy`` prints, or, on Lambda, an execution role whose policy ``dask-faas runtime deploy
--scoped-policy`` attached (the emulator hands its functions that role's temporary credentials, from
moto's STS, as Lambda does). A job succeeds with them; a write or a read elsewhere is AccessDenied.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import uuid
from collections.abc import Iterator
from contextlib import redirect_stdout
from typing import Any, NamedTuple

import boto3
import botocore.exceptions as bce
import dask
import pandas as pd
import pytest
from fixtures_platforms import EXECUTOR_KINDS, OPENWHISK_AUTH
from fixtures_s3 import enforce_auth

from dask_faas import FaasExecutor, cli
from dask_faas.deploy.policy import scoped_policy
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV, start_moto_server, stop_process
from dask_faas.testing.servers import Emulator, start_emulator

PREFIX = "dask-faas"  # faas.prefix's default: every job lives below it
ROLE_NAME = "dask-faas-scoped"
ROLE_ARN = f"arn:aws:iam::123456789012:role/{ROLE_NAME}"


class Keys(NamedTuple):
    key: str
    secret: str
    token: str | None = None

    def env(self) -> dict[str, str]:
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
        return {n: v for n, v in zip(names, self, strict=True) if v}


class Scoped(NamedTuple):
    """The IAM-enforcing server, its bucket, the admin's keys and the functions' scoped keys."""

    url: str
    bucket: str
    admin: Keys
    functions: Keys

    def client(self, keys: Keys, service: str = "s3") -> Any:
        return boto3.session.Session().client(
            service,
            endpoint_url=self.url,
            region_name="us-east-1",
            aws_access_key_id=keys.key,
            aws_secret_access_key=keys.secret,
            aws_session_token=keys.token,
        )

    def s3_settings(self) -> dict[str, Any]:
        """The client's storage: the admin's credentials (it lists inputs and empties the prefix)."""
        return {
            "bucket": self.bucket,
            "endpoint_url": self.url,
            "region_name": "us-east-1",
            "key": self.admin.key,
            "secret": self.admin.secret,
        }


def _printed_policy(bucket: str) -> dict[str, Any]:
    """What ``dask-faas runtime policy --read s3://bucket/inputs/`` prints for this bucket."""
    out = io.StringIO()
    overrides = {"faas.storage": "s3", "faas.s3": {"bucket": bucket}}
    with dask.config.set(overrides), redirect_stdout(out):
        assert cli.main(["runtime", "policy", "--read", f"s3://{bucket}/inputs/"]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scoped]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in LOOPBACK_AWS_ENV.items():
            mp.setenv(name, value)
        proc, url = start_moto_server(str(tmp_path_factory.mktemp("moto-iam") / "moto.log"))
        try:
            bucket = f"scoped-{uuid.uuid4().hex[:16]}"
            iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
            everything = {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
            }
            keys = {}
            for user, policy in (("admin", everything), ("functions", _printed_policy(bucket))):
                iam.create_user(UserName=user)
                iam.put_user_policy(UserName=user, PolicyName="p", PolicyDocument=json.dumps(policy))
                access = iam.create_access_key(UserName=user)["AccessKey"]
                keys[user] = Keys(access["AccessKeyId"], access["SecretAccessKey"])
            trust = {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        # "AWS": "*": the test assumes the role on behalf of Lambda
                        "Principal": {"Service": "lambda.amazonaws.com", "AWS": "*"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            }
            iam.create_role(RoleName=ROLE_NAME, AssumeRolePolicyDocument=json.dumps(trust))
            iam.close()
            s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
            s3.create_bucket(Bucket=bucket)
            frame = pd.DataFrame({"k": [i % 5 for i in range(200)], "v": range(200)})
            s3.put_object(Bucket=bucket, Key="inputs/numbers.csv", Body=frame.to_csv(index=False).encode())
            s3.put_object(Bucket=bucket, Key="private/payroll.csv", Body=b"name,salary\nada,1\n")
            s3.close()
            enforce_auth(url)  # from here on every request is checked
            yield Scoped(url, bucket, keys["admin"], keys["functions"])
        finally:
            stop_process(proc)


# -- what the functions do ---------------------------------------------------------------------------


def reverse(blob: bytes) -> bytes:
    return blob[::-1]


def inc(x: int) -> int:
    return x + 1


def try_elsewhere(bucket: str, endpoint_url: str) -> dict[str, str]:
    """With the function's own credentials (its environment): write, read and list outside the prefix."""
    client = boto3.session.Session().client("s3", endpoint_url=endpoint_url, region_name="us-east-1")
    outcome = {}
    attempts = {
        "put": lambda: client.put_object(Bucket=bucket, Key="private/planted.txt", Body=b"x"),
        "get": lambda: client.get_object(Bucket=bucket, Key="private/payroll.csv")["Body"].read(),
        "overwrite_input": lambda: client.put_object(Bucket=bucket, Key="inputs/numbers.csv", Body=b"x"),
        "read_input": lambda: client.get_object(Bucket=bucket, Key="inputs/numbers.csv")["Body"].read(),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
            outcome[name] = "ok"
        except bce.ClientError as exc:
            outcome[name] = exc.response["Error"]["Code"]
    client.close()
    return outcome


def _run_job(ex: FaasExecutor, scoped: Scoped) -> None:
    """Arguments and results through storage, a dask compute, a dataframe over the inputs: all work;
    outside the prefix, writes and reads are refused."""
    from dask_faas.dataframe import read_csv

    blobs = [secrets.token_bytes(150_000) for _ in range(4)]  # above the inline limit both ways
    assert list(ex.map(reverse, blobs)) == [b[::-1] for b in blobs]
    total = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(20)])
    assert dask.compute(total, scheduler=ex)[0] == sum(range(1, 21))
    url = f"s3://{scoped.bucket}/inputs/numbers.csv"
    options = {k: v for k, v in scoped.s3_settings().items() if k != "bucket"}
    df = read_csv(url, blocksize=400, storage_options=options)
    expected = pd.read_csv(
        io.BytesIO(
            scoped.client(scoped.admin)
            .get_object(Bucket=scoped.bucket, Key="inputs/numbers.csv")["Body"]
            .read()
        )
    )
    got = df.groupby("k").v.sum().compute(scheduler=ex)
    pd.testing.assert_series_equal(got.sort_index(), expected.groupby("k").v.sum(), check_names=False)
    outcome = ex.submit(try_elsewhere, scoped.bucket, scoped.url).result(timeout=120)
    assert outcome == {
        "put": "AccessDenied",
        "get": "AccessDenied",
        "overwrite_input": "AccessDenied",
        "read_input": "ok",
    }


def _assert_left_clean(scoped: Scoped) -> None:
    admin = scoped.client(scoped.admin)
    try:
        keys = sorted(o["Key"] for o in admin.list_objects_v2(Bucket=scoped.bucket).get("Contents", []))
        assert keys == ["inputs/numbers.csv", "private/payroll.csv"], (
            "the job prefix is not empty, or a key was planted"
        )
        assert not admin.list_multipart_uploads(Bucket=scoped.bucket).get("Uploads"), (
            "a multipart upload is open"
        )
    finally:
        admin.close()


# -- row 19 ------------------------------------------------------------------------------------------


def test_the_printed_policy_confines_to_the_prefix_and_the_inputs():
    policy = _printed_policy("bkt")
    assert policy == scoped_policy("bkt", PREFIX, ["s3://bkt/inputs/"])
    resources = [r for s in policy["Statement"] for r in s["Resource"]]
    assert sorted(resources) == [
        "arn:aws:s3:::bkt",
        "arn:aws:s3:::bkt/dask-faas/*",
        "arn:aws:s3:::bkt/inputs/*",
    ]
    (listing,) = [s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"]]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["dask-faas/*", "inputs/*"]}}


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"faas.storage": "local"}, "faas.storage: s3"),
        ({"faas.storage": "s3", "faas.s3": {"bucket": None}}, "faas.s3.bucket"),
        ({"faas.storage": "s3", "faas.s3": {"bucket": "b"}, "faas.prefix": "/"}, "faas.prefix"),
    ],
)
def test_a_policy_that_cannot_confine_is_refused_naming_the_setting(settings, message, capsys):
    with dask.config.set(settings):
        assert cli.main(["runtime", "policy"]) == 1
    assert message in capsys.readouterr().err


def test_row19_scoped_credentials_on_the_local_pool(scoped):
    settings = {
        "workers": 2,
        "storage": "s3",
        "s3": scoped.s3_settings(),
        "environment": scoped.functions.env(),
    }
    with FaasExecutor(**settings) as ex:
        _run_job(ex, scoped)
    _assert_left_clean(scoped)


def _emulator_settings(name: str, url: str, key: str, **section: Any) -> dict[str, Any]:
    return {"backend": name, "signing_key": key, name: {**section}}


@pytest.mark.slow
def test_row19_scoped_credentials_on_openwhisk(scoped, platforms):
    import requests

    emulator = platforms.emulator("openwhisk")
    action = f"scoped-{uuid.uuid4().hex[:8]}"
    environment = {**platforms.environment, **scoped.functions.env()}
    user, _, password = OPENWHISK_AUTH.partition(":")
    body = {
        "exec": {"kind": "blackbox", "image": "dask-faas/openwhisk:test"},
        "limits": {"timeout": 300_000, "memory": 1024},
        "parameters": [{"key": k, "value": v, "init": True} for k, v in environment.items()],
    }
    with requests.Session() as http:
        http.trust_env = False
        route = f"{emulator.url}/api/v1/namespaces/_/actions/{action}"
        http.put(route, json=body, auth=(user, password), timeout=30).raise_for_status()
        try:
            section = {"api-host": emulator.url, "auth": OPENWHISK_AUTH, "action": action}
            with FaasExecutor(
                backend="openwhisk",
                signing_key=platforms.key.hex(),
                openwhisk=section,
                storage="s3",
                s3=scoped.s3_settings(),
            ) as ex:
                _run_job(ex, scoped)
        finally:
            http.delete(route, auth=(user, password), timeout=30)
    _assert_left_clean(scoped)


@pytest.mark.slow
def test_row19_scoped_credentials_on_knative(scoped, platforms, tmp_path):
    token = secrets.token_urlsafe(16)
    env_file = tmp_path / "env.json"
    env_file.write_text(
        json.dumps({**platforms.environment, **scoped.functions.env(), "DASK_FAAS_HTTP_TOKEN": token})
    )
    router = start_emulator(
        "dask_faas.testing.knative_router",
        "--env-file",
        str(env_file),
        "--instances",
        "1",
        log_path=str(tmp_path / "knative.log"),
    )
    try:
        with FaasExecutor(
            backend="knative",
            signing_key=platforms.key.hex(),
            knative={"url": router.url, "token": token},
            storage="s3",
            s3=scoped.s3_settings(),
        ) as ex:
            _run_job(ex, scoped)
    finally:
        router.stop()
    _assert_left_clean(scoped)


@pytest.mark.slow
def test_row19_deploy_scoped_policy_confines_a_lambda_functions_role(
    scoped, platforms, tmp_path, monkeypatch
):
    # Lambda gives a function its execution role's temporary credentials: here moto's STS for the
    # role that `deploy --scoped-policy` gives its policy, handed to the emulator as its role's
    sts = scoped.client(scoped.admin, "sts")
    role = sts.assume_role(RoleArn=ROLE_ARN, RoleSessionName="dask-faas-function")["Credentials"]
    sts.close()
    role_keys = Keys(role["AccessKeyId"], role["SecretAccessKey"], role["SessionToken"])
    emulator: Emulator = start_emulator(
        "dask_faas.testing.lambda_emulator", log_path=str(tmp_path / "lambda.log"), env=role_keys.env()
    )
    try:
        for name, value in scoped.admin.env().items():  # the deployer's own credentials: IAM's admin
            monkeypatch.setenv(name, value)
        section = {
            "function-name": "dask-faas-scoped",
            "endpoint-url": emulator.url,
            "iam-endpoint-url": scoped.url,
            "region-name": "us-east-1",
            "image-uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda",
            "role-arn": ROLE_ARN,
        }
        overrides = {
            "faas.backend": "aws_lambda",
            "faas.aws-lambda": section,
            "faas.storage": "s3",
            "faas.s3": scoped.s3_settings(),
            "faas.signing-key": platforms.key.hex(),
            "faas.timeout-s": 300,
        }
        out = io.StringIO()
        with dask.config.set(overrides), redirect_stdout(out):
            code = cli.main(
                ["runtime", "deploy", "--scoped-policy", "--read", f"s3://{scoped.bucket}/inputs/"]
            )
        assert code == 0, out.getvalue()
        assert "attached policy dask-faas-job-prefix to the execution role dask-faas-scoped" in out.getvalue()
        iam = scoped.client(scoped.admin, "iam")
        attached = iam.get_role_policy(RoleName=ROLE_NAME, PolicyName="dask-faas-job-prefix")[
            "PolicyDocument"
        ]
        iam.close()
        assert (json.loads(attached) if isinstance(attached, str) else attached) == _printed_policy(
            scoped.bucket
        )
        with FaasExecutor(
            backend="aws_lambda",
            signing_key=platforms.key.hex(),
            aws_lambda={k: section[k] for k in ("function-name", "endpoint-url", "region-name")},
            storage="s3",
            s3=scoped.s3_settings(),
        ) as ex:
            _run_job(ex, scoped)
    finally:
        emulator.stop()
    _assert_left_clean(scoped)


# -- row 18 ------------------------------------------------------------------------------------------

SENTINEL_KEY = "AKIASENTINEL18KEY0ID"
SENTINEL_SECRET = "sentinel/row18/secret-never-seen-0123456"
SENTINEL_TOKEN = "sentinel-row18-session-token-0123456789"


def shout(text: str) -> str:
    import logging

    logging.getLogger("user.code").warning("working on %s", text)
    print("printing", text)
    return text.upper()


@pytest.mark.parametrize("kind", EXECUTOR_KINDS)
def test_row18_sentinel_credentials_appear_in_no_object_log_record_or_report(
    kind, request, s3_endpoint, s3_bucket, caplog
):
    """The client's storage credentials (sentinels, accepted by the test server) and its signing key:
    in no stored object (every version kept), no log record at DEBUG, no report, no stats, and on a
    platform in nothing its emulator logged or printed. (Payloads: tests/test_security.py records
    those of the local pool, whose encoding every backend shares.)"""
    from dask_faas.protocol import new_key

    admin = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    admin.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    s3 = {"bucket": s3_bucket, "endpoint_url": s3_endpoint, "region_name": "us-east-1"}
    s3 |= {"key": SENTINEL_KEY, "secret": SENTINEL_SECRET, "token": SENTINEL_TOKEN}
    key = new_key()
    if kind == "local":
        settings: dict[str, Any] = {"workers": 2, "signing_key": key.hex()}
    else:
        farm = request.getfixturevalue("platforms")
        settings, key = farm.settings(kind), farm.key
        emulator = farm.emulator(kind)
        seen_before = len(emulator.output())
    caplog.set_level(logging.DEBUG)
    with FaasExecutor(storage="s3", s3=s3, inline_limit=1024, **settings) as ex:
        words = ["x" * 3000, "small"]  # one argument and result through storage, one inline
        assert list(ex.map(shout, words)) == [w.upper() for w in words]
        total = dask.delayed(sum)([dask.delayed(inc)(i) for i in range(8)])
        assert dask.compute(total, scheduler=ex)[0] == sum(range(1, 9))
        texts = [repr(ex.stats), repr(ex.last_report), str(ex.last_report), repr(ex)]
    ours = [r for r in caplog.records if not r.name.startswith(("botocore", "boto3", "urllib3"))]
    texts += [f"{r.getMessage()} {r.__dict__!r}" for r in ours]
    if kind != "local":
        texts += [emulator.output()[seen_before:], json.dumps(emulator.log())]
    versions = admin.list_object_versions(Bucket=s3_bucket).get("Versions", [])
    assert versions, "nothing went through storage"
    stored = [
        admin.get_object(Bucket=s3_bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        for v in versions
    ]
    # botocore's own DEBUG records show, as botocore does for every client, the access key id (in
    # the SigV4 Authorization header) and the session token (X-Amz-Security-Token), and on Lambda the
    # answer of GetFunctionConfiguration, which holds the function's environment (the signing key
    # too, as Lambda's API returns it to whoever may read the configuration); never the secret
    wire = [f"{r.getMessage()} {r.__dict__!r}".encode() for r in caplog.records if r not in ours]
    everything = [*stored, *(t.encode() for t in texts)]
    checks = {SENTINEL_KEY: everything, SENTINEL_SECRET: everything + wire, SENTINEL_TOKEN: everything}
    checks[key.hex()] = everything
    for secret, blobs in checks.items():
        leaks = [b[:200] for b in blobs if secret.encode() in b]
        assert not leaks, f"{secret} appears in {leaks}"
    assert not any(key in blob for blob in stored), "the raw signing key is in a stored object"
    assert admin.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0, "the job prefix is not empty"
    assert not admin.list_multipart_uploads(Bucket=s3_bucket).get("Uploads"), "a multipart upload is open"
    listed = admin.list_object_versions(Bucket=s3_bucket)
    doomed = [
        {"Key": v["Key"], "VersionId": v["VersionId"]} for v in [*versions, *listed.get("DeleteMarkers", [])]
    ]
    for start in range(0, len(doomed), 1000):
        admin.delete_objects(Bucket=s3_bucket, Delete={"Objects": doomed[start : start + 1000]})
    admin.close()
