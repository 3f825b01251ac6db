"""``lithops.config``: Lithops' configuration helpers, on dask-faas settings.

A Lithops configuration is a dict of sections (``lithops``, ``aws_s3``, ``ibm_cos``, ``localhost``,
...); :func:`default_config` completes one with the backend and storage that dask-faas would use
(``faas.backend`` / ``faas.storage`` and their sections, under Lithops' names).
"""

from __future__ import annotations

import copy
from typing import Any

from ._config import config_from_files, faas_settings, load_yaml, sections
from ._storage import LITHOPS_NAMES

__all__ = ["default_config", "extract_storage_config", "load_config", "load_yaml_config"]

_BACKEND_NAMES = {"local": "localhost", "openwhisk": "ibm_cf", "knative": "code_engine"}


def load_yaml_config(config_filename: str) -> dict[str, Any]:
    """Read a Lithops configuration file (YAML)."""
    return load_yaml(config_filename)


def load_config(config_data: dict[str, Any] | None = None, **_: Any) -> dict[str, Any]:
    """``config_data``, or the configuration file Lithops would read, or an empty configuration."""
    if config_data is not None:
        return copy.deepcopy(config_data)
    return config_from_files() or {}


def default_config(
    config_data: dict[str, Any] | None = None,
    config_overwrite: dict[str, Any] | None = None,
    load_storage_config: bool = True,
) -> dict[str, Any]:
    """A complete Lithops configuration: ``config_data`` (or the file), ``config_overwrite`` merged
    section by section, and ``lithops.backend`` / ``lithops.storage`` filled in from ``faas``."""
    from .. import config as faas_config  # dask.config: on the client only

    config = load_config(config_data)
    if "pywren" in config:
        config["lithops"] = {**config.pop("pywren"), **(config.get("lithops") or {})}
    for section, values in (config_overwrite or {}).items():
        if isinstance(values, dict):
            config[section] = {**(config.get(section) or {}), **values}
        else:
            config[section] = values
    lithops = config.setdefault("lithops", {})
    settings = faas_config.resolve(faas_settings(config, None, None, {}))
    backend = settings["backend"]
    lithops.setdefault("backend", _BACKEND_NAMES.get(backend, backend))
    storage = settings["storage"] if isinstance(settings["storage"], str) else settings["storage"].name
    if storage == "s3" and not any(config.get(s) for s in ("ibm_cos", "minio", "ceph")):
        config.setdefault("aws_s3", {})
    lithops.setdefault("storage", LITHOPS_NAMES.get(storage, storage))
    return config


def extract_storage_config(config: dict[str, Any]) -> dict[str, Any]:
    """The storage part of a configuration, as ``lithops.Storage(storage_config=...)`` takes it:
    ``backend`` (Lithops' name), the ``lithops`` section's storage keys and the storage sections."""
    lithops = sections(config)
    out: dict[str, Any] = {
        "backend": lithops.get("storage") or lithops.get("storage_backend"),
        "lithops": {
            k: v for k, v in lithops.items() if k in ("storage", "storage_backend", "storage_bucket")
        },
    }
    for section in ("aws", "aws_s3", "ibm_cos", "minio", "ceph", "localhost"):
        if config.get(section) is not None:
            out[section] = copy.deepcopy(config[section])
    if lithops.get("storage_bucket"):
        out["bucket"] = lithops["storage_bucket"]
    return out
