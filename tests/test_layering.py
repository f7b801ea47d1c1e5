"""Import structure of the package: no cycles (module-level or inside functions), and
the modules that checkpoints ship import nothing of llmprune."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "llmprune"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every llmprune module ``path`` imports, at any depth of the file (lazy imports
    included); ``from pkg import name`` counts as importing ``pkg.name`` when that is a
    module, else ``pkg``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name.split(".")[0] == "llmprune")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "llmprune":
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.add(full if full in modules else target)
    return {m for m in out if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in SRC.rglob("*.py")}
    return {name: _imports(path, set(files)) for name, path in files.items()}


def _edges_without_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``: those edges are
    added. A package's own ``__init__`` re-exporting its submodules is not a cycle of the
    design, so edges from a module into the packages that contain it are dropped."""
    out: dict[str, set[str]] = {}
    for m, deps in graph.items():
        targets = set()
        for t in deps:
            parts = t.split(".")
            targets.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
        out[m] = {t for t in targets if t in graph and t != m and not m.startswith(t + ".")}
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    cycles = _cycles(_edges_without_packages(_graph()))
    assert not cycles, f"import cycles in src/llmprune: {cycles}"


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_shipped_modeling_code_imports_nothing_of_llmprune() -> None:
    graph = _graph()
    bottom = [m for m in graph if m.startswith("llmprune.modeling")]
    assert bottom
    for m in bottom:
        outside = {d for d in graph[m] if not d.startswith("llmprune.modeling")}
        assert not outside, f"{m} imports {outside}"


def test_models_do_not_import_export() -> None:
    graph = _graph()
    for m, deps in graph.items():
        if m.startswith("llmprune.models"):
            assert not {d for d in deps if d.startswith("llmprune.export")}, m
