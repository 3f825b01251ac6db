"""Lithops' own test modules, as the lithops wheel ships them, with ``lithops`` routed to the facade.

``dask_faas.testing.lithops_suites`` makes ``import lithops`` give :mod:`dask_faas.compat` while the
suites' files (``lithops/tests/*.py``, their ``conftest.py`` and ``functions.py``) are read from the
installed wheel, never copied here. They run in a pytest subprocess from a scratch directory (with
an empty ini file and the site-packages directory as rootdir, so that the wheel's conftest applies
and ours does not): on the embedded default (local pool, local storage in a fresh directory) and
on a moto server on loopback (a Lithops configuration file with an ``aws_s3`` section, given with
the suites' own ``--config`` option). test_map_reduce downloads five data sets over HTTPS from a
public bucket, on the client and (``map_reduce`` over their URLs) inside the functions: they are
served by an HTTPS proxy on loopback (``HTTPS_PROXY``), behind a certificate of a CA made here
(``SSL_CERT_FILE``), which refuses every other host.
"""

from __future__ import annotations

import datetime
import http.server
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from http_kit import RangedFiles

from dask_faas.testing.lithops_suites import EXCLUDED, MODULES, ONLINE, wheel_tests_directory
from dask_faas.testing.s3 import LOOPBACK_AWS_ENV

pytest.importorskip("lithops", reason="lithops is in the test extra")

#: Tests that pass, per module, on either storage (every test but the excluded ones).
EXPECTED_PASSED = {
    "test_map": 19,
    "test_map_reduce": 10,
    "test_call_async": 6,
    "test_storage": 13,
    "test_retries": 18,
    "test_future": 1,
}
#: Tests skipped with a reason from EXCLUDED, per module.
EXPECTED_EXCLUDED = {
    "test_map": 1,
    "test_map_reduce": 0,
    "test_call_async": 0,
    "test_storage": 0,
    "test_retries": 1,
    "test_future": 33,
}


#: Where test_map_reduce reads its five data sets (base64 in the suite), and what is served there.
DATASET_HOST = "s3-eu-west-1.amazonaws.com"
DATASETS = {
    f"/artm/vocab.{name}.txt": "".join(
        f"{name} word{i % 997} w{i % 13} and more words {i}\n" for i in range(lines)
    ).encode()
    for name, lines in (
        ("enron", 20_000),
        ("kos", 9_000),
        ("nips", 31_000),
        ("nytimes", 45_000),
        ("pubmed", 3_000),
    )
}


def _certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA, and a certificate of :data:`DATASET_HOST` it signed: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    day, hour = datetime.timedelta(days=1), datetime.timedelta(hours=1)
    host = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DATASET_HOST)])
    signing = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-faas test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(signing, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert = (
        x509.CertificateBuilder().subject_name(host)
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - hour).not_valid_after(now + day)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(DATASET_HOST)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


class _Datasets(RangedFiles):
    """Serves :data:`DATASETS` (GET with Range, HEAD) inside the TLS tunnel."""

    protocol_version = "HTTP/1.1"
    files = DATASETS


class _Proxy(http.server.BaseHTTPRequestHandler):
    """An HTTPS proxy on loopback: CONNECT to :data:`DATASET_HOST` ends in :class:`_Datasets`
    behind a certificate of the test CA; every other host is refused (nothing leaves loopback)."""

    tls: ssl.SSLContext

    def do_CONNECT(self) -> None:
        host = self.path.rsplit(":", 1)[0]
        if host != DATASET_HOST:
            self.send_error(403, f"only {DATASET_HOST} is served here")
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        conn = self.tls.wrap_socket(self.connection, server_side=True)
        _Datasets(conn, self.client_address, self.server)
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def dataset_proxy(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that routes the suites' HTTPS data sets to a loopback proxy."""
    ca, cert, key = _certificates(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    handler = type("Proxy", (_Proxy,), {"tls": tls})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"HTTPS_PROXY": proxy, "https_proxy": proxy, "SSL_CERT_FILE": str(ca)}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


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
        "--lithops-online",
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
def test_lithops_suites_on_the_embedded_default(tmp_path: Path, dataset_proxy: dict[str, str]) -> None:
    stdout, seconds = run_suites(tmp_path, env=dataset_proxy)
    check_counts(stdout)
    assert not any((tmp_path / "storage" / "dask-faas").glob("*")), "a job directory was left"
    print(f"embedded default: {sum(EXPECTED_PASSED.values())} passed in {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(1000)
def test_lithops_suites_on_s3(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str, dataset_proxy: dict[str, str]
) -> None:
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
    stdout, seconds = run_suites(tmp_path, "--config", str(config), env=dataset_proxy)
    check_counts(stdout)
    print(f"S3 (moto): {sum(EXPECTED_PASSED.values())} passed in {seconds:.0f} s")


def test_the_proxy_serves_the_data_sets_and_nothing_else(dataset_proxy: dict[str, str]) -> None:
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=dataset_proxy["SSL_CERT_FILE"])
    proxy = urllib.request.ProxyHandler({"https": dataset_proxy["HTTPS_PROXY"]})
    opener = urllib.request.build_opener(proxy, urllib.request.HTTPSHandler(context=context))
    url = f"https://{DATASET_HOST}/artm/vocab.kos.txt"
    assert opener.open(url, timeout=30).read() == DATASETS["/artm/vocab.kos.txt"]
    ranged = urllib.request.Request(url, headers={"Range": "bytes=5-9"})
    assert opener.open(ranged, timeout=30).read() == DATASETS["/artm/vocab.kos.txt"][5:10]
    with pytest.raises(urllib.error.URLError):
        opener.open("https://example.com/", timeout=30)
    assert dataset_proxy["HTTPS_PROXY"].startswith("http://127.0.0.1:")


def test_every_exclusion_names_a_test_of_the_wheel() -> None:
    tests = wheel_tests_directory()
    for entry in {**EXCLUDED, **ONLINE}:
        module, _, rest = entry.partition("::")
        text = (tests / module).read_text()
        for name in rest.split("::"):
            assert re.search(rf"(def|class) {re.escape(name)}\b", text), entry
    assert {entry.split(".py")[0] for entry in {**EXCLUDED, **ONLINE}} <= set(MODULES)


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
