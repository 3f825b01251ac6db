"""Compute backends (FaaS platforms): ``local`` is the embedded warm process pool, the default."""

from __future__ import annotations

from ..registry import Registry
from .base import ComputeBackend, InvokeOptions

__all__ = ["ComputeBackend", "InvokeOptions", "registry"]

registry = Registry("compute backend", "faas.backend", "dask_faas.compute")
registry.register("local", "dask_faas.backends.compute.local:LocalBackend")
