"""``dask-faas``: show the settings, check the storage, clean up, deploy the runtimes, say hello.

::

    dask-faas config            # effective faas settings (credentials masked)
    dask-faas check             # reach the configured storage, as FaasExecutor() would
    dask-faas clean [--yes]     # list (or delete) objects under faas.prefix left by killed clients
    dask-faas hello             # one trivial call through the configured backend and storage
    dask-faas runtime build [--platform lambda|knative|openwhisk] [--tag T] [--extra-packages "a b"]
                            [--output DIR] [--no-build]     # write the image's Dockerfile, build it
    dask-faas runtime deploy|update [--output DIR] [--no-kubectl]   # the function of faas.backend
                            [--scoped-policy [--read s3://bucket/inputs/ ...]]
    dask-faas runtime policy [--read s3://bucket/inputs/ ...]   # IAM policy confining the job prefix
    dask-faas runtime delete|list [--no-kubectl]

Errors (a missing setting, a platform's refusal) are printed with the setting's name or the
platform's own message, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from . import config
from .backends.storage import storage_from_settings
from .exceptions import FaasError

__all__ = ["main"]

_SECRETS = {"key", "secret", "token", "signing-key", "auth", "api-key"}


def _masked(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            out[name] = _masked(value)
        else:
            out[name] = "***" if name in _SECRETS and value else value
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dask-faas", description=__doc__.split("\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("config", help="print the effective faas settings")
    commands.add_parser("check", help="check that the configured storage is reachable")
    clean = commands.add_parser("clean", help="objects left under faas.prefix by killed clients")
    clean.add_argument("--yes", action="store_true", help="delete them instead of listing them")
    commands.add_parser("hello", help="run one trivial call through the configured backend and storage")
    runtime = commands.add_parser(
        "runtime", help="build, deploy, update, delete or list the function runtime"
    )
    actions = runtime.add_subparsers(dest="action", required=True, metavar="ACTION")

    build = actions.add_parser("build", help="write a runtime image's Dockerfile and build it")
    build.add_argument(
        "--platform", choices=["lambda", "knative", "openwhisk"], help="the image (default: faas.backend's)"
    )
    build.add_argument("--tag", help="the image's tag (default: dask-faas-runtime:<platform>)")
    build.add_argument("--extra-packages", default="", help='pip requirements to add, e.g. "pyarrow scipy"')
    build.add_argument(
        "--output", help="directory of the Dockerfile (default: ./dask-faas-runtime-<platform>)"
    )
    build.add_argument("--no-build", action="store_true", help="print the docker build command only")

    no_kubectl = {
        "action": "store_true",
        "help": "Knative: print the kubectl commands instead of running them",
    }
    read = {
        "action": "append",
        "default": [],
        "metavar": "S3_URL",
        "help": "an input prefix the functions may read, e.g. s3://bucket/data/ (repeatable)",
    }
    for name, text in (
        ("deploy", "create the function of faas.backend"),
        ("update", "replace its image, limits and environment"),
    ):
        sub = actions.add_parser(name, help=text)
        sub.add_argument("--output", default=".", help="Knative: directory of the manifests (default: .)")
        sub.add_argument("--no-kubectl", **no_kubectl)
        sub.add_argument(
            "--scoped-policy",
            action="store_true",
            help="confine the function's storage credentials to faas.prefix (Lambda: its role)",
        )
        sub.add_argument("--read", **read)
    policy = actions.add_parser("policy", help="print the IAM policy confining functions to faas.prefix")
    policy.add_argument("--read", **read)
    for name, text in (("delete", "delete the function"), ("list", "list the dask-faas functions")):
        actions.add_parser(name, help=text).add_argument("--no-kubectl", **no_kubectl)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    name = args.command if args.command != "runtime" else f"runtime {args.action}"
    try:
        settings = config.resolve()
        if args.command == "config":
            yaml.safe_dump({"faas": _masked(settings)}, sys.stdout, sort_keys=False)
            return 0
        if args.command == "hello":
            from .deploy.hello import hello

            return hello(settings)
        if args.command == "runtime":
            return _runtime(args, settings)
        return _storage_command(args, settings)
    except (FaasError, OSError) as exc:
        print(f"dask-faas {name}: {exc}", file=sys.stderr)
        return 1


def _storage_command(args: argparse.Namespace, settings: dict[str, Any]) -> int:
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


def _runtime(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    from . import deploy
    from .deploy import policy

    if args.action == "policy":
        print(json.dumps(policy.policy_from_settings(settings, args.read), indent=2))
        return 0
    if args.action == "build":
        from .deploy import dockerfiles

        platform = args.platform or dockerfiles.default_platform(settings["backend"])
        architecture = (settings.get("aws-lambda") or {}).get("architecture")
        return dockerfiles.build(
            platform,
            args.output or f"dask-faas-runtime-{platform}",
            args.tag or f"dask-faas-runtime:{platform}",
            args.extra_packages,
            architecture,
            run=not args.no_build,
        )
    cls = deploy.deployer_class(settings)
    scoped = None
    if getattr(args, "scoped_policy", False):
        scoped = policy.policy_from_settings(settings, args.read)
    options = {"output": getattr(args, "output", "."), "apply": not args.no_kubectl}
    with cls(settings, **options) as deployer:
        if args.action in ("deploy", "update"):
            key = deploy.signing_key(settings)
            environment = deploy.deployment_environment(settings, key)
            getattr(deployer, args.action)(environment)
            if scoped is not None:
                deployer.attach_policy(scoped)
        elif args.action == "delete":
            deployer.delete()
        else:
            found = deployer.list()
            if found is not None:
                _print_table(found, f"no dask-faas functions found ({cls.target(settings)})")
    return 0


def _print_table(rows: list[dict[str, Any]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    columns = list(dict.fromkeys(column for row in rows for column in row))
    table = [columns, *[["" if row.get(c) is None else str(row.get(c)) for c in columns] for row in rows]]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    raise SystemExit(main())
