"""Storage backends: ``local`` (a directory, the default), ``memory`` (tests) and ``s3``.

One :class:`~dask_faas.backends.storage.s3.S3Storage` covers AWS S3, IBM COS, Ceph and MinIO through
``endpoint_url``.
"""

from __future__ import annotations

import threading
from typing import Any

from ...exceptions import ConfigError
from ..registry import Registry
from .base import Storage

__all__ = ["Storage", "registry", "storage_from_locator", "storage_from_settings"]

registry = Registry("storage backend", "faas.storage", "dask_faas.storage")
registry.register("local", "dask_faas.backends.storage.local:LocalStorage")
registry.register("memory", "dask_faas.backends.storage.memory:MemoryStorage")
registry.register("s3", "dask_faas.backends.storage.s3:S3Storage", "pip install boto3")
registry.register("cos", "dask_faas.backends.storage.s3:S3Storage", "pip install boto3")


_BY_LOCATOR: dict[tuple[tuple[str, Any], ...], Storage] = {}
_BY_LOCATOR_LOCK = threading.Lock()


def storage_from_locator(locator: dict[str, Any]) -> Storage:
    """The storage a :meth:`Storage.locator` describes, built once per process.

    Used inside functions, where credentials come from the function's environment: a warm function
    reuses its clients (and their connection pools) from one invocation to the next.
    """
    marker = tuple(sorted(locator.items()))
    with _BY_LOCATOR_LOCK:
        storage = _BY_LOCATOR.get(marker)
        if storage is None:
            storage = _BY_LOCATOR[marker] = registry.load(locator["backend"]).from_locator(locator)
        return storage


#: The settings section holding each built-in storage's constructor keywords.
_SECTIONS = {"local": "local-storage", "s3": "s3", "cos": "s3"}


def storage_from_settings(settings: dict[str, Any]) -> Storage:
    """The storage selected by ``faas.storage``, built from its settings section.

    Raises
    ------
    ConfigError
        For an unknown backend name or a missing required setting (named).
    """
    name = settings["storage"]
    if isinstance(name, Storage):
        return name
    cls = registry.load(name)
    section = _SECTIONS.get(name, name)
    kwargs = {k.replace("-", "_"): v for k, v in (settings.get(section) or {}).items() if v is not None}
    if section == "s3" and not kwargs.get("bucket"):
        raise ConfigError(f"storage {name!r} needs a bucket: set 'faas.s3.bucket'")
    return cls(**kwargs)
