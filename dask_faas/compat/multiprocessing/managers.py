"""``lithops.multiprocessing.managers``: not provided (shared state; see :mod:`.unsupported`)."""

from __future__ import annotations

from .unsupported import unsupported

BaseManager = unsupported("managers.BaseManager")
SyncManager = unsupported("managers.SyncManager")

__all__ = ["BaseManager", "SyncManager"]
