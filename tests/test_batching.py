"""Dynamic batching: concurrent requests stacked into one model call and split back out,
never mixed across shapes, never kept waiting past maxDelayMs; and the load-time checks
of the batching and preprocess fields."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson
import pytest

from edgepipe.config import parse_config
from edgepipe.engine.calls import Calls
from edgepipe.engine.wiring import Loading, load_pipeline
from tests.helpers import onnx_models as m
from tests.helpers.engine_http import JSON, get, post
from tests.helpers.engines import EngineFactory


def batched_config(model: Path, name: str, size: int, delay_ms: float) -> dict:
    return {
        "name": name,
        "steps": [
            {
                "model": {"name": "m", "path": str(model)},
                "batching": {"maxBatchSize": size, "maxDelayMs": delay_ms},
            }
        ],
    }


def histogram(metrics: str, name: str) -> dict[str, float]:
    """The bucket counts (by ``le``) and the count of one histogram."""
    out = {}
    for line in metrics.splitlines():
        match = re.match(rf'{name}_bucket{{le="([^"]+)".*}} (\S+)', line)
        if match:
            out[match[1]] = float(match[2])
        match = re.match(rf"{name}_count{{.*}} (\S+)", line)
        if match:
            out["count"] = float(match[1])
    return out


def infer(url: str, x: np.ndarray) -> np.ndarray:
    status, _, raw = post(url, orjson.dumps([{"x": x.tolist()}]), JSON)
    assert status == 200, raw
    (rec,) = orjson.loads(raw)
    out = rec["outputs"][0]["Float"]
    return np.asarray(out["data"], dtype=np.float32).reshape(out["dim"])


def test_concurrent_requests_share_model_calls_and_get_their_own_rows(
    start_engine: EngineFactory, models_dir: Path
) -> None:
    engine = start_engine(config=batched_config(models_dir / "add1.onnx", "add", 4, 200))
    url = engine.url + "/pipelines/add"
    xs = [np.full((1, 4), i, dtype=np.float32) for i in range(12)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda x: infer(url, x), xs))
    for x, got in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(got, x + 1)
    hist = histogram(get(engine.url + "/metrics")[1].decode(), "edgepipe_batch_size")
    # Fewer model calls than requests, and none over maxBatchSize.
    assert hist["count"] < 12
    assert hist["4.0"] == hist["count"]


def test_requests_of_different_shapes_are_never_mixed(
    start_engine: EngineFactory, tmp_path: Path
) -> None:
    model = m.identity(tmp_path / "id.onnx", np.float32, shape=("N", "M"))
    engine = start_engine(config=batched_config(model, "shapes", 8, 150))
    url = engine.url + "/pipelines/shapes"
    xs = [np.full((1, 3 if i % 2 else 5), i, dtype=np.float32) for i in range(10)]
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda x: infer(url, x), xs))
    for x, got in zip(xs, answers, strict=True):
        np.testing.assert_array_equal(got, x)
    hist = histogram(get(engine.url + "/metrics")[1].decode(), "edgepipe_batch_size")
    assert hist["count"] >= 2  # at least one call per shape


def test_a_lone_request_waits_for_company_no_longer_than_max_delay(
    start_engine: EngineFactory, models_dir: Path
) -> None:
    engine = start_engine(config=batched_config(models_dir / "add1.onnx", "lone", 8, 300))
    url = engine.url + "/pipelines/lone"
    infer(url, np.zeros((1, 4), np.float32))  # connection and first-call set-up
    t0 = time.perf_counter()
    np.testing.assert_array_equal(infer(url, np.ones((1, 4), np.float32)), np.full((1, 4), 2))
    took = time.perf_counter() - t0
    assert 0.29 <= took < 0.3 + 2.0, took


def test_batching_needs_a_dynamic_batch_dimension(
    start_engine: EngineFactory, yolov8n_path: Path
) -> None:
    engine = start_engine(config=batched_config(yolov8n_path, "fixed", 4, 5), wait_ready=False)
    engine.wait_for("/health/ready", 503)
    _, raw = get(engine.url + "/health/ready")
    error = orjson.loads(raw)["errors"]["fixed"]
    assert "steps[0].batching" in error and "fixed batch dimension" in error


@pytest.mark.parametrize(
    ("shape", "preprocess", "words"),
    [
        (("N", 3, "H", "W"), {}, "steps[0].preprocess.width: the model's input size is dynamic"),
        ((1, 3, 640, 640), {"width": 320}, "steps[0].preprocess.width: 320 does not match"),
        ((1, 640, 640, 3), {}, "steps[0].preprocess.layout: NCHW puts channels at dim 1"),
        ((1, 3, 640, 640), {"dtype": "uint8"}, "steps[0].preprocess.dtype: uint8 does not"),
        (("N", 4), {}, "has 2 dims; an image input needs 4"),
    ],
)
def test_preprocess_fields_are_checked_against_the_model(
    tmp_path: Path, shape: tuple, preprocess: dict, words: str
) -> None:
    model = m.identity(tmp_path / "id.onnx", np.float32, shape=shape)
    config = parse_config(
        {
            "name": "p",
            "steps": [{"model": {"name": "m", "path": str(model)}, "preprocess": preprocess}],
        }
    )
    pipeline = load_pipeline(config, {"steps[0].model": model}, Loading(1, Calls()))
    assert pipeline.error is not None and words in pipeline.error, pipeline.error


def test_only_the_first_step_may_preprocess(models_dir: Path) -> None:
    from edgepipe.config import ConfigError

    step = {"model": {"name": "a", "path": str(models_dir / "add1.onnx")}}
    with pytest.raises(ConfigError, match="step 1 has 'preprocess'"):
        parse_config({"name": "p", "steps": [step, {**step, "name": "b", "preprocess": {}}]})
