"""The model layer: onnxruntime sessions, tensor specs, and a pipeline that chains steps."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgepipe import yolo
from edgepipe.config import ModelRef, Step, model_version
from edgepipe.outputs import DETECTIONS as DETECTIONS_NAME
from edgepipe.yolo import Letterbox

from . import memory
from .calls import Calls
from .errors import BadRequest, ModelFailure
from .preprocess import ImageInput

# onnxruntime's type strings -> numpy dtypes the engine accepts.
ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}

Dim = int | str | None  # int: fixed; str: a symbolic name; None: unnamed dynamic


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, dtype and shape (symbolic dims stay symbolic)."""

    name: str
    dtype: np.dtype
    shape: tuple[Dim, ...]

    @property
    def batch_dynamic(self) -> bool:
        return bool(self.shape) and not isinstance(self.shape[0], int)

    def describe_shape(self) -> str:
        return "[" + ",".join(str(d) if d is not None else "?" for d in self.shape) + "]"

    def fit(self, arr: np.ndarray, field: str) -> np.ndarray:
        """Return ``arr`` in this spec's shape, or raise BadRequest naming ``field``.

        Accepted: the exact shape (symbolic dims take any size), the shape without its
        leading batch dimension (a batch of one is added), or a flat list whose length
        fits when the batch is one and every other dim is fixed.
        """
        shape = self.shape
        if shape_matches(arr.shape, shape):
            return arr
        if not shape:
            raise BadRequest(
                f"tensor field {field!r}: expected a scalar, got shape {list(arr.shape)}", field
            )
        leading = shape[0] if isinstance(shape[0], int) else 1
        if arr.ndim == len(shape) - 1 and leading == 1 and shape_matches(arr.shape, shape[1:]):
            return arr[np.newaxis]
        if arr.ndim == 1 and all(isinstance(d, int) for d in shape[1:]):
            target = (leading, *shape[1:])
            if int(np.prod(target, dtype=np.int64)) == arr.size:
                return arr.reshape(target)
        raise BadRequest(
            f"tensor field {field!r}: expected shape {self.describe_shape()} "
            f"(or a flat list of its size), got {list(arr.shape)}",
            field,
        )


def shape_matches(actual: Sequence[int], expected: Sequence[Dim]) -> bool:
    if len(actual) != len(expected):
        return False
    return all(not isinstance(e, int) or e == a for a, e in zip(actual, expected, strict=True))


def _spec(arg: ort.NodeArg) -> TensorSpec:
    dtype = ORT_DTYPES.get(arg.type)
    if dtype is None:
        raise ValueError(f"{arg.name}: unsupported tensor type {arg.type}")
    dims: list[Dim] = []
    for d in arg.shape:
        dims.append(d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None))
    return TensorSpec(arg.name, dtype, tuple(dims))


log = logging.getLogger("edgepipe.engine")


def _session(path: Path, threads: int, spin: str) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0" if spin == "off" else "1")
    if spin == "calls":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxModel:
    """One loaded ONNX model: its session and signature.

    ``cpus``: the intra-op threads of a call among others (``CONFIG_CPUS / INFER_WORKERS``).
    A ``shadow`` always runs on ``cpus`` threads and is not counted as another call: it
    takes the cores' spare time (``experiments.py``).
    ``calls``: the engine's model calls (``calls.Calls``). A call that starts alone (no
    other model call running, no other request in flight) gets ``calls.lone_threads`` from
    ``session``. The session of ``cpus`` threads for the others is made by the first call
    that starts beside another and dropped when the engine is idle (``Calls.rest``) or the
    calls have started alone for ``Calls.keep_among_s``: an engine that never serves
    concurrent calls, or rests between bursts, holds one session per model.
    One intra-op pool shared by concurrent calls costs 1.5x the CPU per call of one thread
    each (``bench/README.md``), hence two sessions rather than one; but the second is made
    only where the container's memory limit has room for it (``_room``): else the calls
    take turns on ``session``, one at a time, as with ``INFER_WORKERS=1``.
    """

    def __init__(
        self, ref: ModelRef, path: Path, cpus: int, calls: Calls, shadow: bool = False
    ) -> None:
        self.ref = ref
        self.name = ref.name
        self.version = model_version(ref)
        self.sha256 = ref.sha256 or ""
        self._path, self._threads = path, cpus
        self._shadow, self._calls = shadow, calls
        lone = cpus if shadow else max(cpus, calls.lone_threads)
        before = memory.rss()
        self.session = _session(path, lone, calls.spinning)
        # What a second session would cost: the RSS this one added, its first call's, and
        # the file's size (a 192 MB model's second session took 422 MB under 3 calls, 346 MB
        # at load, and its first call showed none: the arena reused freed heap).
        self._cost = memory.SessionCost(
            load=max(0, memory.rss() - before), file=path.stat().st_size
        )
        self._among: ort.InferenceSession | None = None  # cpus threads, once needed
        self._among_wanted = self._serial = lone > cpus
        self._one = threading.Lock()  # ``session`` runs one call at a time (``_serial``)
        self._making = threading.Lock()
        self._beside_at = 0.0  # when a call last started beside another (monotonic)
        self._refused_at: float | None = None  # when the memory limit last had no room
        self.inputs = [_spec(a) for a in self.session.get_inputs()]
        self.outputs = [_spec(a) for a in self.session.get_outputs()]
        self._output_names = [o.name for o in self.outputs]
        # Class names travel with the model where its exporter wrote them (Ultralytics).
        self.classes = yolo.class_names(self.session.get_modelmeta().custom_metadata_map)

    @property
    def batch_dynamic(self) -> bool:
        return all(spec.batch_dynamic for spec in self.inputs)

    @property
    def concurrent_session(self) -> ort.InferenceSession | None:
        """The session of calls that start beside others, once made (else None)."""
        return self._among

    def predict(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._shadow:
            return self._run(self.session, feeds)
        alone = self._calls.begin()
        try:
            session = self._pick(alone)
            if session is not self.session or not self._serial:
                return self._run(session, feeds)
            with self._one:
                if self._cost.call >= 0:
                    return self._run(session, feeds)
                before = memory.rss()  # the first call (the warm-up): its arena's growth
                out = self._run(session, feeds)
                self._cost.call = max(0, memory.rss() - before)
                return out
        finally:
            self._calls.end()

    def _run(self, session: ort.InferenceSession, feeds: dict[str, np.ndarray]):
        try:
            return session.run(self._output_names, feeds)
        except Exception as exc:  # onnxruntime raises its own types; all are model failures
            raise ModelFailure(f"model {self.name!r} failed: {exc}") from exc

    def _pick(self, alone: bool) -> ort.InferenceSession:
        now = time.monotonic()
        if alone or not self._among_wanted:
            keep = self._calls.keep_among_s
            if alone and self._among is not None and now - self._beside_at > keep:
                self.drop_among()  # the calls are alone again: give its memory back
            return self.session
        self._beside_at = now
        among = self._among  # read once: ``drop_among`` may clear it meanwhile
        if among is not None:
            return among
        # Made here, by the first call beside another (~40 ms for YOLOv8n; the calls that
        # start meanwhile wait for it): calls never share ``session``, so its arena keeps
        # one call's tensors.
        with self._making:
            among = self._among
            if among is None:
                if not self._room(now):
                    return self.session  # the calls take turns on it, as INFER_WORKERS=1
                try:
                    among = self._among = _session(self._path, self._threads, self._calls.spinning)
                except Exception:  # the calls take turns on ``session`` from now on
                    log.exception("model %r: no session for concurrent calls", self.name)
                    self._among_wanted = False
                    return self.session
                with self._calls.lock:
                    self._calls.among_made.add(self)
            return among

    def _room(self, now: float) -> bool:
        """Whether the container's memory limit leaves room for a second session
        (``memory.SessionCost``, ``memory.room_for``); looked at again at most every
        ``Calls.keep_among_s``."""
        if self._cost.call < 0:
            return False  # no call measured yet: this one waits for the first to end
        if self._refused_at is not None and now - self._refused_at < self._calls.keep_among_s:
            return False
        calls = -(-self._calls.lone_threads // self._threads)
        cost = self._cost.total(calls)
        fits, figures = memory.room_for(cost)
        if fits or figures is None:
            return True
        if self._refused_at is None:  # said once
            limit, used, total, load, file, call = (
                round(v / memory.MIB) for v in (*figures, cost, *astuple(self._cost))
            )
            log.info(
                "model %r: no second session for concurrent calls: it would take ~%d MiB "
                "(its load %d + its file %d + %d calls x %d MiB) and the memory limit of %d "
                "MiB has %d MiB in use; concurrent calls take turns on its one session",
                *(self.name, total, load, file, calls, call, limit, used),
            )
        self._refused_at = now
        return False

    def drop_among(self) -> None:
        """Give the session for concurrent calls back (when no call runs: idle)."""
        with self._calls.lock:
            if self._among is not None:
                self._among = None
                self._calls.among_made.discard(self)

    def predict_stacked(
        self, feeds: list[dict[str, np.ndarray]], unit: str, advice: str
    ) -> tuple[list[list[np.ndarray]], int]:
        """Several feeds (of one shape but the batch dimension) in one call: stacked along
        the batch dimension, run, and each output split back; (each feed's outputs, ns).
        An output that does not keep the batch dimension is a ModelFailure that names the
        ``unit`` split back into and gives ``advice``."""
        if len(feeds) == 1:
            stacked = feeds[0]
        else:
            stacked = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
        t0 = time.perf_counter_ns()
        outputs = self.predict(stacked)
        ns = time.perf_counter_ns() - t0
        bounds = np.cumsum([0, *(next(iter(f.values())).shape[0] for f in feeds)])
        for out in outputs:
            if out.ndim == 0 or out.shape[0] != bounds[-1]:
                raise ModelFailure(
                    f"model {self.name!r}: output of shape {list(out.shape)} cannot be split "
                    f"back into {len(feeds)} {unit}; {advice}"
                )
        parts = [[out[bounds[i] : bounds[i + 1]] for out in outputs] for i in range(len(feeds))]
        return parts, ns


@dataclass
class StepRuntime:
    """A step with its model and the names (or positions) it reads from the step before;
    the first step may fill its input from an encoded image, and any step may batch
    across requests."""

    config: Step
    model: OnnxModel
    sources: list[str]
    image: ImageInput | None = None
    batcher: Any = None  # a batching.Batcher, set by the data plane (batching imports us)
    # A split step's models: [its own, *variants], their weights; and its shadows.
    variants: list[OnnxModel] = field(default_factory=list)
    weights: np.ndarray | None = None
    shadows: list[OnnxModel] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.variants:
            self.variants = [self.model]

    @property
    def name(self) -> str:
        return self.config.step_name

    @property
    def classes(self) -> list[str]:
        """Class names: the post-step's ``classes`` in the config, else the model's own."""
        post = self.config.postprocess
        return (post.classes if post is not None and post.classes else None) or self.model.classes

    @property
    def output_specs(self) -> list[TensorSpec]:
        if self.config.postprocess is not None:
            return [DETECTIONS]
        return self.model.outputs

    def finish(self, outputs: list[np.ndarray], frame: Letterbox | None = None) -> list[np.ndarray]:
        """The step's outputs, after its optional post-processing. ``frame``: how this
        step's own preprocess fitted the image, so that boxes come back in its pixels."""
        post = self.config.postprocess
        if post is None:
            return outputs
        try:
            dets = yolo.decode(
                outputs[0],
                frame,
                confidence_thres=post.confidence_thres,
                iou_thres=post.iou_thres,
                classes=self.classes,
            )
        except ValueError as exc:
            raise ModelFailure(f"step {self.name!r}: yolov8 post-processing: {exc}") from exc
        rows = [[*d.box, d.score, d.class_id] for d in dets]
        return [np.asarray(rows, dtype=np.float32).reshape(len(rows), 6)]


# A YOLOv8 post-processed step answers one tensor: a row per box: x1, y1, x2, y2 (in the
# original image's pixels after an image preprocess, else the model input's), score, class.
# The postprocess's one output; its name is the library's, which checks rules against it.
DETECTIONS = TensorSpec(DETECTIONS_NAME, np.dtype(np.float32), (None, 6))

# A request field that carries one encoded image per row.
ENCODED = np.dtype(object)
