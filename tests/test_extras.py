"""Each program, started without its pip extra, names the extra to install."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

CASES = [
    ("edgepipe.engine.launch", "main", "onnxruntime", "edgepipe-engine", "engine"),
    ("edgepipe.extras", "edgepipe", "click", "edgepipe", "client"),
]


def test_the_operator_names_its_extra_when_it_runs(tmp_path) -> None:
    # The operator's CLI parses its flags first and imports kopf when it runs.
    code = (
        "import sys; sys.modules['kopf'] = None; sys.argv = ['edgepipe-operator', 'run']; "
        "from edgepipe_operator.launch import main; main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        "edgepipe-operator: needs the 'operator' extra (no module named 'kopf'): "
        "pip install 'edgepipe[operator]'\n"
    )


@pytest.mark.parametrize(("module", "function", "blocked", "prog", "extra"), CASES)
def test_a_missing_extra_is_named(module, function, blocked, prog, extra) -> None:
    # None in sys.modules makes `import blocked` fail as if it were not installed.
    code = (
        f"import sys; sys.modules[{blocked!r}] = None; sys.argv = [{prog!r}, '--help']; "
        f"from {module} import {function}; {function}()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == (
        f"{prog}: needs the '{extra}' extra (no module named {blocked!r}): "
        f"pip install 'edgepipe[{extra}]'\n"
    )


@pytest.mark.parametrize(
    ("module", "function", "blocked", "prog", "extra"),
    [*CASES, ("edgepipe_operator.launch", "main", "kopf", "edgepipe-operator", "operator")],
)
def test_with_the_extra_the_program_starts(module, function, blocked, prog, extra) -> None:
    code = f"import sys; sys.argv = [{prog!r}, '--help']; from {module} import {function}; {function}()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "usage" in proc.stdout.lower()


def test_a_plain_install_is_the_shared_library(tmp_path) -> None:
    """``pip install edgepipe`` without extras: what the docs say (how-to/images.md), and no more."""
    # A copy of the sources: pip builds in the tree it is given, and this one stays clean.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("edgepipe", "engine", "operator"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    # A venv without pip of its own (ensurepip alone takes 15 s or more here); this
    # interpreter's pip installs into it (--python), so the venv holds only what was installed.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            py,
            "install",
            "-q",
            "--disable-pip-version-check",
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert pip.returncode == 0, pip.stderr
    ok = subprocess.run(
        [
            py,
            "-c",
            "import edgepipe.config, edgepipe.oci; print(edgepipe.oci.Target.parse('r:5000/x'))",
        ],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0 and "r:5000" in ok.stdout, ok.stderr
    for heavy in ("onnxruntime", "pyarrow", "numpy", "kubernetes", "kopf", "click", "pandas"):
        found = subprocess.run([py, "-c", f"import {heavy}"], capture_output=True)
        assert found.returncode != 0, f"{heavy} came with a plain install"
    for prog, extra in (("edgepipe-engine", "engine"), ("edgepipe", "client")):
        proc = subprocess.run([str(venv / "bin" / prog), "--help"], capture_output=True, text=True)
        assert proc.returncode == 1 and f"pip install 'edgepipe[{extra}]'" in proc.stderr


def test_the_operator_starts_without_the_engines_libraries() -> None:
    """The operator image has no numpy, onnxruntime or pyarrow: importing every handler
    (what `edgepipe-operator run` does) must not need them."""
    blocked = "; ".join(f"sys.modules[{m!r}] = None" for m in ("numpy", "onnxruntime", "pyarrow"))
    proc = subprocess.run(
        [sys.executable, "-c", f"import sys; {blocked}; import edgepipe_operator.startup"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
