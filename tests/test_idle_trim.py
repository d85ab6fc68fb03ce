"""engine/memory.py: freed heap goes back to the OS once after each busy stretch, never
while a request runs."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from edgepipe.engine.memory import IdleTrim


def test_it_trims_once_after_a_busy_stretch_and_never_while_busy() -> None:
    async def scenario() -> list[int]:
        calls: list[int] = []
        trim = IdleTrim(idle_s=0.05, trim=lambda: calls.append(trim.busy))
        pool = ThreadPoolExecutor(1)
        task = asyncio.create_task(trim.run(pool))
        await asyncio.sleep(0.2)  # idle from the start, nothing used: no trim
        assert calls == []
        trim.begin()
        await asyncio.sleep(0.2)  # busy: no trim
        assert calls == []
        trim.end()
        await asyncio.sleep(0.3)  # idle after use: one trim, not one per tick
        task.cancel()
        pool.shutdown()
        return calls

    assert asyncio.run(scenario()) == [0]
