"""``lithops.multiprocessing.config``: Lithops' knobs, accepted and mapped (or named in one warning).

``LITHOPS_CONFIG`` is the configuration pools and processes make their executor with;
``STREAM_STDOUT`` streams what processes print to the client through object storage
(:mod:`~dask_faas.compat.multiprocessing.util`). ``ENV_VARS``, ``EXPORT_EXECUTION_DETAILS``,
``PIPE_CONNECTION_TYPE`` and ``REDIS_EXPIRY_TIME`` are accepted and ignored, with one warning each:
dask-faas keeps no Redis, and sends no client environment to functions (it often holds credentials).
"""

from __future__ import annotations

import warnings
from typing import Any

LITHOPS_CONFIG = "LITHOPS_CONFIG"
STREAM_STDOUT = "STREAM_STDOUT"
ENV_VARS = "ENV_VARS"
EXPORT_EXECUTION_DETAILS = "EXPORT_EXECUTION_DETAILS"
PIPE_CONNECTION_TYPE = "PIPE_CONNECTION_TYPE"
REDIS_EXPIRY_TIME = "REDIS_EXPIRY_TIME"

_DEFAULTS: dict[str, Any] = {
    LITHOPS_CONFIG: {},
    STREAM_STDOUT: False,
    REDIS_EXPIRY_TIME: 3600,
    PIPE_CONNECTION_TYPE: "redislist",
    ENV_VARS: {},
    EXPORT_EXECUTION_DETAILS: False,
}
IGNORED = frozenset({ENV_VARS, EXPORT_EXECUTION_DETAILS, PIPE_CONNECTION_TYPE, REDIS_EXPIRY_TIME})
_config: dict[str, Any] = dict(_DEFAULTS)
_warned: set[str] = set()


def _warn_if_ignored(key: str, value: Any) -> None:
    if key in IGNORED and value != _DEFAULTS[key] and key not in _warned:
        _warned.add(key)
        warnings.warn(
            f"lithops.multiprocessing.config {key}={value!r} is accepted and ignored by dask-faas "
            "(no Redis; no client environment is sent to functions)",
            UserWarning,
            stacklevel=3,
        )


def update(config_dic: dict[str, Any] | None = None, **configurations: Any) -> None:
    """Set several parameters at once (Lithops' ``config.update``).

    Raises
    ------
    KeyError
        For a name Lithops does not know.
    """
    for key, value in {**(config_dic or {}), **configurations}.items():
        set_parameter(key, value)


def set_parameter(key: str, value: Any) -> None:
    """Set one parameter.

    Raises
    ------
    KeyError
        For a name Lithops does not know.
    """
    if key not in _DEFAULTS:
        raise KeyError(f"lithops.multiprocessing.config has no parameter {key!r}")
    _warn_if_ignored(key, value)
    _config[key] = value


def get_parameter(parameter: str) -> Any:
    """The value of ``parameter`` (``KeyError`` for an unknown name)."""
    return _config[parameter]
