"""The edgepipe CLI as a subprocess, the way a user runs it, and the shape its errors
must have (one line, no traceback)."""

from __future__ import annotations

import os
import subprocess
import sys


def ep(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``edgepipe ARGS`` in a subprocess, its output captured, whatever its exit code."""
    return subprocess.run(
        [sys.executable, "-m", "edgepipe.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess, words: str) -> None:
    assert proc.returncode != 0
    assert words in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith("Error")]) == 1


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """``ep``, failing the test with the CLI's stderr when it exits non-zero (unless not ``check``)."""
    proc = ep(*args, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgepipe {' '.join(args)}: {proc.stderr}")
    return proc
