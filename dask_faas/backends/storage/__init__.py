"""Storage backends: ``local`` (a directory, the default), ``memory`` (tests) and ``s3``.

One :class:`~dask_faas.backends.storage.s3.S3Storage` covers AWS S3, IBM COS, Ceph and MinIO through
``endpoint_url``.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

from ...exceptions import ConfigError
from ..registry import Registry
from .base import Storage
from .urls import s3_options

__all__ = [
    "CACHE_SIZE",
    "Storage",
    "close_cached",
    "registry",
    "storage_from_locator",
    "storage_from_settings",
]

logger = logging.getLogger("dask_faas.storage")

registry = Registry("storage backend", "faas.storage", "dask_faas.storage")
registry.register("local", "dask_faas.backends.storage.local:LocalStorage")
registry.register("memory", "dask_faas.backends.storage.memory:MemoryStorage")
registry.register("s3", "dask_faas.backends.storage.s3:S3Storage", "pip install boto3")
registry.register("cos", "dask_faas.backends.storage.s3:S3Storage", "pip install boto3")


#: How many storages :func:`storage_from_locator` keeps per process (least recently used evicted).
CACHE_SIZE = 16

_BY_LOCATOR: OrderedDict[tuple[tuple[str, Any], ...], Storage] = OrderedDict()
_BY_LOCATOR_LOCK = threading.Lock()


def storage_from_locator(locator: dict[str, Any]) -> Storage:
    """The storage a :meth:`Storage.locator` describes, built once per process and shared.

    Used inside functions, where credentials come from the function's environment: a warm function
    reuses its clients (and their connection pools) from one invocation to the next. At most
    :data:`CACHE_SIZE` storages are kept; the least recently used one is closed when another is
    added, and :func:`close_cached` closes them all. Callers do not close a shared storage.

    Raises
    ------
    ConfigError
        If the locator's ``backend`` names no storage.
    """
    marker = tuple(sorted(locator.items()))
    evicted: list[Storage] = []
    with _BY_LOCATOR_LOCK:
        storage = _BY_LOCATOR.get(marker)
        if storage is not None:
            _BY_LOCATOR.move_to_end(marker)
            return storage
        storage = _BY_LOCATOR[marker] = registry.load(locator["backend"]).from_locator(locator)
        while len(_BY_LOCATOR) > CACHE_SIZE:
            evicted.append(_BY_LOCATOR.popitem(last=False)[1])
    _close_all(evicted, strict=False)
    return storage


def close_cached() -> int:
    """Close and forget every storage that :func:`storage_from_locator` keeps; return how many.

    Later calls build new ones. For the end of a process or of a test that made many storages.
    """
    with _BY_LOCATOR_LOCK:
        storages = list(_BY_LOCATOR.values())
        _BY_LOCATOR.clear()
    _close_all(storages)
    return len(storages)


def _close_all(storages: list[Storage], *, strict: bool = True) -> None:
    """Close each of ``storages``; a failing close does not keep the others open.

    The first error is raised once all are closed when ``strict``, else logged (an eviction must not
    fail the caller that asked for another storage).
    """
    errors = []
    for storage in storages:
        try:
            storage.close()
        except Exception as exc:
            errors.append(exc)
            if not strict:
                logger.warning("closing the evicted storage %r failed: %s", storage, exc)
    if errors and strict:
        raise errors[0]


#: The settings section holding each built-in storage's constructor keywords.
_SECTIONS = {"local": "local-storage", "s3": "s3", "cos": "s3"}


def storage_from_settings(settings: dict[str, Any]) -> Storage:
    """The storage selected by ``faas.storage``, built from its settings section.

    ``s3`` and ``cos`` take ``faas.s3`` (mapped by :func:`~dask_faas.backends.storage.urls.s3_options`),
    ``local`` takes ``faas.local-storage``, another name the section of that name.

    Raises
    ------
    ConfigError
        For an unknown backend name, a missing bucket or an unknown setting (named).
    """
    name = settings["storage"]
    if isinstance(name, Storage):
        return name
    cls = registry.load(name)
    section = _SECTIONS.get(name, name)
    values = settings.get(section) or {}
    if section == "s3":
        if not values.get("bucket"):
            raise ConfigError(f"storage {name!r} needs a bucket: set 'faas.s3.bucket'")
        return cls(values["bucket"], **s3_options(values))
    return cls(**{k.replace("-", "_"): v for k, v in values.items() if v is not None})
