"""A job's footprint in storage: one prefix, signed objects, deleted when the job ends."""

from __future__ import annotations

import hashlib
import secrets
import threading
from typing import Any

from . import protocol, serialize
from .backends.storage import Storage
from .protocol import Ref

__all__ = ["Job"]


class Job:
    """The storage namespace of one executor's work.

    Parameters
    ----------
    storage : Storage
        Where the job's objects live.
    key : bytes
        The signing key shared with the functions.
    root : str
        Prefix under which jobs keep their objects; this job uses ``<root>/<job id>``.
    """

    def __init__(self, storage: Storage, key: bytes, root: str) -> None:
        self.id = secrets.token_hex(6)
        self.storage = storage
        self.prefix = f"{root.strip('/')}/{self.id}"
        self.locator = storage.locator()
        self._key = key
        self._functions: dict[str, Ref] = {}
        self._lock = threading.Lock()
        self._closed = False

    def function(self, fn: Any) -> Ref:
        """Upload the pickled ``fn`` once (content-addressed) and return its reference."""
        data = serialize.dumps_function(fn)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            ref = self._functions.get(digest)
        if ref is None:
            ref = self.put(f"fn/{digest}", data)
            with self._lock:
                self._functions[digest] = ref
        return ref

    def put(self, name: str, data: bytes) -> Ref:
        """Write a signed object under the job prefix."""
        key = f"{self.prefix}/{name}"
        self.storage.put(key, protocol.sign_blob(data, self._key, key))
        return Ref(key, len(data))

    def fetch(self, ref: Ref) -> memoryview:
        """Read and verify a signed object."""
        return protocol.verify_blob(self.storage.get(ref.key), self._key, ref.key)

    def delete(self, *refs: Ref) -> None:
        """Delete objects that are no longer needed."""
        self.storage.delete([ref.key for ref in refs])

    def close(self) -> int:
        """Delete everything under the job prefix (idempotent); return how many objects there were."""
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
        return self.storage.delete_prefix(self.prefix + "/")
