"""The data plane: look up a pipeline, decode the body, run the steps, encode the answer.

Everything heavy runs in thread pools, never on the event loop: decoding in ``decode_pool``
(sized from ``CONFIG_CPUS``) and model calls in ``infer_pool``.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .codecs import Decoded, InputField, Response, coerce, pick_decoder, pick_encoder, v2
from .errors import BadRequest, NotFound, Unavailable
from .metrics import Metrics
from .runtime import Pipeline, RunResult, StepRuntime
from .settings import Settings

# Bodies below this are decoded on the loop: a pool hop costs more than the work.
INLINE_DECODE_BYTES = 64 * 1024


@dataclass
class Answer:
    media_type: str
    body: Any


class DataPlane:
    def __init__(self, settings: Settings, pipelines: dict[str, Pipeline], metrics: Metrics):
        self.settings = settings
        self.pipelines = pipelines
        self.metrics = metrics
        self.models = _model_views(pipelines.values())
        self.decode_pool = ThreadPoolExecutor(settings.cpus, thread_name_prefix="decode")
        self.infer_pool = ThreadPoolExecutor(settings.infer_workers, thread_name_prefix="infer")

    def close(self) -> None:
        self.decode_pool.shutdown(wait=False, cancel_futures=True)
        self.infer_pool.shutdown(wait=True, cancel_futures=True)

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

    async def infer_v2(
        self, name: str, body: bytes, header_length: str | None
    ) -> tuple[bytes, int | None]:
        """An Open Inference Protocol v2 request: (body, JSON header length or None)."""
        target, version = self.v2_target(name)
        loop = asyncio.get_running_loop()

        def decode() -> tuple[dict, dict[str, np.ndarray]]:
            request, inputs = v2.decode_request(body, header_length)
            row = {}
            for field, spec in target.input_specs:
                if field not in inputs:
                    raise BadRequest(
                        f"missing input {field!r}; {name} takes "
                        f"{[f for f, _ in target.input_specs]}",
                        field,
                    )
                arr = coerce(inputs[field], spec, field, self.settings.allow_nan)
                row[field] = spec.fit(arr, field)
            return request, row

        request, row = await self._off_loop(len(body), decode)
        result = await loop.run_in_executor(self.infer_pool, target.run, [row])
        names = [s.name for s in result.output_specs]
        outputs = list(zip(names, result.outputs[0], strict=True))
        return await self._off_loop(
            _nbytes(result), v2.encode_response, request, target.name, version, outputs
        )

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
        models = []
        for p in self.pipelines.values():
            if p.error:
                for step in p.config.steps:
                    ref = step.model
                    models.append(
                        {
                            "name": ref.name,
                            "sha": ref.sha256 or "",
                            "status": "Error",
                            "version": ref.version or "",
                        }
                    )
                continue
            for step in p.steps:
                m = step.model
                models.append(
                    {"name": m.name, "sha": m.sha256, "status": "Running", "version": m.version}
                )
        return models

    @property
    def ready(self) -> bool:
        return bool(self.pipelines) and all(not p.error for p in self.pipelines.values())

    async def infer(
        self, name: str, body: bytes, content_type: str, accept: str
    ) -> tuple[Pipeline, Answer]:
        pipeline = self.get(name)
        decoder = pick_decoder(content_type)
        media_type, encoder = pick_encoder(accept)
        if not body:
            raise BadRequest("the request body is empty; expected rows of tensor fields", "body")
        fields = [InputField(field, spec) for field, spec in pipeline.input_specs]
        echo = len(body) <= self.settings.echo_limit_bytes
        loop = asyncio.get_running_loop()

        def decode() -> tuple[Decoded, int]:
            t0 = time.perf_counter_ns()
            decoded = decoder(body, fields, self.settings.allow_nan, echo)
            decoded.rows = [
                {f.name: f.spec.fit(row[f.name], f.name) for f in fields} for row in decoded.rows
            ]
            return decoded, time.perf_counter_ns() - t0

        decoded, decode_ns = await self._off_loop(len(body), decode)
        result: RunResult = await loop.run_in_executor(self.infer_pool, pipeline.run, decoded.rows)
        for step, ns in zip(pipeline.steps, _step_totals(result), strict=True):
            self.metrics.step_latency.labels(pipeline.name, step.name).observe(ns / 1e9)
        response = Response(
            pipeline_name=pipeline.name,
            model_name=pipeline.last_model.name,
            model_version=pipeline.last_model.version,
            decode_ns=decode_ns,
            result=result,
            original=decoded.original,
        )
        payload = await self._off_loop(_nbytes(result), encoder, response)
        return pipeline, Answer(media_type, payload)

    async def _off_loop(self, size: int, fn, *args):
        """``fn(*args)`` in the decode pool, or inline when ``size`` bytes are too few to be
        worth the hop to a thread."""
        if size <= INLINE_DECODE_BYTES:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.decode_pool, fn, *args)


def _model_views(pipelines) -> dict[str, Pipeline]:
    """Each loaded model as a one-step pipeline, so that v2 clients can address it alone."""
    views: dict[str, Pipeline] = {}
    for p in pipelines:
        if p.error:
            continue
        for step in p.steps:
            m = step.model
            if m.name in views:
                continue
            config = p.config.model_copy(update={"name": m.name, "steps": [step.config]})
            inputs = [spec.name for spec in m.inputs]
            views[m.name] = Pipeline(config, [StepRuntime(step.config, m, inputs)])
    return views


def _nbytes(result: RunResult) -> int:
    return sum(o.nbytes for outs in result.outputs for o in outs)


def _step_totals(result: RunResult) -> list[int]:
    """Per-step time of this request: the largest per-row figure (batched rows share one)."""
    if not result.step_ns:
        return []
    return np.max(np.asarray(result.step_ns, dtype=np.int64), axis=0).tolist()
