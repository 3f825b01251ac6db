"""A job's footprint in storage: one prefix of signed objects, deleted when the job ends."""

from __future__ import annotations

import hashlib
import secrets
import threading
from typing import Any

from . import serialize
from .backends.storage import Storage
from .protocol import Ref
from .store import SignedStore

__all__ = ["Job"]


class Job(SignedStore):
    """The storage namespace of one executor's work: ``<root>/<job id>``.

    Parameters
    ----------
    storage : Storage
        Where the job's objects live.
    key : bytes
        The signing key shared with the functions.
    root : str
        Prefix under which jobs keep their objects.
    ship_modules : bool
        Pickle the user's own modules by value when pickling for the job's functions
        (:func:`~dask_faas.serialize.shipping_user_modules`).
    """

    def __init__(self, storage: Storage, key: bytes, root: str, ship_modules: bool = False) -> None:
        self.ship_modules = ship_modules
        self.id = secrets.token_hex(6)
        super().__init__(storage, key, f"{root.strip('/')}/{self.id}")
        self.locator = storage.locator()
        self._functions: dict[str, Ref] = {}
        self._lock = threading.Lock()
        self._closed = False

    def function(self, fn: Any) -> Ref:
        """Upload the pickled ``fn`` once (content-addressed) and return its reference."""
        data = serialize.dumps_function(fn, ship=self.ship_modules)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            ref = self._functions.get(digest)
        if ref is None:
            ref = self.put(f"fn/{digest}", data)
            with self._lock:
                self._functions[digest] = ref
        return ref

    def put(self, name: str, data: bytes | memoryview) -> Ref:
        """Write ``data`` under the job prefix; refused (and nothing left) once the job is closed.

        Raises
        ------
        RuntimeError
            If the job was closed before or during the write.
        """
        if self._closed:
            raise RuntimeError(f"job {self.id} is closed: cannot store {name!r}")
        ref = super().put(name, data)
        if self._closed:  # closed while writing: the prefix was deleted before this object landed
            self.delete(ref)
            raise RuntimeError(f"job {self.id} was closed while storing {name!r}")
        return ref

    def close(self) -> int:
        """Delete everything under the job prefix (idempotent); return how many objects there were.

        The function objects go first: a delivery still running (a platform's duplicate) that
        writes after the listing below finds its function gone and deletes what it wrote
        (:mod:`dask_faas.worker`).
        """
        with self._lock:
            if self._closed:
                return 0
            self._closed = True
            functions = list(self._functions.values())
        if functions:
            self.delete(*functions)
        return len(functions) + self.storage.delete_prefix(self.prefix + "/")
