"""A real detection end to end: trained YOLOv8s in the engine, astronaut.png, NMS."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepipe import yolo
from edgepipe.client import EngineClient
from tests.helpers.engines import EngineFactory


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


def test_decode_matches_an_independent_reference(
    trained_yolo_path: Path, astronaut_path: Path
) -> None:
    """Our vectorised decode against OpenCV's NMSBoxes on the trained model's real output,
    for the astronaut and a few crops and flips of it (more boxes to agree on)."""
    cv2 = pytest.importorskip("cv2")
    import onnxruntime as ort

    session = ort.InferenceSession(str(trained_yolo_path), providers=["CPUExecutionProvider"])
    base = yolo.load_image(astronaut_path)
    images = [
        base,
        base[:, ::-1].copy(),
        base[100:, 50:].copy(),
        np.concatenate([base, base[:, ::-1]], axis=1),
    ]
    compared = 0
    for image in images:
        tensor, transform = yolo.letterbox(image)
        out = session.run(None, {"images": tensor})[0]
        ours = yolo.decode(out, transform, confidence_thres=0.25, iou_thres=0.45)
        # The reference, written the way OpenCV's own YOLOv8 samples do it.
        preds = out[0].T
        scores = preds[:, 4:].max(axis=1)
        keep = scores >= 0.25
        xywh = preds[keep, :4]
        boxes = [[float(x - w / 2), float(y - h / 2), float(w), float(h)] for x, y, w, h in xywh]
        idx = cv2.dnn.NMSBoxes(boxes, scores[keep].tolist(), 0.25, 0.45)
        idx = np.asarray(idx).reshape(-1)
        ref = []
        for i in idx:
            x, y, w, h = boxes[i]
            corners = np.array([x, y, x + w, y + h])
            corners = (corners - [transform.pad_x, transform.pad_y] * 2) / transform.scale
            corners = np.clip(corners, 0, [transform.width, transform.height] * 2)
            ref.append((float(scores[keep][i]), corners))
        assert len(ours) == len(ref)
        for det, (score, corners) in zip(
            sorted(ours, key=lambda d: -d.score), sorted(ref, key=lambda r: -r[0]), strict=True
        ):
            assert abs(det.score - score) < 1e-4
            np.testing.assert_allclose(det.box, corners, atol=1.0)
            compared += 1
    assert compared >= 4
