"""A Lithops / PyWren-IBM facade: Lithops programs run on dask-faas by changing the import.

::

    import dask_faas.compat as lithops          # instead of: import lithops

    fexec = lithops.FunctionExecutor()
    fexec.map(lambda x: x + 7, [1, 2, 3, 4])
    fexec.get_result()                           # [8, 9, 10, 11]

    def names(obj, storage):                     # one call per object under the prefix
        return obj.key
    fexec.map(names, "s3://bucket/year=2019/")

Semantics follow Lithops 3 (``lithops/executors.py``, ``job/partitioner.py``, ``utils.py``):

- Each element of ``map_iterdata`` is one call: a tuple binds positionally, a dict by name, any other
  value (a list too) binds to the first parameter. ``extra_args`` is appended (tuple) or merged (dict).
- Parameters are injected by NAME: ``storage`` (a small Lithops-style storage client),
  ``ibm_cos`` / ``boto3_client`` (a boto3 S3 client), ``id`` (the call's number in its job).
- A function with an ``obj`` parameter processes objects: ``obj`` given as ``s3://bucket/prefix/``,
  ``cos://...``, a glob, a local path (or a list of them; ``bucket/key`` without scheme means the
  executor's storage) expands into one call per object, or per chunk with ``obj_chunk_size`` /
  ``obj_chunk_number``. Chunks are aligned to whole lines as in Lithops (``obj_newline=None``: exact
  byte ranges); empty objects get no call. ``obj.data_stream`` streams the chunk's bytes (raw, not
  decompressed, no header added: a chunk holds exactly the lines that start in its byte range);
  an object that is not chunked is its whole content.
- ``get_result`` returns results in call order, a single value after ``call_async`` or
  ``map_reduce``; ``map_reduce`` calls the reducer once over the list of map results (one per
  object with ``obj_reduce_by_key=True``). Its map results go to the reducer through object
  storage: they never pass through the client.

Credentials never travel to functions: they reach data with their own environment (for the local
pool, the client's environment and the executor's storage credentials).

This package is imported inside functions too (to run the calls), so it imports neither dask nor
pandas at import time. Its public modules are Lithops' (``lithops.config``, ``lithops.executors``,
``lithops.future``, ``lithops.retries``, ``lithops.storage``, ``lithops.storage.utils``,
``lithops.wait``, ``lithops.version``); its private ones:

``_executor``     :class:`FunctionExecutor`
``_calls``        one call's keywords (Lithops', PyWren-IBM's, ignored ones), futures as data, limits
``_config``       Lithops configuration and names -> ``faas`` settings
``_futures``      :class:`ResponseFuture`, :class:`FuturesList` and waiting on them
``_stored``       pickled futures: outcomes kept in storage, signed, read by a poller
``_binding``      Lithops' rules binding ``map_iterdata`` elements to parameters
``_function``     the user's function as it runs in a function: argument injection, batches
``_objects``      the ``obj`` argument: chunk planning on the client, :class:`CloudObject` in functions
``_http``         HTTP(S) objects as ``obj`` inputs (HEAD sizes, ranged GETs)
``_cloudobjects`` references to stored objects, ``StorageNoSuchKeyError``
``_storage``      the ``storage`` argument (a Lithops-style client) and storages built from locators
``_map_reduce``   the Dask graph of ``map_reduce``: map outputs reach reducers through storage
``_summary``      ``job_summary`` from the invocation records
"""

from __future__ import annotations

from . import config, executors, future, retries, storage
from ._futures import ALL_COMPLETED, ALWAYS, ANY_COMPLETED, FuturesList, ResponseFuture
from ._objects import CloudObject
from .executors import (
    FunctionExecutor,
    LocalhostExecutor,
    ServerlessExecutor,
    StandaloneExecutor,
    function_executor,
    ibm_cf_executor,
    knative_executor,
    local_executor,
)
from .retries import RetryingFunctionExecutor
from .storage import Storage
from .version import __version__
from .wait import get_result, wait

__all__ = [
    "ALL_COMPLETED",
    "ALWAYS",
    "ANY_COMPLETED",
    "CloudObject",
    "FunctionExecutor",
    "FuturesList",
    "LocalhostExecutor",
    "ResponseFuture",
    "RetryingFunctionExecutor",
    "ServerlessExecutor",
    "StandaloneExecutor",
    "Storage",
    "__version__",
    "config",
    "executors",
    "function_executor",
    "future",
    "get_result",
    "ibm_cf_executor",
    "knative_executor",
    "local_executor",
    "retries",
    "storage",
    "wait",
]
