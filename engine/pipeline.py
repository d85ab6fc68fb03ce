"""A loaded pipeline: its steps run in order over the rows of a request, with each step's
A/B choice, shadows and post-processing, then the validation rules over the last outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from edgepipe.config import PipelineConfig
from edgepipe.expressions import Rule
from edgepipe.yolo import Letterbox

from . import experiments
from .errors import BadRequest
from .preprocess import ImageInput
from .runtime import ENCODED, OnnxModel, StepRuntime, TensorSpec

log = logging.getLogger("edgepipe.engine")


@dataclass
class RunResult:
    """Per-row outputs of the last step, per-row step timings in ns, and what ran around
    them: each row's failed validations and shadow outputs, the shadows' outcomes, and the
    model that answered (the chosen variant of the last split step, else the last)."""

    outputs: list[list[np.ndarray]]
    step_ns: list[list[int]]
    output_specs: list[TensorSpec]
    check_failures: list[list[str]]
    shadow_data: list[dict[str, dict[str, np.ndarray]]]
    shadow_events: list[experiments.ShadowEvent]
    answered_by: OnnxModel


@dataclass
class RunState:
    """One request's run: its rows' frames, the split's choices (step index -> variant
    index), and what the steps report as they go."""

    rows: int
    frames: list[Letterbox] | None = None
    choice: dict[int, int] = field(default_factory=dict)
    step_ns: list[list[int]] = field(init=False)
    shadow_data: list[dict[str, dict[str, np.ndarray]]] = field(init=False)
    shadow_events: list[experiments.ShadowEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.step_ns = [[] for _ in range(self.rows)]
        self.shadow_data = [{} for _ in range(self.rows)]


@dataclass
class Pipeline:
    """A loaded pipeline. ``error`` is set when it failed to load; it then cannot serve."""

    config: PipelineConfig
    steps: list[StepRuntime] = field(default_factory=list)
    error: str | None = None
    rules: list[tuple[str, Rule]] = field(default_factory=list)
    shadows: experiments.Shadows | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def status(self) -> str:
        return "Error" if self.error else "Running"

    @property
    def input_specs(self) -> list[tuple[str, TensorSpec]]:
        """(request field, model input) pairs that the first step reads."""
        first = self.steps[0]
        if first.image is not None:
            return [(first.image.field, TensorSpec(first.image.field, ENCODED, (1,)))]
        return list(zip(first.sources, first.model.inputs, strict=True))

    @property
    def image(self) -> ImageInput | None:
        return self.steps[0].image

    @property
    def batched(self) -> bool:
        return any(step.batcher is not None for step in self.steps)

    @property
    def last_model(self) -> OnnxModel:
        return self.steps[-1].model

    def close(self) -> None:
        if self.shadows is not None:
            self.shadows.close()

    def run(self, rows: list[dict[str, np.ndarray]], state: RunState | None = None) -> RunResult:
        """Run every step over the rows; blocking, called from a pool thread (chain.py). Steps
        that batch across requests run unbatched here (see ``batching.run``)."""
        state = state or RunState(len(rows))
        current = rows
        for k, step in enumerate(self.steps):
            current = self.run_step(k, step, current, state)
        return self.result(current, state)

    def result(self, rows: list[dict[str, np.ndarray]], state: RunState) -> RunResult:
        """The run's answer, with each row's validations checked."""
        names = [o.name for o in self.steps[-1].output_specs]
        answered = self.last_model
        for k, step in enumerate(self.steps):
            if k in state.choice:
                answered = step.variants[state.choice[k]]
        return RunResult(
            [[row[n] for n in names] for row in rows],
            state.step_ns,
            self.steps[-1].output_specs,
            [experiments.failures(self.rules, row) for row in rows],
            state.shadow_data,
            state.shadow_events,
            answered,
        )

    def run_step(
        self, k: int, step: StepRuntime, rows: list[dict[str, np.ndarray]], state: RunState
    ) -> list[dict[str, np.ndarray]]:
        """One step over every row: the first reads request fields, later ones the previous
        step's outputs. Returns each row's outputs by name."""
        feeds = [self.feeds(step, row, k) for row in rows]
        model = step.variants[state.choice.get(k, 0)]
        calls = self.shadows.start(step.shadows, feeds) if step.shadows and self.shadows else []
        if step.config.batch_config == "batch" and model.batch_dynamic and len(rows) > 1:
            raw = self._run_batched(step, model, feeds, state.step_ns)
        else:
            raw = []
            for i, feed in enumerate(feeds):
                t0 = time.perf_counter_ns()
                raw.append(model.predict(feed))
                state.step_ns[i].append(time.perf_counter_ns() - t0)
        if calls:
            assert self.shadows is not None
            data, events = self.shadows.collect(calls, len(rows))
            for mine, theirs in zip(state.shadow_data, data, strict=True):
                mine.update(theirs)
            state.shadow_events += events
        return self.finish_step(k, step, raw, state.frames)

    @staticmethod
    def finish_step(
        k: int,
        step: StepRuntime,
        raw: list[list[np.ndarray]],
        frames: list[Letterbox] | None,
    ) -> list[dict[str, np.ndarray]]:
        own = frames if k == 0 and step.image is not None else None
        names = [o.name for o in step.output_specs]
        return [
            dict(zip(names, step.finish(o, own[i] if own else None), strict=True))
            for i, o in enumerate(raw)
        ]

    def warm_up(self) -> None:
        """One call with zeros, so that onnxruntime's allocations and lazy set-up happen
        before the first request (and show in the start-up RSS, not as growth later).
        Symbolic dims take 1; a model that refuses that input is simply not warmed."""
        row = {}
        first = self.steps[0]
        for name, spec in zip(first.sources, first.model.inputs, strict=True):
            shape = tuple(d if isinstance(d, int) else 1 for d in spec.shape)
            row[name] = np.zeros(shape, dtype=spec.dtype)
        try:
            self.run([row])
        except Exception as exc:
            log.info("pipeline %s: warm-up skipped: %s", self.name, exc)

    @staticmethod
    def feeds(step: StepRuntime, row: dict[str, np.ndarray], k: int) -> dict[str, np.ndarray]:
        feeds = {}
        for source, spec in zip(step.sources, step.model.inputs, strict=True):
            arr = row[source]
            if k > 0:
                # Between steps the data is ours, so adapt dtype and shape quietly.
                if arr.dtype != spec.dtype:
                    arr = arr.astype(spec.dtype)
                arr = spec.fit(arr, f"{step.name}.{spec.name}")
            feeds[spec.name] = np.ascontiguousarray(arr)
        return feeds

    @staticmethod
    def _run_batched(
        step: StepRuntime,
        model: OnnxModel,
        feeds: list[dict[str, np.ndarray]],
        step_ns: list[list[int]],
    ) -> list[list[np.ndarray]]:
        for f in feeds:
            row_sizes = {a.shape[0] for a in f.values()}
            if len(row_sizes) != 1:
                raise BadRequest(
                    f"step {step.name!r}: inputs of one row disagree on the batch size "
                    f"({sorted(row_sizes)})"
                )
        for spec in model.inputs:
            shapes = {f[spec.name].shape for f in feeds}
            if len({shape[1:] for shape in shapes}) != 1:
                raise BadRequest(
                    f"tensor field {spec.name!r}: rows must share one shape to be batched, "
                    f"got {sorted(shapes)}",
                    spec.name,
                )
        per_row, elapsed = model.predict_stacked(feeds, "rows", "use batchConfig: single")
        for i in range(len(feeds)):
            step_ns[i].append(elapsed)
        return per_row
