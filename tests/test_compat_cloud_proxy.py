"""``lithops.storage.cloud_proxy``: ``os`` and ``open`` over object storage, checked against the real
``os`` / ``open`` on a temporary directory, on local storage and on a moto bucket, on the client and
inside functions.
"""

from __future__ import annotations

import builtins
import os as real_os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask
import pytest

import dask_faas.compat as lithops
from dask_faas.compat.storage import cloud_proxy
from dask_faas.compat.storage.cloud_proxy import CloudFileProxy, cloud_open


@pytest.fixture
def local_root(storage_root: Path) -> Any:
    with dask.config.set({"faas.local-storage.root": str(storage_root), "faas.workers": 2}):
        yield storage_root


@pytest.fixture(params=["local", "s3"])
def lithops_config(request: pytest.FixtureRequest, local_root: Path) -> dict[str, Any] | None:
    """``None`` (the configured local storage) or a Lithops configuration of a moto bucket."""
    if request.param == "local":
        return None
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return {
        "lithops": {"storage": "aws_s3", "storage_bucket": bucket},
        "aws": {"access_key_id": "testing", "secret_access_key": "testing"},
        "aws_s3": {"endpoint": endpoint, "region": "us-east-1"},
    }


class RealOs:
    """The oracle: the real ``os`` / ``open`` below a directory, with cloud_proxy's path names."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _p(self, path: str) -> str:
        return str(self.root / path.lstrip("/"))

    def open(self, path: str, mode: str = "r") -> Any:
        return builtins.open(self._p(path), mode)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        real_os.makedirs(self._p(path), exist_ok=exist_ok)

    def listdir(self, path: str) -> list[str]:
        return sorted(real_os.listdir(self._p(path)))

    def walk(self, top: str) -> list[tuple[str, list[str], list[str]]]:
        out = []
        for root, dirs, files in real_os.walk(self._p(top)):
            dirs.sort()
            rel = real_os.path.relpath(root, self.root)
            rel = "/" if rel == "." else "/" + rel
            out.append((rel, dirs, sorted(files)))
        return out

    def remove(self, path: str) -> None:
        real_os.remove(self._p(path))


def run_sequence(fs: Any, makedirs: Any) -> list[Any]:
    """The same operations on either side; what each returns or raises."""
    seen: list[Any] = []

    def attempt(what: Any) -> None:
        try:
            seen.append(what())
        except OSError as exc:
            seen.append((type(exc).__name__, exc.errno))

    makedirs("bar")
    with fs.open("bar/foo.txt", "w") as f:
        f.write("Hello world!\nsecond line\n")
    with fs.open("bar/foo.txt", "r") as f:
        seen += [f.read(6), f.read()]
    with fs.open("bar/foo.txt") as f:
        seen.append(list(f))
    with fs.open("bar/foo.txt", "a") as f:
        f.write("third\n")
    with fs.open("bar/foo.txt", "rb") as f:
        seen += [f.read(3), f.read()]
    makedirs("bar/sub/deep")
    with fs.open("bar/sub/deep/data.bin", "wb") as f:
        f.write(bytes(range(256)))
    with fs.open("/bar/sub/x.txt", "w") as f:
        f.write("x")
    seen.append(fs.listdir("bar"))
    seen.append(fs.listdir("/bar/sub"))
    seen.append(fs.walk("/bar"))
    attempt(lambda: fs.open("bar/missing.txt").read())
    attempt(lambda: fs.open("bar/sub", "r"))
    attempt(lambda: fs.listdir("bar/foo.txt"))
    attempt(lambda: fs.remove("bar/missing.txt"))
    attempt(lambda: fs.open("bar/foo.txt", "x"))
    fs.remove("bar/sub/x.txt")
    seen.append(fs.listdir("bar/sub"))
    return seen


class CloudSide:
    """cloud_proxy's ``os`` with the oracle's ``walk`` shape."""

    def __init__(self, proxy: CloudFileProxy) -> None:
        self.proxy = proxy
        self.open = proxy.open
        self.listdir = proxy.listdir
        self.remove = proxy.remove

    def walk(self, top: str) -> list[tuple[str, list[str], list[str]]]:
        return [(root, dirs, files) for root, dirs, files in self.proxy.walk(top)]


def test_os_and_open_match_the_real_ones(lithops_config: Any, tmp_path: Path) -> None:
    storage = lithops.Storage(config=lithops_config)
    proxy = CloudFileProxy(storage.faas_storage)
    oracle = RealOs(tmp_path / "oracle")
    (tmp_path / "oracle").mkdir()
    expected = run_sequence(oracle, lambda p: oracle.makedirs(p, exist_ok=True))
    got = run_sequence(CloudSide(proxy), lambda p: proxy.makedirs(p, exist_ok=True))
    assert got == expected
    assert proxy.path.isfile("bar/foo.txt") and proxy.path.isdir("/bar/sub") and proxy.path.exists("bar")
    assert not proxy.path.isfile("bar") and not proxy.path.exists("bar/nothing")
    assert proxy.path.getsize("bar/sub/deep/data.bin") == real_os.path.getsize(
        tmp_path / "oracle/bar/sub/deep/data.bin"
    )
    assert proxy.stat("bar/foo.txt").st_size == real_os.stat(tmp_path / "oracle/bar/foo.txt").st_size
    assert [(e.name, e.is_dir()) for e in proxy.scandir("bar")] == sorted(
        (e.name, e.is_dir()) for e in real_os.scandir(tmp_path / "oracle/bar")
    )
    with pytest.raises(FileNotFoundError, match="bar/nothing"):
        proxy.stat("bar/nothing")
    with pytest.raises(FileExistsError, match=r"bar/foo\.txt"):
        proxy.mkdir("bar/foo.txt")
    with pytest.raises(ValueError, match="invalid mode"):
        proxy.open("bar/foo.txt", "rw")
    proxy.remove("/bar")  # a directory: its objects (as Lithops' never fails); the oracle: rmtree
    shutil.rmtree(tmp_path / "oracle/bar")
    assert proxy.listdir("/") == sorted(real_os.listdir(tmp_path / "oracle")) == []
    assert list(storage.faas_storage.list("")) == []


def write_in_function(x: int) -> int:
    with cloud_proxy.open(f"test/{x}.txt", "w") as file:
        file.write(f"Hello from function number {x}!")
    return len(cloud_proxy.os.listdir("test"))


def read_in_function(x: int) -> str:
    with cloud_proxy.open("client/written.txt") as f:
        return f.read() + str(x)


def test_functions_write_and_read_the_same_storage(lithops_config: Any) -> None:
    proxy = CloudFileProxy(lithops.Storage(config=lithops_config).faas_storage)
    with lithops.FunctionExecutor(config=lithops_config, workers=2) as fexec:
        fexec.map(write_in_function, [1, 2, 3, 4])
        assert all(1 <= n <= 4 for n in fexec.get_result())
        assert proxy.listdir("test") == ["1.txt", "2.txt", "3.txt", "4.txt"]
        with proxy.open("test/3.txt") as f:
            assert f.read() == "Hello from function number 3!"
        with proxy.open("client/written.txt", "w") as f:
            f.write("from the client ")
        fexec.call_async(read_in_function, 7)
        assert fexec.get_result() == "from the client 7"
        proxy.remove("/test")
        proxy.remove("client/written.txt")
        assert proxy.listdir("/") == []
    assert list(lithops.Storage(config=lithops_config).faas_storage.list("")) == []


def test_module_open_and_os_use_the_configured_storage(local_root: Path) -> None:
    with cloud_open("a/b.txt", "w", storage=lithops.Storage().faas_storage) as f:
        f.write("configured")
    script = (
        "from dask_faas.compat.storage.cloud_proxy import open, os\n"
        "print(os.listdir('a'), open('a/b.txt').read())\n"
        "os.remove('a/b.txt')\n"
        "print(os.listdir('/'))\n"
    )
    env = {**real_os.environ, "DASK_FAAS__LOCAL_STORAGE__ROOT": str(local_root)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["['b.txt'] configured", "[]"]
    assert list(local_root.rglob("*.txt")) == []
