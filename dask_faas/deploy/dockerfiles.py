"""``dask-faas runtime build``: write a runtime image's Dockerfile, and build it where Docker runs.

The Dockerfiles live beside the entry points, in ``function_runtime/``: ``Dockerfile`` (Knative by
default, an OpenWhisk Docker action with ``--build-arg RUNTIME=openwhisk``) and ``Dockerfile.lambda``
(AWS Lambda, under ``awslambdaric``). :func:`write` copies one into a directory as ``Dockerfile``;
:func:`build` runs ``docker build`` when a ``docker`` executable answers ``docker info``, and
otherwise prints the exact command to run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Callable
from importlib import resources

from ..exceptions import ConfigError

__all__ = ["PLATFORMS", "build", "build_command", "default_platform", "docker_ready", "source", "write"]

#: ``--platform`` choice -> (Dockerfile in function_runtime/, its build arguments).
PLATFORMS: dict[str, tuple[str, dict[str, str]]] = {
    "knative": ("Dockerfile", {}),
    "openwhisk": ("Dockerfile", {"RUNTIME": "openwhisk"}),
    "lambda": ("Dockerfile.lambda", {}),
}
#: Compute backend -> the image it runs.
_OF_BACKEND = {
    "aws_lambda": "lambda",
    "openwhisk": "openwhisk",
    "ibm_cf": "openwhisk",
    "knative": "knative",
    "code_engine": "knative",
}
#: Lambda architecture -> Docker platform.
_DOCKER_PLATFORM = {"x86_64": "linux/amd64", "arm64": "linux/arm64"}


def default_platform(backend: str) -> str:
    """The image of compute backend ``backend`` (``knative`` for the local pool)."""
    return _OF_BACKEND.get(backend, "knative")


def source(platform: str) -> str:
    """The text of ``platform``'s Dockerfile, as shipped in ``function_runtime/``.

    Raises
    ------
    ConfigError
        For an unknown platform, or when the installed package holds no Dockerfile.
    """
    if platform not in PLATFORMS:
        raise ConfigError(f"unknown runtime platform {platform!r}; known: {', '.join(PLATFORMS)}")
    name = PLATFORMS[platform][0]
    try:
        return resources.files("function_runtime").joinpath(name).read_text()
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise ConfigError(f"function_runtime/{name} is not installed with dask-faas: {exc}") from None


def write(platform: str, directory: str) -> str:
    """Write ``platform``'s Dockerfile into ``directory`` (created if missing) as ``Dockerfile``."""
    text = source(platform)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "Dockerfile")
    with open(path, "w") as f:
        f.write(text)
    return path


def build_command(
    platform: str, directory: str, tag: str, extra_packages: str = "", architecture: str | None = None
) -> list[str]:
    """The ``docker build`` command of the image written into ``directory``."""
    command = ["docker", "build", "--tag", tag]
    if platform == "lambda" and architecture:
        if architecture not in _DOCKER_PLATFORM:
            raise ConfigError(
                f"setting 'faas.aws-lambda.architecture' must be one of {', '.join(_DOCKER_PLATFORM)}, "
                f"got {architecture!r}"
            )
        command += ["--platform", _DOCKER_PLATFORM[architecture]]
    for name, value in PLATFORMS[platform][1].items():
        command += ["--build-arg", f"{name}={value}"]
    if extra_packages.strip():
        command += ["--build-arg", f"EXTRA_PACKAGES={' '.join(extra_packages.split())}"]
    return [*command, directory]


def docker_ready(timeout_s: float = 30.0) -> bool:
    """Whether a ``docker`` executable exists and its engine answers ``docker info``."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "info"], capture_output=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def build(
    platform: str,
    directory: str,
    tag: str,
    extra_packages: str = "",
    architecture: str | None = None,
    *,
    run: bool = True,
    out: Callable[[str], None] = print,
) -> int:
    """Write the Dockerfile and build it (``run`` and Docker ready) or print the command; the exit code."""
    path = write(platform, directory)
    out(f"wrote {path}")
    command = build_command(platform, directory, tag, extra_packages, architecture)
    if not run or not docker_ready():
        why = "" if not run else " (no Docker engine answers `docker info` here)"
        out(f"build it with{why}:")
        out(f"  {shlex.join(command)}")
        return 0
    out(f"running: {shlex.join(command)}")
    return subprocess.run(command).returncode
