"""``dask-faas`` (also ``dask faas``): settings, storage, jobs, logs, runtimes, hello.

::

    dask-faas config            # effective faas settings (credentials masked)
    dask-faas check             # reach the configured storage, as FaasExecutor() would
    dask-faas jobs              # the jobs left in storage under faas.prefix: objects, bytes, last write
    dask-faas storage ls [PREFIX]             # objects under PREFIX (default: faas.prefix)
    dask-faas storage clean [--yes] [JOB ...] # list (or delete) the objects of those jobs (default: all)
    dask-faas clean [--yes] [JOB ...]         # the same as storage clean
    dask-faas logs [JOB [CALL]] # what a job's functions printed and logged; no JOB: the jobs with logs
    dask-faas hello             # one trivial call through the configured backend and storage
    dask-faas runtime build [--platform lambda|knative|openwhisk] [--tag T] [--extra-packages "a b"]
                            [--output DIR] [--no-build]     # write the image's Dockerfile, build it
    dask-faas runtime deploy|update [--output DIR] [--no-kubectl]   # the function of faas.backend
                            [--scoped-policy [--read s3://bucket/inputs/ ...]]
    dask-faas runtime policy [--read s3://bucket/inputs/ ...]   # IAM policy confining the job prefix
    dask-faas runtime delete|list [--no-kubectl]

Jobs delete their objects when they end: what ``jobs`` shows belongs to a job running now or to a
killed client (its last write tells which). ``dask faas ...`` is the same program, reached through
dask's ``dask_cli`` entry point group (:data:`dask_cli`).

Errors (a missing setting, a platform's refusal, an unknown job) are printed with the setting's
name or the platform's own message, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

import click
import yaml

from . import cli_storage, config
from .backends.storage import Storage, storage_from_settings
from .exceptions import FaasError

__all__ = ["dask_cli", "main"]

_SECRETS = {"key", "secret", "token", "signing-key", "auth", "api-key"}


def _masked(settings: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if isinstance(value, dict):
            out[name] = _masked(value)
        else:
            out[name] = "***" if name in _SECRETS and value else value
    return out


def _commands() -> str:
    """The command list of the module docstring (its ``::`` block), for the help's epilog."""
    lines = __doc__.partition("::\n")[2].splitlines()
    block = []
    for line in lines:
        if line and not line.startswith(" "):
            break
        block.append(line)
    return "commands:\n" + textwrap.indent(textwrap.dedent("\n".join(block)).strip("\n"), "  ")


def _parser(prog: str = "dask-faas") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n")[0].replace("``", ""),
        epilog=_commands(),
        formatter_class=argparse.RawTextHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("config", help="print the effective faas settings")
    commands.add_parser("check", help="check that the configured storage is reachable")
    commands.add_parser("jobs", help="the jobs left in storage under faas.prefix, with their sizes")
    storage = commands.add_parser("storage", help="list the storage, or clean up the jobs left in it")
    storage_actions = storage.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = storage_actions.add_parser("ls", help="list the objects under a key prefix")
    ls.add_argument("prefix", nargs="?", metavar="PREFIX", help="a key prefix (default: faas.prefix)")
    for sub in (
        storage_actions.add_parser("clean", help="list (or delete) the objects of jobs left behind"),
        commands.add_parser("clean", help="the same as 'storage clean'"),
    ):
        sub.add_argument("--yes", action="store_true", help="delete them instead of listing them")
        sub.add_argument("jobs", nargs="*", metavar="JOB", help="job ids (default: every job)")
    logs = commands.add_parser("logs", help="what the functions of a job printed and logged")
    logs.add_argument("job", nargs="?", metavar="JOB", help="a job id (default: list the jobs with logs)")
    logs.add_argument("call", nargs="?", metavar="CALL", help="one call of the job (default: all)")
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


def main(argv: Sequence[str] | None = None, prog: str = "dask-faas") -> int:
    """Run the command line; return the exit code.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``).
    prog : str
        The program's name in help and error texts (``"dask faas"`` through :data:`dask_cli`).
    """
    args = _parser(prog).parse_args(argv)
    name = args.command if args.command not in ("runtime", "storage") else f"{args.command} {args.action}"
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
        if args.command == "logs":
            return _logs(args, settings)
        return _storage_command(args, settings)
    except (FaasError, OSError) as exc:
        print(f"{prog} {name}: {exc}", file=sys.stderr)
        return 1


@click.command(
    name="faas",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
    help=__doc__.split("\n")[0].replace("``", "") + " Run 'dask faas --help' for the commands.",
    short_help="dask-faas: jobs, logs, storage, runtimes (dask faas --help)",
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def dask_cli(ctx: click.Context, args: tuple[str, ...]) -> None:
    """``dask faas ...``: :func:`main` as a subcommand of dask's ``dask`` command.

    Loaded by dask's ``run_cli`` from the ``dask_cli`` entry point group. Every argument, ``--help``
    included, goes to :func:`main`, so ``dask faas X`` and ``dask-faas X`` are the same program.
    """
    ctx.exit(main(list(args), prog=ctx.command_path))


def _storage_command(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    storage = storage_from_settings(settings)
    try:
        storage.check()
        if args.command == "check":
            print(f"ok: {storage!r}")
            return 0
        root = cli_storage.job_root(settings)
        if args.command == "jobs":
            return cli_storage.print_jobs(storage, root)
        if args.command == "storage" and args.action == "ls":
            return cli_storage.print_listing(storage, root if args.prefix is None else args.prefix)
        return cli_storage.clean(storage, root, args.jobs, yes=args.yes)
    finally:
        if not isinstance(settings["storage"], Storage):  # built here, not handed in by the caller
            storage.close()


def _logs(args: argparse.Namespace, settings: dict[str, Any]) -> int:
    from . import records

    if args.job is None:
        found = records.log_jobs(settings)
        for job in found:
            print(job)
        if not found:
            print(f"no job logs in {records.log_directory(settings)} (faas.logs.directory)", file=sys.stderr)
        return 0
    sys.stdout.write(records.read_logs(args.job, args.call, settings))
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
                cli_storage.print_table(found, f"no dask-faas functions found ({cls.target(settings)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
