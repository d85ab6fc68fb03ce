"""Ctrl-C (or SIGTERM) while the engine starts: stop at once, not after the model.

Start-up downloads and loads models in a worker thread (seconds for a 537 MB model) that
no signal can stop, and asyncio would wait for it, then print chained tracebacks. So a
signal before the engine serves removes what this process was writing into the cache
(a download is a dot-file until it is whole and verified) and ends the process on the
spot: one line, exit status 128 + the signal (130 for Ctrl-C).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import NoReturn


def partial_files(cache: Path) -> list[Path]:
    """The files under ``cache`` that this process holds open under a dot-name: downloads
    and index writes in progress (finished ones are renamed to their final name)."""
    root = cache.resolve()
    fds = Path("/proc/self/fd")  # Linux; elsewhere nothing is found, and nothing removed
    found = []
    for fd in fds.iterdir() if fds.is_dir() else []:
        try:
            target = Path(os.readlink(fd))
        except OSError:  # closed since the listing
            continue
        if target.name.startswith(".") and target.is_relative_to(root):
            found.append(target)
    return found


def abandon_start(cache: Path, signum: int) -> NoReturn:
    """Remove this process's partial files in ``cache`` and exit with 128 + ``signum``."""
    removed = []
    for path in partial_files(cache):
        try:
            path.unlink()
            removed.append(path.name)
        except FileNotFoundError:
            pass
    name = signal.Signals(signum).name
    what = f"; removed the partial download {', '.join(removed)}" if removed else ""
    sys.stderr.write(f"edgepipe-engine: {name} during start-up: stopped{what}\n")
    sys.stderr.flush()
    # Not sys.exit: that would wait for the thread still downloading or loading.
    os._exit(128 + signum)
