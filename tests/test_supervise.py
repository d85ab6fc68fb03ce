"""scripts/supervise.py, which keeps the real test node's agents running: an agent that
exits is started again, each exit is written with its code or signal, and an agent that
keeps exiting is given up on with its own exit code."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers.paths import ROOT

SUPERVISE = [sys.executable, str(ROOT / "scripts" / "supervise.py"), "--pause", "0.05"]


def test_an_agent_that_exits_is_started_again_then_given_up_on() -> None:
    agent = ["sh", "-c", "echo started; exit 3"]
    proc = subprocess.run([*SUPERVISE, "demo", "--", *agent], capture_output=True, text=True)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 3
    assert lines.count("started") == 5  # BURST starts within the window
    exits = [line for line in lines if line.startswith("[supervise] demo exited with code 3")]
    assert len(exits) == 5 and all("starting it again in 0.05s" in e for e in exits[:4])
    assert exits[4].endswith("5 exits within 60s, giving up")


def test_a_killed_agent_is_named_with_its_signal() -> None:
    agent = ["sh", "-c", "kill -9 $$"]
    proc = subprocess.run([*SUPERVISE, "demo", "--", *agent], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "[supervise] demo exited with signal 9" in proc.stdout


def test_a_command_line_without_its_separator_or_with_a_bad_pause_is_refused() -> None:
    proc = subprocess.run([*SUPERVISE, "demo", "sh"], capture_output=True, text=True)
    assert proc.returncode == 2 and "NAME -- COMMAND" in proc.stderr
    for pause in ("soon", "-1"):
        argv = [*SUPERVISE[:2], "--pause", pause, "demo", "--", "true"]
        proc = subprocess.run(argv, capture_output=True, text=True)
        assert proc.returncode == 2 and "[--pause SECONDS]" in proc.stderr, pause
