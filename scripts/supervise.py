#!/usr/bin/env python3
"""Keeps one of the real node's agents running, as systemd's ``Restart=always`` does on a
real node.

    scripts/supervise.py [--pause SECONDS] NAME -- COMMAND [ARG...]

The kubelet exits by design on some faults and leaves its restart to a babysitter ("Fail
kubelet and rely on the babysitter to retry starting kubelet", pkg/kubelet/kubelet.go). A
test node without one once lost its kubelet after a node restart, and every later pod
stayed Pending. Each exit is written to the agent's log (stdout), with its code or signal;
the test fixtures report them. After ``BURST`` exits within ``WINDOW_S`` the supervisor
gives up and exits with the agent's code, as systemd's start limit does: an agent that
cannot start fails the cluster's start instead of looping.

The agent runs in the supervisor's process group: a signal to the group (the cluster's
stop, a node restart) reaches both."""

from __future__ import annotations

import subprocess
import sys
import time

BURST = 5
WINDOW_S = 60.0
PAUSE_S = 1.0
MARK = "[supervise]"  # the fixtures look for it in the agents' logs


def describe(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


def supervise(name: str, command: list[str], pause: float = PAUSE_S) -> int:
    exits: list[float] = []
    while True:
        started = time.monotonic()
        code = subprocess.Popen(command).wait()
        now = time.monotonic()
        exits = [t for t in exits if now - t < WINDOW_S] + [now]
        ran = now - started
        if len(exits) >= BURST:
            print(f"{MARK} {name} exited with {describe(code)} after {ran:.1f}s: "
                  f"{BURST} exits within {WINDOW_S:.0f}s, giving up", flush=True)  # fmt: skip
            return code if code > 0 else 1
        print(f"{MARK} {name} exited with {describe(code)} after {ran:.1f}s; "
              f"starting it again in {pause:g}s", flush=True)  # fmt: skip
        time.sleep(pause)


def main(argv: list[str]) -> int:
    pause = PAUSE_S
    if argv[:1] == ["--pause"]:
        try:
            pause, argv = float(argv[1]), argv[2:]
        except (IndexError, ValueError):
            argv = []  # the usage below
    if len(argv) < 3 or argv[1] != "--" or pause < 0:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    return supervise(argv[0], argv[2:], pause)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
