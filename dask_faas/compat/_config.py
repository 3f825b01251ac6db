"""Lithops' and PyWren-IBM's configuration, names and keywords translated into ``faas`` settings.

What has no dask-faas counterpart is accepted and named in ONE warning (:func:`warn_ignored`),
never refused.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ..backends.storage.urls import s3_options

logger = logging.getLogger("dask_faas.compat")

#: Lithops compute backends -> dask-faas compute backends.
_BACKENDS = {
    "localhost": "local",
    "ibm_cf": "openwhisk",
    "openwhisk": "openwhisk",
    "code_engine": "knative",
    "k8s": "knative",
    "knative": "knative",
    "aws_lambda": "aws_lambda",
}
#: Lithops storage backends -> dask-faas storages.
_STORAGES = {"localhost": "local", "aws_s3": "s3", "ibm_cos": "s3", "minio": "s3", "ceph": "s3"}
#: Lithops / PyWren-IBM executor keywords -> ``faas`` settings.
_SETTINGS = {
    "runtime_memory": "memory_mb",
    "runtime_timeout": "timeout_s",
    "execution_timeout": "timeout_s",
    "max_workers": "workers",
}
#: Executor keywords of Lithops and PyWren-IBM that dask-faas accepts and ignores.
IGNORED_KEYWORDS = frozenset(
    {
        "mode",
        "runtime",
        "runtime_cpu",
        "worker_processes",
        "monitoring",
        "remote_invoker",
        "log_level",
        "rabbitmq_monitor",
        "invoke_pool_threads",
        "compute_backend_region",
        "storage_backend_region",
        "reset_runtime",
        "config_file",
    }
)
#: Default values of ignored keywords that need no warning.
_HARMLESS = {"monitoring": ("storage",), "log_level": (False, "INFO", "WARNING", "ERROR", "DEBUG")}
#: The Lithops configuration sections of S3-compatible storage (``aws`` holds credentials only).
_S3_SECTIONS = ("aws", "aws_s3", "ibm_cos", "minio", "ceph")
#: Keys of those sections -> ``faas.s3`` settings.
_S3_KEYS = {
    "endpoint": "endpoint_url",
    "private_endpoint": None,
    "region": "region_name",
    "region_name": "region_name",
    "access_key_id": "key",
    "access_key": "key",
    "secret_access_key": "secret",
    "secret_key": "secret",
    "session_token": "token",
    "storage_bucket": "bucket",
    "bucket": "bucket",
}
#: IBM Cloud Functions (``ibm_cf``) and ``ibm`` keys -> ``faas.openwhisk`` settings.
_OPENWHISK_KEYS = {
    "endpoint": "api_host",
    "namespace": "namespace",
    "api_key": "auth",
    "iam_api_key": "api_key",
}


def sections(config: dict[str, Any] | None) -> dict[str, Any]:
    """The ``lithops`` section of a Lithops configuration (PyWren-IBM's ``pywren`` one too)."""
    config = config or {}
    return {**(config.get("pywren") or {}), **(config.get("lithops") or {})}


def faas_settings(
    config: dict[str, Any] | None, backend: str | None, storage: str | None, settings: dict[str, Any]
) -> dict[str, Any]:
    """``faas`` settings from a Lithops configuration, Lithops names and executor keywords.

    Parameters
    ----------
    config : dict, optional
        A Lithops (or PyWren-IBM) configuration: ``lithops`` (or ``pywren``) ``backend`` /
        ``compute_backend``, ``storage`` / ``storage_backend``, ``storage_bucket``; the S3 sections
        (``aws_s3``, ``ibm_cos``, ``minio``, ``ceph``, ``aws``); ``ibm_cf`` (``endpoint``,
        ``namespace``, ``api_key``) and ``ibm`` (``iam_api_key``).
    backend, storage : str, optional
        Lithops or dask-faas names; they win over the configuration's.
    settings : dict
        ``faas`` settings, or Lithops' ``runtime_memory``, ``runtime_timeout`` and ``max_workers``;
        the :data:`IGNORED_KEYWORDS` are left out (:func:`split_ignored`).
    """
    config = config or {}
    lithops = sections(config)
    backend = backend or lithops.get("backend") or lithops.get("compute_backend")
    storage = storage or lithops.get("storage") or lithops.get("storage_backend")
    out = {_SETTINGS.get(k, k): v for k, v in settings.items()}
    if backend:
        out["backend"] = _BACKENDS.get(backend, backend)
    if storage:
        out["storage"] = _STORAGES.get(storage, storage)
    bucket = lithops.get("storage_bucket")
    for section in _S3_SECTIONS:
        values = config.get(section) or {}
        s3 = {_S3_KEYS[k]: v for k, v in values.items() if _S3_KEYS.get(k) and v is not None}
        if "api_key" in values and "key" not in s3:
            logger.warning(
                "dask-faas ignores %s.api_key (IBM IAM): give the bucket's HMAC keys as "
                "access_key_id / secret_access_key",
                section,
            )
        if bucket:
            s3.setdefault("bucket", bucket)
        if s3:
            out["s3"] = {**out.get("s3", {}), **s3}
            if storage is None and section != "aws":
                out.setdefault("storage", "s3")
    whisk = {
        _OPENWHISK_KEYS[k]: v
        for section in ("ibm", "ibm_cf")
        for k, v in (config.get(section) or {}).items()
        if k in _OPENWHISK_KEYS and v is not None
    }
    if whisk:
        out["openwhisk"] = {**out.get("openwhisk", {}), **whisk}
    return out


def split_ignored(settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``settings`` without the :data:`IGNORED_KEYWORDS`, and the names of those given a value."""
    kept = {k: v for k, v in settings.items() if k not in IGNORED_KEYWORDS}
    ignored = [
        k
        for k, v in settings.items()
        if k in IGNORED_KEYWORDS and v not in (None, [], {}) and v not in _HARMLESS.get(k, ())
    ]
    return kept, ignored


def s3_storage_options(s3: dict[str, Any]) -> dict[str, Any]:
    """Options for listing ``s3://`` data on the client from ``faas.s3`` settings.

    The storage layer's one mapping (:func:`dask_faas.backends.storage.urls.s3_options`).
    """
    return s3_options(s3)


def warn_ignored(names: list[str], where: str) -> None:
    """ONE warning naming the keywords that dask-faas accepted and ignores, if any."""
    if names:
        logger.warning(
            "dask-faas accepts and ignores %s (%s): they have no dask-faas counterpart",
            ", ".join(sorted(names)),
            where,
        )


def config_from_files() -> dict[str, Any] | None:
    """Lithops' configuration file as Lithops finds it: ``$LITHOPS_CONFIG_FILE``, ``~/.lithops/config``,
    ``~/.lithops_config``, PyWren-IBM's ``$PYWREN_CONFIG_FILE`` / ``~/.pywren_config``; None if none."""
    candidates = [
        os.environ.get("LITHOPS_CONFIG_FILE"),
        os.path.expanduser("~/.lithops/config"),
        os.path.expanduser("~/.lithops_config"),
        os.environ.get("PYWREN_CONFIG_FILE"),
        os.path.expanduser("~/.pywren_config"),
    ]
    for path in candidates:
        if path and os.path.isfile(path):
            return load_yaml(path)
    return None


def load_yaml(path: str) -> dict[str, Any]:
    """A YAML configuration file as a dict (empty for an empty file)."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}
