"""The house rules, checked from the source: imports run one way (the shared library never
reaches up into the operator), no module imports itself back through a circle, no private
name crosses a module, no source file outside the tests is over 400 lines, and the tests and
benches take what they share from tests/helpers (never from a test module or conftest)."""

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


# -- the tests' own imports -------------------------------------------------------------------

TEST_FOLDERS = ("tests", "bench")


def _tree_modules(root: Path) -> dict[str, Path]:
    """Every module under tests/ and bench/, by the name it is imported as."""
    out = {}
    for folder in TEST_FOLDERS:
        for path in sorted((root / folder).rglob("*.py")):
            parts = [p for p in path.relative_to(root).with_suffix("").parts if p != "__init__"]
            out[".".join(parts)] = path
    return out


def _is_test_module(name: str) -> bool:
    last = name.rpartition(".")[2]
    return name.startswith("tests.") and (last == "conftest" or last.startswith("test_"))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.endswith("__")


def _module_aliases(tree: ast.Module, known: dict[str, Path]) -> dict[str, str]:
    """Local names bound to a module of the tree (``from tests.helpers import kube as k``)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.asname: a.name for a in node.names if a.asname and a.name in known}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                if f"{node.module}.{a.name}" in known:
                    out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _helper_problems(root: Path) -> list[str]:
    """Imports in tests/ and bench/ that reach into a test module or conftest, or take a
    private name (imported, or read off an imported module) from another module there."""
    known = _tree_modules(root)
    problems = []
    for module, path in known.items():
        for target, names in _imports(module, path, known):
            if target not in known or target == module:
                continue
            if _is_test_module(target):
                problems.append(f"{module} imports {target}")
            problems += [f"{module} imports {target}.{n}" for n in names if _is_private(n)]
        tree = ast.parse(path.read_text())
        aliases = _module_aliases(tree, known)
        problems += [
            f"{module} uses {aliases[node.value.id]}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
            and aliases[node.value.id] != module
            and _is_private(node.attr)
        ]
    return problems


def test_tests_share_helpers_never_test_modules_or_private_names() -> None:
    assert _helper_problems(ROOT) == []


def test_the_helper_rule_fails_on_a_tree_that_breaks_it(tmp_path: Path) -> None:
    files = {
        "tests/__init__.py": "",
        "tests/conftest.py": "ROOT = 1\n",
        "tests/helpers/__init__.py": "",
        "tests/helpers/kube.py": "def _wait(): ...\ndef wait(): ...\n",
        "tests/test_a.py": "def post(): ...\n",
        "tests/test_b.py": (
            "from tests.test_a import post\n"
            "from tests.conftest import ROOT\n"
            "from tests.helpers.kube import _wait, wait\n"
            "from tests.helpers import kube as k\n"
            "k._wait()\n"
            "k.wait()\n"
        ),
        "tests/test_c.py": "from tests.helpers.kube import wait\n",
        "bench/b.py": "from tests import test_a\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert sorted(_helper_problems(tmp_path)) == [
        "bench.b imports tests.test_a",
        "tests.test_b imports tests.conftest",
        "tests.test_b imports tests.helpers.kube._wait",
        "tests.test_b imports tests.test_a",
        "tests.test_b uses tests.helpers.kube._wait",
    ]
