"""``lithops.utils``: the helpers of Lithops' ``utils`` module that programs import.

:func:`setup_lithops_logger` configures the ``lithops`` logger as Lithops does, and the
``dask_faas`` logger (whose records a Lithops program would have seen under ``lithops``) the same
way; :func:`sizeof_fmt`, :func:`iterchunks`, :func:`uuid_str`, :func:`is_unix_system` behave as
Lithops' own.
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any

__all__ = [
    "LOGGER_FORMAT",
    "LOGGER_LEVEL",
    "is_unix_system",
    "iterchunks",
    "setup_lithops_logger",
    "sizeof_fmt",
    "uuid_str",
]

#: Lithops' default level and format (``lithops.constants``).
LOGGER_LEVEL = "info"
LOGGER_FORMAT = "%(asctime)s [%(levelname)s] %(filename)s:%(lineno)s -- %(message)s"

_LOGGERS = ("lithops", "dask_faas")
_HANDLER_NAME = "dask-faas-compat"


def setup_lithops_logger(
    log_level: int | str | None = LOGGER_LEVEL,
    log_format: str = LOGGER_FORMAT,
    stream: IO[str] | None = None,
    filename: str | None = None,
) -> None:
    """Log the ``lithops`` and ``dask_faas`` loggers at ``log_level`` to ``stream`` (default
    stderr) or to the file ``filename``.

    ``None`` or ``"none"`` leaves logging as it is. Called again, it replaces its own handler.

    Raises
    ------
    ValueError
        For a level name that :mod:`logging` does not know.
    """
    if log_level is None or str(log_level).lower() == "none":
        return
    if isinstance(log_level, str):
        level = logging.getLevelName(log_level.upper())
        if not isinstance(level, int):
            raise ValueError(f"setup_lithops_logger: unknown log_level {log_level!r}")
    else:
        level = int(log_level)
    handler: logging.Handler
    if filename is not None:
        handler = logging.FileHandler(filename, mode="a")
    else:
        handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(log_format))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if h.get_name() == _HANDLER_NAME]:
            logger.removeHandler(old)
            old.close()
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False


def sizeof_fmt(num: float, suffix: str = "B") -> str:
    """``num`` bytes in binary units: ``sizeof_fmt(2048) == "2.0KiB"``."""
    for unit in ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi"):
        if abs(num) < 1024.0:
            return f"{num:3.1f}{unit}{suffix}"
        num /= 1024.0
    return f"{num:.1f}Yi{suffix}"


def iterchunks(lst: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    """Successive slices of ``lst`` of ``n`` elements (the last one shorter)."""
    for i in range(0, len(lst), n):
        yield lst[i : i + n]


def uuid_str() -> str:
    """A random UUID, as a string."""
    return str(uuid.uuid4())


def is_unix_system() -> bool:
    """Whether this is a Unix system (``os.name == "posix"``)."""
    return os.name == "posix"
