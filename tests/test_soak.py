"""The engine soak (``make soak`` runs 10,000 requests) in its 1,000-request version: four
clients, mixed JSON, Arrow, OIP v2 and bad requests, every answer checked, and the
engine's RSS, file descriptors and threads read from /proc."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers.paths import ROOT


def test_1000_mixed_requests_every_answer_right_and_nothing_leaks() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--requests", "1000"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    summary = json.loads(proc.stdout)
    assert summary["requests"] == 1000
    assert summary["wrong"] == []
    assert summary["rss_growth"] <= 0.10, summary
    assert summary["end"]["fds"] <= summary["after_warmup"]["fds"], summary
    assert summary["end"]["threads"] <= summary["after_warmup"]["threads"], summary
    assert proc.returncode == 0, proc.stderr
