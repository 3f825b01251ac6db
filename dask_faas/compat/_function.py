"""The user's function as it runs inside a function: Lithops' arguments injected by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cloudpickle

from .. import serialize, worker
from ..backends.storage import storage_from_locator
from ._binding import POSITIONAL, parameter_names
from ._objects import Chunk, CloudObject
from ._storage import StorageClient, boto3_client


class UserFunction:
    """The user's function with Lithops' argument injection, as it runs inside a function.

    Parameters
    ----------
    fn : callable
        The user's function.
    results_param : str, optional
        For a reducer: the parameter that receives the list of map results (:data:`POSITIONAL`
        for the first positional argument of a function without a signature).
    """

    def __init__(self, fn: Callable[..., Any], results_param: str | None = None) -> None:
        self.fn = fn
        self.results_param = results_param
        self.params = set(parameter_names(fn))

    def __call__(self, data: Any, call_id: int, locators: list[dict[str, Any]], results: Any = None) -> Any:
        """Run one call.

        Parameters
        ----------
        data : dict or bytes
            The call's keyword arguments (cloudpickled in a Dask graph, so that Dask leaves them alone).
        call_id : int
            The call's number in its job (the ``id`` argument).
        locators : list of dict
            The locators of the data's storages.
        results : iterable, optional
            A reducer's map results.
        """
        data = cloudpickle.loads(data) if isinstance(data, bytes) else dict(data)
        if self.results_param == POSITIONAL:
            data[POSITIONAL] = (list(results), *data[POSITIONAL][1:])
        elif self.results_param is not None:
            data[self.results_param] = list(results)
        name = "obj" if "obj" in data else "url"  # PyWren-IBM's HTTP inputs
        obj = data.get(name)
        if isinstance(obj, Chunk):
            data[name] = obj = CloudObject(obj)
            if obj.backend != "http":
                locators = [*locators, obj.locator]
        else:
            obj = None
        prefix = None
        try:
            context = worker.current()
            job_storage, prefix = context.storage, context.store.prefix
        except RuntimeError:  # not in a function (a local executor): the data's own storage
            job_storage = storage_from_locator(locators[0]) if locators else None
        if "storage" in self.params:
            data["storage"] = StorageClient(job_storage, locators, cloudobject_prefix=prefix)
        for name in ("ibm_cos", "boto3_client"):
            if name in self.params:
                in_storage = obj is not None and obj.backend != "http"
                source = storage_from_locator(obj.locator) if in_storage else job_storage
                data[name] = boto3_client(source)
        if "id" in self.params:
            data["id"] = call_id
        return self.fn(*data.pop(POSITIONAL, ()), **data)

    def batch(self, calls: list[tuple[Any, int]], locators: list[dict[str, Any]]) -> list[tuple[bool, Any]]:
        """Run several ``(data, call_id)`` calls in one invocation (``chunksize``).

        Returns
        -------
        list of (bool, object)
            Each call's outcome on its own: ``(True, value)``, or ``(False, serialized error)``.
        """
        outcomes = []
        for data, call_id in calls:
            try:
                outcomes.append((True, self(data, call_id, locators)))
            except Exception as exc:
                outcomes.append((False, serialize.dumps_error(exc)))
        return outcomes
