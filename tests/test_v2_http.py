"""Open Inference Protocol v2 over REST, driven by an off-the-shelf client (tritonclient.http);
test_grpc.py drives the same protocol over gRPC."""

from __future__ import annotations

import urllib.request

import numpy as np
import orjson
import pytest

from tests.helpers.engine_http import get, post
from tests.helpers.engines import EngineFactory, chain_config

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def chain(start_engine: EngineFactory, models_dir):
    return start_engine(config=chain_config(models_dir))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_talks_to_the_engine(chain, binary: bool) -> None:
    client = httpclient.InferenceServerClient(url=chain.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("chain") and client.is_model_ready("add1")
    meta = client.get_model_metadata("chain")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 4]}]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("z", binary_data=binary)
    result = client.infer("chain", [inp], outputs=[out])
    np.testing.assert_array_equal(result.as_numpy("z"), (x + 1) * 2)
    # A single model of the pipeline is addressable too.
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("add1", [inp])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
    assert result.get_response()["model_name"] == "add1"


def test_v2_errors(chain) -> None:
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=chain.url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    inp = httpclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="expected shape"):
        client.infer("chain", [inp])
    status, _, raw = post(
        chain.url + "/v2/models/chain/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}',
        "application/json",
    )
    assert status == 400 and orjson.loads(raw)["field"] == "x"
    assert get(chain.url + "/v2")[0] == 200


@pytest.fixture(scope="module")
def detect(start_engine: EngineFactory, yolov8n_path):
    """An image pipeline: its input is one BYTES element (an encoded image)."""
    return start_engine(
        config={
            "name": "detect",
            "steps": [
                {
                    "model": {"name": "yolo", "path": str(yolov8n_path)},
                    "preprocess": {"kind": "image"},
                    "postprocess": {"kind": "yolov8", "confidenceThres": 0.0},
                }
            ],
        }
    )


@pytest.fixture(scope="module")
def jpeg(astronaut_path) -> bytes:
    import io

    from PIL import Image

    with Image.open(astronaut_path) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG")
    return buf.getvalue()


def test_an_image_as_one_bytes_element_answers_as_over_grpc(detect, jpeg: bytes) -> None:
    import base64

    grpcclient = pytest.importorskip("tritonclient.grpc")
    inp = grpcclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
    expected = grpcclient.InferenceServerClient(detect.grpc_target).infer("detect", [inp])
    expected = expected.as_numpy("detections")
    assert expected.shape[1] == 6 and len(expected) > 0

    client = httpclient.InferenceServerClient(url=detect.url.removeprefix("http://"))
    meta = client.get_model_metadata("detect")
    assert meta["inputs"] == [{"name": "images", "datatype": "BYTES", "shape": [1]}]
    # tritonclient's binary data extension: the element after its 4-byte length.
    inp = httpclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([jpeg], dtype=np.object_))
    got = client.infer("detect", [inp]).as_numpy("detections")
    np.testing.assert_array_equal(got, expected)
    # JSON: the image as base64 text (tritonclient sends BYTES data as strings).
    text = base64.b64encode(jpeg)
    inp = httpclient.InferInput("images", [1], "BYTES")
    inp.set_data_from_numpy(np.array([text], dtype=np.object_), binary_data=False)
    out = httpclient.InferRequestedOutput("detections", binary_data=False)
    got = client.infer("detect", [inp], outputs=[out]).as_numpy("detections")
    np.testing.assert_array_equal(got, expected)
    # By hand: JSON with the base64 string, and the bare image as binary data.
    url = detect.url + "/v2/models/detect/infer"
    item = {"name": "images", "datatype": "BYTES", "shape": [1], "data": [text.decode()]}
    status, _, raw = post(url, orjson.dumps({"inputs": [item]}), "application/json")
    assert status == 200, raw
    (answer,) = orjson.loads(raw)["outputs"]
    np.testing.assert_array_equal(
        np.asarray(answer["data"], np.float32).reshape(answer["shape"]), expected
    )
    item = {
        "name": "images",
        "datatype": "BYTES",
        "shape": [1],
        "parameters": {"binary_data_size": len(jpeg)},
    }
    head = orjson.dumps({"inputs": [item]})
    req = urllib.request.Request(
        url,
        data=head + jpeg,
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)),
        },
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        (answer,) = orjson.loads(resp.read())["outputs"]
    np.testing.assert_array_equal(
        np.asarray(answer["data"], np.float32).reshape(answer["shape"]), expected
    )


def test_bytes_errors_name_the_input(detect, chain, jpeg: bytes) -> None:
    url = detect.url + "/v2/models/detect/infer"

    def send(item: dict, to: str = url) -> tuple[int, dict]:
        status, _, raw = post(to, orjson.dumps({"inputs": [item]}), "application/json")
        return status, orjson.loads(raw)

    image = {"name": "images", "datatype": "BYTES", "shape": [1]}
    status, err = send({**image, "data": ["not base64!"]})
    assert status == 400 and "not valid base64" in err["error"] and err["field"] == "images"
    status, err = send({**image, "shape": [2], "data": ["aGk=", "aGk="]})
    assert status == 400 and "one BYTES element" in err["error"]
    status, err = send({**image, "data": [1, 2, 3]})
    assert status == 400 and "base64 string" in err["error"]
    # Tensors where an image is expected, and an image where tensors are.
    status, err = send({"name": "images", "datatype": "FP32", "shape": [1], "data": [0.5]})
    assert status == 400 and "expected BYTES" in err["error"]
    status, err = send(
        {"name": "x", "datatype": "BYTES", "shape": [1], "data": ["aGk="]},
        chain.url + "/v2/models/chain/infer",
    )
    assert status == 400 and err["field"] == "x" and "float32" in err["error"]
