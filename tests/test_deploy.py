"""``dask-faas runtime build|deploy|update|delete|list`` and ``dask-faas hello``, run in-process.

The real command line (:func:`dask_faas.cli.main`) with settings from ``dask.config``:

- AWS Lambda and OpenWhisk (and IBM Cloud Functions, OpenWhisk with IAM): deploy, hello (cold,
  then warm on the same instance), update (a new revision: the next hello is cold again), list,
  delete (then hello fails naming the function), against their emulators (one per module, started
  here), with the storage on the moto S3 server; what the platform stored is read back through its
  own API.
- Knative: the Service and Secret manifests written (valid YAML, the fields, no secret value in the
  Service); then the environment they describe runs behind the Knative router and hello answers.
- The Dockerfiles: parsed by a small Dockerfile parser (instructions, continuation lines): base
  image, ENTRYPOINT/CMD, EXPOSE, a non-root USER, EXTRA_PACKAGES used by a pip install, no secret.
- Missing settings are ConfigErrors naming the setting; the exit code is 1.

No test runs docker or kubectl: ``--no-build``/``--no-kubectl`` or a PATH without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dask
import pytest
import yaml

from dask_faas import cli, protocol
from dask_faas.deploy import aws_lambda as lambda_deploy
from dask_faas.deploy.policy import scoped_policy
from dask_faas.testing.servers import Emulator, start_emulator

ROOT = Path(__file__).resolve().parents[1]
LAMBDA_IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/dask-faas:lambda"
LAMBDA_ROLE = "arn:aws:iam::123456789012:role/dask-faas-deploy-test"
OPENWHISK_AUTH = "0c1e4f3a-7b7e-4e59-9d0e-2f7a3a4c6b10:" + "k" * 64
IBM_API_KEY = "ibm-api-key-for-the-deploy-test"
HEX_KEY = re.compile(r"signing-key: ([0-9a-f]{64})$", re.M)


# -- helpers ------------------------------------------------------------------------------------------


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``dask-faas argv`` in this process: (exit code, standard output, standard error)."""
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@contextlib.contextmanager
def faas(**settings: Any) -> Iterator[None]:
    """``dask.config`` holding these ``faas`` settings (the rest from the defaults)."""
    with dask.config.set({"faas": settings}):
        yield


def s3_settings(endpoint: str, bucket: str) -> dict[str, Any]:
    return {
        "storage": "s3",
        "s3": {
            "bucket": bucket,
            "endpoint-url": endpoint,
            "region-name": "us-east-1",
            "key": "testing",
            "secret": "testing",
        },
    }


def objects(endpoint: str, bucket: str) -> list[str]:
    client = boto3.session.Session().client("s3", endpoint_url=endpoint, region_name="us-east-1")
    try:
        return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    finally:
        client.close()


def hello_facts(out: str) -> dict[str, Any]:
    """The JSON line of ``dask-faas hello``'s output."""
    return json.loads(out.strip().splitlines()[-1])


# -- emulators (one per module) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def lambda_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("lambda") / "lambda.log"
    emulator = start_emulator("dask_faas.testing.lambda_emulator", log_path=str(log))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="module")
def openwhisk_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    log = tmp_path_factory.mktemp("openwhisk") / "openwhisk.log"
    emulator = start_emulator(
        "dask_faas.testing.openwhisk_emulator",
        *("--auth", OPENWHISK_AUTH, "--api-key", IBM_API_KEY),
        log_path=str(log),
    )
    yield emulator
    emulator.stop()


@pytest.fixture
def lambda_client(lambda_emulator: Emulator, _s3_env: None) -> Iterator[Any]:
    client = boto3.session.Session().client(
        "lambda", endpoint_url=lambda_emulator.url, region_name="us-east-1"
    )
    yield client
    client.close()


# -- AWS Lambda --------------------------------------------------------------------------------------


def lambda_settings(emulator: Emulator, name: str, **more: Any) -> dict[str, Any]:
    return {
        "backend": "aws_lambda",
        "memory-mb": 256,
        "timeout-s": 60,
        "aws-lambda": {
            "function-name": name,
            "endpoint-url": emulator.url,
            "region-name": "us-east-1",
            "image-uri": LAMBDA_IMAGE,
            "role-arn": LAMBDA_ROLE,
        },
        **more,
    }


@pytest.mark.slow
def test_lambda_deploy_hello_update_list_delete(
    capsys: pytest.CaptureFixture[str],
    lambda_emulator: Emulator,
    lambda_client: Any,
    s3_endpoint: str,
    s3_bucket: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    name = "dask-faas-deploy-test"
    settings = {**lambda_settings(lambda_emulator, name), **s3_settings(s3_endpoint, s3_bucket)}

    # deploy without a signing key: one is generated and printed, with the configuration line
    with faas(**settings):
        code, out, err = run(capsys, "runtime", "deploy")
    assert code == 0, err
    found = HEX_KEY.search(out)
    assert found, out
    key = found.group(1)
    assert "faas:\n  signing-key: " + key in out
    assert os.listdir(tmp_path) == []  # printed, written nowhere
    cfg = lambda_client.get_function_configuration(FunctionName=name)
    assert (cfg["PackageType"], cfg["MemorySize"], cfg["Timeout"]) == ("Image", 256, 60)
    assert cfg["Architectures"] == ["x86_64"] and cfg["Role"] == LAMBDA_ROLE
    variables = cfg["Environment"]["Variables"]
    assert variables[protocol.KEY_ENV] == key
    assert variables["OMP_NUM_THREADS"] == "1"
    assert not set(variables) & lambda_deploy.RESERVED  # Lambda's own (the role's credentials)
    assert "AWS_ACCESS_KEY_ID" in out  # said why they are left out
    code_uri = lambda_client.get_function(FunctionName=name)["Code"]["ImageUri"]
    assert code_uri == LAMBDA_IMAGE

    # deploying again is refused by Lambda, with its message
    with faas(**settings, signing_key=key):
        code, _, err = run(capsys, "runtime", "deploy")
    assert code == 1 and "ResourceConflictException" in err and "runtime update" in err

    # hello: cold, then warm on the same instance (as the emulator's log says too)
    lambda_emulator.reset()
    with faas(**settings, signing_key=key):
        code, out, err = run(capsys, "hello")
        assert code == 0, err
        first = hello_facts(out)
        assert "round trip:" in out and "cold start" in out
        code, out, err = run(capsys, "hello")
        assert code == 0, err
        second = hello_facts(out)
    assert (first["platform"], first["function"], first["warm"]) == ("aws_lambda", name, False)
    assert second["warm"] and second["pid"] == first["pid"]
    assert [r["cold"] for r in lambda_emulator.log()] == [True, False]
    assert objects(s3_endpoint, s3_bucket) == []  # the job's prefix is gone

    # update: new limits and code; Lambda retires the instances, the next hello is cold
    with faas(**{**settings, "memory-mb": 512, "timeout-s": 30}, signing_key=key):
        code, out, err = run(capsys, "runtime", "update")
        assert code == 0, err
        assert "updated AWS Lambda function" in out
        cfg = lambda_client.get_function_configuration(FunctionName=name)
        assert (cfg["MemorySize"], cfg["Timeout"], cfg["LastUpdateStatus"]) == (512, 30, "Successful")
        assert cfg["Environment"]["Variables"][protocol.KEY_ENV] == key
        code, out, err = run(capsys, "hello")
        assert code == 0, err
        assert not hello_facts(out)["warm"]

    # list: this function, not an unrelated one
    lambda_client.create_function(
        FunctionName="unrelated",
        PackageType="Image",
        Code={"ImageUri": LAMBDA_IMAGE},
        Role=LAMBDA_ROLE,
    )
    try:
        with faas(**settings):
            code, out, err = run(capsys, "runtime", "list")
        assert code == 0, err
        rows = out.splitlines()
        assert rows[0].split()[:3] == ["name", "memory_mb", "timeout_s"]
        assert [row.split()[:3] for row in rows[1:]] == [[name, "512", "30"]]
    finally:
        lambda_client.delete_function(FunctionName="unrelated")

    # delete: then hello fails naming the function, and a second delete is Lambda's 404
    with faas(**settings, signing_key=key):
        code, out, err = run(capsys, "runtime", "delete")
        assert code == 0, err
        assert f"deleted AWS Lambda function {name}" in out
        code, out, err = run(capsys, "hello")
        assert code == 1 and out == ""
        assert f"'{name}'" in err and "ResourceNotFoundException" in err and "runtime deploy" in err
        code, _, err = run(capsys, "runtime", "delete")
    assert code == 1 and "ResourceNotFoundException" in err and name in err
    assert objects(s3_endpoint, s3_bucket) == []


# -- OpenWhisk and IBM Cloud Functions ---------------------------------------------------------------


def openwhisk_settings(emulator: Emulator, backend: str, action: str) -> dict[str, Any]:
    section = {"api-host": emulator.url, "action": action, "image": "dask-faas-runtime:openwhisk"}
    if backend == "openwhisk":
        section["auth"] = OPENWHISK_AUTH
    else:
        section.update({"api-key": IBM_API_KEY, "iam-endpoint": emulator.url})
    return {"backend": backend, "memory-mb": 256, "timeout-s": 60, "openwhisk": section}


def stored_action(emulator: Emulator, action: str) -> dict[str, Any]:
    import requests

    user, _, key = OPENWHISK_AUTH.partition(":")
    with requests.Session() as session:
        session.trust_env = False
        answer = session.get(
            f"{emulator.url}/api/v1/namespaces/_/actions/{action}", auth=(user, key), timeout=30
        )
    answer.raise_for_status()
    return answer.json()


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["openwhisk", "ibm_cf"])
def test_openwhisk_deploy_hello_update_list_delete(
    backend: str,
    capsys: pytest.CaptureFixture[str],
    openwhisk_emulator: Emulator,
    s3_endpoint: str,
    s3_bucket: str,
) -> None:
    action = f"dask-faas-deploy-{backend.replace('_', '-')}"
    key = protocol.new_key().hex()
    settings = {
        **openwhisk_settings(openwhisk_emulator, backend, action),
        **s3_settings(s3_endpoint, s3_bucket),
        "signing-key": key,
    }
    with faas(**settings):
        code, out, err = run(capsys, "runtime", "deploy")
        assert code == 0, err
        assert "signing-key:" not in out  # the configured key is used, not a new one
        stored = stored_action(openwhisk_emulator, action)
        assert stored["exec"] == {"kind": "blackbox", "image": "dask-faas-runtime:openwhisk", "binary": False}
        assert (stored["limits"]["timeout"], stored["limits"]["memory"]) == (60_000, 256)
        parameters = {p["key"]: p for p in stored["parameters"]}
        assert all(p.get("init") is True for p in parameters.values())
        assert parameters[protocol.KEY_ENV]["value"] == key
        # storage credentials travel in the deployment (init parameters), never in payloads
        assert parameters["AWS_SECRET_ACCESS_KEY"]["value"] == "testing"

        code, _, err = run(capsys, "runtime", "deploy")
        assert code == 1 and "409" in err and "runtime update" in err

        code, out, err = run(capsys, "hello")
        assert code == 0, err
        first = hello_facts(out)
        code, out, err = run(capsys, "hello")
        assert code == 0, err
        second = hello_facts(out)
        assert (first["platform"], first["warm"]) == ("openwhisk", False)
        assert first["function"].endswith(f"/{action}")
        assert second["warm"] and second["pid"] == first["pid"]
        assert objects(s3_endpoint, s3_bucket) == []

    with faas(**{**settings, "memory-mb": 384}):
        code, out, err = run(
            capsys, "runtime", "update", "--scoped-policy", "--read", "s3://inputs-bucket/2019/"
        )
        assert code == 0, err
        # OpenWhisk gives an action no identity of its own: the policy is printed for the storage's user
        printed = json.loads(out[out.index("{") : out.rindex("}") + 1])
        assert printed == scoped_policy(s3_bucket, "dask-faas", ["s3://inputs-bucket/2019/"])
        assert "attach this policy to the user" in out
        assert stored_action(openwhisk_emulator, action)["limits"]["memory"] == 384
        assert stored_action(openwhisk_emulator, action)["version"] == "0.0.2"
        code, out, err = run(capsys, "hello")
        assert code == 0, err
        assert not hello_facts(out)["warm"]  # an updated action gets new containers

        code, out, err = run(capsys, "runtime", "list")
        assert code == 0, err
        assert [row.split()[0].endswith(f"/{action}") for row in out.splitlines()[1:]] == [True]

        code, out, err = run(capsys, "runtime", "delete")
        assert code == 0, err
        code, out, err = run(capsys, "hello")
        assert code == 1 and out == ""
        assert f"'_/{action}'" in err and "does not exist" in err
        code, _, err = run(capsys, "runtime", "update")
        assert code == 1 and "404" in err and action in err and "runtime deploy" in err


# -- Knative ------------------------------------------------------------------------------------------

SECRET_S3 = {"key": "AKIADEPLOYTESTKEY123", "secret": "s3cr3t-deploy-test-value"}


def knative_deploy(
    capsys: pytest.CaptureFixture[str], output: Path, **settings: Any
) -> tuple[str, dict[str, Any], dict[str, Any], str]:
    """Deploy with --no-kubectl; (output, Service, Secret, Service file text)."""
    code, out, err = run(capsys, "runtime", "deploy", "--output", str(output), "--no-kubectl")
    assert code == 0, err
    service_text = (output / "dask-faas-kn.yaml").read_text()
    service = yaml.safe_load(service_text)
    secret = yaml.safe_load((output / "dask-faas-kn-secret.yaml").read_text())
    return out, service, secret, service_text


def knative_settings(endpoint: str, bucket: str, **knative: Any) -> dict[str, Any]:
    section = {"service-name": "dask-faas-kn", "image": "ghcr.io/example/dask-faas-runtime:knative"}
    return {
        "backend": "knative",
        "storage": "s3",
        "memory-mb": 512,
        "timeout-s": 120,
        "s3": {"bucket": bucket, "endpoint-url": endpoint, "region-name": "us-east-1", **SECRET_S3},
        "knative": {**section, "instance-concurrency": 2, **knative},
    }


def test_knative_manifests(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _s3_env: None
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no kubectl: the commands are printed
    with faas(**knative_settings("http://127.0.0.1:9", "never-contacted")):
        code, out, err = run(capsys, "runtime", "deploy", "--output", str(tmp_path))
    assert code == 0, err
    key = HEX_KEY.search(out).group(1)
    token = re.search(r"^    token: (\S+)$", out, re.M).group(1)
    service_path, secret_path = tmp_path / "dask-faas-kn.yaml", tmp_path / "dask-faas-kn-secret.yaml"
    assert f"run: kubectl apply -f {secret_path} -f {service_path}" in out
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600

    service_text = service_path.read_text()
    service = yaml.safe_load(service_text)
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    assert service["metadata"]["name"] == "dask-faas-kn"
    spec = service["spec"]["template"]["spec"]
    assert (spec["containerConcurrency"], spec["timeoutSeconds"]) == (2, 120)
    (container,) = spec["containers"]
    assert container["image"] == "ghcr.io/example/dask-faas-runtime:knative"
    assert container["resources"]["limits"]["memory"] == "512Mi"
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveness"

    secret = yaml.safe_load(secret_path.read_text())
    assert (secret["apiVersion"], secret["kind"], secret["type"]) == ("v1", "Secret", "Opaque")
    data = secret["stringData"]
    assert data == {
        "AWS_ACCESS_KEY_ID": SECRET_S3["key"],
        "AWS_SECRET_ACCESS_KEY": SECRET_S3["secret"],
        protocol.KEY_ENV: key,
        "DASK_FAAS_HTTP_TOKEN": token,
    }
    env = {e["name"]: e for e in container["env"]}
    for name in data:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": secret["metadata"]["name"], "key": name} and "value" not in env[name]
    assert env["OMP_NUM_THREADS"]["value"] == "1"
    assert env["DASK_FAAS_INSTANCE_CONCURRENCY"]["value"] == "2"
    for value in data.values():  # no secret value in the Service manifest itself
        assert value not in service_text

    # the configured token is used; delete and list print their kubectl commands
    with faas(**knative_settings("http://127.0.0.1:9", "never-contacted", token="configured-token")):
        code, out, err = run(capsys, "runtime", "update", "--output", str(tmp_path))
        assert code == 0, err
        assert "token:" not in out
        assert (
            yaml.safe_load(secret_path.read_text())["stringData"]["DASK_FAAS_HTTP_TOKEN"]
            == "configured-token"
        )
        code, out, err = run(capsys, "runtime", "delete")
        assert code == 0, err
        assert "run: kubectl delete ksvc dask-faas-kn" in out
        assert "run: kubectl delete secret dask-faas-kn-env" in out
        code, out, err = run(capsys, "runtime", "list")
        assert code == 0 and "run: kubectl get ksvc -l app.kubernetes.io/managed-by=dask-faas" in out


@pytest.mark.slow
def test_knative_manifest_serves_hello(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    """What the manifests describe -- the Service's env with the Secret's values -- runs and answers."""
    with faas(**knative_settings(s3_endpoint, s3_bucket)):
        out, service, secret, _ = knative_deploy(capsys, tmp_path)
    key, token = HEX_KEY.search(out).group(1), re.search(r"^    token: (\S+)$", out, re.M).group(1)
    spec = service["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    environment = {}
    for entry in container["env"]:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            environment[entry["name"]] = secret["stringData"][ref["key"]]
        else:
            environment[entry["name"]] = entry["value"]
    # the S3 test server takes any credentials: the manifest's are the example ones
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps(environment))
    router = start_emulator(
        "dask_faas.testing.knative_router",
        *("--env-file", str(env_file), "--instances", "1"),
        *("--instance-concurrency", str(spec["containerConcurrency"])),
        *("--timeout-s", str(spec["timeoutSeconds"])),
        *("--memory-mb", container["resources"]["limits"]["memory"].removesuffix("Mi")),
        log_path=str(tmp_path / "router.log"),
    )
    try:
        settings = knative_settings(s3_endpoint, s3_bucket, url=router.url, token=token)
        with faas(**settings, signing_key=key):
            code, out, err = run(capsys, "hello")
        assert code == 0, f"{err}\n{router.output()[-3000:]}"
        facts = hello_facts(out)
        assert facts["platform"] == "knative" and facts["function"]  # the router's K_SERVICE
        with faas(**{**settings, "knative": {**settings["knative"], "token": "wrong"}}, signing_key=key):
            code, out, err = run(capsys, "hello")
        assert code == 1 and "refused the token" in err and router.url in err
    finally:
        router.stop()
    assert objects(s3_endpoint, s3_bucket) == []


# -- missing settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "setting"),
    [
        ({"backend": "aws_lambda", "aws-lambda": {"region-name": "us-east-1"}}, "faas.aws-lambda.image-uri"),
        (
            {"backend": "aws_lambda", "aws-lambda": {"region-name": "us-east-1", "image-uri": LAMBDA_IMAGE}},
            "faas.aws-lambda.role-arn",
        ),
        ({"backend": "openwhisk"}, "faas.openwhisk.api-host"),
        ({"backend": "openwhisk", "openwhisk": {"api-host": "http://127.0.0.1:9"}}, "faas.openwhisk.auth"),
        (
            {"backend": "openwhisk", "openwhisk": {"api-host": "http://127.0.0.1:9", "auth": OPENWHISK_AUTH}},
            "faas.openwhisk.image",
        ),
        ({"backend": "ibm_cf", "openwhisk": {"api-host": "http://127.0.0.1:9"}}, "faas.openwhisk.api-key"),
        ({"backend": "knative"}, "faas.knative.image"),
        (
            {"backend": "code_engine", "knative": {"image": "x", "instance-concurrency": 0}},
            "faas.knative.instance-concurrency",
        ),
    ],
)
def test_missing_setting_is_named(
    settings: dict[str, Any],
    setting: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    _s3_env: None,
) -> None:
    local = {"local-storage": {"root": str(tmp_path / "storage")}, "signing-key": "00" * 32}
    with faas(**settings, **local):
        code, out, err = run(capsys, "runtime", "deploy", "--output", str(tmp_path / "out"), "--no-kubectl")
    assert code == 1, out
    assert err.startswith("dask-faas runtime deploy: ") and f"'{setting}" in err, err
    assert not (tmp_path / "out").exists()


def test_local_backend_has_nothing_to_deploy(capsys: pytest.CaptureFixture[str]) -> None:
    with faas(backend="local"):
        code, _, err = run(capsys, "runtime", "deploy")
    assert code == 1 and "nothing to deploy" in err and "faas.backend" in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for command in ("config", "check", "clean", "hello", "runtime"):
        assert re.search(rf"^\s+{command}\s", text, re.M), text
    with pytest.raises(SystemExit):
        cli.main(["runtime", "--help"])
    text = capsys.readouterr().out
    for action in ("build", "deploy", "update", "delete", "list", "policy"):
        assert re.search(rf"^\s+{action}\s", text, re.M), text


def test_config_masks_the_signing_key(capsys: pytest.CaptureFixture[str]) -> None:
    with faas(signing_key="ab" * 32):
        code, out, _ = run(capsys, "config")
    assert code == 0 and "ab" * 32 not in out and yaml.safe_load(out)["faas"]["signing-key"] == "***"


# -- Dockerfiles --------------------------------------------------------------------------------------


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of a Dockerfile: comments and blank lines dropped, lines ending
    in a backslash joined to the next (comment lines inside a continuation skipped, as Docker does)."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or (line.startswith("#") and not pending) or (pending and line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        assert word.isalpha(), f"not an instruction: {line!r}"
        instructions.append((word.upper(), rest.strip()))
    assert not pending, "the file ends inside a continuation"
    return instructions


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return value


def assignments(arguments: str) -> dict[str, str | None]:
    """``NAME=value NAME2=value`` (ENV, ARG) -> names and values (None: an ARG without a default)."""
    found: dict[str, str | None] = {}
    for word in shlex.split(arguments):
        name, sep, value = word.partition("=")
        found[name] = value if sep else None
    return found


def check_common(instructions: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Checks both images pass; returns the arguments of each instruction, in order."""
    by_name: dict[str, list[str]] = {}
    for word, arguments in instructions:
        by_name.setdefault(word, []).append(arguments)
    assert instructions[0] == ("FROM", "python:3.11-slim")
    user = by_name["USER"][-1].split(":")[0]
    assert user not in ("root", "0"), user
    args = {k: v for a in by_name["ARG"] for k, v in assignments(a).items()}
    assert "EXTRA_PACKAGES" in args
    installs = [r for r in by_name["RUN"] if "pip install" in r]
    assert any("${EXTRA_PACKAGES}" in r or "$EXTRA_PACKAGES" in r for r in installs), installs
    declared = [assignments(a) for w in ("ENV", "ARG") for a in by_name.get(w, [])]
    for variables in declared:
        for name, value in variables.items():
            if any(word in name.upper() for word in ("KEY", "SECRET", "TOKEN", "PASSWORD")):
                assert not value, f"secret-looking {name}={value!r} in the image"
    return by_name


def test_generic_dockerfile() -> None:
    by_name = check_common(parse_dockerfile((ROOT / "function_runtime" / "Dockerfile").read_text()))
    assert by_name["EXPOSE"] == ["8080"]
    args = {k: v for a in by_name["ARG"] for k, v in assignments(a).items()}
    env = {k: v for a in by_name["ENV"] for k, v in assignments(a).items()}
    assert args["RUNTIME"] == "knative" and env["DASK_FAAS_RUNTIME"] == "${RUNTIME}"
    assert env["PORT"] == "8080"
    command = exec_form(by_name["CMD"][-1])
    assert command[:2] == ["/bin/sh", "-c"]
    # Knative by default; RUNTIME=openwhisk (build) or DASK_FAAS_RUNTIME=openwhisk (run) -> OpenWhisk
    for runtime in ("knative", "openwhisk"):
        argv = shlex.split(command[2].replace("${DASK_FAAS_RUNTIME}", runtime))
        assert argv == ["exec", "python", "-m", f"function_runtime.{runtime}"]
        assert (ROOT / "function_runtime" / f"{runtime}.py").exists()
    assert "ENTRYPOINT" not in by_name


def test_lambda_dockerfile() -> None:
    by_name = check_common(parse_dockerfile((ROOT / "function_runtime" / "Dockerfile.lambda").read_text()))
    assert exec_form(by_name["ENTRYPOINT"][-1]) == ["python", "-m", "awslambdaric"]
    assert exec_form(by_name["CMD"][-1]) == ["function_runtime.aws_lambda.handler"]
    assert any("awslambdaric" in r for r in by_name["RUN"])
    import function_runtime.aws_lambda

    assert callable(function_runtime.aws_lambda.handler)


def test_parser_joins_continuations() -> None:
    text = "# c\nFROM a:b\nRUN one \\\n    # inside\n    two \\\n    three\n\nUSER 1:1\n"
    assert parse_dockerfile(text) == [("FROM", "a:b"), ("RUN", "one two three"), ("USER", "1:1")]


@pytest.mark.parametrize(
    ("platform", "source", "build_args"),
    [
        ("knative", "Dockerfile", []),
        ("openwhisk", "Dockerfile", ["--build-arg", "RUNTIME=openwhisk"]),
        ("lambda", "Dockerfile.lambda", ["--platform", "linux/amd64"]),
    ],
)
def test_runtime_build_writes_the_dockerfile(
    platform: str,
    source: str,
    build_args: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no docker: the command is printed
    output = tmp_path / "image"
    argv = ["runtime", "build", "--platform", platform, "--output", str(output), "--tag", "me/rt:1"]
    code, out, err = run(capsys, *argv, "--extra-packages", "scipy   pyarrow>=14")
    assert code == 0, err
    assert (output / "Dockerfile").read_text() == (ROOT / "function_runtime" / source).read_text()
    assert "no Docker engine" in out
    command = shlex.split(out.strip().splitlines()[-1])
    expected = ["docker", "build", "--tag", "me/rt:1", *build_args]
    assert command == [*expected, "--build-arg", "EXTRA_PACKAGES=scipy pyarrow>=14", str(output)]
    code, out, _ = run(capsys, *argv, "--no-build")
    assert code == 0 and shlex.split(out.strip().splitlines()[-1]) == [*expected, str(output)]


def test_runtime_build_defaults_to_the_backends_image(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with faas(backend="aws_lambda", aws_lambda={"architecture": "arm64"}):
        code, out, err = run(capsys, "runtime", "build", "--no-build")
    assert code == 0, err
    dockerfile = tmp_path / "dask-faas-runtime-lambda" / "Dockerfile"
    assert dockerfile.read_text() == (ROOT / "function_runtime" / "Dockerfile.lambda").read_text()
    assert "--platform linux/arm64" in out and "dask-faas-runtime:lambda" in out
