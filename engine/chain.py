"""One unbatched inference as a chain of pool threads: decode (in the decode pool, or on
the loop when small), run (in the infer pool), encode (in the decode pool when the answer
is large), each stage handing its result straight to the next stage's pool.

Awaiting each stage from the loop cost two more thread-to-loop round trips per request,
each waiting for a loop that is busy reading other bodies; the loop now waits once, for
the encoded answer. Batched steps keep the loop (``batching`` gathers requests there).

When a model-call slot is free as the decode ends (``DataPlane.infer_slots``, one per
infer worker), the decode thread runs the model and then encodes itself: no hop to the
infer pool and back, each a thread wake-up that waits for a core. Every unbatched model
call holds a slot, in the infer pool or not, so at most ``INFER_WORKERS`` run at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import CancelledError, Future, InvalidStateError
from typing import Any

from .pipeline import Pipeline, RunState

# Bodies and answers below this are decoded and encoded where they are: a pool hop costs
# more than the work.
INLINE_BYTES = 64 * 1024


def _settle(done: Future, value: Any = None, exc: BaseException | None = None) -> None:
    try:
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(value)
    except InvalidStateError:  # the request was cancelled meanwhile
        pass


class Chain:
    def __init__(self, plane: Any, pipeline: Pipeline, decode, respond, encode, choice):
        self.plane = plane  # the DataPlane: its decode and infer pools
        self.pipeline = pipeline
        self.decode = decode  # () -> (decoded, rows, frames, decode_ns)
        self.respond = respond  # (decoded, result, decode_ns) -> Response
        self.encode = encode  # Response -> Encoded
        self.choice = choice
        self.done: Future = Future()
        self.ran_at = 0.0

    async def start(self, size: int):
        """(encoded, state, rows, result, seconds since the run finished)."""
        if size <= INLINE_BYTES:
            self._decoded(*self.decode(), here=False)  # on the loop: never run a model here
        else:
            self._submit(self.plane.decode_pool, self._decode_stage)
        encoded, state, rows, result = await asyncio.wrap_future(self.done)
        return encoded, state, rows, result, lambda: time.perf_counter() - self.ran_at

    def _submit(self, pool, fn, *args) -> None:
        try:
            work = pool.submit(fn, *args)
        except RuntimeError as exc:  # the pool is shut down
            _settle(self.done, exc=exc)
            return
        # A pool shut down with its queue cancelled never runs the stage.
        work.add_done_callback(lambda w: w.cancelled() and _settle(self.done, exc=CancelledError()))

    def _decode_stage(self) -> None:
        try:
            self._decoded(*self.decode(), here=True)
        except BaseException as exc:
            _settle(self.done, exc=exc)

    def _decoded(self, decoded, rows, frames, decode_ns, here: bool) -> None:
        state = RunState(len(rows), frames, self.choice)
        if here and self.plane.infer_slots.acquire(blocking=False):
            self._run_stage(decoded, rows, state, decode_ns, held=True)
        else:
            self._submit(self.plane.infer_pool, self._run_stage, decoded, rows, state, decode_ns)

    def _run_stage(self, decoded, rows, state, decode_ns, held: bool = False) -> None:
        """Run, then encode here (small answers, or in the decode pool already: ``held``,
        a model-call slot taken by the caller) or in the decode pool."""
        try:
            slots = self.plane.infer_slots
            if not held:
                slots.acquire()
            try:
                result = self.pipeline.run(rows, state)
            finally:
                slots.release()
            self.ran_at = time.perf_counter()
            response = self.respond(decoded, result, decode_ns)
            nbytes = sum(o.nbytes for outs in result.outputs for o in outs)
            if held or nbytes <= INLINE_BYTES:
                _settle(self.done, (self.encode(response), state, rows, result))
            else:
                self._submit(self.plane.decode_pool, self._encode_stage, response, state, rows)
        except BaseException as exc:
            _settle(self.done, exc=exc)

    def _encode_stage(self, response, state, rows) -> None:
        try:
            _settle(self.done, (self.encode(response), state, rows, response.result))
        except BaseException as exc:
            _settle(self.done, exc=exc)
