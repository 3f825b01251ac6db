"""Signed objects under one storage prefix: what the client and its functions write for each other."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from . import protocol
from .backends.storage import Storage
from .protocol import Ref

__all__ = ["SignedStore"]


class SignedStore:
    """Objects under ``prefix`` of ``storage``, each tagged with the job's signing key.

    Parameters
    ----------
    storage : Storage
        Where the objects live.
    key : bytes
        The signing key shared by the client and its functions.
    prefix : str
        Key prefix of every object written through this store.
    """

    def __init__(self, storage: Storage, key: bytes, prefix: str) -> None:
        self.storage = storage
        self.prefix = prefix
        self._key = key

    def put(self, name: str, data: bytes | memoryview) -> Ref:
        """Write ``data`` signed under ``<prefix>/<name>``; return its reference."""
        key = f"{self.prefix}/{name}"
        self.storage.put(key, protocol.sign_blob(data, self._key, key))
        return Ref(key, len(data))

    def fetch(self, ref: Ref) -> memoryview:
        """Read the object ``ref`` points to and check its signature.

        Raises
        ------
        IntegrityError
            If the object was altered, moved from another key or signed with another key.
        FileNotFoundError
            If it does not exist (any more).
        """
        return protocol.verify_blob(self.storage.get(ref.key), self._key, ref.key)

    def exists(self, name: str) -> bool:
        """Whether an object ``<prefix>/<name>`` exists (its content unchecked)."""
        return self.storage.exists(f"{self.prefix}/{name}")

    def delete(self, *refs: Ref) -> None:
        """Delete objects that are no longer needed."""
        if refs:
            self.storage.delete([ref.key for ref in refs])

    def delete_under(self, name: str, keep: Iterable[Ref] = ()) -> int:
        """Delete every object under ``<prefix>/<name>/`` but those of ``keep``; how many went."""
        kept = {ref.key for ref in keep}
        doomed = [key for key, _ in self.storage.list(f"{self.prefix}/{name}/") if key not in kept]
        for start in range(0, len(doomed), 1000):
            self.storage.delete(doomed[start : start + 1000])
        return len(doomed)

    def mac(self, *parts: bytes | memoryview) -> bytes:
        """HMAC-SHA256 of ``parts`` with the job's signing key (for objects read by ranges, whose
        pieces carry tags of their own)."""
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(part)
        return mac.digest()

    def child(self, name: str) -> SignedStore:
        """The store of the sub-prefix ``<prefix>/<name>``."""
        return SignedStore(self.storage, self._key, f"{self.prefix}/{name}")
