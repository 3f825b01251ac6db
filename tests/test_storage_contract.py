"""One contract for every Storage implementation (the fsspec abstract-suite pattern).

:class:`StorageContract` holds the tests, written against a ``storage`` fixture; each
``Test<Backend>`` subclass provides that fixture. The S3 variant talks to moto's server mode in a
subprocess on loopback (``tests/fixtures_s3.py``).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_faas.backends.storage import (
    CACHE_SIZE,
    Storage,
    close_cached,
    registry,
    storage_from_locator,
    storage_from_settings,
)
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.backends.storage.memory import MemoryStorage
from dask_faas.backends.storage.s3 import S3Storage
from dask_faas.backends.storage.urls import s3_options, s3_storage, split_url
from dask_faas.exceptions import ConfigError, StorageError

ALL_BYTES = bytes(range(256))
SECRETS = {"testing"}
CREDENTIAL_NAMES = {"key", "secret", "token", "aws_access_key_id", "aws_secret_access_key"}


def _put_many(storage: Storage, keys: list[str], data: bytes = b"") -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: storage.put(key, data), keys))


class StorageContract:
    """Tests every implementation must pass; subclasses provide the ``storage`` fixture."""

    # -- put / get ------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        "data",
        [b"", b"x", ALL_BYTES * 3, os.urandom(3 * 2**20 + 17)],
        ids=["empty", "one-byte", "all-byte-values", "3MB"],
    )
    def test_round_trip(self, storage: Storage, data: bytes) -> None:
        storage.put("rt/obj", data)
        assert storage.get("rt/obj") == data
        assert storage.size("rt/obj") == len(data)

    def test_put_memoryview(self, storage: Storage) -> None:
        buffer = bytearray(ALL_BYTES * 4)
        view = memoryview(buffer)[10:500]
        storage.put("mv/obj", view)
        expected = bytes(view)
        buffer[:] = b"\0" * len(buffer)  # the stored object is a copy, not the caller's buffer
        got = storage.get("mv/obj")
        assert isinstance(got, bytes)
        assert got == expected

    def test_overwrite(self, storage: Storage) -> None:
        storage.put("ow/obj", b"first version, longer")
        storage.put("ow/obj", b"second")
        assert storage.get("ow/obj") == b"second"
        assert storage.size("ow/obj") == 6
        assert list(storage.list("ow/")) == [("ow/obj", 6)]

    # -- ranges ---------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("start", "end", "expected"),
        [
            (3, None, ALL_BYTES[3:]),
            (None, 5, ALL_BYTES[:5]),
            (10, 20, ALL_BYTES[10:20]),
            (250, 1000, ALL_BYTES[250:]),  # end past size is clipped
            (256, None, b""),  # start at size
            (300, 400, b""),  # start past size
            (7, 7, b""),  # empty range
            (9, 4, b""),  # reversed range, as slicing
            (0, 0, b""),
            (None, None, ALL_BYTES),
        ],
    )
    def test_ranged_get(self, storage: Storage, start, end, expected) -> None:
        storage.put("rng/obj", ALL_BYTES)
        assert storage.get("rng/obj", start, end) == expected

    def test_ranged_get_of_empty_object(self, storage: Storage) -> None:
        storage.put("rng/empty", b"")
        assert storage.get("rng/empty", 0, 10) == b""
        assert storage.get("rng/empty", 0) == b""
        assert storage.get("rng/empty", None, 3) == b""

    def test_negative_range_rejected(self, storage: Storage) -> None:
        storage.put("rng/obj", b"abc")
        with pytest.raises(ValueError, match="negative"):
            storage.get("rng/obj", -1)
        with pytest.raises(ValueError, match="negative"):
            storage.get("rng/obj", 0, -1)

    def test_ranges_match_slicing(self, storage: Storage) -> None:
        data = ALL_BYTES * 2 + b"tail"
        storage.put("prop/obj", data)
        offsets = st.none() | st.integers(0, len(data) + 20)

        # an inner @given: the object is written once, each example only reads
        @settings(max_examples=25, deadline=None, database=None)
        @given(start=offsets, end=offsets)
        def check(start: int | None, end: int | None) -> None:
            assert storage.get("prop/obj", start, end) == data[start:end]

        check()

    # -- size / missing / exists ----------------------------------------------------------------

    def test_missing_key(self, storage: Storage) -> None:
        with pytest.raises(FileNotFoundError, match="nope/missing"):
            storage.get("nope/missing")
        with pytest.raises(FileNotFoundError, match="nope/missing"):
            storage.get("nope/missing", 1, 5)
        with pytest.raises(FileNotFoundError, match="nope/missing"):
            storage.size("nope/missing")
        assert not storage.exists("nope/missing")

    def test_directory_like_prefix_is_not_a_key(self, storage: Storage) -> None:
        storage.put("dir/sub/obj", b"x")
        assert not storage.exists("dir/sub")
        with pytest.raises(FileNotFoundError):
            storage.get("dir/sub")
        with pytest.raises(FileNotFoundError):
            storage.size("dir")

    # -- versions -------------------------------------------------------------------------------

    def test_versions_change_with_every_write_and_pin_reads(self, storage: Storage) -> None:
        storage.put("ver/obj", b"first version")
        first = storage.stat("ver/obj")
        assert (first.key, first.size) == ("ver/obj", 13) and first.version is not None
        assert [s for s in storage.scan("ver/") if s.key == "ver/obj"] == [first]
        assert storage.get("ver/obj", version=first.version) == b"first version"
        assert storage.get("ver/obj", 6, 9, version=first.version) == b"ver"
        storage.put("ver/obj", b"second version!")
        second = storage.stat("ver/obj")
        assert second.version not in (None, first.version)
        assert storage.get("ver/obj", 0, 6, version=second.version) == b"second"
        for start, end in [(None, None), (0, 6)]:  # a reader that planned from the first version
            with pytest.raises(StorageError, match="ver/obj"):
                storage.get("ver/obj", start, end, version=first.version)
        with pytest.raises(FileNotFoundError, match="nope/missing"):
            storage.stat("nope/missing")

    # -- conditional writes ---------------------------------------------------------------------

    def test_put_if_absent_and_put_if_version(self, storage: Storage) -> None:
        first = storage.put_if("cond/obj", b"one", version=None)
        assert first is not None and storage.get_versioned("cond/obj") == (b"one", first)
        assert storage.put_if("cond/obj", b"two", version=None) is None  # exists: nothing written
        second = storage.put_if("cond/obj", b"two", version=first)
        assert second not in (None, first) and storage.get_versioned("cond/obj") == (b"two", second)
        assert storage.stat("cond/obj").version == second
        assert storage.put_if("cond/obj", b"three", version=first) is None  # a stale version loses
        assert storage.get("cond/obj") == b"two"
        assert storage.put_if("cond/missing", b"x", version=second) is None  # no object of that version
        assert not storage.exists("cond/missing")
        with pytest.raises(FileNotFoundError, match="cond/missing"):
            storage.get_versioned("cond/missing")
        storage.delete(["cond/obj"])
        assert storage.put_if("cond/obj", b"again", version=None) is not None
        assert [k for k, _ in storage.list("cond/")] == ["cond/obj"]  # no temporary leftovers

    #: Why the server under test cannot show that concurrent conditional writes are atomic (None: it can).
    not_atomic: str | None = None

    def test_concurrent_conditional_increments_lose_no_update(self, storage: Storage) -> None:
        """Threads incrementing one counter with read-version-then-put_if: no increment is lost."""
        if self.not_atomic:
            pytest.skip(self.not_atomic)
        storage.put_if("cas/counter", b"0", version=None)
        threads, increments = 4, 15

        def increment(_: int) -> int:
            conflicts = 0
            for _ in range(increments):
                while True:
                    data, version = storage.get_versioned("cas/counter")
                    if storage.put_if("cas/counter", b"%d" % (int(data) + 1), version=version):
                        break
                    conflicts += 1
            return conflicts

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(increment, range(threads)))
        assert storage.get("cas/counter") == b"%d" % (threads * increments)
        assert [k for k, _ in storage.list("cas/")] == ["cas/counter"]

    def test_delete_prefix_leaves_no_upload_open(self, storage: Storage) -> None:
        storage.put("up/a", b"1")
        assert storage.delete_prefix("up/") == 1
        assert storage.open_uploads("up/") == []
        assert storage.abort_uploads("up/") == 0

    def test_exists(self, storage: Storage) -> None:
        assert not storage.exists("ex/obj")
        storage.put("ex/obj", b"")
        assert storage.exists("ex/obj")
        storage.delete(["ex/obj"])
        assert not storage.exists("ex/obj")

    # -- list -----------------------------------------------------------------------------------

    def test_list(self, storage: Storage) -> None:
        objects = {
            "ls/abc/d": b"1",
            "ls/abx": b"22",
            "ls/ab-c": b"333",  # "-" sorts before "/": a directory walk would get this wrong
            "ls/ab/e/f/g": b"4444",
            "ls/b": b"",
            "ls/a": b"55555",
            "other/ab": b"6",
        }
        for key, data in objects.items():
            storage.put(key, data)
        everything = sorted((k, len(v)) for k, v in objects.items())
        assert list(storage.list()) == everything
        assert list(storage.list("ls/")) == [kv for kv in everything if kv[0].startswith("ls/")]
        # a prefix that is not a directory boundary
        assert list(storage.list("ls/ab")) == [
            ("ls/ab-c", 3),
            ("ls/ab/e/f/g", 4),
            ("ls/abc/d", 1),
            ("ls/abx", 2),
        ]
        assert list(storage.list("ls/abc")) == [("ls/abc/d", 1)]
        assert list(storage.list("ls/ab/e/")) == [("ls/ab/e/f/g", 4)]
        assert list(storage.list("ls/ab/e/f/g")) == [("ls/ab/e/f/g", 4)]
        assert list(storage.list("ls/zzz")) == []
        assert list(storage.list("nothing/here/")) == []

    def test_list_order_is_string_order(self, storage: Storage) -> None:
        keys = ["o/a.b", "o/a/b", "o/a0", "o/A", "o/a-b/c", "o/_x", "o/é", "o/z/z/z"]
        _put_many(storage, keys, b"xy")
        assert [k for k, _ in storage.list("o/")] == sorted(keys)
        assert all(size == 2 for _, size in storage.list("o/"))

    # -- delete ---------------------------------------------------------------------------------

    def test_delete(self, storage: Storage) -> None:
        storage.put("del/a", b"1")
        storage.put("del/b/c", b"2")
        storage.put("del/b/d", b"3")
        storage.delete(["del/a", "del/b/c", "del/missing", "never/was"])
        assert list(storage.list("del/")) == [("del/b/d", 1)]
        storage.delete([])
        storage.delete(iter(["del/b/d"]))
        assert list(storage.list("del/")) == []
        assert list(storage.list()) == []

    def test_delete_prefix_many(self, storage: Storage) -> None:
        keys = [f"many/a/{i:04d}" for i in range(1001)]
        _put_many(storage, [*keys, "many/b/x", "manyx"])
        assert storage.delete_prefix("many/a/") == 1001
        assert list(storage.list("many")) == [("many/b/x", 0), ("manyx", 0)]
        assert storage.delete_prefix("many") == 2
        assert list(storage.list()) == []

    def test_delete_more_than_a_batch(self, storage: Storage) -> None:
        keys = [f"batch/{i:04d}" for i in range(1003)]
        _put_many(storage, keys[::2])  # every other key is missing
        storage.delete(keys)
        assert list(storage.list("batch/")) == []

    def test_delete_prefix_refuses_empty_prefix(self, storage: Storage) -> None:
        storage.put("keep", b"x")
        with pytest.raises(ValueError, match="prefix"):
            storage.delete_prefix("")
        assert storage.exists("keep")

    # -- keys -----------------------------------------------------------------------------------

    def test_unusual_valid_keys(self, storage: Storage) -> None:
        keys = ["sp ace/x", "uni/é€", "dots/a.b..c", "dash/-_=+,;@"]
        for key in keys:
            storage.put(key, key.encode())
        for key in keys:
            assert storage.get(key) == key.encode()
        assert [k for k, _ in storage.list()] == sorted(keys)

    # -- concurrency ----------------------------------------------------------------------------

    def test_concurrent_puts_never_expose_partial_objects(self, storage: Storage) -> None:
        size = 256 * 1024
        versions = [bytes([i]) * size for i in range(8)]
        storage.put("conc/obj", versions[0])
        stop = threading.Event()
        seen: list[bytes] = []

        def read() -> None:
            while not stop.is_set():
                seen.append(storage.get("conc/obj"))

        def write(version: bytes) -> None:
            for _ in range(3):
                storage.put("conc/obj", version)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            with ThreadPoolExecutor(len(versions)) as pool:
                list(pool.map(write, versions))
        finally:
            stop.set()
            reader.join()
        seen.append(storage.get("conc/obj"))
        assert seen
        assert all(data in versions for data in seen)
        assert [k for k, _ in storage.list()] == ["conc/obj"]  # no temporary leftovers

    # -- reaching the same storage from elsewhere -----------------------------------------------

    def test_locator_or_a_process_local_error(self, storage: Storage) -> None:
        """Every storage states its locator; only a process-local one has none, and says why."""
        assert {"locator", "location"} <= Storage.__abstractmethods__
        assert isinstance(storage.location, str)
        if storage.process_local:
            with pytest.raises(NotImplementedError, match=rf"{storage.name} storage .* this process only"):
                storage.locator()
            assert f"{id(storage):#x}" in repr(storage)
            return
        locator = storage.locator()
        assert locator["backend"] == storage.name
        assert json.loads(json.dumps(locator)) == locator
        assert not CREDENTIAL_NAMES & {k.lower() for k in locator}
        assert not SECRETS & {str(v) for v in locator.values()}
        assert "testing" not in repr(storage)
        assert storage.location and storage.location in repr(storage)

    def test_locator_round_trip(self, storage: Storage) -> None:
        if storage.process_local:
            pytest.skip(f"{storage.name} storage has no locator (test_locator_or_a_process_local_error)")
        locator = storage.locator()
        storage.put("loc/obj", b"shared")
        other = storage_from_locator(locator)
        try:
            assert type(other) is type(storage)
            assert other.location == storage.location
            assert other.get("loc/obj") == b"shared"
            other.put("loc/back", b"hello")
            assert storage.get("loc/back") == b"hello"
            assert storage_from_locator(dict(locator)) is other  # one per process
        finally:
            close_cached()  # the cache's storages are shared: closed by the cache, not by callers

    def test_check_passes(self, storage: Storage) -> None:
        storage.check()

    def test_registered_under_its_name(self, storage: Storage) -> None:
        assert registry.load(storage.name) is type(storage)


def test_an_implementation_without_locator_and_location_cannot_be_made() -> None:
    class OnlyPrimitives(Storage):
        name = "only-primitives"

        def put(self, key, data):
            pass

        def get(self, key, start=None, end=None):
            return b""

        def size(self, key):
            return 0

        def list(self, prefix=""):
            return iter(())

        def delete(self, keys):
            pass

    with pytest.raises(TypeError, match=r"abstract methods? .*location.*locator|locator.*location"):
        OnlyPrimitives()


class ClosingStorage(LocalStorage):
    """A third-party storage (registered as plugins are) that records its closes."""

    name = "closing-local"
    closed: ClassVar[list[str]] = []

    def locator(self) -> dict[str, Any]:
        return {"backend": self.name, "root": self.root}

    def close(self) -> None:
        type(self).closed.append(self.root)


registry.register(ClosingStorage.name, ClosingStorage)


def test_the_storage_cache_is_a_bounded_lru_that_closes_what_it_drops(tmp_path) -> None:
    close_cached()
    ClosingStorage.closed.clear()
    roots = [str(tmp_path / f"r{i}") for i in range(CACHE_SIZE + 2)]
    locators = [{"backend": ClosingStorage.name, "root": root} for root in roots]
    try:
        first = storage_from_locator(locators[0])
        second = storage_from_locator(locators[1])
        assert storage_from_locator(dict(locators[0])) is first
        for locator in locators[2:CACHE_SIZE]:
            storage_from_locator(locator)
        assert storage_from_locator(locators[0]) is first  # now the most recently used
        assert ClosingStorage.closed == []  # full, nothing dropped yet
        storage_from_locator(locators[CACHE_SIZE])  # one too many: the least recently used goes
        assert ClosingStorage.closed == [roots[1]]
        assert storage_from_locator(locators[0]) is first
        assert storage_from_locator(locators[1]) is not second  # rebuilt, and roots[2] dropped
        assert ClosingStorage.closed == [roots[1], roots[2]]
        assert close_cached() == CACHE_SIZE
        kept = [roots[0], roots[1], *roots[3 : CACHE_SIZE + 1]]
        assert sorted(ClosingStorage.closed[2:]) == sorted(kept)
        assert storage_from_locator(locators[0]) is not first  # forgotten: built anew
    finally:
        close_cached()


# -- URLs and settings: the one parser and the one mapping --------------------------------------


@pytest.mark.parametrize(
    ("url", "parts"),
    [
        ("s3://bucket/a/b.csv", ("s3", "bucket", "a/b.csv")),
        ("S3://bucket", ("s3", "bucket", "")),
        ("s3a://bucket/year=*/", ("s3a", "bucket", "year=*/")),
        ("cos://bucket/k", ("cos", "bucket", "k")),
        ("file:///dir/x.csv", ("file", "", "/dir/x.csv")),
        ("/dir/x.csv", ("", "", "/dir/x.csv")),
        ("bucket/key", ("", "", "bucket/key")),
    ],
)
def test_split_url(url: str, parts: tuple[str, str, str]) -> None:
    assert split_url(url) == parts


def test_split_url_names_what_is_wrong() -> None:
    with pytest.raises(ValueError, match=r"unsupported URL 'gs://b/k'"):
        split_url("gs://b/k")
    with pytest.raises(ValueError, match=r"no bucket in URL 's3:///k'"):
        split_url("s3:///k")


def test_s3_settings_map_to_storage_options_and_unknown_ones_are_named() -> None:
    settings = {"bucket": "b", "endpoint-url": "http://127.0.0.1:9", "region_name": "r", "key": None}
    assert s3_options(settings) == {"endpoint_url": "http://127.0.0.1:9", "region_name": "r"}
    assert s3_options(None) == {}
    with pytest.raises(ConfigError, match=r"faas\.s3\.endpoint-uri"):
        s3_options({"endpoint_uri": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match=r"faas\.s3\.endpoint-uri"):
        storage_from_settings({"storage": "s3", "s3": {"bucket": "b", "endpoint-uri": "x"}})
    with pytest.raises(ConfigError, match=r"unsupported storage_options \['anon'\]"):
        s3_storage("b", {"anon": True})


def test_s3_storage_from_settings_and_from_options_agree(s3_endpoint, s3_bucket) -> None:
    settings = {"bucket": s3_bucket, "endpoint-url": s3_endpoint, "region-name": "us-east-1"}
    from_settings = storage_from_settings(
        {"storage": "s3", "s3": {**settings, "key": "testing", "secret": "testing"}}
    )
    options = {"key": "testing", "secret": "testing", "client_kwargs": {"endpoint_url": s3_endpoint}}
    from_options = s3_storage(s3_bucket, {**options, "region_name": "us-east-1"})
    try:
        assert from_settings.locator() == from_options.locator()  # client_kwargs' endpoint reaches it
        assert from_settings.deployment_environment() == from_options.deployment_environment()
        from_settings.put("agree/k", b"v")
        assert from_options.get("agree/k") == b"v"
    finally:
        from_settings.close()
        from_options.close()


class ValidatesKeys:
    """For backends that reject keys a directory cannot hold (S3 accepts what S3 accepts)."""

    @pytest.mark.parametrize(
        "key", ["", "/abs", "a/../b", "..", "a/./b", "a//b", "a/", "a\\b", "a\x00b", ".tmp-x"]
    )
    def test_invalid_keys_rejected(self, storage: Storage, key: str) -> None:
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.put(key, b"x")
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.get(key)
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.delete([key])
        assert list(storage.list()) == []


class TestLocalStorage(StorageContract, ValidatesKeys):
    @pytest.fixture
    def storage(self, tmp_path) -> LocalStorage:
        return LocalStorage(tmp_path / "root")

    def test_layout_and_nothing_left_behind(self, storage: LocalStorage) -> None:
        storage.put("a/b/c", b"xyz")
        with open(os.path.join(storage.root, "a", "b", "c"), "rb") as f:
            assert f.read() == b"xyz"
        storage.delete(["a/b/c"])
        assert os.listdir(storage.root) == []

    def test_temporary_files_are_hidden(self, storage: LocalStorage) -> None:
        storage.put("t/obj", b"x")
        with open(os.path.join(storage.root, "t", ".tmp-leftover"), "wb") as f:
            f.write(b"partial")
        assert list(storage.list()) == [("t/obj", 1)]

    def test_key_and_keys_below_it_conflict(self, storage: LocalStorage) -> None:
        storage.put("k", b"x")
        with pytest.raises(FileExistsError, match="k/v"):
            storage.put("k/v", b"y")
        assert list(storage.list()) == [("k", 1)]

    def test_writes_racing_the_delete_of_their_directory_succeed(self, storage: LocalStorage) -> None:
        """Deleting a directory's last key removes the directory: a write into it at that moment
        makes it again (``os.makedirs`` then says the directory exists though it is gone)."""

        def churn(worker: int) -> None:
            for i in range(300):
                key = f"race/dir/{worker}-{i}"
                if i % 2:
                    assert storage.put_if(key, b"x", version=None) is not None
                else:
                    storage.put(key, b"x")
                storage.delete([key])

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(churn, range(4)))
        assert list(storage.list()) == []

    def test_check_creates_root(self, tmp_path) -> None:
        root = tmp_path / "new" / "root"
        LocalStorage(root).check()
        assert root.is_dir()
        assert list(root.iterdir()) == []

    def test_check_fails_naming_the_setting(self, tmp_path) -> None:
        (tmp_path / "file").write_bytes(b"in the way")
        with pytest.raises(ConfigError, match=r"faas\.local-storage\.root"):
            LocalStorage(tmp_path / "file" / "root").check()

    def test_location_is_the_root(self, storage: LocalStorage, tmp_path) -> None:
        assert storage.location == storage.root == str(tmp_path / "root")

    def test_default_root(self) -> None:
        assert LocalStorage().root.endswith("dask-faas-storage")
        assert os.path.isabs(LocalStorage("relative").root)


class TestMemoryStorage(StorageContract, ValidatesKeys):
    @pytest.fixture
    def storage(self) -> MemoryStorage:
        return MemoryStorage()

    def test_location_is_empty(self, storage: MemoryStorage) -> None:
        assert storage.location == ""


class TestS3Storage(StorageContract):
    not_atomic = (
        "moto's server checks If-Match / If-None-Match, then writes, without a lock between the two "
        "(moto 5.2, responses.put_object): two conditional PUTs can both pass; S3 serializes them "
        "(409 ConditionalRequestConflict), which put_if maps to a lost race"
    )

    @pytest.fixture
    def storage(self, s3_storage) -> Storage:
        return s3_storage

    # ~1000 requests each to the moto server: a few seconds
    @pytest.mark.slow
    def test_delete_prefix_many(self, storage: Storage) -> None:
        super().test_delete_prefix_many(storage)

    @pytest.mark.slow
    def test_delete_more_than_a_batch(self, storage: Storage) -> None:
        super().test_delete_more_than_a_batch(storage)

    def test_multipart_put(self, storage) -> None:
        storage.multipart_threshold = storage.multipart_chunksize = 5 * 2**20
        data = os.urandom(11 * 2**20)
        storage.put("mp/obj", memoryview(data))
        assert storage.get("mp/obj") == data
        assert storage.get("mp/obj", 5 * 2**20 - 3, 5 * 2**20 + 3) == data[5 * 2**20 - 3 :][:6]
        etag = storage.client.head_object(Bucket=storage.bucket, Key="mp/obj")["ETag"]
        assert etag.strip('"').endswith("-3")  # three parts

    def test_delete_prefix_aborts_the_multipart_uploads_open_under_it(self, storage) -> None:
        client = storage.client  # an interrupted large write: parts stored, never completed
        inside = client.create_multipart_upload(Bucket=storage.bucket, Key="job/1/out/big")
        client.upload_part(
            Bucket=storage.bucket, Key="job/1/out/big", UploadId=inside["UploadId"], PartNumber=1, Body=b"p"
        )
        client.create_multipart_upload(Bucket=storage.bucket, Key="job/2/out/big")
        storage.put("job/1/out/small", b"x")
        assert storage.open_uploads("job/1/") == ["job/1/out/big"]
        assert storage.delete_prefix("job/1/") == 1
        assert storage.open_uploads("job/1/") == [] and storage.open_uploads("job/") == ["job/2/out/big"]
        assert storage.abort_uploads("job/2/") == 1 and storage.open_uploads("") == []

    def test_a_key_written_while_a_get_waits_for_it_is_read(self, storage) -> None:
        waiting = S3Storage(storage.bucket, endpoint_url=storage.endpoint_url, read_after_write_s=30.0)
        writer = threading.Timer(0.3, storage.put, ("late/obj", b"arrived"))
        writer.start()
        try:
            assert waiting.get("late/obj") == b"arrived"  # a lagging replica's 404 is asked again
        finally:
            writer.join()
            waiting.close()

    def test_read_settings_travel_in_the_locator(self, storage) -> None:
        tuned = S3Storage(
            storage.bucket,
            endpoint_url=storage.endpoint_url,
            read_timeout=2.5,
            read_after_write_s=3,
            retry_mode="adaptive",
        )
        locator = tuned.locator()
        assert locator["read_timeout"] == 2.5 and locator["read_after_write_s"] == 3.0
        rebuilt = S3Storage.from_locator(locator)
        assert (rebuilt.read_timeout, rebuilt.read_after_write_s, rebuilt.retry_mode) == (
            2.5,
            3.0,
            "adaptive",
        )
        assert rebuilt.client.meta.config.retries["mode"] == "adaptive"
        assert rebuilt.get("nope", 0, 0) == b""  # a working client
        with pytest.raises(ConfigError, match=r"faas\.s3\.retry-mode"):
            S3Storage(storage.bucket, retry_mode="legacy")
        assert "read_timeout" not in storage.locator()  # unset: botocore's default, not in the locator
        assert s3_options({"read-timeout": 4, "retry-mode": "adaptive"}) == {
            "read_timeout": 4,
            "retry_mode": "adaptive",
        }
        with pytest.raises(ConfigError, match=r"faas\.s3\.read-timeout"):
            S3Storage(storage.bucket, read_timeout=0)
        for made in (tuned, rebuilt):
            made.close()

    def test_location_is_the_bucket(self, storage, s3_bucket) -> None:
        assert storage.location == storage.bucket == s3_bucket

    def test_deployment_environment_has_the_credentials(self, storage) -> None:
        assert storage.deployment_environment() == {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }
        assert "testing" not in json.dumps(storage.locator())

    def test_missing_bucket(self, s3_endpoint) -> None:
        from dask_faas.backends.storage.s3 import S3Storage

        storage = S3Storage("no-such-bucket-here", s3_endpoint, "us-east-1", "testing", "testing")
        try:
            with pytest.raises(ConfigError, match=r"faas\.s3\.bucket") as info:
                storage.check()
            assert "does not exist" in str(info.value)
            with pytest.raises(FileNotFoundError, match="no-such-bucket-here"):
                storage.get("some/key")
            with pytest.raises(FileNotFoundError, match="no-such-bucket-here"):
                list(storage.list("x"))
        finally:
            storage.close()

    def test_unreachable_endpoint(self) -> None:
        from botocore.config import Config

        from dask_faas.backends.storage.s3 import S3Storage

        with socket.socket() as sock:  # a loopback port nobody listens on
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        no_retries = {"config": Config(retries={"total_max_attempts": 1})}  # merged with ours
        storage = S3Storage("b", url, "us-east-1", "testing", "testing", client_kwargs=no_retries)
        try:
            with pytest.raises(ConfigError, match=r"faas\.s3\.endpoint-url"):
                storage.check()
            with pytest.raises(ConnectionError, match=r"faas\.s3\.endpoint-url"):
                storage.size("k")
        finally:
            storage.close()

    def test_no_credentials(self, s3_endpoint, s3_bucket, monkeypatch) -> None:
        from dask_faas.backends.storage.s3 import S3Storage

        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance identity on loopback
        storage = S3Storage(s3_bucket, s3_endpoint, "us-east-1")
        try:
            with pytest.raises(PermissionError, match=rf"faas\.s3\.key.*s3://{s3_bucket}/some/key"):
                storage.get("some/key")
            with pytest.raises(PermissionError, match=rf"s3://{s3_bucket}"):
                list(storage.list())
        finally:
            storage.close()

    def test_bad_credentials(self, s3_endpoint_auth) -> None:
        from dask_faas.backends.storage.s3 import S3Storage

        auth = s3_endpoint_auth
        good = S3Storage(auth.bucket, auth.endpoint_url, "us-east-1", auth.key, auth.secret)
        good.check()
        good.put("k", b"v")
        assert good.get("k") == b"v"
        good.delete(["k"])
        good.close()
        for key, secret in [("AKIAWRONGWRONGWRONG0", "nope"), (auth.key, "wrong-secret")]:
            bad = S3Storage(auth.bucket, auth.endpoint_url, "us-east-1", key, secret)
            with pytest.raises(PermissionError, match=r"faas\.s3\.key / faas\.s3\.secret"):
                bad.check()
            with pytest.raises(PermissionError, match=auth.bucket):
                bad.get("k")
            with pytest.raises(PermissionError, match=auth.bucket):
                bad.put("k", b"x")
            with pytest.raises(PermissionError, match=auth.bucket):
                list(bad.list())
            bad.close()
