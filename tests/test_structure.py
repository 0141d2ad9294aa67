"""The shape of the package, read from its source: no import cycles, a bottom layer, reasons for late imports.

Every module under ``sdk/cumulo`` is parsed with :mod:`ast` (nothing is imported),
so these checks are fast and say exactly which line breaks a rule:

- no cycle among cumulo's modules in the graph of their module-level imports
  (imports under ``if TYPE_CHECKING:`` are for annotations and do not count; a
  package's ``__init__`` counts as importing what it imports);
- ``cumulo.config`` and ``cumulo.exceptions`` sit at the bottom: exceptions
  imports nothing of cumulo's, config only exceptions;
- an import of a cumulo module inside a function says why on its line or the
  line above (``# heavy: ...``, ``# optional extra``, ...; a comment above a run of
  import statements covers the run): late imports that only dodged a cycle are
  gone, and the rest must not look like that.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent / "sdk" / "cumulo"



@dataclass(frozen=True)
class Import:
    """One import statement's cumulo target, where it sits, and whether it runs when its module loads."""

    source: str  # the importing module, dotted
    target: str  # the imported cumulo module, dotted
    path: Path
    line: int
    module_level: bool
    #: the first line of the run of import statements this one belongs to (a comment above it covers the run)
    block: int


def module_name(path: Path) -> str:
    """The dotted name of a module file under ROOT (a package's __init__ is the package)."""
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    """Every cumulo module, by dotted name."""
    return {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = all_modules()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _resolve(source: str, is_package: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The cumulo modules an import statement names: ``from pkg import sub`` names the submodule ``pkg.sub``,
    ``from pkg import name`` the package (its ``__init__``). The parent packages Python loads on the way
    are not counted: every submodule would otherwise "import" its package's ``__init__``."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "cumulo" or a.name.startswith("cumulo.")]
    if node.level:
        base = source.split(".") if is_package else source.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        module = ".".join(base + ([node.module] if node.module else []))
    else:
        module = node.module or ""
    if module != "cumulo" and not module.startswith("cumulo."):
        return []
    out = []
    for alias in node.names:
        sub = f"{module}.{alias.name}"
        out.append(sub if sub in MODULES else module)
    return sorted(set(out))


def imports_of(path: Path) -> list[Import]:
    """Every import of a cumulo module in one file, with whether it runs at module load."""
    source = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []

    block_of: dict[int, int] = {}
    for node in ast.walk(tree):
        for body in (getattr(node, f, None) for f in ("body", "orelse", "finalbody", "handlers")):
            if not isinstance(body, list):
                continue
            start = None
            for stmt in body:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    start = stmt.lineno if start is None else start
                    block_of[stmt.lineno] = start
                else:
                    start = None

    def visit(node: ast.AST, module_level: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in _resolve(source, is_package, node):
                if target != source:
                    found.append(Import(source, target, path, node.lineno, module_level,
                                        block_of.get(node.lineno, node.lineno)))
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child, module_level)
            return  # the body only matters to type checkers
        inside = module_level and not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        for child in ast.iter_child_nodes(node):
            visit(child, inside)

    visit(tree, True)
    return found


ALL_IMPORTS = [imp for path in MODULES.values() for imp in imports_of(path)]


def runtime_graph(*, late_too: bool = False) -> dict[str, set[str]]:
    """Module -> the cumulo modules it imports when it loads (``late_too``: or in any of its functions)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for imp in ALL_IMPORTS:
        if (imp.module_level or late_too) and imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def strong(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
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
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def _path_in(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One concrete cycle inside a strongly connected component, for the failure message."""
    members = set(component)
    start = component[0]
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in members)
        back = [w for w in nxt if w == start]
        if back and len(path) > 1:
            return path + [start]
        fresh = [w for w in nxt if w not in seen]
        if not fresh:
            return path + [nxt[0]] if nxt else path
        path.append(fresh[0])
        seen.add(fresh[0])


def test_the_analysis_sees_the_package() -> None:
    # guard against a test that passes because it read nothing
    assert "cumulo.cluster" in MODULES and "cumulo.providers.base" in MODULES
    graph = runtime_graph()
    assert "cumulo.cluster" in graph["cumulo"]
    assert "cumulo.exceptions" in graph["cumulo.spec"]


def test_find_cycles_finds_a_cycle() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = runtime_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among cumulo modules (module-level imports): " + "; ".join(
        " -> ".join(_path_in(graph, c)) + f" (component: {', '.join(c)})" for c in cycles)


def test_no_import_cycles_through_late_imports_either() -> None:
    # a late import that closes a circle only hides it: the two modules still need each other
    graph = runtime_graph(late_too=True)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among cumulo modules (counting imports inside functions): " + "; ".join(
        " -> ".join(_path_in(graph, c)) + f" (component: {', '.join(c)})" for c in cycles)


def test_exceptions_imports_nothing_of_cumulo() -> None:
    # not even for annotations: every module may import the errors, so they import nothing back
    tree = ast.parse(MODULES["cumulo.exceptions"].read_text())
    mine = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
            and (n.level or (n.module or "").split(".")[0] == "cumulo")]
    mine += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Import)
             and any(a.name.split(".")[0] == "cumulo" for a in n.names)]
    assert not mine, f"cumulo/exceptions.py imports cumulo modules on lines {mine}"


def test_config_imports_only_the_exceptions() -> None:
    runtime = {i.target for i in ALL_IMPORTS if i.source == "cumulo.config"} - {"cumulo.exceptions"}
    assert not runtime, f"cumulo.config must sit at the bottom of cumulo, but imports {sorted(runtime)}"


def test_late_imports_say_why() -> None:
    missing = []
    lines_of: dict[Path, list[str]] = {}
    for imp in ALL_IMPORTS:
        if imp.module_level:
            continue
        lines = lines_of.setdefault(imp.path, imp.path.read_text().splitlines())
        here = lines[imp.line - 1]
        above = lines[imp.block - 2].strip() if imp.block >= 2 else ""
        if "#" in here or above.startswith("#"):
            continue
        missing.append(f"{imp.path.relative_to(ROOT)}:{imp.line}: {here.strip()}")
    missing = sorted(set(missing))
    assert not missing, ("imports of cumulo modules inside functions need a reason in a comment on their line or "
                         "the line above (or move them to the top):\n  " + "\n  ".join(missing))
