"""Run Lithops' (or PyWren-IBM's) example programs on Lithops' localhost backend and on the facade.

A developer tool, not run by CI::

    git --git-dir=/work/.mirror/lithops-cloud+lithops/repo archive HEAD examples | tar -x -C /tmp/lx
    .venv/bin/python ci/lithops_examples.py /tmp/lx/examples [--only map,storage_os] [--timeout 120]
    .venv/bin/python ci/lithops_examples.py /tmp/lx/examples/multiprocessing --oracle stdlib

Each program runs twice in fresh processes, each in its own temporary working directory, unchanged:

- ``lithops``: real Lithops (the installed wheel), ``LITHOPS_CONFIG_FILE`` naming a temporary yaml
  with the localhost backend and storage, this interpreter as runtime (PyWren-IBM programs: not
  applicable, Lithops 3 has no ``pywren_ibm_cloud``); with ``--oracle stdlib``, Lithops with
  ``lithops.multiprocessing`` routed to Python's own ``multiprocessing`` instead (Lithops keeps
  its multiprocessing's shared state in Redis, which is not here; the stdlib is the semantics it
  copies);
- ``facade``: ``lithops`` and ``pywren_ibm_cloud`` routed to ``dask_faas.compat`` by a
  ``sitecustomize`` on ``PYTHONPATH`` (an import alias, the program is not edited), on the embedded
  default with a fresh local storage root (buckets are directories below it).

One line per program: ``same`` (normalised outputs equal), ``differs`` (a short diff), ``fails``
(the error's last line) or ``skipped`` (what the program needs that is not here). Outputs are
normalised for what legitimately varies: hexadecimal ids, executor / job ids, timings, addresses,
temporary paths, and the order of lines (programs print results of unordered calls).
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: Programs needing what is not here, with the reason.
SKIPPED = {
    "call_async_cython": "a compiled CPython 3.9 extension (function.cpython-39-x86_64-linux-gnu.so)",
    "call_async_java": "a java binary in the runtime image",
    "multicloud": "a real AWS deployment",
    "rabbitmq_arg": "a RabbitMQ broker (the rabbitmq argument is refused by the facade)",
    "knative": "a Knative cluster",
    "gromacs_with_pywren": "a GROMACS runtime image and IBM COS",
    "function": "to be compiled for call_async_cython (a module, not a program)",
}

SHIM = '''\
"""Route ``lithops`` / ``pywren_ibm_cloud`` (and their submodules) to ``dask_faas.compat``."""
import importlib
import importlib.abc
import importlib.machinery
import sys

ALIASES = {"lithops": "dask_faas.compat", "pywren_ibm_cloud": "dask_faas.compat"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        top, dot, rest = name.partition(".")
        if top not in ALIASES:
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        top, dot, rest = module.__name__.partition(".")
        sys.modules[module.__name__] = importlib.import_module(ALIASES[top] + dot + rest)


sys.meta_path.insert(0, _Alias())
'''

STDLIB_SHIM = '''\
"""Route ``lithops.multiprocessing`` (and its submodules) to Python's ``multiprocessing``."""
import importlib
import importlib.abc
import importlib.machinery
import sys

PREFIX = "lithops.multiprocessing"
#: What the stdlib lacks: Lithops' knobs (setting them changes nothing there).
OWN = {"lithops.multiprocessing.config": "dask_faas.compat.multiprocessing.config"}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name != PREFIX and not name.startswith(PREFIX + "."):
            return None
        return importlib.machinery.ModuleSpec(name, self, is_package=True)

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        target = OWN.get(module.__name__, "multiprocessing" + module.__name__[len(PREFIX) :])
        found = importlib.import_module(target)
        if module.__name__ == PREFIX:  # the stdlib's names, and Lithops' config beside them
            module.__dict__.update({k: v for k, v in vars(found).items() if not k.startswith("__")})
            module.config = importlib.import_module(OWN[PREFIX + ".config"])
            found = module
        sys.modules[module.__name__] = found


sys.meta_path.insert(0, _Alias())
'''

NORMALISE = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x?"),
    (re.compile(r"\b[0-9a-f]{6,}(-[0-9a-f]{2,})*\b"), "<id>"),
    (re.compile(r"\b[MA]\d{3}\b"), "<job>"),
    (re.compile(r"\d+\.\d+\s*(s|sec|seconds|ms)\b"), "<time>"),
    (re.compile(r"\d+(\.\d+)? ?(B|KiB|MiB|KB|MB)\b"), "<size>"),
    (re.compile(r"(/tmp|/var/folders)/\S+"), "<tmp>"),
    (re.compile(r"\b\d{1,3}(\.\d{1,3}){3}(:\d+)?\b"), "<addr>"),
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(,\d+)?"), "<date>"),
]


#: A printed list of strings: its items sorted (Lithops' ``os.listdir`` returns them in set order).
QUOTED_LIST = re.compile(r"\[('[^'\]]*'(?:, '[^'\]]*')*)\]")


def normalise(text: str) -> list[str]:
    """The output's lines with what varies replaced, sorted (calls finish in any order)."""
    lines = []
    for line in text.splitlines():
        line = QUOTED_LIST.sub(lambda m: "[" + ", ".join(sorted(m.group(1).split(", "))) + "]", line)
        for pattern, repl in NORMALISE:
            line = pattern.sub(repl, line)
        if line.strip():
            lines.append(line.rstrip())
    return sorted(lines)


def run(program: Path, env: dict[str, str], timeout: float, merge: bool = False) -> tuple[bool, str, str]:
    """Run ``program`` in a copy of its folder; ``(ok, stdout, last error line)``.

    ``merge``: stderr joins stdout (the stdlib's child processes print to the terminal, where the
    local pool's function processes print to stderr: their stdout carries the calls' frames).
    """
    with tempfile.TemporaryDirectory(prefix="lx-run-") as work:
        shutil.copytree(program.parent, work, dirs_exist_ok=True)
        try:
            out = subprocess.run(
                [sys.executable, program.name],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return False, "", f"timed out after {timeout:g} s"
        if out.returncode != 0:
            errors = [line for line in (out.stdout if merge else out.stderr).splitlines() if line.strip()]
            return False, out.stdout, errors[-1] if errors else f"exit status {out.returncode}"
        return True, out.stdout, ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("examples", type=Path, help="a folder of Lithops' or PyWren-IBM's example programs")
    parser.add_argument("--only", default="", help="comma-separated program names (without .py)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per program and side")
    parser.add_argument(
        "--oracle",
        choices=("lithops", "stdlib"),
        default="lithops",
        help="what the facade's output is compared with: Lithops' localhost backend, or Lithops with "
        "lithops.multiprocessing routed to Python's multiprocessing",
    )
    args = parser.parse_args(argv)
    only = {name for name in args.only.split(",") if name}
    programs = sorted(p for p in args.examples.glob("*.py") if not only or p.stem in only)
    counts = {"same": 0, "differs": 0, "fails": 0, "skipped": 0, "facade works (no oracle)": 0}
    with tempfile.TemporaryDirectory(prefix="lx-") as tmp:
        shim = Path(tmp, "shim")
        shim.mkdir()
        (shim / "sitecustomize.py").write_text(SHIM)
        stdlib_shim = Path(tmp, "stdlib-shim")
        stdlib_shim.mkdir()
        (stdlib_shim / "sitecustomize.py").write_text(STDLIB_SHIM)
        config = Path(tmp, "lithops.yaml")
        runtime = f"localhost:\n  runtime: {sys.executable}\n"  # the default 'python3' may lack lithops
        config.write_text(f"lithops:\n  backend: localhost\n  storage: localhost\n{runtime}")
        for program in programs:
            if program.stem in SKIPPED:
                counts["skipped"] += 1
                print(f"{program.stem:28} skipped: needs {SKIPPED[program.stem]}")
                continue
            pywren = "pywren_ibm_cloud" in program.read_text()
            root = Path(tmp, "storage", program.stem)
            root.mkdir(parents=True)
            base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LITHOPS_CONFIG_FILE")}
            facade_env = {
                **base,
                "PYTHONPATH": str(shim),
                "DASK_FAAS__LOCAL_STORAGE__ROOT": str(root),
            }
            merge = args.oracle == "stdlib"
            f_ok, f_out, f_err = run(program, facade_env, args.timeout, merge)
            left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
            leftover = (
                f" (left in storage: {', '.join(left[:3])}{' ...' if len(left) > 3 else ''})" if left else ""
            )
            if pywren:
                state = "facade works (no oracle)" if f_ok else "fails"
                note = "facade works" if f_ok else f"facade fails: {f_err}"
                print(f"{program.stem:28} {note}; lithops: n/a (no pywren_ibm_cloud in Lithops 3){leftover}")
                counts[state] += 1
                continue
            oracle_env = {**base, "LITHOPS_CONFIG_FILE": str(config)}
            if args.oracle == "stdlib":
                oracle_env["PYTHONPATH"] = str(stdlib_shim)
            l_ok, l_out, l_err = run(program, oracle_env, args.timeout, merge)
            if not f_ok or not l_ok:
                sides = [f"facade fails: {f_err}" if not f_ok else "facade ok"]
                sides.append(f"{args.oracle} fails: {l_err}" if not l_ok else f"{args.oracle} ok")
                counts["fails"] += 1
                print(f"{program.stem:28} fails ({'; '.join(sides)}){leftover}")
                continue
            expected, got = normalise(l_out), normalise(f_out)
            if expected == got:
                counts["same"] += 1
                print(f"{program.stem:28} same output{leftover}")
            else:
                counts["differs"] += 1
                diff = [
                    d for d in difflib.unified_diff(expected, got, args.oracle, "facade", n=0, lineterm="")
                ][2:]
                print(f"{program.stem:28} differs{leftover}: {' | '.join(diff[:6])[:300]}")
    print(", ".join(f"{n} {k}" for k, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
