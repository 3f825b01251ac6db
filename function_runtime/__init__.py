"""Entry points that platforms call: each turns its event into payload bytes for `dask_faas.worker`.

``local``: the embedded warm pool's process loop (framed payloads over pipes).
"""
