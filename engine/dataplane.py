"""The data plane: look up a pipeline, decode the body, coerce and fit its inputs, run the
steps, encode the answer, and record the request's metrics.

One ``infer`` serves every wire format (pandas-records JSON, Arrow, OIP v2): a codec pair
(``codecs``) turns bytes into arrays and results into bytes; everything between is here.
Everything heavy runs in thread pools, never on the event loop: decoding in ``decode_pool``
(sized from ``CONFIG_CPUS``), model calls in the decode thread when one of the
``infer_slots`` (``INFER_WORKERS``) is free, else in ``infer_pool`` (``chain.py``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgepipe import __version__
from edgepipe.yolo import Letterbox

from . import batching, experiments
from .addressing import list_models, model_views
from .calls import Calls
from .chain import INLINE_BYTES, Chain
from .codecs import Codec, Decoded, Encoded, InputField, Payload, Response, coerce, v2
from .errors import BadRequest, NotFound, Unavailable
from .logservice import LogService
from .memory import IdleTrim
from .metrics import Metrics
from .pipeline import Pipeline, RunResult, RunState
from .settings import Settings

# Bodies below this are decoded on the loop: a pool hop costs more than the work.
INLINE_DECODE_BYTES = INLINE_BYTES


def coerce_rows(
    decoded: Decoded, fields: list[InputField], allow_nan: bool
) -> list[dict[str, np.ndarray]]:
    """Decoded inputs in the model inputs' dtypes, a dict of arrays per row (or a 400).

    Columns are coerced once for all their rows, then split into rows. Encoded images
    pass as they are.
    """

    def check(value, f: InputField):
        return value if f.image is not None else coerce(value, f.spec, f.name, allow_nan)

    if decoded.columns is not None:
        cols = {f.name: check(decoded.columns[f.name], f) for f in fields}
        return [{name: arr[i] for name, arr in cols.items()} for i in range(decoded.num_rows)]
    return [{f.name: check(row[f.name], f) for f in fields} for row in decoded.rows or []]


def prepare_rows(
    decoded: Decoded, fields: list[InputField], allow_nan: bool
) -> tuple[list[dict[str, np.ndarray]], list[Letterbox] | None]:
    """The one place where decoded inputs get the model's dtypes and shapes (or a 4xx):
    coerced, then each row fitted to the input's shape (a missing batch dimension added,
    a flat list reshaped); an encoded image decoded and fitted by the preprocess, which
    also gives each row's frame (how to map boxes back to the image)."""
    rows = coerce_rows(decoded, fields, allow_nan)
    image = next((f for f in fields if f.image is not None), None)
    if image is None:
        return [{f.name: f.spec.fit(row[f.name], f.name) for f in fields} for row in rows], None
    frames = []
    for i, row in enumerate(rows):
        row[image.name], frame = image.image(row[image.name], i)
        frames.append(frame)
    return rows, frames


class DataPlane:
    def __init__(
        self, settings: Settings, pipelines: dict[str, Pipeline], metrics: Metrics, calls: Calls
    ):
        self.settings = settings
        self.calls = calls  # the model calls of the pipelines' models (engine/calls.py)
        self.pipelines = pipelines
        self.metrics = metrics
        self.models = model_views(pipelines.values())
        self.decode_pool = ThreadPoolExecutor(settings.cpus, thread_name_prefix="decode")
        self.infer_pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="infer")
        # One per concurrent model call; a decode thread that takes one runs the model itself
        # (engine/chain.py).
        self.infer_slots = threading.BoundedSemaphore(settings.workers)
        self.draining = False  # set on SIGTERM: readiness fails while requests still run
        self.inference_log: LogService | None = None  # set when the engine keeps one
        self.rng = np.random.default_rng()  # the split's draws
        self.batchers: list[batching.Batcher] = []
        # Requests in flight per pipeline object (by id): a swapped-out version is closed
        # only once its count is back to zero (engine/swap.py).
        self.leases: Counter[int] = Counter()
        self.idle_trim = IdleTrim()  # freed heap back to the OS when idle (engine/memory.py)
        # A model call alone in the engine gets the cores; the sessions for concurrent
        # calls are dropped when idle (engine/calls.py).
        calls.requests = lambda: self.idle_trim.busy
        self.idle_trim.at_rest.append(calls.rest)
        for p in pipelines.values():
            self.attach_batchers(p)
            # At 0 from the start: an autoscaler on inflight needs the series while idle.
            metrics.inflight.labels(p.name)

    def attach_batchers(self, p: Pipeline) -> None:
        for step in p.steps:
            if step.config.batching is not None:
                observe = self.metrics.batch_size.labels(p.name, step.name).observe
                step.batcher = batching.Batcher(step, self.infer_pool, observe)
                self.batchers.append(step.batcher)

    def close(self) -> None:
        for batcher in self.batchers:
            batcher.close()
        for pipeline in self.pipelines.values():
            pipeline.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=True, cancel_futures=True)

    # -- look-ups -------------------------------------------------------------------------

    def get(self, name: str) -> Pipeline:
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            known = ", ".join(sorted(self.pipelines)) or "none"
            raise NotFound(f"unknown pipeline {name!r}; this engine serves: {known}", "pipeline")
        if pipeline.error:
            raise Unavailable(f"pipeline {name!r} failed to load: {pipeline.error}", "pipeline")
        return pipeline

    def v2_target(self, name: str) -> tuple[Pipeline, str]:
        """A pipeline, or a single model of one, by name (pipelines win); (it, version)."""
        if name in self.pipelines:
            pipeline = self.get(name)
            return pipeline, pipeline.config.version or ""
        if name in self.models:
            view = self.models[name]
            return view, view.last_model.version
        known = ", ".join(sorted({*self.pipelines, *self.models})) or "none"
        raise NotFound(f"unknown model {name!r}; this engine serves: {known}", "model")

    def describe(self, name: str) -> dict:
        """A pipeline's version, steps, and each model's inputs and outputs."""
        pipeline = self.get(name)
        steps = []
        for step in pipeline.steps:
            m = step.model
            steps.append(
                {
                    "name": step.name,
                    "model": {"name": m.name, "version": m.version, "sha": m.sha256},
                    "batchConfig": step.config.batch_config,
                    "inputs": [
                        {
                            "name": s.name,
                            "field": src,
                            "dtype": str(s.dtype),
                            "shape": list(s.shape),
                        }
                        for src, s in zip(step.sources, m.inputs, strict=True)
                    ],
                    "outputs": [
                        {"name": s.name, "dtype": str(s.dtype), "shape": list(s.shape)}
                        for s in step.output_specs
                    ],
                    "classes": step.classes,
                    # Set when the step decodes encoded images itself (what and how).
                    "preprocess": step.config.preprocess.model_dump(by_alias=True)
                    if step.config.preprocess
                    else None,
                }
            )
        return {
            "id": pipeline.name,
            "version": pipeline.config.version,
            "status": pipeline.status,
            "steps": steps,
        }

    def server_metadata(self) -> dict:
        """The OIP v2 server metadata, for REST and gRPC alike."""
        return {"name": "edgepipe", "version": __version__, "extensions": ["binary_tensor_data"]}

    def v2_metadata(self, name: str) -> dict:
        target, version = self.v2_target(name)
        return {
            "name": target.name,
            "versions": [version],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {**v2.tensor_metadata(spec), "name": field} for field, spec in target.input_specs
            ],
            "outputs": [v2.tensor_metadata(s) for s in target.steps[-1].output_specs],
        }

    def list_pipelines(self) -> list[dict[str, str]]:
        return [{"id": p.name, "status": p.status} for p in self.pipelines.values()]

    def list_models(self) -> list[dict[str, str]]:
        return list_models(self.pipelines.values())

    @property
    def ready(self) -> bool:
        loaded = bool(self.pipelines) and all(not p.error for p in self.pipelines.values())
        return loaded and not self.draining

    # -- inference ------------------------------------------------------------------------

    async def infer(
        self,
        name: str,
        read: Callable[[], Awaitable[Payload]],
        pick: Callable[[], Codec],
        *,
        models: bool = False,
        headers: Mapping[str, str] | None = None,
    ) -> Encoded:
        """One inference: read, look up, decode, coerce and fit, run, encode; with its
        request, error and latency metrics, whatever the outcome.

        ``read`` gives the payload (the transport's limits apply there), ``pick`` the codec
        pair, asked for only once the pipeline is known. ``models``: the name may also be
        one model of a pipeline (OIP v2 addresses those). ``headers``: the request's, for
        a split step's sticky key.
        """
        known = name in self.pipelines or (models and name in self.models)
        label = name if known else "_unknown"
        t0 = time.perf_counter()
        arrived = asyncio.get_running_loop().time()
        status = 500
        held: int | None = None
        inflight = self.metrics.inflight.labels(label)
        inflight.inc()
        self.idle_trim.begin()
        try:
            payload = await read()
            # Counted against the version it is about to run on: no await until _infer has
            # looked the pipeline up (engine/swap.py closes a version once its count is 0).
            held = id(self.pipelines.get(name) or self.models.get(name))
            self.leases[held] += 1
            answer = await self._infer(name, payload, pick, models, arrived, headers or {})
            status = 200
            return answer
        except Exception as exc:
            # EngineError, or the transport's own HTTP errors (413): both carry a status.
            status = getattr(exc, "status", 500)
            raise
        finally:
            if held is not None:
                self.leases[held] -= 1
            inflight.dec()
            self.idle_trim.end()
            self.metrics.requests.labels(label, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(label, str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - t0)

    async def _infer(
        self,
        name: str,
        payload: Payload,
        pick: Callable[[], Codec],
        models: bool,
        arrived: float,
        headers: Mapping[str, str],
    ) -> Encoded:
        if models:
            pipeline, version = self.v2_target(name)
        else:
            pipeline = self.get(name)
            version = pipeline.config.version or ""
        codec = pick()
        if not payload.size:
            raise BadRequest("the request body is empty; expected rows of tensor fields", "body")
        image = pipeline.image
        fields = [
            InputField(field, spec, image if image and image.field == field else None)
            for field, spec in pipeline.input_specs
        ]
        echo = payload.size <= self.settings.echo_limit_bytes

        def decode():
            t = time.perf_counter_ns()
            decoded = codec.decode(payload.data, fields, echo)
            rows, frames = prepare_rows(decoded, fields, self.settings.allow_nan)
            return decoded, rows, frames, time.perf_counter_ns() - t

        def respond(decoded: Decoded, result: RunResult, decode_ns: int) -> Response:
            return Response(
                pipeline_name=pipeline.name,
                pipeline_version=version,
                model_name=result.answered_by.name,
                model_version=result.answered_by.version,
                decode_ns=decode_ns,
                result=result,
                original=decoded.original,
                request=decoded.request,
            )

        # An image is small on the wire but costly to decode: always off the loop.
        size = INLINE_DECODE_BYTES + 1 if image else payload.size
        choice = self._choose(pipeline, headers)
        if not pipeline.batched:
            chain = Chain(self, pipeline, decode, respond, codec.encode, choice)
            encoded, state, rows, result, ran_ago = await chain.start(size)
            self._record(pipeline, state, result)
            if self.inference_log is not None:
                loop = asyncio.get_running_loop()
                elapsed = int((loop.time() - arrived - ran_ago()) * 1e9)
                self.inference_log.add(pipeline, version, result, rows, elapsed, _nbytes(result))
            return encoded
        decoded, rows, frames, decode_ns = await self._off_loop(size, decode)
        state = RunState(len(rows), frames, choice)
        result: RunResult = await self._run(pipeline, rows, state, arrived)
        self._record(pipeline, state, result)
        nbytes = _nbytes(result)
        if self.inference_log is not None:
            elapsed = int((asyncio.get_running_loop().time() - arrived) * 1e9)
            self.inference_log.add(pipeline, version, result, rows, elapsed, nbytes)
        return await self._off_loop(nbytes, codec.encode, respond(decoded, result, decode_ns))

    async def _run(
        self, pipeline: Pipeline, rows: list[dict[str, np.ndarray]], state: RunState, arrived
    ) -> RunResult:
        if pipeline.batched:
            return await batching.run(pipeline, rows, state, self.infer_pool, arrived)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.infer_pool, pipeline.run, rows, state)

    def _choose(self, pipeline: Pipeline, headers: Mapping[str, str]) -> dict[int, int]:
        """Each split step's variant for this request, by weight or by its sticky header."""
        choice = {}
        for k, step in enumerate(pipeline.steps):
            split = step.config.split
            if split is None or step.weights is None:
                continue
            # HTTP headers match in any case; gRPC metadata keys are lower-case.
            key = (
                (headers.get(split.header) or headers.get(split.header.lower()))
                if split.header
                else None
            )
            choice[k] = experiments.pick(step.weights, key, step.name, self.rng)
        return choice

    def _record(self, pipeline: Pipeline, state: RunState, result: RunResult) -> None:
        """Step times, split choices, shadow outcomes and validation failures in metrics."""
        m, name = self.metrics, pipeline.name
        for step, ns in zip(pipeline.steps, _step_totals(result), strict=True):
            m.step_latency.labels(name, step.name).observe(ns / 1e9)
        for k, index in state.choice.items():
            step = pipeline.steps[k]
            m.variants.labels(name, step.name, step.variants[index].name).inc()
        for event in result.shadow_events:
            m.shadows.labels(name, event.model, event.outcome).inc()
            if event.outcome == "ok":
                m.shadow_latency.labels(name, event.model).observe(event.seconds)
        for failed in result.check_failures:
            for rule in failed:
                m.check_failures.labels(name, rule).inc()

    async def _off_loop(self, size: int, fn, *args):
        """``fn(*args)`` in the decode pool, or inline when ``size`` bytes are too few to be
        worth the hop to a thread."""
        if size <= INLINE_DECODE_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)


def _nbytes(result: RunResult) -> int:
    return sum(o.nbytes for outs in result.outputs for o in outs)


def _step_totals(result: RunResult) -> list[int]:
    """Per-step time of this request: the largest per-row figure (batched rows share one)."""
    if not result.step_ns:
        return []
    return np.max(np.asarray(result.step_ns, dtype=np.int64), axis=0).tolist()
