"""``lithops.storage.utils``: references to stored objects and the missing-key error."""

from __future__ import annotations

from .._cloudobjects import CloudObject, CloudObjectLocal, CloudObjectUrl, StorageNoSuchKeyError

__all__ = ["CloudObject", "CloudObjectLocal", "CloudObjectUrl", "StorageNoSuchKeyError"]
