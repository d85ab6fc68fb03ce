"""Pipelines built from their configs: models loaded, steps wired to each other, image
preprocess and batching checked against the models they serve."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from edgepipe.config import PipelineConfig, Step

from .preprocess import ImageInput, PreprocessError
from .runtime import OnnxModel, Pipeline, StepRuntime
from .settings import DEFAULT_MAX_IMAGE_PIXELS

log = logging.getLogger("edgepipe.engine")


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


def load_pipeline(
    config: PipelineConfig,
    model_paths: Sequence[Path],
    cpus: int,
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Pipeline:
    """Load every step's model. A failure gives a Pipeline in Error rather than raising."""
    pipeline = Pipeline(config)
    previous: list[str] | None = None
    try:
        for i, (step, path) in enumerate(zip(config.steps, model_paths, strict=True)):
            try:
                model = OnnxModel(step.model, path, cpus)
            except Exception as exc:
                raise ValueError(
                    f"steps[{i}] ({step.step_name}): cannot load model {step.model.name!r} "
                    f"from {path}: {exc}"
                ) from exc
            sources = _wire(step, model, previous)
            where = f"steps[{i}]"
            image = _image_input(step, model, sources, where, max_image_pixels)
            _check_batching(step, model, where)
            runtime = StepRuntime(step, model, sources, image=image)
            pipeline.steps.append(runtime)
            previous = [o.name for o in runtime.output_specs]
            log.info(
                "loaded step %s: model %s version %s sha256 %s inputs %s outputs %s",
                step.step_name,
                model.name,
                model.version,
                model.sha256[:12],
                [f"{s.name}{s.describe_shape()}:{s.dtype}" for s in model.inputs],
                [f"{s.name}{s.describe_shape()}:{s.dtype}" for s in model.outputs],
            )
    except ValueError as exc:
        pipeline.error = str(exc)
        log.error("pipeline %s failed to load: %s", config.name, exc)
        return pipeline
    pipeline.warm_up()
    return pipeline
