"""Each program, started without its pip extra, names the extra to install."""

from __future__ import annotations

import subprocess
import sys

import pytest

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
