"""Freed heap memory goes back to the OS once the engine is idle.

glibc keeps up to its trim threshold (64 MiB, ``cli.tune_malloc``) of freed heap for the
next request, so that request bodies and answers do not fault fresh pages in; once no
request has run for ``idle_s``, ``malloc_trim`` returns it, and RSS at rest is what it
was when every large buffer was mmapped.

Also what the container's memory limit leaves (``room_for``): a model's second session,
for concurrent calls, is made only where it fits (engine/runtime.py).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

# Where this process's cgroup shows its memory limit (a container's own, in its namespace).
CGROUP = Path("/sys/fs/cgroup")
_UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number
MIB = 1 << 20


def _malloc_trim() -> Callable[[], object] | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    return lambda: trim(0)


class IdleTrim:
    """Counts requests in flight; ``run`` trims once after each busy stretch."""

    def __init__(self, idle_s: float = 1.0, trim: Callable[[], object] | None = None) -> None:
        self.idle_s = idle_s
        self.busy = 0
        self.used = False  # requests ran since the last trim
        self.last = 0.0  # loop time the last request ended
        self.trims = 0
        self._trim = trim or _malloc_trim()
        # Run first, in the same idle moment: what else gives memory back (the models'
        # sessions for concurrent calls, engine/runtime.py).
        self.at_rest: list[Callable[[], object]] = []

    def begin(self) -> None:
        self.busy += 1
        self.used = True

    def end(self) -> None:
        self.busy -= 1
        self.last = asyncio.get_running_loop().time()

    async def run(self, pool: Executor) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.idle_s / 2)
            idle = not self.busy and loop.time() - self.last >= self.idle_s
            if self.used and idle and (self._trim is not None or self.at_rest):
                self.used = False
                await loop.run_in_executor(pool, self._rest)
                self.trims += 1

    def _rest(self) -> None:
        for release in self.at_rest:
            release()
        if self._trim is not None:
            self._trim()


def rss() -> int:
    """This process's resident set in bytes (0 where /proc has none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def container_memory(root: Path | None = None) -> tuple[int, int] | None:
    """(limit, in use) of this process's cgroup in bytes, or None with no limit (or no
    cgroup): cgroup v2's ``memory.max`` and ``memory.current``, else v1's
    ``memory/memory.limit_in_bytes`` and ``usage_in_bytes``; in use less the inactive file
    pages of ``memory.stat``, the working set the kubelet and the OOM killer go by."""
    root = root or CGROUP
    for d, names in (
        (root, ("memory.max", "memory.current", "inactive_file")),
        (
            root / "memory",
            ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
        ),
    ):
        try:
            text = (d / names[0]).read_text().strip()
            if text == "max" or int(text) >= _UNLIMITED:
                return None
            limit, used = int(text), int((d / names[1]).read_text())
        except (OSError, ValueError):
            continue
        try:
            stat = dict(line.split() for line in (d / "memory.stat").read_text().splitlines())
            used -= int(stat.get(names[2], 0))
        except (OSError, ValueError):
            pass
        return limit, max(0, used)
    return None


@dataclass
class SessionCost:
    """What a second session of a model would cost, in bytes: the RSS its first session
    added at load, the model file's size, and the RSS its first call added (-1 until a
    call has run) for each call that may run on it at once."""

    load: int
    file: int
    call: int = -1

    def total(self, calls: int) -> int:
        return self.load + self.file + calls * self.call


def room_for(cost: int, root: Path | None = None) -> tuple[bool, tuple[int, int] | None]:
    """Whether ``cost`` more bytes fit the cgroup's limit with a clear margin (a tenth of
    the limit, at least 64 MiB, left over); with the (limit, in use) figures."""
    figures = container_memory(root)
    if figures is None:
        return True, None
    limit, used = figures
    return limit - used - cost >= max(limit // 10, 64 * MIB), figures
