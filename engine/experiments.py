"""What runs around a pipeline's models: shadow models, the A/B split's choice, and the
validation rules over each row's outputs.

Shadows run *in parallel* with the step's own model, in a pool of their own with one
onnxruntime thread each, at the lowest CPU priority (nice 19: raising one's own niceness
needs no privilege), so that they take the cores' spare time rather than the main
model's. Once the step's model has answered, the answer waits for its shadows at
most ``EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS`` (the stated bound); a shadow still running then
is reported as timed out and finishes in the background. A shadow that fails is reported
too; neither changes nor fails the answer. When shadows fall behind (``BACKLOG`` calls
waiting or running), new ones are skipped rather than queued without bound. When most
calls time out, a warning says so at most once a minute, naming the setting: a metric
alone went unnoticed while every answer's ``shadow_data`` came back empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepipe.expressions import Rule

BACKLOG = 64
WARN_EVERY_S = 60.0

log = logging.getLogger("edgepipe.engine")


@dataclass
class ShadowEvent:
    """One shadow call's outcome, for the metrics: ok, error, timeout or skipped."""

    model: str
    outcome: str
    seconds: float = 0.0


@dataclass
class _Call:
    model: Any  # an OnnxModel
    row: int
    future: Future | None
    started: float = field(default_factory=time.perf_counter)


class TimeoutWatch:
    """Counts shadow calls and their timeouts per window of ``every_s`` seconds, and warns
    when most of a window's calls timed out, at most once per window."""

    def __init__(self, pipeline: str, timeout_s: float, every_s: float = WARN_EVERY_S) -> None:
        self.pipeline, self.timeout_s, self.every_s = pipeline, timeout_s, every_s
        self.calls = self.timeouts = 0
        self.since = time.monotonic()
        self.warned = -math.inf
        self._lock = threading.Lock()

    def note(self, events: list[ShadowEvent]) -> None:
        now = time.monotonic()
        with self._lock:
            self.calls += sum(e.outcome != "skipped" for e in events)
            self.timeouts += sum(e.outcome == "timeout" for e in events)
            most = self.timeouts * 2 > self.calls
            if most and now - self.warned >= self.every_s:
                calls, timeouts, since = self.calls, self.timeouts, self.since
                self.warned = now
            elif now - self.since < self.every_s:
                return
            else:
                calls = 0
            self.calls = self.timeouts = 0
            self.since = now
        if calls:
            log.warning(
                "pipeline %s: %d of %d shadow calls in the last %.0f s took longer than "
                "EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS (%d ms) and are missing from shadow_data; "
                "raise the setting to wait for them",
                self.pipeline,
                timeouts,
                calls,
                max(1.0, now - since),
                round(self.timeout_s * 1000),
            )


class Shadows:
    """The shadow pool of one pipeline."""

    def __init__(self, workers: int, timeout_s: float, pipeline: str = "") -> None:
        self.pool = ThreadPoolExecutor(
            workers, thread_name_prefix="shadow", initializer=_lowest_priority
        )
        self.timeout_s = timeout_s
        self._slots = threading.BoundedSemaphore(BACKLOG)
        self.watch = TimeoutWatch(pipeline, timeout_s)

    def start(self, models: Sequence[Any], feeds: list[dict[str, np.ndarray]]) -> list[_Call]:
        """Submit every shadow for every row (feeds keyed by the step model's inputs)."""
        calls = []
        for row, feed in enumerate(feeds):
            for model in models:
                if not self._slots.acquire(blocking=False):
                    calls.append(_Call(model, row, None))
                    continue
                future = self.pool.submit(model.predict, _by_position(model, feed))
                future.add_done_callback(lambda _: self._slots.release())
                calls.append(_Call(model, row, future))
        return calls

    def collect(
        self, calls: list[_Call], rows: int
    ) -> tuple[list[dict[str, dict[str, np.ndarray]]], list[ShadowEvent]]:
        """Each row's shadow outputs (by model, then output name), waiting at most the
        timeout from now."""
        deadline = time.perf_counter() + self.timeout_s
        data: list[dict[str, dict[str, np.ndarray]]] = [{} for _ in range(rows)]
        events = []
        for call in calls:
            if call.future is None:
                events.append(ShadowEvent(call.model.name, "skipped"))
                continue
            try:
                outputs = call.future.result(timeout=max(0.0, deadline - time.perf_counter()))
            except FutureTimeout:
                events.append(ShadowEvent(call.model.name, "timeout"))
                continue
            except Exception:  # a failing shadow never fails the answer
                events.append(ShadowEvent(call.model.name, "error"))
                continue
            names = [spec.name for spec in call.model.outputs]
            data[call.row][call.model.name] = dict(zip(names, outputs, strict=True))
            events.append(ShadowEvent(call.model.name, "ok", time.perf_counter() - call.started))
        self.watch.note(events)
        return data, events

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def _lowest_priority() -> None:
    """Make this (shadow) thread yield the CPU to everything else in the engine."""
    # Not Linux: shadows share the CPU evenly.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


def _by_position(model: Any, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The step's feed for another model: the same arrays, in input order."""
    return {spec.name: arr for spec, arr in zip(model.inputs, feed.values(), strict=True)}


def pick(weights: np.ndarray, key: str | None, salt: str, rng: np.random.Generator) -> int:
    """A variant index by weight: from the hash of ``key`` when given (the same key always
    gets the same variant while the weights stay), else at random."""
    if key is None:
        u = rng.random()
    else:
        digest = hashlib.sha256(f"{salt}\0{key}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
    bounds = np.cumsum(weights) / weights.sum()
    return int(min(np.searchsorted(bounds, u, side="right"), len(weights) - 1))


def failures(rules: Sequence[tuple[str, Rule]], outputs: Mapping[str, np.ndarray]) -> list[str]:
    """The names of the rules that do not hold for one row's outputs."""
    return [name for name, rule in rules if not rule.holds(outputs)]
