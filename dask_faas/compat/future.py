"""``lithops.future``: the future of one call, and two helpers of Lithops' own module."""

from __future__ import annotations

import ast
import pickle
from typing import Any

from ._futures import ResponseFuture

__all__ = ["ResponseFuture", "stats_from_prefixed_keys"]

#: The key prefixes of Lithops' statistics of a call.
STATS_PREFIXES = ("func_", "host_", "worker_")


def stats_from_prefixed_keys(mapping: dict[str, Any]) -> dict[str, Any]:
    """The items of ``mapping`` that are Lithops call statistics (``func_``, ``host_``, ``worker_``)."""
    return {k: v for k, v in mapping.items() if k.startswith(STATS_PREFIXES)}


def pickle_from_encoded(encoded: str) -> Any:
    """Lithops' encoding of a pickle in its status objects (``str(pickle.dumps(obj))``), decoded."""
    return pickle.loads(ast.literal_eval(encoded))


#: Lithops' names of the two helpers.
_stats_from_prefixed_keys = stats_from_prefixed_keys
_pickle_from_encoded = pickle_from_encoded
