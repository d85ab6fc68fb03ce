"""The walkthrough page (docs/getting-started/walkthrough.md), run word for word: its bash
blocks, as a user would paste them, with every output line it shows checked."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import pytest

from tests.helpers import walkthrough as wt
from tests.helpers.paths import ROOT


def _free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_expected_lines_are_read_by_the_page_rules() -> None:
    page = (
        "<!-- walkthrough -->\n```bash\n# prose\nfirst \\\n  --flag\n# out 1\n# out …\n\n"
        "# more prose\nsecond\n```\n\n```bash\nnot-run\n# x\n```\n"
    )
    cmds = wt.commands(page)
    assert [c.lines for c in cmds] == [["first \\", "  --flag"], ["second"]]
    assert [c.expected for c in cmds] == [["out 1", "out …"], []]
    assert "not-run" not in wt.script(cmds)


def test_a_stale_expected_line_is_a_mismatch() -> None:
    cmds = [wt.Command(["echo"], ["Normal   score 0.591  box [0.0, 29.36, …]"])]
    ran = "\n".join(["Normal   score 0.591  box [0.0, 28.98, 379.36, 510.84]", wt.MARK.format(0)])
    assert wt.mismatches(cmds, ran)
    cmds[0].expected = ["Normal   score 0.591  box [0.0, 28.98, …]"]
    assert wt.mismatches(cmds, ran) == []


def test_the_walkthrough_runs_and_prints_what_the_page_shows(tmp_path) -> None:
    for port in (5000, 8080):
        if not _free(port):
            pytest.fail(f"port {port} is taken; the walkthrough uses it as the page says")
    cmds = wt.commands(wt.PAGE.read_text())
    assert any(c.expected for c in cmds), "the walkthrough shows no output to check"
    # Files, not pipes: the registry and the engine it leaves running would hold a pipe open.
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with open(out_path, "w") as out_f, open(err_path, "w") as err_f:
        proc = subprocess.Popen(
            ["bash", "-c", wt.script(cmds)],
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
    problems = wt.mismatches(cmds, out)
    assert not problems, "\n".join(problems)
    assert (ROOT / "out" / "walkthrough.png").stat().st_size > 10_000
