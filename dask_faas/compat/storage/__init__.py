"""``lithops.storage``: Lithops' ``Storage`` client on dask-faas storage.

::

    storage = lithops.Storage()                      # the storage FunctionExecutor() would use
    storage.put_object(storage.bucket, "k", b"data")
    storage.get_object(storage.bucket, "k")          # b"data"
    storage.head_object(storage.bucket, "missing")   # raises StorageNoSuchKeyError
"""

from __future__ import annotations

from typing import Any

from .._cloudobjects import CloudObject, StorageNoSuchKeyError
from .._config import config_from_files, faas_settings
from .._storage import StorageClient
from . import utils

__all__ = ["CloudObject", "Storage", "StorageNoSuchKeyError", "utils"]


class Storage(StorageClient):
    """Lithops' ``Storage``: objects, buckets and cloudobjects of a configured storage.

    Parameters
    ----------
    config : dict, optional
        A Lithops configuration (default: Lithops' configuration file if there is one, else the
        ``faas`` settings: ``faas.storage`` and its section).
    backend : str, optional
        A Lithops storage name (``"aws_s3"``, ``"localhost"``, ...) or a dask-faas one.
    storage_config : dict, optional
        What :func:`lithops.config.extract_storage_config` returns.

    Attributes
    ----------
    bucket : str
        The configured bucket (for local storage: its root directory).
    backend : str
        Lithops' name of the storage.

    Raises
    ------
    ConfigError
        For a storage that cannot be built from the configuration (a missing bucket, ...).
    """

    def __init__(
        self,
        config: dict[str, Any] | None = None,
        backend: str | None = None,
        storage_config: dict[str, Any] | None = None,
    ) -> None:
        from ... import config as faas_config  # dask.config: on the client only
        from ...backends.storage import storage_from_settings

        if storage_config is not None:
            backend = backend or storage_config.get("backend")
            config = storage_config
        elif config is None:
            config = config_from_files()
        settings = faas_config.resolve(faas_settings(config, None, backend, {}))
        storage = storage_from_settings(settings)

        def open_bucket(name: str) -> Any:
            return storage_from_settings({**settings, "s3": {**(settings.get("s3") or {}), "bucket": name}})

        lithops_name = backend if backend and backend != storage.name else None
        super().__init__(storage, open_bucket=open_bucket, backend=lithops_name)
        self.config = {"backend": self.backend, "bucket": self.bucket}
