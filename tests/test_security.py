"""No credential travels in a payload or a stored object; tampered messages and objects are refused."""

from __future__ import annotations

import boto3
import pytest
from payloads import RecordingLocalBackend

from dask_faas import IntegrityError
from dask_faas.backends.compute import registry as compute_registry
from dask_faas.backends.storage.local import LocalStorage
from dask_faas.job import Job
from dask_faas.protocol import new_key

SENTINEL_KEY = "AKIASENTINEL0KEY0ID7"
SENTINEL_SECRET = "sentinel/secret/never-in-a-payload-0123"


@pytest.fixture
def recording_backend():
    RecordingLocalBackend.seen = []
    compute_registry.register("recording-local", RecordingLocalBackend)
    yield RecordingLocalBackend.seen


def echo_size(blob: bytes) -> bytes:
    return blob[::-1] * 2


def test_sentinel_credentials_appear_in_no_payload_and_no_stored_object(
    s3_endpoint, s3_bucket, make_executor, recording_backend
):
    admin = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    # keep every version of every object, so that objects deleted during the job can be read back
    admin.put_bucket_versioning(Bucket=s3_bucket, VersioningConfiguration={"Status": "Enabled"})
    ex = make_executor(
        backend="recording-local",
        storage="s3",
        s3={
            "bucket": s3_bucket,
            "endpoint_url": s3_endpoint,
            "region_name": "us-east-1",
            "key": SENTINEL_KEY,
            "secret": SENTINEL_SECRET,
        },
        inline_limit=1024,
        signing_key=(signing_key := new_key()).hex(),
    )
    small, large = b"s" * 10, bytes(range(256)) * 400  # large goes through storage both ways
    assert ex.submit(echo_size, small).result(timeout=60) == small[::-1] * 2
    assert ex.submit(echo_size, large).result(timeout=60) == large[::-1] * 2
    assert list(ex.map(echo_size, [small, large], chunksize=2)) == [small * 2, large[::-1] * 2]
    key_hex = signing_key.hex().encode()
    ex.shutdown()

    versions = admin.list_object_versions(Bucket=s3_bucket).get("Versions", [])
    stored = [
        admin.get_object(Bucket=s3_bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
        for v in versions
    ]
    assert any(b"/fn/" in v["Key"].encode() for v in versions), "the function was not stored"
    assert any(b"/in/" in v["Key"].encode() for v in versions), "no argument went to storage"
    assert any(b"/out/" in v["Key"].encode() for v in versions), "no result went to storage"
    assert len(recording_backend) >= 6  # 3 payloads + 3 responses
    for blob in [*recording_backend, *stored]:
        for secret in (SENTINEL_KEY.encode(), SENTINEL_SECRET.encode(), key_hex, signing_key):
            assert secret not in blob
    # and the job left nothing visible behind
    assert admin.list_objects_v2(Bucket=s3_bucket).get("KeyCount", 0) == 0
    admin.delete_objects(
        Bucket=s3_bucket,
        Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]},
    )
    markers = admin.list_object_versions(Bucket=s3_bucket).get("DeleteMarkers", [])
    if markers:
        admin.delete_objects(
            Bucket=s3_bucket,
            Delete={"Objects": [{"Key": m["Key"], "VersionId": m["VersionId"]} for m in markers]},
        )


class TamperingStorage(LocalStorage):
    """A local storage whose reads of results are altered in transit (one flipped byte)."""

    def get(self, key, start=None, end=None):
        data = super().get(key, start, end)
        if "/out/" in key:
            data = data[:-1] + bytes([data[-1] ^ 1])
        return data


def big_result(n: int) -> bytes:
    return b"r" * n


def test_a_tampered_stored_result_is_rejected(make_executor, storage_root):
    ex = make_executor(storage=TamperingStorage(storage_root), inline_limit=1000)
    assert ex.submit(big_result, 10).result(timeout=60) == b"r" * 10  # inline: untouched
    with pytest.raises(
        IntegrityError, match=r"stored object '.*/out/1\.0\.[0-9a-f]+-[0-9a-f]+' failed its signature"
    ):
        ex.submit(big_result, 10_000).result(timeout=60)


def test_a_stored_object_cannot_be_altered_or_moved(tmp_path):
    storage = LocalStorage(tmp_path)
    key = new_key()
    job = Job(storage, key, "jobs")
    ref = job.put("in/1", b"payload bytes")
    assert bytes(job.fetch(ref)) == b"payload bytes"

    raw = bytearray(storage.get(ref.key))
    raw[-1] ^= 0xFF
    storage.put(ref.key, bytes(raw))
    with pytest.raises(IntegrityError):
        job.fetch(ref)

    other = job.put("in/2", b"other bytes")
    storage.put(ref.key, storage.get(other.key))  # a valid object, under the wrong key
    with pytest.raises(IntegrityError):
        job.fetch(ref)

    stranger = Job(storage, new_key(), "jobs")  # signed with another key
    foreign = stranger.put("in/3", b"foreign")
    storage.put(ref.key, storage.get(foreign.key))
    with pytest.raises(IntegrityError):
        job.fetch(ref)
    job.close()
    stranger.close()
    assert list(storage.list()) == []
