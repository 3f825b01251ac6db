"""An IAM policy that confines a function's storage credentials to the job prefix.

A function reads and writes only below ``<faas.prefix>/`` of the bucket: its jobs' arguments,
results and shuffle pieces. Credentials allowed exactly that (and reading the input prefixes a user
names) cannot touch the rest of the bucket, even from a user's function gone wrong::

    dask-faas runtime policy --read s3://bucket/data/      # print the policy
    dask-faas runtime deploy --scoped-policy               # Lambda: attach it to the execution role

The document follows AWS's IAM grammar, which IBM COS (through its HMAC keys' IAM), MinIO and Ceph
RGW (bucket and user policies) accept as well.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ..exceptions import ConfigError

__all__ = ["OBJECT_ACTIONS", "READ_ACTIONS", "policy_from_settings", "scoped_policy", "split_s3_url"]

#: What a function does to the objects below the job prefix.
OBJECT_ACTIONS = (
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
)
#: What a function may do to the objects below an input prefix.
READ_ACTIONS = ("s3:GetObject",)


def split_s3_url(url: str) -> tuple[str, str]:
    """``("bucket", "data/")`` from ``"s3://bucket/data/"``.

    Raises
    ------
    ConfigError
        Naming the URL when it is not ``s3://bucket[/prefix]``.
    """
    scheme, _, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise ConfigError(f"an input prefix must look like s3://bucket/prefix/, got {url!r}")
    return bucket, prefix


def _listing(bucket: str, prefixes: Iterable[str]) -> dict[str, Any]:
    patterns = sorted({f"{p}*" if p.endswith("/") or not p else f"{p}/*" for p in prefixes})
    return {
        "Effect": "Allow",
        "Action": ["s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}"],
        "Condition": {"StringLike": {"s3:prefix": patterns}},
    }


def scoped_policy(bucket: str, prefix: str, read: Iterable[str] = ()) -> dict[str, Any]:
    """The policy document: read, write and delete below ``s3://bucket/prefix/``, read below ``read``.

    Parameters
    ----------
    bucket : str
        The job bucket (``faas.s3.bucket``).
    prefix : str
        The job prefix (``faas.prefix``); every job's objects live below ``<prefix>/<job>/``.
    read : iterable of str
        Input prefixes the functions read, as ``s3://bucket/prefix/`` URLs.

    Raises
    ------
    ConfigError
        For an empty prefix (the whole bucket is no confinement) or a malformed input URL.
    """
    prefix = prefix.strip("/")
    if not bucket or not prefix:
        raise ConfigError(
            "a scoped policy needs a bucket (faas.s3.bucket) and a non-empty job prefix (faas.prefix)"
        )
    statements: list[dict[str, Any]] = [
        {
            "Sid": "JobObjects",
            "Effect": "Allow",
            "Action": list(OBJECT_ACTIONS),
            "Resource": [f"arn:aws:s3:::{bucket}/{prefix}/*"],
        },
    ]
    inputs: dict[str, list[str]] = {}
    for url in read:
        source, path = split_s3_url(url)
        inputs.setdefault(source, []).append(path)
    if inputs:
        statements.append(
            {
                "Sid": "ReadInputs",
                "Effect": "Allow",
                "Action": list(READ_ACTIONS),
                "Resource": sorted(
                    f"arn:aws:s3:::{source}/{path}*" for source, paths in inputs.items() for path in paths
                ),
            }
        )
    listings = {bucket: [f"{prefix}/"]}
    for source, paths in inputs.items():
        listings.setdefault(source, []).extend(paths)
    for n, (source, paths) in enumerate(sorted(listings.items())):
        statements.append({"Sid": f"List{n}", **_listing(source, paths)})
    return {"Version": "2012-10-17", "Statement": statements}


def policy_from_settings(settings: Mapping[str, Any], read: Iterable[str] = ()) -> dict[str, Any]:
    """:func:`scoped_policy` for the job bucket and prefix of the effective ``faas`` settings.

    Raises
    ------
    ConfigError
        When the storage is not S3 or has no bucket.
    """
    if settings.get("storage") != "s3":
        raise ConfigError(
            "a scoped policy is for S3-compatible storage (faas.storage: s3), "
            f"not {settings.get('storage')!r}"
        )
    bucket = (settings.get("s3") or {}).get("bucket")
    if not bucket:
        raise ConfigError("setting 'faas.s3.bucket' is not set (needed for a scoped policy)")
    return scoped_policy(bucket, str(settings.get("prefix") or ""), read)
