"""Freed heap memory goes back to the OS once the engine is idle.

glibc keeps up to its trim threshold (64 MiB, ``cli.tune_malloc``) of freed heap for the
next request, so that request bodies and answers do not fault fresh pages in; once no
request has run for ``idle_s``, ``malloc_trim`` returns it, and RSS at rest is what it
was when every large buffer was mmapped.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable
from concurrent.futures import Executor


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
