"""Compute backends (FaaS platforms): ``local`` is the embedded warm process pool, the default;
``aws_lambda``, ``knative`` (preset ``code_engine``) and ``openwhisk`` (preset ``ibm_cf``) invoke a
function deployed beforehand (``dask-faas runtime deploy``)."""

from __future__ import annotations

from ..registry import Registry
from .base import ComputeBackend, InvokeOptions

__all__ = ["ComputeBackend", "InvokeOptions", "registry"]

registry = Registry("compute backend", "faas.backend", "dask_faas.compute")
registry.register("local", "dask_faas.backends.compute.local:LocalBackend")
registry.register("aws_lambda", "dask_faas.backends.compute.aws_lambda:AwsLambdaBackend")
registry.register("knative", "dask_faas.backends.compute.knative:KnativeBackend")
registry.register("code_engine", "dask_faas.backends.compute.knative:CodeEngineBackend")
registry.register("openwhisk", "dask_faas.backends.compute.openwhisk:OpenWhiskBackend")
registry.register("ibm_cf", "dask_faas.backends.compute.openwhisk:IbmCloudFunctionsBackend")
