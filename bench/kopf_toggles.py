"""kopf's index pre-population at an operator's start, alone: N objects of kinds with index
handlers, each given a toggle in one ``ToggleSet(all)`` by the watcher, and each object's
worker dropping its toggle once indexed and then waiting for the whole set (the pattern of
``kopf/_core/reactor/queueing.py`` and ``processing.py``). Every toggle made or dropped
wakes every waiting worker: CPU seconds grow as N². ``--quiet`` runs the same with a set
that notifies only when its state flips, which is all a waiter waits for.

    .venv/bin/python bench/kopf_toggles.py 1000 2000 4000 [--quiet]
"""

from __future__ import annotations

import asyncio
import sys
import time

from kopf._cogs.aiokits.aiotoggles import Toggle, ToggleSet


class QuietToggleSet(ToggleSet):
    """Notifies its waiters only when adding or dropping a toggle flips the set's state."""

    async def make_toggle(self, __val: bool = False, *, name: str | None = None) -> Toggle:
        toggle = Toggle(__val, name=name, condition=self._condition)
        async with self._condition:
            before = self.is_on()
            self._toggles.add(toggle)
            if self.is_on() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self, toggle: Toggle) -> None:
        async with self._condition:
            before = self.is_on()
            self._toggles.discard(toggle)
            if self.is_on() != before:
                self._condition.notify_all()


async def start(n: int, kind: type[ToggleSet]) -> None:
    indexed = kind(all)
    listing = await indexed.make_toggle(name="the listing")

    async def worker(toggle: Toggle) -> None:
        await asyncio.sleep(0)  # its first event, indexed
        await indexed.drop_toggle(toggle)
        await indexed.wait_for(True)  # every other object and kind indexed

    workers = []
    for i in range(n):  # the watcher: a toggle for each new object, then its worker
        toggle = await indexed.make_toggle(name=str(i))
        workers.append(asyncio.create_task(worker(toggle)))
        await asyncio.sleep(0)
    await indexed.drop_toggle(listing)
    await asyncio.gather(*workers)


def main() -> None:
    kind = QuietToggleSet if "--quiet" in sys.argv else ToggleSet
    for n in (int(a) for a in sys.argv[1:] if a.isdigit()):
        t0 = time.process_time()
        asyncio.run(start(n, kind))
        print(f"{kind.__name__} N={n}: {time.process_time() - t0:.2f} CPU s", flush=True)


if __name__ == "__main__":
    main()
