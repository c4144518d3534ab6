"""The library's shape: sub-packages by role in a layer order, imports only downward, no cycle,
every import at the top of its file, no module over 600 lines and no function over 120.

The import graph is read from the source (every import, also one inside a function), so a cycle
cannot hide in a function. `import_graph` is also what the closing notes' numbers come from:
`python Testing/Python/test_architecture.py` prints it.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]
LIB = ROOT / "LAScarSegLib"
PACKAGE = "LAScarSegLib"
#: Bottom to top: a module may import its own package and those before it, never one after it.
LAYERS = ("core", "model", "synth", "infer", "quantify", "train", "app", "slicer")
#: Modules at the package's top level and the layer they belong to.
TOP_LEVEL = {PACKAGE: "core", f"{PACKAGE}.logic": "slicer"}
#: Imports that may sit inside a function: optional packages that are not runtime dependencies.
LAZY_ALLOWED = {"edt", "matplotlib", "monai", "medpy", "yaml", "resource"}  # resource: Unix only
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 120


@dataclass
class Graph:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: dict[str, set[str]] = field(default_factory=dict)  # module -> library modules it imports
    inner: list[tuple[str, int, str]] = field(default_factory=list)  # (module, line, imported) inside functions


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool, known: set[str]) -> list[str]:
    """The library modules (or external top-level names) an import statement names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    out = []
    for alias in node.names:  # `from pkg import module` names a module, `from module import name` does not
        full = f"{base}.{alias.name}"
        out.append(full if full in known else base)
    return out


def import_graph(root: Path = LIB) -> Graph:
    g = Graph()
    files = sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    for p in files:
        g.modules[module_name(p, root)] = p
    known = set(g.modules)
    for name, path in g.modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        g.edges[name] = set()
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            in_function, up = False, parents.get(node)
            while up is not None:
                in_function |= isinstance(up, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                up = parents.get(up)
            for target in sorted(set(_targets(node, name, path.name == "__init__.py", known))):
                if target.split(".")[0] == root.name:
                    g.edges[name].add(target)
                if in_function and target.split(".")[0] not in LAZY_ALLOWED:
                    g.inner.append((name, node.lineno, target))
    return g


def layer_of(module: str) -> str:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    return module.split(".")[1]


def upward_imports(g: Graph) -> list[str]:
    bad = []
    for src, targets in g.edges.items():
        for dst in targets:
            if LAYERS.index(layer_of(dst)) > LAYERS.index(layer_of(src)):
                bad.append(f"{src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})")
    return sorted(bad)


def cycles(g: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (or a module importing itself).

    A package's `__init__` is an edge target whenever a submodule imports from the package, but
    importing a submodule never needs its package's other submodules, so edges to a package
    (`__init__`) that holds no code of its own are left out.
    """
    graph = {m: {t for t in ts if t != m} for m, ts in g.edges.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(max(1000, 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# --------------------------------------------------------------------------------- the tests
def test_the_folders_are_the_layers() -> None:
    packages = sorted(p.name for p in LIB.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted(LAYERS)
    for name in LAYERS:  # each says what belongs there
        doc = ast.get_docstring(ast.parse((LIB / name / "__init__.py").read_text(encoding="utf-8")))
        assert doc and doc.split(":")[0].strip() == name, f"{name}/__init__.py must open with '{name}: ...'"
    loose = sorted(p.name for p in LIB.glob("*.py"))
    assert loose == ["__init__.py", "logic.py"], loose  # everything else lives in a sub-package


def test_imports_only_go_down_the_layer_order() -> None:
    assert upward_imports(import_graph()) == []


def test_no_import_cycle_even_through_imports_inside_functions() -> None:
    assert cycles(import_graph()) == []


def test_every_library_import_is_at_the_top_of_its_file() -> None:
    assert import_graph().inner == []


def test_no_module_over_600_lines_and_no_function_over_120() -> None:
    long_modules, long_functions = [], []
    for name, path in import_graph().modules.items():
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append((name, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append((name, node.name, n))
    assert long_modules == [] and long_functions == []


def test_the_checks_would_catch_an_upward_import_a_cycle_and_an_inner_import(tmp_path) -> None:
    """Guard against vacuous checks: a made-up package with each fault is caught."""
    pkg = tmp_path / PACKAGE
    for layer in ("core", "app"):
        (pkg / layer).mkdir(parents=True)
        (pkg / layer / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "core" / "a.py").write_text("from ..app.b import f\n")  # up the order
    (pkg / "core" / "c.py").write_text("from .d import g\n")
    (pkg / "core" / "d.py").write_text("def g():\n    from .c import h\n")  # a cycle through a function
    (pkg / "app" / "b.py").write_text("def f():\n    pass\n")
    g = import_graph(pkg)
    assert upward_imports(g) == [f"{PACKAGE}.core.a (core) imports {PACKAGE}.app.b (app)"]
    assert cycles(g) == [[f"{PACKAGE}.core.c", f"{PACKAGE}.core.d"]]
    assert g.inner == [(f"{PACKAGE}.core.d", 2, f"{PACKAGE}.core.c")]


def test_the_readme_module_table_matches_the_folders() -> None:
    """Every module named in the README's library table exists, and every module is named there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("| package | modules |")
    table = text[start:text.index("\n\n", start)].splitlines()[2:]
    listed = set()
    for row in table:
        cells = [c.strip() for c in row.strip("|").split("|")]
        package = cells[0].strip("`")
        for mod in cells[1].replace("`", "").split(","):
            listed.add(f"{PACKAGE}.{package}.{mod.strip()}")
    on_disk = {m for m in import_graph().modules if m.count(".") == 2}
    assert listed == on_disk, (sorted(listed - on_disk), sorted(on_disk - listed))


def summary(g: Graph) -> str:
    packages = sorted({m.split(".")[1] for m in g.modules if m.count(".") >= 1 and m not in TOP_LEVEL})
    n_edges = sum(len(t) for t in g.edges.values())
    layered = all(m in TOP_LEVEL or m.split(".")[1] in LAYERS for m in g.modules)
    inner_lib = sum(1 for _m, _l, t in g.inner if t.split(".")[0] == PACKAGE)
    return (f"{len(g.modules)} modules in {len(packages) if layered else 1} package(s); {n_edges} library imports "
            f"between modules; {len(g.inner)} imports inside functions ({inner_lib} of the library); "
            f"cycles: {[len(c) for c in cycles(g)]} (modules per cycle); upward imports: "
            f"{len(upward_imports(g)) if layered else 'no layers'}")


if __name__ == "__main__":
    print(summary(import_graph(Path(sys.argv[1]) if len(sys.argv) > 1 else LIB)))
