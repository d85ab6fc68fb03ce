"""Dynamic batching: concurrent requests to a step stacked into one model call.

A request joins the queue of its exact input shapes and dtypes (the batch dimension
aside), so differently shaped requests are never mixed. A queue runs as soon as it holds
``maxBatchSize`` rows, or when its oldest request has waited ``maxDelayMs``: the deadline
is counted from that request's arrival at the engine (so reading and decoding it count
too), never from when a timer happened to start, so no request waits longer than
``maxDelayMs`` for company (it may still wait for the model to
be free, like any request). The queues and timers live on the event loop; stacking, the
model call and the split run in the inference pool, so the loop never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from .errors import Unavailable
from .pipeline import Pipeline, RunResult, RunState
from .runtime import StepRuntime

Feed = dict[str, np.ndarray]

Key = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass
class _Item:
    feed: Feed
    rows: int
    future: asyncio.Future
    arrived: float  # loop time


class Batcher:
    """The queues of one batching step."""

    def __init__(self, step: StepRuntime, pool: Executor, observe: Callable[[int], None]):
        config = step.config.batching
        assert config is not None
        self.step = step
        self.max_rows = config.max_batch_size
        self.delay = config.max_delay_ms / 1000
        self.pool = pool
        self.observe = observe
        self._queues: dict[Key, list[_Item]] = {}
        self._timers: dict[Key, tuple[asyncio.TimerHandle, float]] = {}
        self._running: set[asyncio.Task] = set()
        # How late the loop's timers fire (epoll rounds waits up to whole ms, then the
        # kernel wakes the thread; ~1.8 ms measured here). Timers are set this much early,
        # learnt as they fire, so that no request waits past maxDelayMs.
        self.late = 0.001

    async def submit(self, feed: Feed, arrived: float) -> tuple[list[np.ndarray], int]:
        """This feed's outputs from the model, and the ns of the call they came from.
        ``arrived``: when its request reached the engine (loop time), so that time spent
        reading and decoding it counts towards ``maxDelayMs``."""
        loop = asyncio.get_running_loop()
        key = tuple(sorted((name, a.dtype.str, a.shape[1:]) for name, a in feed.items()))
        item = _Item(feed, next(iter(feed.values())).shape[0], loop.create_future(), arrived)
        self._queues.setdefault(key, []).append(item)
        self._flush(key, due=False)
        return await item.future

    def _flush(self, key: Key, due: bool) -> None:
        """Start every batch that is full, or due; re-arm the timer for the rest."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        timer = self._timers.pop(key, None)
        if timer is not None:
            handle, when = timer
            handle.cancel()
            if due:  # fired: learn how late
                self.late = min(self.delay, 0.8 * self.late + 0.2 * max(0.0, now - when))
        queue = [i for i in self._queues.get(key, []) if not i.future.done()]
        while queue:
            take, rows = 0, 0
            while take < len(queue) and (take == 0 or rows + queue[take].rows <= self.max_rows):
                rows += queue[take].rows
                take += 1
            if rows < self.max_rows and not due:
                break
            batch, queue = queue[:take], queue[take:]
            task = loop.create_task(self._call(batch, rows))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            due = bool(queue) and queue[0].arrived + self.delay - self.late <= now
        if queue:
            self._queues[key] = queue
            when = queue[0].arrived + self.delay - self.late
            self._timers[key] = (loop.call_at(when, self._flush, key, True), when)
        else:
            self._queues.pop(key, None)

    async def _call(self, batch: list[_Item], rows: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            advice = f"remove 'batching' from step {self.step.name!r}"
            parts, ns = await loop.run_in_executor(
                self.pool,
                self.step.model.predict_stacked,
                [i.feed for i in batch],
                "requests",
                advice,
            )
        except Exception as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        self.observe(rows)
        for item, outs in zip(batch, parts, strict=True):
            if not item.future.done():  # its client may have gone
                item.future.set_result((outs, ns))

    def close(self) -> None:
        """Fail what still waits (the engine is stopping)."""
        for handle, _ in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for queue in self._queues.values():
            for item in queue:
                if not item.future.done():
                    item.future.set_exception(Unavailable("the engine is shutting down"))
        self._queues.clear()


async def run(
    pipeline: Pipeline, rows: list[Feed], state: RunState, pool: Executor, arrived: float
) -> RunResult:
    """``Pipeline.run`` for a pipeline with batching steps: those steps go through their
    batcher, the others run in the pool as usual. ``arrived``: the request's loop time."""
    loop = asyncio.get_running_loop()
    current = rows
    for k, step in enumerate(pipeline.steps):
        if step.batcher is None:
            current = await loop.run_in_executor(pool, pipeline.run_step, k, step, current, state)
            continue
        feeds = [pipeline.feeds(step, row, k) for row in current]
        answers = await asyncio.gather(
            *(step.batcher.submit(f, arrived) for f in feeds), return_exceptions=True
        )
        raw = []
        for i, answer in enumerate(answers):
            if isinstance(answer, BaseException):
                raise answer
            outs, ns = answer
            raw.append(outs)
            state.step_ns[i].append(ns)
        if step.config.postprocess is None:
            current = pipeline.finish_step(k, step, raw, state.frames)
        else:
            current = await loop.run_in_executor(
                pool, pipeline.finish_step, k, step, raw, state.frames
            )
    return await loop.run_in_executor(pool, pipeline.result, current, state)
