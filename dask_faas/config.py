"""Settings: ``dask.config`` under the ``faas:`` key, overridden by keywords.

Defaults ship in ``faas.yaml`` beside this module; YAML files in dask's config paths and
``DASK_FAAS__...`` environment variables override them (``DASK_FAAS__S3__BUCKET=data``), and every key
is also a keyword of :class:`~dask_faas.FaasExecutor` (``timeout_s=60``, ``s3={"bucket": "data"}``).
"""

from __future__ import annotations

import builtins
import difflib
import importlib
import os
from collections.abc import Mapping
from typing import Any

import dask.config
import yaml

from .exceptions import ConfigError

__all__ = ["exception_types", "positive", "resolve"]

_FILE = os.path.join(os.path.dirname(__file__), "faas.yaml")

with open(_FILE) as f:
    _DEFAULTS: dict[str, Any] = yaml.safe_load(f)

dask.config.update_defaults(_DEFAULTS)


#: Sections whose keys are names of their own (environment variables; platforms, whose prices'
#: spellings :func:`_respelt` reconciles), not settings.
_VERBATIM = {"environment", "prices"}


def _canonical(key: str) -> str:
    return key.replace("_", "-")


def resolve(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The effective ``faas`` settings: dask.config merged with keyword ``overrides``.

    Keys come back with hyphens (``timeout-s``); nested sections merge key by key.

    Raises
    ------
    ConfigError
        For a keyword that is no setting, naming it and the closest setting.
    """
    known = _DEFAULTS["faas"]
    # defaults under dask.config's values: a dask.config.set({"faas...."}) entered before this module
    # was imported deletes the whole section when it exits, defaults included
    configured = {_canonical(k): v for k, v in (dask.config.get("faas", None) or {}).items()}
    settings = {**known}
    for name, value in configured.items():
        if isinstance(known.get(name), dict) and isinstance(value, Mapping):
            rename = str if name in _VERBATIM else _canonical
            value = {**known[name], **{rename(k): v for k, v in value.items()}}
        settings[name] = value
    for key, value in (overrides or {}).items():
        name = _canonical(key)
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0].replace('-', '_')!r}?" if close else ""
            raise ConfigError(f"unknown setting {key!r} (no 'faas.{name}'){hint}")
        if isinstance(known[name], dict) and value is not None:
            if not isinstance(value, Mapping):
                raise ConfigError(f"setting 'faas.{name}' takes a mapping, got {value!r}")
            rename = str if name in _VERBATIM else _canonical
            value = {**(settings.get(name) or {}), **{rename(k): v for k, v in value.items()}}
        settings[name] = value
    settings["prices"] = _respelt(known["prices"], settings.get("prices"))
    return settings


def _respelt(defaults: Mapping[str, Any], value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A section of sections (``prices``) whose names may come spelt with underscores or hyphens
    (``aws_lambda-x86_64`` in faas.yaml, ``aws_lambda_x86_64`` from ``DASK_FAAS__PRICES__...``,
    ``aws-lambda-x86-64`` from a keyword): one entry per name, in the defaults' spelling, holding
    the defaults with every value that differs from them on top, item by item (the order in which
    dask.config hands the spellings over decides nothing)."""

    def key(name: Any) -> str:
        return str(name).replace("_", "-")

    merged: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in defaults.items()}
    spelling = {key(k): k for k in defaults}
    for name, entry in (value or {}).items():
        name = spelling.setdefault(key(name), name)
        default = defaults.get(name)
        if not (isinstance(entry, Mapping) and isinstance(merged.get(name), Mapping)):
            if entry != default:
                merged[name] = dict(entry) if isinstance(entry, Mapping) else entry
            continue
        items = merged[name]
        inner = {key(k): k for k in items}
        for item, price in entry.items():
            item = inner.setdefault(key(item), item)
            if not isinstance(default, Mapping) or price != default.get(item):
                items[item] = price
    return merged


def positive(settings: Mapping[str, Any], name: str, kind: type = float, setting: str | None = None) -> Any:
    """``settings[name]`` converted to ``kind`` and checked to be positive, or a ConfigError naming
    ``faas.<setting>`` (default: ``name``)."""
    value = settings[name]
    try:
        converted = kind(value)
        if converted <= 0 or (kind is int and converted != value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"setting 'faas.{setting or name}' must be a positive {kind.__name__}, got {value!r}"
        ) from None
    return converted


def exception_types(settings: Mapping[str, Any], name: str) -> tuple[type[BaseException], ...] | None:
    """``settings[name]`` as a tuple of exception types, or None when it is unset.

    The setting may hold an exception type, a name of one (a builtin such as ``"ValueError"``, or
    ``"package.module.Name"``), or a list or tuple of them.

    Raises
    ------
    ConfigError
        Naming the setting and the entry that is no exception type, or cannot be imported.
    """
    value = settings[name]
    if value is None:
        return None
    entries = list(value) if isinstance(value, list | tuple) else [value]
    types = []
    for entry in entries:
        found = _exception_type(entry, name) if isinstance(entry, str) else entry
        if not (isinstance(found, type) and issubclass(found, BaseException)):
            raise ConfigError(f"setting 'faas.{name}' takes exception types or their names, got {entry!r}")
        types.append(found)
    return tuple(types)


def _exception_type(name: str, setting: str) -> Any:
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module) if module else builtins, attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"setting 'faas.{setting}': cannot find the exception type {name!r} ({exc})"
        ) from None
