"""The helm binary the tests run, with its caches and config kept out of the home folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.helpers.paths import ROOT

HELM = str(ROOT / ".venv" / "bin" / "helm")


def helm(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": "/tmp/ep-helm/cache",
        "HELM_CONFIG_HOME": "/tmp/ep-helm/config",
        "HELM_DATA_HOME": "/tmp/ep-helm/data",
    }
    proc = subprocess.run(
        [HELM, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {proc.stderr}")
    return proc
