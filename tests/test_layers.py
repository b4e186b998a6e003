"""The house in layers, read from the code's own imports (every import, those inside functions too):

    cli, dashboard -> demo -> evaluation, mitigation, report, jobs -> analysis -> engine
        -> models, data, store -> paths, errors, device, plots

Nothing imports upward, there is no import cycle, no private name (`_x`) is imported from another module,
argparse lives in core.cli alone, Ray is imported by core.engine.ray alone, and every `from core... import
name` names something that exists.
"""
import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = [  # lowest first; a module may import its own layer and those below
    ("core", "core.paths", "core.errors", "core.device", "core.plots"),
    ("core.models", "core.data", "core.store"),
    ("core.engine",),
    ("core.analysis",),
    ("core.evaluation", "core.mitigation", "core.report", "core.jobs"),
    ("core.demo",),
    ("core.cli", "core.__main__", "dashboard"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(*folders: str) -> dict[str, Path]:
    return {_module_name(p): p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))}


MODULES = _sources("core", "dashboard")


def _is_module(name: str) -> bool:
    path = ROOT / Path(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or name == "dashboard"


def _imports(path: Path):
    """(line, imported module, name or None) for every import of a core or dashboard module in `path`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def _targets(module: str, name: str | None) -> str:
    """The module an import reaches: `from core import paths` reaches core.paths, `from core import x` core."""
    if name and _is_module(f"{module}.{name}"):
        return f"{module}.{name}"
    return module


def _layer(module: str) -> int | None:
    best = None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) > best[1]):
                best = (i, len(p))
    return best[0] if best else None


def _edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for _, imported, name in _imports(path):
            if imported.split(".")[0] in ("core", "dashboard"):
                graph[module].add(_targets(imported, name))
    return graph


def test_every_module_has_a_layer():
    assert [m for m in MODULES if _layer(m) is None] == []


def test_no_import_runs_up_a_layer():
    upward = []
    for module, path in MODULES.items():
        for line, imported, name in _imports(path):
            if imported.split(".")[0] not in ("core", "dashboard"):
                continue
            target = _targets(imported, name)
            if _layer(target) > _layer(module):
                upward.append(f"{path.relative_to(ROOT)}:{line} {module} -> {target}")
    assert upward == []


def test_there_is_no_import_cycle():
    graph = _edges()
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_private_name_is_imported_from_another_module():
    offenders = []
    for module, path in {**MODULES, **_sources("tests", "bench")}.items():
        for line, imported, name in _imports(path):
            if imported.split(".")[0] in ("core", "dashboard") and name and name.startswith("_") \
                    and not name.startswith("__"):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name} from {imported}")
    assert offenders == []


def test_argparse_lives_in_the_cli_and_ray_in_its_placement():
    found = {"argparse": [], "ray": []}
    for module, path in MODULES.items():
        for line, imported, _ in _imports(path):
            top = imported.split(".")[0]
            if top == "argparse" and not module.startswith("core.cli"):
                found["argparse"].append(f"{module}:{line}")
            if top == "ray" and module != "core.engine.ray":
                found["ray"].append(f"{module}:{line}")
    assert found == {"argparse": [], "ray": []}


@pytest.mark.parametrize("folders", [("core", "dashboard"), ("tests", "bench")])
def test_every_imported_name_exists(folders):
    """A moved function leaves no import behind that only fails when its code path runs."""
    missing = []
    for module, path in _sources(*folders).items():
        for line, imported, name in _imports(path):
            if imported.split(".")[0] not in ("core", "dashboard", "tests"):
                continue
            if not _is_module(imported):
                missing.append(f"{path.relative_to(ROOT)}:{line} no module {imported}")
                continue
            if name is None or name == "*" or _is_module(f"{imported}.{name}"):
                continue
            source = MODULES.get(imported) or _sources("tests").get(imported)
            if source is None:
                continue
            defined = {n.name for n in ast.walk(ast.parse(source.read_text()))
                       if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))}
            defined |= {t.id for n in ast.walk(ast.parse(source.read_text())) if isinstance(n, (ast.Assign,
                        ast.AnnAssign)) for t in ast.walk(n) if isinstance(t, ast.Name)}
            defined |= {(a.asname or a.name).split(".")[0] for n in ast.walk(ast.parse(source.read_text()))
                        if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
            if name not in defined and "__getattr__" not in defined:
                missing.append(f"{path.relative_to(ROOT)}:{line} {imported} has no {name}")
    assert missing == []
