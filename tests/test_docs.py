"""Every code block of ``docs/*.md`` runs, and the settings reference names every setting.

The ```` ```python ```` blocks of one page run in order in one fresh subprocess and one namespace (a
later block uses the names of earlier ones), with the page's ```` ```bash ```` blocks of
``dask-faas`` commands run in their place in the order. The page's code stays what a user writes:
the test points it at its own servers through the environment, as a user's configuration would
(``DASK_FAAS__...`` settings, a local storage directory of the test, and for pages that name
buckets, the moto server on loopback with the buckets created). A block is left out only when an
HTML comment ``<!-- no-run: reason -->`` stands right above it; :data:`NOT_RUN` lists every one of
them with its reason, so that a new one shows in review.

YAML blocks with a ``faas:`` section are checked to use settings that exist, and
``docs/settings.md`` must have a row, with the default and the environment variable, for every key
of ``dask_faas/faas.yaml``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FAAS_YAML = ROOT / "dask_faas" / "faas.yaml"
TIMEOUT_S = 300  # a bound against hangs; a page takes a few seconds

#: ``(page, reason)`` of every block that does not run: the ``no-run`` comments of the pages, and
#: bash blocks of commands other than dask-faas's own (named by their first command).
NOT_RUN: set[tuple[str, str]] = {
    ("dask-test-suites.md", "not a dask-faas command: SITE=$(python"),  # tests/test_dask_suites.py runs it
    ("quickstart-images.md", "installs packages from PyPI"),
    ("quickstart-monte-carlo.md", "deploys to AWS Lambda: needs an AWS account and an image in ECR"),
    ("quickstart-monte-carlo.md", "installs packages from PyPI"),
    ("performance-report.md", "installs packages from PyPI"),
    ("settings.md", "sets the environment of a shell"),
}

#: What a bash block may run: dask-faas's commands, the examples, and setting variables.
RUNNABLE = re.compile(r"^(dask-faas\b|dask faas\b|python examples/|export [A-Z_]+=)")
FENCE = re.compile(r"^```(\w*)\s*$")
NO_RUN = re.compile(r"^<!--\s*no-run:\s*(.+?)\s*-->$")
BUCKETS = (
    re.compile(r"(?:s3|cos)://([a-z0-9][a-z0-9.-]+[a-z0-9])"),
    re.compile(r"""["']bucket["']\s*:\s*["']([a-z0-9][a-z0-9.-]+[a-z0-9])["']"""),
    re.compile(r"--bucket[ =]([a-z0-9][a-z0-9.-]+[a-z0-9])"),
)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # of the opening fence, from 1
    lang: str
    source: str
    no_run: str | None  # the reason of a no-run comment right above it

    @property
    def where(self) -> str:
        return f"docs/{self.page}:{self.line}"

    @property
    def commands(self) -> list[str]:
        """A bash block's commands: continued lines joined, comments and blank lines left out."""
        joined = self.source.replace("\\\n", " ")
        return [
            line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]

    @property
    def skip_reason(self) -> str | None:
        """Why the block does not run, or None when it runs."""
        if self.no_run:
            return self.no_run
        if self.lang == "bash":
            other = [c for c in self.commands if not RUNNABLE.match(c)]
            if other:
                return f"not a dask-faas command: {other[0].split()[0]}"
        return None


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of ``page``, in order."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, body = i, []
        i += 1
        while i < len(lines) and lines[i].rstrip() != "```":
            body.append(lines[i])
            i += 1
        assert i < len(lines), f"docs/{page.name}:{start + 1}: code block never closed"
        above = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = NO_RUN.match(above)
        found.append(
            Block(page.name, start + 1, match.group(1), "\n".join(body) + "\n", marker and marker.group(1))
        )
        i += 1
    return found


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang in ("python", "bash") and b.skip_reason is None]


#: Runs a page's blocks in order: python ones with exec in one namespace, bash ones with bash.
DRIVER = textwrap.dedent(
    """
    import json, linecache, subprocess, sys
    namespace = {"__name__": "__main__"}
    for block in json.load(open(sys.argv[1])):
        print(f"----- {block['where']} ({block['lang']})", flush=True)
        if block["lang"] == "python":
            source = block["source"]
            linecache.cache[block["where"]] = (len(source), None, source.splitlines(True), block["where"])
            exec(compile(source, block["where"], "exec"), namespace)
        else:
            sys.stdout.flush()
            subprocess.run(["bash", "-euo", "pipefail", "-c", block["source"]], check=True)
    """
)


def buckets_named(page_blocks: list[Block]) -> set[str]:
    return {name for b in page_blocks for pattern in BUCKETS for name in pattern.findall(b.source)}


def job_objects(storage: Any) -> list[str]:
    """Keys left under the job prefix (``faas.prefix``: ``dask-faas/``) of a storage."""
    return [key for key, _ in storage.list("dask-faas/")]


@pytest.mark.parametrize("page", [p for p in PAGES if runnable(p)], ids=lambda p: p.name)
def test_every_code_block_of_the_page_runs(page, tmp_path, s3_endpoint):
    from dask_faas.backends.storage.local import LocalStorage
    from dask_faas.backends.storage.s3 import S3Storage

    page_blocks = runnable(page)
    work, root, logs = tmp_path / "work", tmp_path / "storage", tmp_path / "logs"
    work.mkdir()
    root.mkdir()
    (work / "examples").symlink_to(ROOT / "examples")  # `python examples/...` as from a checkout
    script = tmp_path / "blocks.json"
    script.write_text(
        json.dumps([{"where": b.where, "lang": b.lang, "source": b.source} for b in page_blocks])
    )
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DASK_FAAS__LOCAL_STORAGE__ROOT": str(root),
        "DASK_FAAS__LOGS__DIRECTORY": str(logs),
        "DASK_FAAS__WORKERS": "2",
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
    }
    buckets = {name: S3Storage(bucket=name, endpoint_url=s3_endpoint) for name in buckets_named(page_blocks)}
    if buckets:
        env["DASK_FAAS__S3__ENDPOINT_URL"] = s3_endpoint
    for storage in buckets.values():
        storage.client.create_bucket(Bucket=storage.bucket)
    try:
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, str(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, f"docs/{page.name} failed:\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        ran = re.findall(r"^----- (\S+) ", done.stdout, re.MULTILINE)
        assert ran == [b.where for b in page_blocks]
        assert job_objects(LocalStorage(root)) == [], "a job prefix was left in the local storage"
        for storage in buckets.values():
            assert job_objects(storage) == [], f"a job prefix was left in s3://{storage.bucket}"
    finally:
        for storage in buckets.values():
            keys = [key for key, _ in storage.list("")]
            if keys:
                storage.delete(keys)
            storage.client.delete_bucket(Bucket=storage.bucket)
            storage.close()


def test_the_blocks_that_do_not_run_are_the_listed_ones():
    skipped = {
        (b.page, b.skip_reason)
        for page in PAGES
        for b in blocks(page)
        if b.lang in ("python", "bash") and b.skip_reason is not None
    }
    assert skipped == NOT_RUN
    marked_elsewhere = [
        b.where for page in PAGES for b in blocks(page) if b.no_run and b.lang not in ("python", "bash")
    ]
    assert not marked_elsewhere, "no-run marks only python and bash blocks"


def test_relative_links_and_images_of_the_pages_exist():
    missing = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                missing.append(f"docs/{page.name}: {target}")
    assert not missing, f"links to nothing: {missing}"


def test_every_page_is_linked_from_the_index():
    index = (DOCS / "index.md").read_text()
    missing = [p.name for p in PAGES if p.name != "index.md" and f"({p.name})" not in index]
    assert not missing, f"docs/index.md does not link {missing}"


# -- settings ----------------------------------------------------------------------------------


def defaults() -> dict[str, Any]:
    return yaml.safe_load(FAAS_YAML.read_text())["faas"]


def leaves(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted names of every key of ``mapping`` (sections and their keys) and their values."""
    found: dict[str, Any] = {}
    for name, value in mapping.items():
        dotted = f"{prefix}{name}"
        found[dotted] = value
        if isinstance(value, dict):
            found.update(leaves(value, f"{dotted}."))
    return found


def same_default(cell: str, value: Any) -> bool:
    """Whether a default as docs/settings.md shows it (in backticks) is faas.yaml's ``value``."""
    if not (cell.startswith("`") and cell.endswith("`")):
        return False
    text = cell[1:-1]
    return text == str(value) or yaml.safe_load(text) == value


def env_var(dotted: str) -> str:
    return "DASK_FAAS__" + "__".join(part.replace("-", "_").upper() for part in dotted.split("."))


def setting_rows() -> dict[str, list[str]]:
    """The settings table of docs/settings.md: ``key -> cells`` of each row."""
    rows: dict[str, list[str]] = {}
    for line in (DOCS / "settings.md").read_text().splitlines():
        match = re.match(r"^\| `([^`]+)` \|(.*)\|\s*$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split("|")]
    return rows


#: Settings whose environment variable form does not reach the executor, and why.
NO_ENVIRONMENT_FORM = {
    "environment.": "dask lower-cases the names of DASK_ variables, and these keys are variable names",
}
UNDERSCORED_PRICES = ("aws_lambda-x86_64", "aws_lambda-arm64", "code_engine", "ibm_cf")


def test_the_settings_reference_has_a_row_for_every_setting():
    rows = setting_rows()
    expected = leaves(defaults())
    missing = sorted(set(expected) - set(rows))
    assert not missing, f"docs/settings.md has no row for {missing}"
    unknown = sorted(set(rows) - set(expected))
    assert not unknown, f"docs/settings.md documents settings that faas.yaml does not have: {unknown}"
    for name, value in expected.items():
        default, variable, meaning = rows[name][:3]
        if not isinstance(value, dict):
            assert same_default(default, value), (
                f"{name}: faas.yaml's default is {value!r}, the page {default}"
            )
        if name.startswith(tuple(NO_ENVIRONMENT_FORM)):
            assert variable == "(YAML or keyword)", name
        else:
            assert variable == f"`{env_var(name)}`", name
        assert meaning, f"{name} has no meaning in docs/settings.md"


def settings_seen(names: list[str]) -> dict[str, Any]:
    """Each setting set to a sentinel through its variable, in a fresh process: what it resolves to."""
    sentinels = {name: f"sentinel-{i}" for i, name in enumerate(names)}
    code = textwrap.dedent(
        """
        import json, sys
        from dask_faas import config
        def find(mapping, dotted):  # the first key equal up to - and _, as the settings' readers do
            for part in dotted.split("."):
                wanted = part.replace("_", "-")
                mapping = next((v for k, v in mapping.items() if str(k).replace("_", "-") == wanted), None)
                if not isinstance(mapping, dict):
                    return mapping
            return mapping
        settings = config.resolve()
        print(json.dumps({name: find(settings, name) for name in json.loads(sys.argv[1])}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env.update({env_var(name): value for name, value in sentinels.items()})
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(list(sentinels))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout)
    return {env_var(name): seen[name] for name, value in sentinels.items() if seen[name] != value}


def variable_settings() -> list[str]:
    return [
        name
        for name, value in leaves(defaults()).items()
        if not isinstance(value, dict) and not name.startswith(tuple(NO_ENVIRONMENT_FORM))
    ]


def test_the_environment_variables_of_the_reference_set_their_settings():
    wrong = settings_seen(variable_settings())
    assert not wrong, f"these variables do not set their settings: {wrong}"


def test_price_variables_of_platforms_with_an_underscore_reach_the_estimate():
    """``DASK_FAAS__PRICES__AWS_LAMBDA_X86_64__GB_S`` arrives as ``aws_lambda_x86_64``, beside
    faas.yaml's ``aws_lambda-x86_64``: the variable's value is the one used."""
    code = textwrap.dedent(
        """
        import json, sys
        from dask_faas import config, records
        prices = config.resolve()["prices"]
        print(json.dumps({p: records.estimate_cost(prices, p, 1.0, 0) for p in sys.argv[1:]}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env.update({env_var(f"prices.{p}.gb-s"): "7.5" for p in UNDERSCORED_PRICES})
    env.update({env_var(f"prices.{p}.vcpu-s"): "0" for p in UNDERSCORED_PRICES})
    done = subprocess.run(
        [sys.executable, "-c", code, *UNDERSCORED_PRICES], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout) == {p: 7.5 for p in UNDERSCORED_PRICES}


def test_yaml_blocks_use_settings_that_exist():
    known = leaves(defaults())
    free = ("environment.",)  # its keys are names of environment variables
    for page in PAGES:
        for block in blocks(page):
            if block.lang != "yaml":
                continue
            document = yaml.safe_load(block.source)
            if not isinstance(document, dict) or "faas" not in document:
                continue
            for name in leaves(document["faas"]):
                canonical = name.replace("_", "-") if not name.startswith(free) else name
                parent = canonical.rsplit(".", 1)[0] + "."
                assert canonical in known or parent.startswith(free), f"{block.where}: no setting faas.{name}"
