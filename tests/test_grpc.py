"""Open Inference Protocol v2 over gRPC, driven by a client no one here wrote
(tritonclient.grpc), against the engine as a real process."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.engines import EngineFactory, chain_config
from tests.helpers.paths import ROOT

grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def engine(start_engine: EngineFactory, models_dir: Path, yolov8n_path: Path, tmp_path_factory):
    import yaml

    folder = tmp_path_factory.mktemp("grpc")
    # Two pipelines in one engine is not a thing; the image pipeline gets an engine of its own.
    image_config = {
        "name": "detect",
        "steps": [
            {
                "model": {"name": "yolo", "path": str(yolov8n_path)},
                "preprocess": {"kind": "image"},
                "postprocess": {"kind": "yolov8", "confidenceThres": 0.0},
            }
        ],
    }
    (folder / "detect.yaml").write_text(yaml.safe_dump(image_config))
    return {
        "chain": start_engine(config=chain_config(models_dir)),
        "detect": start_engine("--config", str(folder / "detect.yaml")),
    }


def client(engine) -> grpcclient.InferenceServerClient:
    return grpcclient.InferenceServerClient(engine.grpc_target)


def test_health_metadata_and_an_answer_equal_to_onnxruntime(engine, models_dir: Path) -> None:
    import onnxruntime as ort

    c = client(engine["chain"])
    assert c.is_server_live() and c.is_server_ready()
    assert c.is_model_ready("chain") and c.is_model_ready("add1")
    assert c.get_server_metadata().name == "edgepipe"
    meta = c.get_model_metadata("chain", as_json=True)
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    inp = grpcclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = c.infer("chain", [inp])
    expected = x
    for name in ("add1", "double"):
        session = ort.InferenceSession(str(models_dir / f"{name}.onnx"))
        (expected,) = session.run(None, {session.get_inputs()[0].name: expected})
    np.testing.assert_array_equal(result.as_numpy("z"), expected)
    assert result.get_response().model_name == "chain"
    # One model of the pipeline alone.
    result = c.infer("add1", [inp], outputs=[grpcclient.InferRequestedOutput("y")])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)


def test_errors_are_grpc_status_codes_with_the_engines_message(engine) -> None:
    c = client(engine["chain"])
    with pytest.raises(InferenceServerException) as err:
        c.get_model_metadata("nope")
    assert err.value.status() == "StatusCode.NOT_FOUND" and "unknown model" in err.value.message()
    bad = grpcclient.InferInput("x", [1, 3], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as err:
        c.infer("chain", [bad])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "expected shape" in err.value.message()
    wrong = grpcclient.InferInput("nothere", [1, 4], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException, match="missing input 'x'"):
        c.infer("chain", [wrong])
    # Still serving.
    assert c.is_server_ready()


def test_an_image_as_one_bytes_element(engine, astronaut_path: Path) -> None:
    from PIL import Image

    with Image.open(astronaut_path) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG")
    c = client(engine["detect"])
    meta = c.get_model_metadata("detect", as_json=True)
    assert meta["inputs"][0]["datatype"] == "BYTES"
    inp = grpcclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([buf.getvalue()], dtype=np.object_))
    result = c.infer("detect", [inp])
    boxes = result.as_numpy("detections")
    assert boxes.ndim == 2 and boxes.shape[1] == 6 and len(boxes) > 0
    # In the 512x512 photo's pixels.
    assert boxes[:, :4].max() <= 512
    inp = grpcclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        c.infer("detect", [inp])
    assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
    # A pixel-count bomb (400 M pixels in a small PNG) is 413, RESOURCE_EXHAUSTED here.
    bomb = io.BytesIO()
    Image.new("1", (20000, 20000)).save(bomb, "PNG")
    inp = grpcclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([bomb.getvalue()], dtype=np.object_))
    with pytest.raises(InferenceServerException) as err:
        c.infer("detect", [inp])
    assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    assert "pixels is over the limit" in err.value.message()


def test_the_compiled_descriptor_matches_the_proto() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.engine.oip.generate", "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
