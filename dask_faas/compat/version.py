"""``lithops.version``: the Lithops version whose API the facade follows."""

#: The Lithops release whose API (and test suites) :mod:`dask_faas.compat` follows.
__version__ = "3.8.0"
