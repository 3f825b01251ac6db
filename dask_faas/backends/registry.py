"""Name -> implementation registries, so that a cloud SDK is imported only when its backend is chosen.

Built-in implementations are listed as ``"module:Class"`` strings with an install hint; third-party
packages add theirs through the entry-point groups ``dask_faas.compute`` and ``dask_faas.storage``.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..exceptions import ConfigError

__all__ = ["Registry"]


@dataclass(frozen=True)
class _Entry:
    target: str
    install_hint: str | None = None


class Registry:
    """A registry of named implementations of one seam.

    Parameters
    ----------
    seam : str
        Human name of the seam (``"compute backend"``), used in error messages.
    setting : str
        The configuration key that selects an implementation (``"faas.backend"``).
    group : str
        Entry-point group searched for third-party implementations.
    """

    def __init__(self, seam: str, setting: str, group: str) -> None:
        self.seam = seam
        self.setting = setting
        self.group = group
        self._entries: dict[str, _Entry] = {}

    def register(self, name: str, target: str | type, install_hint: str | None = None) -> None:
        """Register ``target`` (a class or a ``"module:Class"`` string) under ``name``."""
        if isinstance(target, type):
            target = f"{target.__module__}:{target.__qualname__}"
        self._entries[name] = _Entry(target, install_hint)

    def names(self) -> list[str]:
        """Names of every known implementation, built-in and from entry points."""
        return sorted({*self._entries, *(ep.name for ep in entry_points(group=self.group))})

    def load(self, name: str) -> type[Any]:
        """Import and return the class registered as ``name``.

        ``name`` may also be an import path, ``"package.module:Class"``: an implementation that is
        neither registered nor an entry point (a storage's locator names its class so, and a
        function process imports it from there).

        Raises
        ------
        ConfigError
            If no implementation has that name, or its module cannot be imported (with the hint).
        """
        entry = self._entries.get(name)
        if entry is None:
            for ep in entry_points(group=self.group):
                if ep.name == name:
                    entry = _Entry(ep.value)
                    break
        if entry is None and ":" in str(name):
            entry = _Entry(str(name))
        if entry is None:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown {self.seam} {name!r} (setting {self.setting!r}); "
                f"known: {', '.join(self.names())}{hint}"
            )
        module_name, _, attr = entry.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; install it with: {entry.install_hint}" if entry.install_hint else ""
            raise ConfigError(
                f"{self.seam} {name!r} (setting {self.setting!r}) cannot be imported: {exc}{hint}"
            ) from exc
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj
