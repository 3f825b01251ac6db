"""Lithops' configuration and names translated into ``faas`` settings."""

from __future__ import annotations

import logging
from typing import Any

from ..backends.storage.urls import s3_options

logger = logging.getLogger("dask_faas.compat")

#: Lithops compute backends -> dask-faas compute backends.
_BACKENDS = {"localhost": "local", "ibm_cf": "openwhisk", "code_engine": "knative", "k8s": "knative"}
#: Lithops storage backends -> dask-faas storages.
_STORAGES = {"localhost": "local", "aws_s3": "s3", "ibm_cos": "s3", "minio": "s3", "ceph": "s3"}
#: Lithops executor keywords -> ``faas`` settings.
_SETTINGS = {"runtime_memory": "memory_mb", "runtime_timeout": "timeout_s", "max_workers": "workers"}
#: The Lithops configuration sections of S3-compatible storage (``aws`` holds credentials only).
_S3_SECTIONS = ("aws", "aws_s3", "ibm_cos", "minio", "ceph")
#: Keys of those sections -> ``faas.s3`` settings.
_S3_KEYS = {
    "endpoint": "endpoint_url",
    "region": "region_name",
    "region_name": "region_name",
    "access_key_id": "key",
    "access_key": "key",
    "secret_access_key": "secret",
    "secret_key": "secret",
    "session_token": "token",
    "storage_bucket": "bucket",
}


def faas_settings(
    config: dict[str, Any] | None, backend: str | None, storage: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """``faas`` settings from a Lithops configuration, Lithops names and executor keywords.

    Parameters
    ----------
    config : dict, optional
        A Lithops configuration: ``lithops.backend``, ``lithops.storage``,
        ``lithops.storage_bucket`` and the S3 sections (``aws_s3``, ``ibm_cos``, ...).
    backend, storage : str, optional
        Lithops or dask-faas names; they win over the configuration's.
    settings : dict
        ``faas`` settings, or Lithops' ``runtime_memory``, ``runtime_timeout`` and ``max_workers``.
    """
    config = config or {}
    lithops = config.get("lithops") or {}
    backend = backend or lithops.get("backend")
    storage = storage or lithops.get("storage")
    out = {_SETTINGS.get(k, k): v for k, v in settings.items()}
    if backend:
        out["backend"] = _BACKENDS.get(backend, backend)
    if storage:
        out["storage"] = _STORAGES.get(storage, storage)
    for section in _S3_SECTIONS:
        s3 = {_S3_KEYS[k]: v for k, v in (config.get(section) or {}).items() if k in _S3_KEYS}
        if lithops.get("storage_bucket"):
            s3.setdefault("bucket", lithops["storage_bucket"])
        if s3:
            out["s3"] = {**out.get("s3", {}), **s3}
            if storage is None and section != "aws":
                out.setdefault("storage", "s3")
    return out


def s3_storage_options(s3: dict[str, Any]) -> dict[str, Any]:
    """Options for listing ``s3://`` data on the client from ``faas.s3`` settings.

    The storage layer's one mapping (:func:`dask_faas.backends.storage.urls.s3_options`).
    """
    return s3_options(s3)


def warn_ignored(**options: Any) -> None:
    """Log the per-call options that were given: dask-faas sets them on the executor only."""
    given = [name for name, value in options.items() if value]
    if given:
        logger.warning(
            "dask-faas ignores %s per call: set memory_mb / timeout_s on the executor", ", ".join(given)
        )
