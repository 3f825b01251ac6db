"""``dask-faas``: show the effective settings, check the storage, clean up jobs left by crashes.

::

    dask-faas config            # effective faas settings (credentials masked)
    dask-faas check             # reach the configured storage, as FaasExecutor() would
    dask-faas clean [--yes]     # list (or delete) objects under faas.prefix left by killed clients
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from . import config
from .backends.storage import storage_from_settings
from .exceptions import FaasError

__all__ = ["main"]

_SECRETS = {"key", "secret", "token", "signing-key"}


def _masked(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            out[name] = _masked(value)
        else:
            out[name] = "***" if name in _SECRETS and value else value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="dask-faas", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("config", help="print the effective faas settings")
    commands.add_parser("check", help="check that the configured storage is reachable")
    clean = commands.add_parser("clean", help="objects left under faas.prefix by killed clients")
    clean.add_argument("--yes", action="store_true", help="delete them instead of listing them")
    args = parser.parse_args(argv)

    settings = config.resolve()
    if args.command == "config":
        yaml.safe_dump({"faas": _masked(settings)}, sys.stdout, sort_keys=False)
        return 0
    try:
        storage = storage_from_settings(settings)
        storage.check()
        if args.command == "check":
            print(f"ok: {storage!r}")
            return 0
        prefix = settings["prefix"].strip("/") + "/"
        if args.yes:
            print(f"deleted {storage.delete_prefix(prefix)} objects under {prefix}")
        else:
            for key, size in storage.list(prefix):
                print(f"{size:>12}  {key}")
        return 0
    except (FaasError, OSError) as exc:
        print(f"dask-faas {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
