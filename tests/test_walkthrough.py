"""The README's walkthrough, run word for word: its bash block, as a user would paste it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess

import pytest

from tests.helpers.paths import ROOT


def walkthrough() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- walkthrough -->\n```bash\n(.*?)```", text, re.S)
    assert match, "the README has no walkthrough block"
    return match.group(1)


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_the_readme_walkthrough_finds_people_with_class_names(tmp_path) -> None:
    for port in (5000, 8080):
        if not _free(port):
            pytest.fail(f"port {port} is taken; the walkthrough uses it as the README says")
    script = "set -euo pipefail\n" + walkthrough()
    # Files, not pipes: the registry and the engine it leaves running would hold a pipe open.
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=ROOT,
            stdout=out_f,
            stderr=err_f,
            start_new_session=True,  # the registry and the engine it starts go with it
            env={**os.environ, "TMPDIR": str(tmp_path)},
        )
        try:
            proc.wait(timeout=300)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
    out, err = out_path.read_text(), err_path.read_text()
    assert proc.returncode == 0, err[-3000:]
    lines = [ln for ln in out.splitlines() if " score " in ln]
    assert lines and lines[0].startswith("Normal"), out
    assert "box [" in lines[0]
    logged = [ln for ln in out.splitlines() if ln.startswith("lab-1 {'detections'")]
    assert logged, out
    assert (ROOT / "out" / "walkthrough.png").stat().st_size > 10_000
