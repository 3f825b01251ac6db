"""Pluggable compute and storage backends, found by name through :mod:`dask_faas.backends.registry`."""
