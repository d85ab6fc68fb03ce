"""A real detection end to end: trained YOLOv8s in the engine, astronaut.png, NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepipe import yolo
from edgepipe.client import EngineClient
from tests.conftest import EngineFactory


def test_trained_model_finds_the_astronaut(
    start_engine: EngineFactory, trained_yolo_path: Path, astronaut_path: Path, tmp_path: Path
) -> None:
    image = yolo.load_image(astronaut_path)
    tensor, transform = yolo.letterbox(image)
    assert tensor.shape == (1, 3, 640, 640) and tensor.dtype == np.float32
    assert tensor.min() >= 0.0 and tensor.max() <= 1.0

    engine = start_engine("--model", str(trained_yolo_path), env={"CONFIG_CPUS": "2"})
    result = EngineClient(engine.url).infer_tensor("best-fp16", "images", tensor)
    assert result.outputs[0].shape == (1, 6, 8400)

    classes = yolo.class_names_from_onnx(trained_yolo_path)
    assert classes == ["Normal", "Fall"]
    detections = yolo.decode(result.outputs[0], transform, classes=classes)
    assert detections, "the trained model found nobody in astronaut.png"
    best = max(detections, key=lambda d: d.score)
    assert best.label == "Normal" and best.score >= 0.5
    x1, y1, x2, y2 = best.box
    h, w = image.shape[:2]
    # The astronaut fills most of the frame: a tall box covering the centre of the image.
    assert 0 <= x1 < w / 2 < x2 <= w and 0 <= y1 < h / 2 < y2 <= h
    assert (x2 - x1) * (y2 - y1) > 0.3 * w * h

    out = tmp_path / "boxes.png"
    yolo.draw(image, detections, out)
    drawn = yolo.load_image(out)
    assert drawn.shape == image.shape and not np.array_equal(drawn, image)


def test_nms_suppresses_overlaps_and_keeps_the_best() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=np.float32)
    scores = np.array([0.6, 0.9, 0.7], dtype=np.float32)
    assert yolo.nms(boxes, scores, 0.25).tolist() == [1, 2]
    assert yolo.nms(boxes, scores, 0.99).tolist() == [1, 2, 0]


def test_decode_maps_boxes_back_through_the_letterbox() -> None:
    out = np.zeros((1, 6, 8400), dtype=np.float32)
    out[0, :4, 7] = [320, 320, 100, 200]  # centre of the 640 square, 100x200
    out[0, 5, 7] = 0.9  # class 1
    transform = yolo.Letterbox(scale=0.5, pad_x=0, pad_y=80, width=1280, height=960)
    (det,) = yolo.decode(out, transform, classes=["Normal", "Fall"])
    assert det.label == "Fall" and abs(det.score - 0.9) < 1e-6
    np.testing.assert_allclose(det.box, [540, 280, 740, 680])


def test_engine_yolov8_post_processing_returns_boxes(
    start_engine: EngineFactory, trained_yolo_path: Path, astronaut_path: Path
) -> None:
    image = yolo.load_image(astronaut_path)
    tensor, _ = yolo.letterbox(image)
    config = {
        "name": "falls",
        "steps": [
            {
                "model": {"name": "yolov8s", "path": str(trained_yolo_path)},
                "postprocess": {"kind": "yolov8", "confidence_thres": 0.5, "iou_thres": 0.25},
            }
        ],
    }
    boxed = start_engine(config=config, env={"CONFIG_CPUS": "2"})
    raw = start_engine("--model", str(trained_yolo_path), env={"CONFIG_CPUS": "2"})
    got = EngineClient(boxed.url).infer_tensor("falls", "images", tensor)
    (dets,) = got.outputs
    assert dets.dtype == np.float32 and dets.ndim == 2 and dets.shape[1] == 6
    assert list(got.record["outputs"][0]) == ["Float"]
    # The same boxes as decoding the raw output on the client, in model-input pixels.
    full = EngineClient(raw.url).infer_tensor("best-fp16", "images", tensor).outputs[0]
    expected = yolo.decode(full)
    assert len(expected) == len(dets) >= 1
    for det, row in zip(expected, dets, strict=True):
        np.testing.assert_allclose(row[:4], det.box, atol=1e-3)
        assert abs(row[4] - det.score) < 1e-5 and int(row[5]) == det.class_id
    # 2.8 MB of raw floats became a few dozen bytes.
    assert dets.nbytes < 1000
