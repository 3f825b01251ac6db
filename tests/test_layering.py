"""DESIGN.md's import direction, made executable: product modules import only their own or lower layers.

Every import of ``dask_faas`` and ``function_runtime`` modules is read with :mod:`ast` -- module-level,
inside functions and under ``TYPE_CHECKING`` alike -- relative imports resolved, and each imported
module is placed in its layer. A module may import its own layer and the layers below it; the one
exception is listed in :data:`ALLOWED` with its reason. Module-level imports (those that run when a
module is imported) must also form no circle, and no module but executor.py reads the executor's
underscored members (DESIGN's engine seam).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The layers, lowest first: (name, modules). A name matches that module and its submodules, except
#: ``dask_faas`` (the package's ``__init__``), which matches itself only: a new module that is in no
#: layer fails :func:`test_every_product_module_has_a_layer` instead of landing in the top layer.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    # no project imports but each other: the error hierarchy, the wire format, the settings loader
    # (config imports only exceptions; the storage URL mapping of the backends reads it, so it sits
    # here rather than with the executor that merges the settings)
    ("foundation", ("dask_faas.exceptions", "dask_faas.protocol", "dask_faas.config")),
    ("serialize", ("dask_faas.serialize",)),
    # the seams and their implementations (compute backends never touch storage, see below)
    ("backends", ("dask_faas.backends",)),
    # what runs inside a function: the signed store, the runtime (worker), the graph's task runner,
    # the exchange's mapper/combiner/reducer and the line-aligned CSV reads. Placed by their imports:
    # they import only backends.storage and the layers below (exchange and tasks import worker and
    # store, worker imports store), and they are imported by the client (job uses store; engine,
    # graph and persisted use tasks; shuffle uses exchange; partition uses ranges). Below the
    # executor, so that nothing a function runs can pull in the client's executor or scheduler.
    (
        "function side",
        (
            "dask_faas.store",
            "dask_faas.capture",
            "dask_faas.worker",
            "dask_faas.tasks",
            "dask_faas.exchange",
            "dask_faas.ranges",
        ),
    ),
    # the client's executor: the job in storage, the engine seam, calls and deadlines, what it
    # records (and the drawing of records: plot.py imports nothing of ours)
    (
        "executor",
        (
            "dask_faas.job",
            "dask_faas.deadlines",
            "dask_faas.session",
            "dask_faas.plot",
            "dask_faas.records",
            "dask_faas.dispatch",
            "dask_faas.executor",
        ),
    ),
    # faas_get: graph passes (the exchange rewrite, shuffle.py, which DESIGN lists with dataframe
    # but whose rewrite is a pass the scheduler applies; fusion), the engine, persisted results
    (
        "scheduler",
        (
            "dask_faas.graph",
            "dask_faas.fusion",
            "dask_faas.shuffle",
            "dask_faas.engine",
            "dask_faas.persisted",
            "dask_faas.scheduler",
        ),
    ),
    # data: discovery and CSV planning, read_csv, the writers
    ("data", ("dask_faas.partition", "dask_faas.dataframe", "dask_faas.writers")),
    # what users touch: the Lithops facade, deployment of the runtimes, the command line, test tools
    # (the emulators among them), the package's names
    # (the performance report reads records and reports; the joblib backend runs batches on an
    # executor, and the facade's register_lithops builds on it)
    (
        "surface",
        (
            "dask_faas.joblib_backend",
            "dask_faas.compat",
            "dask_faas.deploy",
            "dask_faas.cli",
            "dask_faas.cli_storage",
            "dask_faas.testing",
            "dask_faas.performance",
            "dask_faas",
        ),
    ),
    # the platforms' entry points: they import dask_faas.worker only (checked below)
    ("entry points", ("function_runtime",)),
]

#: Upward imports allowed, each with its reason: (importer, imported) -> reason.
ALLOWED: dict[tuple[str, str], str] = {
    ("dask_faas.executor", "dask_faas.scheduler"): (
        "FaasExecutor.__call__ and .persist: the one documented lazy hook, so that "
        "dask.compute(x, scheduler=executor) runs faas_get (imported inside those methods only)"
    ),
}

#: Modules the function runtime must not import at module level (it starts light).
HEAVY = ("pandas", "dask", "numpy", "boto3", "botocore", "requests", "distributed")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int
    module_level: bool  # runs when the importer is imported (not in a function, not TYPE_CHECKING)
    type_only: bool  # under `if TYPE_CHECKING:`: never runs
    path: Path


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def product_modules() -> dict[str, Path]:
    paths = [*ROOT.glob("dask_faas/**/*.py"), *ROOT.glob("function_runtime/*.py")]
    return {module_name(p): p for p in sorted(paths)}


MODULES = product_modules()


def _imports(name: str, path: Path) -> list[tuple[str, int, bool, bool]]:
    """``(imported module, line, module level, type only)`` for every import in the file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, int, bool, bool]] = []

    def visit(node: ast.AST, module_level: bool, type_only: bool = False) -> None:
        for child in ast.iter_child_nodes(node):
            function = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            checking = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            if function:
                visit(child, False, type_only)
            elif checking:  # its body never runs; an else branch does
                visit(ast.Module(body=child.body, type_ignores=[]), False, True)
                visit(ast.Module(body=child.orelse, type_ignores=[]), module_level, type_only)
            elif isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, module_level, type_only) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - child.level + 1]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                for alias in child.names:  # `from . import serialize` imports a module
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in MODULES else target, child.lineno, module_level, type_only))
            else:
                visit(child, module_level, type_only)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def all_imports() -> list[Import]:
    return [
        Import(name, imported, line, level, type_only, path)
        for name, path in MODULES.items()
        for imported, line, level, type_only in _imports(name, path)
    ]


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest matching prefix."""
    best, best_len = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            below = prefix != "dask_faas" and module.startswith(prefix + ".")
            if (module == prefix or below) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer of LAYERS: place it"
    return best


def ours(module: str) -> bool:
    return module.split(".")[0] in ("dask_faas", "function_runtime")


def where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line}: {imp.importer} imports {imp.imported}"


def test_every_product_module_has_a_layer():
    for name in MODULES:
        layer_of(name)


def test_imports_point_one_way():
    upward = []
    for imp in all_imports():
        if not ours(imp.imported) or (imp.importer, imp.imported) in ALLOWED:
            continue
        low, high = layer_of(imp.imported), layer_of(imp.importer)
        if low > high:
            upward.append(f"{where(imp)} ({LAYERS[high][0]} -> {LAYERS[low][0]})")
    assert not upward, "imports against the layering of DESIGN.md:\n" + "\n".join(upward)


def test_the_allowed_exceptions_are_lazy_and_still_needed():
    for (importer, imported), reason in ALLOWED.items():
        found = [i for i in all_imports() if (i.importer, i.imported) == (importer, imported)]
        assert found, f"stale entry in ALLOWED: {importer} no longer imports {imported} ({reason})"
        assert not any(i.module_level for i in found), f"{where(found[0])} must stay lazy: {reason}"
    assert not [key for key in ALLOWED if "engine" in key[0]], "the engine gets no exception"


def test_compute_backends_and_storages_do_not_import_each_other():
    crossing = []
    for imp in all_imports():
        for a, b in (("compute", "storage"), ("storage", "compute")):
            if imp.importer.startswith(f"dask_faas.backends.{a}") and imp.imported.startswith(
                f"dask_faas.backends.{b}"
            ):
                crossing.append(where(imp))
    assert not crossing, "\n".join(crossing)


#: Third-party packages an entry point may import besides the standard library: the platform's own
#: runtime parts, which the platform's image provides. The Knative runtime is served by Knative
#: Functions' Python middleware (func_python, on hypercorn), as DESIGN.md says.
PLATFORM_MIDDLEWARE: dict[str, tuple[str, ...]] = {"function_runtime.knative": ("func_python", "hypercorn")}


def test_function_runtime_imports_only_the_worker_and_the_standard_library():
    wrong = []
    for imp in all_imports():
        if imp.importer.startswith("function_runtime") and not ours(imp.imported):
            top = imp.imported.split(".")[0]
            if top in PLATFORM_MIDDLEWARE.get(imp.importer, ()):
                continue
            if top not in sys.stdlib_module_names and imp.imported != "__future__":
                wrong.append(where(imp))
        elif imp.importer.startswith("function_runtime") and imp.imported != "dask_faas.worker":
            wrong.append(where(imp))
    assert not wrong, "\n".join(wrong)


def test_the_worker_pulls_in_nothing_heavy_at_import():
    """Module-level imports reachable from dask_faas.worker import no dataframe or cloud library."""
    by_importer: dict[str, list[Import]] = {}
    for imp in all_imports():
        if imp.module_level:
            by_importer.setdefault(imp.importer, []).append(imp)
    seen, todo, heavy = set(), ["dask_faas.worker"], []
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        parents = [".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)]
        for imp in [i for p in parents for i in by_importer.get(p, [])] + by_importer.get(module, []):
            if ours(imp.imported):
                todo.append(imp.imported)
            elif imp.imported.split(".")[0] in HEAVY:
                heavy.append(where(imp))
    assert not heavy, "the function runtime would import:\n" + "\n".join(sorted(set(heavy)))


def test_no_import_circle_at_module_level():
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in all_imports():
        if imp.module_level and imp.imported in MODULES and imp.imported != imp.importer:
            graph[imp.importer].add(imp.imported)
    for name in MODULES:  # a package's __init__ runs before its submodules: no edge back to it needed
        graph[name].discard(name.rpartition(".")[0])
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import circle at module level: {' -> '.join(err.args[1])}") from None


#: What the engine must not import: the graph passes are the scheduler's to apply, and the executor
#: is reached through its session only (as dask.local.get_async takes submit and num_workers).
ENGINE_MUST_NOT_IMPORT = (
    "dask_faas.executor",
    "dask_faas.scheduler",
    "dask_faas.shuffle",
    "dask_faas.fusion",
    "dask_faas.dataframe",
)


def test_the_engine_applies_no_graph_pass_and_uses_the_executor_through_its_session():
    wrong = [
        where(i)
        for i in all_imports()
        if i.importer in ("dask_faas.engine", "dask_faas.persisted", "dask_faas.graph")
        and i.imported in ENGINE_MUST_NOT_IMPORT
    ]
    assert not wrong, "\n".join(wrong)


def on_self(node: ast.Attribute) -> bool:
    """``self.x`` or ``cls.x``: a class's own member, whatever its name."""
    return isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")


def executor_private_members() -> set[str]:
    """Underscored attributes and methods of the classes of executor.py (``self._x = ...``, ``def _x``)."""
    names = set()
    for node in ast.walk(ast.parse(MODULES["dask_faas.executor"].read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and on_self(node):
            names.add(node.attr)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_nothing_outside_the_executor_touches_its_underscored_members():
    """DESIGN's engine seam: the engine, the facade and the rest use the executor's public object.
    An attribute ``x._name`` (``x`` not ``self``/``cls``) elsewhere, where ``_name`` is an underscored
    member of executor.py, is such a touch (``executor._settings``, ``executor._job``)."""
    private = executor_private_members()
    assert private, "found no underscored member in executor.py: the check would test nothing"
    wrong = sorted(
        (path.relative_to(ROOT), node.lineno, ast.unparse(node))
        for name, path in MODULES.items()
        if name != "dask_faas.executor"
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute) and node.attr in private and not on_self(node)
    )
    assert not wrong, "executor internals read outside executor.py:\n" + "\n".join(
        f"{path}:{line}: {text}" for path, line, text in wrong
    )


def test_no_import_circle_even_through_lazy_imports():
    """Lazy imports hide a circle from Python, not from a reader: only ALLOWED may close one
    (imports for type checkers only never run and do not count)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in all_imports():
        lazy_hook = (imp.importer, imp.imported) in ALLOWED
        if imp.imported in MODULES and imp.imported != imp.importer and not lazy_hook and not imp.type_only:
            graph[imp.importer].add(imp.imported)
    for name in MODULES:
        graph[name].discard(name.rpartition(".")[0])
    try:
        list(TopologicalSorter(graph).static_order())
    except CycleError as err:
        raise AssertionError(f"import circle: {' -> '.join(err.args[1])}") from None
