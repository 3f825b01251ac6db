"""Storage URLs and S3 options: the one URL parser and the one mapping of ``faas.s3`` settings.

URLs name a bucket and a key: ``s3://bucket/key``, ``s3a://...`` and ``cos://...`` (the same
S3-compatible protocol), ``file:///dir/key`` and bare local paths (no bucket). Reading
(:func:`dask_faas.partition.discover`), writing (:mod:`dask_faas.writers`), the Lithops facade and
:func:`~dask_faas.backends.storage.storage_from_settings` all go through :func:`split_url`,
:func:`s3_options` and :func:`s3_storage`.

S3 options are named as in s3fs's ``storage_options``: ``key``, ``secret``, ``token``,
``endpoint_url``, ``region_name`` and ``client_kwargs``; the ``faas.s3`` settings spell them
``key``, ``secret``, ``token``, ``endpoint-url`` and ``region-name`` (plus ``bucket``, and
``read-timeout``: seconds to wait for the next bytes of an answer before the read is retried, and
``retry-mode``: botocore's ``standard`` or ``adaptive``).

boto3 is imported only when an S3 storage is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...exceptions import ConfigError
from .base import Storage

__all__ = ["S3_OPTIONS", "S3_SCHEMES", "S3_SETTINGS", "s3_options", "s3_storage", "split_url"]

#: URL schemes of S3-compatible storage.
S3_SCHEMES = ("s3", "s3a", "cos")
#: The s3fs-style ``storage_options`` that :func:`s3_storage` takes (``read_timeout`` and
#: ``retry_mode`` are dask-faas's own: those of :class:`~dask_faas.backends.storage.s3.S3Storage`).
S3_OPTIONS = (
    "key",
    "secret",
    "token",
    "endpoint_url",
    "region_name",
    "client_kwargs",
    "read_timeout",
    "retry_mode",
)
#: ``faas.s3`` settings -> :class:`~dask_faas.backends.storage.s3.S3Storage` keywords.
S3_SETTINGS = {
    "endpoint-url": "endpoint_url",
    "region-name": "region_name",
    "key": "key",
    "secret": "secret",
    "token": "token",
    "read-timeout": "read_timeout",
    "retry-mode": "retry_mode",
}


def split_url(url: str) -> tuple[str, str, str]:
    """``(scheme, bucket, key)`` of a URL or local path.

    ``s3://bucket/a/b`` gives ``("s3", "bucket", "a/b")`` (the scheme lower-cased; the key may be
    empty, a prefix or a glob); ``file:///dir/f`` gives ``("file", "", "/dir/f")``; a path without
    ``://`` gives ``("", "", path)``.

    Raises
    ------
    ValueError
        Naming the URL, for another scheme or an S3 URL without a bucket.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", "", url
    scheme = scheme.lower()
    if scheme == "file":
        return "file", "", rest
    if scheme not in S3_SCHEMES:
        raise ValueError(f"unsupported URL {url!r}: use s3://, cos://, file:// or a local path")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise ValueError(f"no bucket in URL {url!r}")
    return scheme, bucket, key


def s3_options(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """The S3 storage keywords of ``faas.s3`` settings: ``endpoint_url``, ``region_name``, ``key``, ...

    Settings may be spelled with ``-`` or ``_``; unset (``None``) ones and ``bucket`` are left out.

    Raises
    ------
    ConfigError
        Naming a setting of ``faas.s3`` that does not exist.
    """
    options = {}
    for name, value in (settings or {}).items():
        setting = str(name).replace("_", "-")
        if setting == "bucket":
            continue
        if setting not in S3_SETTINGS:
            known = ", ".join(["bucket", *S3_SETTINGS])
            raise ConfigError(f"unknown setting 'faas.s3.{setting}'; the settings of faas.s3 are {known}")
        if value is not None:
            options[S3_SETTINGS[setting]] = value
    return options


def s3_storage(bucket: str, storage_options: Mapping[str, Any] | None = None) -> Storage:
    """The S3 storage of ``bucket`` for s3fs-style ``storage_options`` (reading and writing alike).

    ``None`` means the ``faas.s3`` settings (:func:`s3_options`). ``endpoint_url`` and
    ``region_name`` given in ``client_kwargs`` go to the storage itself, so that its locator carries
    them to the functions.

    Raises
    ------
    ConfigError
        Naming the options other than :data:`S3_OPTIONS` (or unknown ``faas.s3`` settings).
    """
    from .s3 import S3Storage

    if storage_options is None:
        import dask.config

        from ... import config as _config  # noqa: F401 - registers the faas.* defaults

        opts = s3_options(dask.config.get("faas.s3", default=None))
    else:
        opts = dict(storage_options)
        unknown = sorted(set(opts) - set(S3_OPTIONS))
        if unknown:
            raise ConfigError(f"unsupported storage_options {unknown}; supported: {', '.join(S3_OPTIONS)}")
    client_kwargs = dict(opts.pop("client_kwargs", None) or {})
    for name in ("endpoint_url", "region_name"):  # the locator must carry them, not client_kwargs
        value = client_kwargs.pop(name, None)
        if opts.get(name) is None:
            opts[name] = value
    opts = {k: v for k, v in opts.items() if v is not None}
    return S3Storage(bucket, client_kwargs=client_kwargs or None, **opts)
