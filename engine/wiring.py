"""Pipelines built from their configs: models loaded, steps wired to each other, image
preprocess and batching checked against the models they serve."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgepipe.config import ModelRef, PipelineConfig, Step
from edgepipe.expressions import ExpressionError, Rule, parse

from .calls import Calls
from .experiments import Shadows
from .pipeline import Pipeline
from .preprocess import ImageInput, PreprocessError
from .runtime import OnnxModel, StepRuntime
from .settings import DEFAULT_MAX_IMAGE_PIXELS, DEFAULT_SHADOW_TIMEOUT_MS

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("edgepipe.engine")


@dataclass(frozen=True)
class Loading:
    """How a pipeline's models load: ``cpus``, a call's intra-op threads among others
    (``Settings.threads_per_call``; a shadow gets one); ``calls``, the engine's model calls,
    which they share; the image and shadow limits of its steps."""

    cpus: int
    calls: Calls
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    shadow_timeout_ms: int = DEFAULT_SHADOW_TIMEOUT_MS

    @classmethod
    def of(cls, settings: Settings, calls: Calls) -> Loading:
        return cls(
            settings.threads_per_call, calls, settings.max_image_pixels, settings.shadow_timeout_ms
        )


def _wire(step: Step, model: OnnxModel, previous: list[str] | None) -> list[str]:
    """Which request fields / previous outputs feed each model input."""
    inputs = [spec.name for spec in model.inputs]
    fields = list(step.tensor_fields)
    if fields:
        if len(fields) != len(inputs):
            raise ValueError(
                f"step {step.step_name!r}: tensorFields has {len(fields)} names but the model "
                f"has {len(inputs)} inputs ({', '.join(inputs)})"
            )
        if previous is not None:
            missing = [f for f in fields if f not in previous]
            if missing:
                raise ValueError(
                    f"step {step.step_name!r}: tensorFields {missing} are not outputs of the "
                    f"step before ({', '.join(previous)})"
                )
        return fields
    if previous is None:
        return inputs
    sources = []
    for i, name in enumerate(inputs):
        if name in previous:
            sources.append(name)
        elif i < len(previous):
            sources.append(previous[i])
        else:
            raise ValueError(
                f"step {step.step_name!r}: input {name!r} matches no output of the step before "
                f"({', '.join(previous)}) by name or position"
            )
    return sources


def _image_input(
    step: Step, model: OnnxModel, sources: list[str], where: str, max_pixels: int
) -> ImageInput | None:
    if step.preprocess is None:
        return None
    if len(model.inputs) != 1:
        raise ValueError(
            f"{where}.preprocess: the model has {len(model.inputs)} inputs; an image "
            "preprocess fills a model with one input"
        )
    spec = model.inputs[0]
    try:
        return ImageInput.build(
            step.preprocess, sources[0], spec.shape, spec.dtype, max_pixels, f"{where}.preprocess"
        )
    except PreprocessError as exc:
        raise ValueError(str(exc)) from None


def _check_batching(step: Step, model: OnnxModel, where: str) -> None:
    if step.batching is None or model.batch_dynamic:
        return
    fixed = [f"{s.name}{s.describe_shape()}" for s in model.inputs if not s.batch_dynamic]
    raise ValueError(
        f"{where}.batching: model {model.name!r} has a fixed batch dimension "
        f"({', '.join(fixed)}); batching needs a dynamic first dimension on every input"
    )


def _model(
    ref: ModelRef, path: Path | None, where: str, loading: Loading, shadow: bool = False
) -> OnnxModel:
    if path is None:
        raise ValueError(f"{where}: no file for model {ref.name!r}")
    # One thread for a shadow: shadows use the cores' spare time, not the main model's.
    cpus = 1 if shadow else loading.cpus
    try:
        return OnnxModel(ref, path, cpus, loading.calls, shadow=shadow)
    except Exception as exc:
        raise ValueError(f"{where}: cannot load model {ref.name!r} from {path}: {exc}") from exc


def _same_signature(model: OnnxModel, other: OnnxModel, where: str, role: str) -> None:
    """A variant must take and give what the step's model does; a shadow must take it."""
    mine = [(s.dtype, s.shape) for s in model.inputs]
    theirs = [(s.dtype, s.shape) for s in other.inputs]
    if mine != theirs:
        raise ValueError(
            f"{where}: {role} {other.name!r} takes {_sig(other.inputs)}, but the step's model "
            f"{model.name!r} takes {_sig(model.inputs)}"
        )
    if role == "variant" and [s.name for s in other.outputs] != [s.name for s in model.outputs]:
        raise ValueError(
            f"{where}: variant {other.name!r} answers {_sig(other.outputs)}, but the step's "
            f"model {model.name!r} answers {_sig(model.outputs)}"
        )


def _sig(specs) -> str:
    return ", ".join(f"{s.name}{s.describe_shape()}:{s.dtype}" for s in specs)


def _step(step: Step, i: int, paths: dict[str, Path], loading: Loading, previous) -> StepRuntime:
    where = f"steps[{i}]"
    model = _model(step.model, paths.get(f"{where}.model"), f"{where}.model", loading)
    sources = _wire(step, model, previous)
    image = _image_input(step, model, sources, where, loading.max_image_pixels)
    _check_batching(step, model, where)
    runtime = StepRuntime(step, model, sources, image=image)
    if step.split is not None:
        for j, variant in enumerate(step.split.variants):
            at = f"{where}.split.variants[{j}].model"
            other = _model(variant.model, paths.get(at), at, loading)
            _same_signature(model, other, at, "variant")
            runtime.variants.append(other)
        weights = [step.split.weight, *(v.weight for v in step.split.variants)]
        runtime.weights = np.asarray(weights, dtype=np.float64)
    for j, ref in enumerate(step.shadows):
        at = f"{where}.shadows[{j}]"
        shadow = _model(ref, paths.get(at), at, loading, shadow=True)
        _same_signature(model, shadow, at, "shadow")
        runtime.shadows.append(shadow)
    return runtime


def _rules(config: PipelineConfig, outputs: list[str]) -> list[tuple[str, Rule]]:
    rules = []
    for i, validation in enumerate(config.validations):
        try:
            rules.append((validation.name, parse(validation.expr, frozenset(outputs))))
        except ExpressionError as exc:
            raise ValueError(f"validations[{i}].expr: {exc}") from None
    return rules


def load_pipeline(
    config: PipelineConfig,
    model_paths: dict[str, Path],
    loading: Loading,
) -> Pipeline:
    """Load every step's models. A failure gives a Pipeline in Error rather than raising."""
    pipeline = Pipeline(config)
    previous: list[str] | None = None
    try:
        for i, step in enumerate(config.steps):
            runtime = _step(step, i, model_paths, loading, previous)
            pipeline.steps.append(runtime)
            previous = [o.name for o in runtime.output_specs]
            for m in [*runtime.variants, *runtime.shadows]:
                log.info(
                    "loaded step %s: model %s version %s sha256 %s inputs [%s] outputs [%s]",
                    step.step_name,
                    m.name,
                    m.version,
                    m.sha256[:12],
                    _sig(m.inputs),
                    _sig(m.outputs),
                )
        pipeline.rules = _rules(config, previous or [])
    except ValueError as exc:
        pipeline.error = str(exc)
        log.error("pipeline %s failed to load: %s", config.name, exc)
        return pipeline
    if any(step.shadows for step in pipeline.steps):
        workers = min(4, sum(len(step.shadows) for step in pipeline.steps))
        pipeline.shadows = Shadows(workers, loading.shadow_timeout_ms / 1000, config.name)
    pipeline.warm_up()
    return pipeline
