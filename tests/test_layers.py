"""The house rules, checked from the source: imports run one way (the shared library never
reaches up into the operator), no module imports itself back through a circle, no private
name crosses a module, and no source file outside the tests is over 400 lines."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path

from tests.helpers.paths import ROOT

# Folders and the import names they are installed under (pyproject's package-dir).
ROOTS = {
    "edgepipe": "edgepipe",
    "engine": "edgepipe.engine",
    "operator/edgepipe_operator": "edgepipe_operator",
}
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    out = {}
    for folder, prefix in ROOTS.items():
        base = ROOT / folder
        for path in base.rglob("*.py"):
            rel = path.relative_to(base).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _imports(module: str, path: Path, known: dict[str, Path]) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it), for every import anywhere in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append((sub, []) if sub in known else (base, [alias.name]))
    return found


def _graph() -> tuple[dict[str, set[str]], list[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {m: set() for m in known}
    private: list[str] = []
    for module, path in known.items():
        for target, names in _imports(module, path, known):
            if target not in known:
                continue
            if target != module:
                graph[module].add(target)
            private += [
                f"{module} imports {target}.{n}"
                for n in names
                if n.startswith("_") and not n.endswith("__")
            ]
    return graph, private


def test_the_library_never_imports_the_operator() -> None:
    graph, _ = _graph()
    upward = [
        f"{m} -> {t}"
        for m, targets in graph.items()
        if not m.startswith("edgepipe_operator")
        for t in targets
        if t.startswith("edgepipe_operator")
    ]
    assert upward == []


def test_no_import_cycles() -> None:
    graph, _ = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_no_private_name_crosses_a_module() -> None:
    _, private = _graph()
    assert private == []


def test_no_source_file_over_400_lines() -> None:
    files = subprocess.run(
        ["git", "ls-files", "*.py", "scripts/*"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    long = {}
    for name in files:
        if name.startswith("tests/"):
            continue
        n = len((ROOT / name).read_text(errors="replace").splitlines())
        if n > MAX_LINES:
            long[name] = n
    assert long == {}
