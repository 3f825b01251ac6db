"""``lithops.util``: Lithops' utilities package (:mod:`.joblib`: its joblib backend).

Importing this package imports neither joblib nor dask.
"""

from __future__ import annotations
