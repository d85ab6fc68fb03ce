"""The operator's import name: the operator folder never shadows the standard library's
``operator``, and the package imports as ``edgepipe_operator``."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT


@pytest.mark.parametrize("flags", [[], ["-I"], ["-S"]], ids=["plain", "isolated", "no-site"])
def test_stdlib_operator_is_not_shadowed_from_the_repo_root(flags: list[str]) -> None:
    # -S skips site, so the stdlib module is not preloaded and a package named
    # `operator` in the working directory would win: this is the case that matters.
    proc = subprocess.run(
        [sys.executable, *flags, "-c", "import operator; print(operator.itemgetter(1)([0, 7]))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "7"


def test_operator_folder_has_a_distinct_import_name() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import operator, edgepipe_operator as op; print(op.__file__); "
            "assert operator.__file__ != op.__file__",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("operator/edgepipe_operator/__init__.py")
    assert not (ROOT / "operator" / "__init__.py").exists()
