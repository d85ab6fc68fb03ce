"""A live swap of one pipeline in the data plane: new requests go to the new version at once;
requests in flight finish on the old one, which is then closed and freed.

The data plane looks a pipeline up once per request (``DataPlane.infer`` counts it in
``leases`` by object), so replacing the entry in ``plane.pipelines`` is the switch. The old
version's batchers, shadows and onnxruntime sessions go once its lease count is zero.
A request is counted once its body has arrived, in the same step (no await between) as
the look-up that picks the version it runs on.
"""

from __future__ import annotations

import asyncio
import logging

from .addressing import model_views
from .dataplane import DataPlane
from .pipeline import Pipeline

log = logging.getLogger("edgepipe.engine")
# How often the retiring version's requests in flight are counted.
DRAIN_POLL = 0.02


def switch(plane: DataPlane, new: Pipeline) -> list[Pipeline]:
    """Make ``new`` serve its name; the objects it replaced (the old pipeline and its
    per-model views), which ``retire`` frees."""
    old = plane.pipelines.get(new.name)
    plane.attach_batchers(new)
    # One assignment each: a request looks up either the old dict or the new one.
    plane.pipelines = {**plane.pipelines, new.name: new}
    old_views = [v for v in plane.models.values() if old is not None and _shares_steps(v, old)]
    plane.models = model_views(plane.pipelines.values())
    return [p for p in (old, *old_views) if p is not None]


def _shares_steps(view: Pipeline, pipeline: Pipeline) -> bool:
    models = {id(m) for s in pipeline.steps for m in (s.model, *s.variants, *s.shadows)}
    return any(id(step.model) in models for step in view.steps)


async def retire(plane: DataPlane, old: list[Pipeline], grace: float) -> None:
    """Wait until no request runs on ``old`` (at most ``grace`` s), then close it."""
    deadline = asyncio.get_running_loop().time() + grace
    while any(plane.leases[id(p)] > 0 for p in old):
        if asyncio.get_running_loop().time() > deadline:
            log.warning("retiring version: requests still in flight after %.0f s", grace)
            break
        await asyncio.sleep(DRAIN_POLL)
    steps = {id(step) for p in old for step in p.steps}
    for batcher in [b for b in plane.batchers if id(b.step) in steps]:
        batcher.close()
        plane.batchers.remove(batcher)
    for p in old:
        plane.leases.pop(id(p), None)
        p.close()
        for step in p.steps:  # the sessions: freed now, not at the next collection
            step.batcher = None
    old.clear()
    # No gc.collect(): a full collection stalls the event loop (tens of ms); with the
    # batcher cycle broken above, reference counting frees the sessions now.
