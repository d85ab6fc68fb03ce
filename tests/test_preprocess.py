"""The image preprocess step: photos in (raw body, Arrow binary column, base64 JSON), boxes
out in the photo's own pixels; bad images are a 4xx and the engine lives on."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest
from PIL import Image

from edgepipe import yolo
from tests.helpers.engine_http import JSON, arrow_table_bytes, get, post
from tests.helpers.engines import EngineFactory

ARROW = "application/vnd.apache.arrow.file"


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(astronaut_path: Path) -> Image.Image:
    """A real photo at 1280x960 (wider than it is tall, so the letterbox pads)."""
    with Image.open(astronaut_path) as img:
        return img.convert("RGB").resize((1280, 960), Image.Resampling.BICUBIC)


def detect_config(model: Path, name: str = "detect", **preprocess) -> dict:
    return {
        "name": name,
        "steps": [
            {
                "model": {"name": "yolo", "path": str(model)},
                "preprocess": {"kind": "image", **preprocess},
                "postprocess": {"kind": "yolov8", "confidenceThres": 0.25},
            }
        ],
    }


@pytest.fixture(scope="module")
def detector(start_engine: EngineFactory, trained_yolo_path: Path):
    return start_engine(config=detect_config(trained_yolo_path), env={"CONFIG_CPUS": "2"})


def boxes(raw: bytes) -> list[np.ndarray]:
    return [
        np.asarray(r["outputs"][0]["Float"]["data"], dtype=np.float64).reshape(-1, 6)
        for r in orjson.loads(raw)
    ]


def test_a_jpeg_body_answers_boxes_in_the_photos_pixels(
    detector, photo: Image.Image, trained_yolo_path: Path
) -> None:
    status, _, raw = post(detector.url + "/pipelines/detect", encode(photo, "JPEG"), "image/jpeg")
    assert status == 200, raw
    (got,) = boxes(raw)
    assert len(got) >= 1
    # The same photo, letterboxed by the client and sent as a tensor, decoded client-side.
    tensor, frame = yolo.letterbox(np.asarray(photo))
    plain = tensor_engine_boxes(detector, trained_yolo_path, tensor, frame)
    assert len(plain) == len(got)
    for a, b in zip(sorted(got.tolist()), sorted(plain), strict=True):
        assert a[5] == b[5]  # the same class
        # JPEG and its DCT-scaled decoding move the pixels a little, not the boxes.
        assert iou(a[:4], b[:4]) > 0.9, (a, b)
        assert abs(a[4] - b[4]) < 0.05
    # Boxes are in the 1280x960 photo, not the 640x640 model input.
    assert got[:, 2].max() > 640 or got[:, 3].max() > 640


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return inter / (area - inter)


def tensor_engine_boxes(detector, model: Path, tensor: np.ndarray, frame) -> list[list[float]]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
    (out,) = session.run(None, {spec.name: tensor.astype(dtype)})
    dets = yolo.decode(out.astype(np.float32), frame, confidence_thres=0.25)
    return [[*d.box, d.score, d.class_id] for d in dets]


def test_a_png_is_letterboxed_exactly_as_the_client_helper_does(
    start_engine: EngineFactory, yolov8n_path: Path, astronaut_path: Path
) -> None:
    """A PNG decodes losslessly and the resize is the same Pillow call, so the engine's
    boxes equal the client-side path to float precision."""
    engine = start_engine(config=detect_config(yolov8n_path, "png"))
    with Image.open(astronaut_path) as img:
        photo = img.convert("RGB").resize((700, 400))
    status, _, raw = post(engine.url + "/pipelines/png", encode(photo, "PNG"), "image/png")
    assert status == 200, raw
    (got,) = boxes(raw)
    tensor, frame = yolo.letterbox(np.asarray(photo))
    expected = tensor_engine_boxes(engine, yolov8n_path, tensor, frame)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-4, atol=1e-2)


def test_a_batch_of_images_in_arrow_and_base64_in_json(detector, photo: Image.Image) -> None:
    jpeg, png = encode(photo, "JPEG"), encode(photo.resize((320, 240)), "PNG")
    table = pa.table({"images": pa.array([jpeg, png], type=pa.binary())})
    body = arrow_table_bytes(table)
    status, _, raw = post(detector.url + "/pipelines/detect", body, ARROW, accept=ARROW)
    assert status == 200, raw
    got = pa.ipc.open_file(pa.py_buffer(raw)).read_all()
    assert got.num_rows == 2
    col = got.column("out.detections").combine_chunks()
    if "out.detections.dim" in got.column_names:  # rows with different numbers of boxes
        dims = got.column("out.detections.dim").to_pylist()
        by_arrow = [np.asarray(f).reshape(d) for f, d in zip(col.to_pylist(), dims, strict=True)]
    else:
        by_arrow = list(col.to_numpy_ndarray())
    body = orjson.dumps([{"images": base64.b64encode(b).decode()} for b in (jpeg, png)])
    status, _, raw = post(detector.url + "/pipelines/detect", body, JSON)
    assert status == 200, raw
    by_json = boxes(raw)
    for a, b in zip(by_arrow, by_json, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # The 320x240 copy is the same scene at a quarter of the scale.
    assert len(by_json) == 2 and len(by_json[0]) >= 1 and len(by_json[1]) >= 1
    big, small = by_json[0][0], by_json[1][0]
    assert iou((big[:4] / 4).tolist(), small[:4].tolist()) > 0.8


def test_bad_images_are_4xx_and_the_engine_lives_on(
    start_engine: EngineFactory, yolov8n_path: Path, photo: Image.Image
) -> None:
    engine = start_engine(
        config=detect_config(yolov8n_path, "guard"),
        env={
            "EDGEPIPE_ENGINE_MAX_IMAGE_PIXELS": "2000000",
            "EDGEPIPE_ENGINE_MAX_BODY_BYTES": "3000000",
        },
    )
    url = engine.url + "/pipelines/guard"
    jpeg = encode(photo, "JPEG")
    # A decompression bomb: 400 M pixels of one colour is a few hundred kB of PNG.
    bomb = encode(Image.new("1", (20000, 20000)), "PNG", optimize=True)
    cases = [
        (b"GIF89a not really", "image/jpeg", 415, "not a JPEG, PNG or WebP"),
        (jpeg[: len(jpeg) // 2], "image/jpeg", 400, "truncated or corrupt"),
        (jpeg[:200], "image/jpeg", 400, ""),
        (bomb, "image/png", 413, "400000000 pixels is over the limit of 2000000"),
        (encode(Image.new("RGB", (2000, 1500)), "PNG"), "image/png", 413, "2000x1500"),
        (b"\x00" * 3_100_000, "image/jpeg", 413, "EDGEPIPE_ENGINE_MAX_BODY_BYTES"),
        (orjson.dumps([{"images": "%%% not base64"}]), JSON, 400, "not valid base64"),
        (orjson.dumps([{"images": [1, 2, 3]}]), JSON, 400, "is a list"),
    ]
    for body, ctype, code, words in cases:
        status, _, raw = post(url, body, ctype)
        doc = orjson.loads(raw)
        assert status == code, (ctype, code, doc)
        assert words in doc["error"], doc
        assert doc["field"] in ("images", "body"), doc
    assert get(engine.url + "/health/ready")[0] == 200
    status, _, raw = post(url, jpeg, "image/jpeg")
    assert status == 200, raw


def test_an_image_body_to_a_tensor_pipeline_is_415(
    start_engine: EngineFactory, yolov8n_path: Path, photo: Image.Image
) -> None:
    engine = start_engine("--model", str(yolov8n_path))
    status, _, raw = post(engine.url + "/pipelines/yolov8n", encode(photo, "JPEG"), "image/jpeg")
    doc = orjson.loads(raw)
    assert status == 415 and doc["field"] == "Content-Type"
    assert "preprocess" in doc["error"]


def test_the_cli_sends_the_image_itself_to_a_preprocess_pipeline(
    detector, astronaut_path: Path, tmp_path: Path
) -> None:
    from tests.helpers.cli import ep

    out = tmp_path / "boxes.png"
    proc = ep("infer", "detect", "--engine", detector.url, "--image", str(astronaut_path))
    assert proc.returncode == 0, proc.stderr
    proc = ep(
        "infer", f"{detector.url}/pipelines/detect", "--image", str(astronaut_path),
        "--draw", str(out), "-o", "json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    dets = orjson.loads(proc.stdout)
    # The trained model finds the astronaut; the box is in the 512x512 photo's pixels.
    assert dets and dets[0]["label"] == "Normal" and max(dets[0]["box"]) <= 512
    assert dets[0]["box"][3] > 400  # reaches the bottom of the photo, not of a letterbox
    assert out.exists()
