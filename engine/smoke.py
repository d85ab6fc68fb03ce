"""The smoke test a new version passes before it serves: one sample input through every step.

The sample is a tensor of the first model's input shape (symbolic dimensions as 1, values
0.5, so that an ``x/x`` or a log sees no zero), or a grey PNG when the pipeline decodes
images itself. The version fails when a step raises, when an output holds NaN or Inf, when
an output's shape is not what the model declares, or when a validation cannot be evaluated.
A validation that simply does not hold on a grey sample is no failure: it judges real data.
"""

from __future__ import annotations

import io

import numpy as np

from .pipeline import Pipeline, RunState


class SmokeFailed(Exception):
    """The sample did not go through; the message says where and why."""


def sample_row(pipeline: Pipeline) -> tuple[dict[str, np.ndarray], RunState]:
    first = pipeline.steps[0]
    if first.image is not None:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (first.image.width, first.image.height), (128, 128, 128)).save(buf, "PNG")
        tensor, frame = first.image(buf.getvalue(), 0)
        return {first.image.field: tensor}, RunState(1, [frame])
    row = {}
    for name, spec in zip(first.sources, first.model.inputs, strict=True):
        shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
        fill = 0.5 if np.issubdtype(spec.dtype, np.floating) else 1
        row[name] = np.full(shape, fill, dtype=spec.dtype)
    return row, RunState(1)


def smoke_test(pipeline: Pipeline) -> None:
    """SmokeFailed unless the sample runs cleanly through ``pipeline`` (blocking)."""
    row, state = sample_row(pipeline)
    try:
        result = pipeline.run([row], state)
    except Exception as exc:
        raise SmokeFailed(f"the sample input fails: {exc}") from None
    for out, spec in zip(result.outputs[0], result.output_specs, strict=True):
        arr = np.asarray(out)
        if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
            raise SmokeFailed(f"output {spec.name!r} holds NaN or Inf on the sample input")
        if len(spec.shape) and arr.ndim != len(spec.shape) and arr.ndim + 1 != len(spec.shape):
            raise SmokeFailed(
                f"output {spec.name!r} has shape {list(arr.shape)}, the model declares "
                f"{list(spec.shape)}"
            )
