"""YOLOv8 pre- and post-processing in vectorised numpy: letterbox, decode, NMS, drawing.

The decode follows the tutorial: transpose ``[1, 4+C, N]`` to ``[N, 4+C]``, take each
candidate's best class score, keep those above ``confidence_thres``, turn centre-xywh
boxes into corners, and run class-agnostic NMS with ``iou_thres`` (as
``cv2.dnn.NMSBoxes`` does). Boxes are then mapped back to the original image through the
letterbox's scale and padding. Nothing loops over the N candidates in Python; NMS loops
once per *kept* box, each step vectorised over the remaining ones.

Image loading and drawing need Pillow (``pip install edgepipe[client]``); the decode
needs only numpy, so the engine can run it as a post-processing step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CONFIDENCE_THRES = 0.50
IOU_THRES = 0.25
SIZE = 640
PAD_VALUE = 114


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the model's square: scale, then padding."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # original image size
    height: int
    scale_y: float | None = None  # a plain resize scales y apart from x

    def unmap(self, boxes: np.ndarray) -> np.ndarray:
        """x1y1x2y2 boxes in the model input's pixels -> the original image's, clipped."""
        pad = [self.pad_x, self.pad_y, self.pad_x, self.pad_y]
        sy = self.scale if self.scale_y is None else self.scale_y
        scale = [self.scale, sy, self.scale, sy]
        out = (np.asarray(boxes, dtype=np.float64) - pad) / scale
        return np.clip(out, 0, [self.width, self.height] * 2)


@dataclass(frozen=True)
class Detection:
    class_id: int
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original image pixels

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_id": self.class_id,
            "label": self.label,
            "score": round(self.score, 6),
            "box": [round(v, 2) for v in self.box],
        }


def load_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 HWC array from an image file."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


def fit(
    img: Any, width: int, height: int, *, stretch: bool = False, pad_value: int = PAD_VALUE
) -> tuple[np.ndarray, Letterbox]:
    """A Pillow image in ``width`` x ``height`` RGB pixels (uint8, HWC), resized keeping its
    aspect ratio and padded (a letterbox) or plainly (``stretch``), and the transform that
    maps boxes back. A JPEG not yet decoded is scaled while it is decoded (draft mode: DCT
    scaling by 1/2, 1/4 or 1/8), so a large photo is never decoded at full size."""
    from PIL import Image

    w, h = img.size
    if stretch:
        nw, nh, sx, sy = width, height, width / w, height / h
    else:
        sx = sy = min(width / w, height / h)
        nw, nh = max(1, round(w * sx)), max(1, round(h * sy))
    if img.format == "JPEG":
        img.draft("RGB", (nw, nh))
    rgb = img.convert("RGB")
    if rgb.size != (nw, nh):
        rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
    pixels = np.asarray(rgb)
    px, py = (width - nw) // 2, (height - nh) // 2
    if (nw, nh) == (width, height):
        return pixels, Letterbox(sx, px, py, w, h, scale_y=sy)
    canvas = np.full((height, width, 3), pad_value, dtype=np.uint8)
    canvas[py : py + nh, px : px + nw] = pixels
    return canvas, Letterbox(sx, px, py, w, h, scale_y=sy)


def letterbox(image: np.ndarray, size: int = SIZE) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, pad to ``size``², and return a [1,3,size,size]
    float32 tensor in [0, 1] (RGB, CHW) with the transform needed to map boxes back."""
    from PIL import Image

    canvas, frame = fit(Image.fromarray(image), size, size)
    tensor = (canvas.transpose(2, 0, 1)[np.newaxis].astype(np.float32)) / np.float32(255.0)
    return np.ascontiguousarray(tensor), frame


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float) -> np.ndarray:
    """Indices of the boxes greedy NMS keeps, highest score first (boxes are x1y1x2y2)."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes.T
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ix1 = np.maximum(x1[i], x1[rest])
        iy1 = np.maximum(y1[i], y1[rest])
        ix2 = np.minimum(x2[i], x2[rest])
        iy2 = np.minimum(y2[i], y2[rest])
        inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
        union = areas[i] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_thres]
    return np.asarray(keep, dtype=np.int64)


def decode(
    output: np.ndarray,
    transform: Letterbox | None = None,
    *,
    confidence_thres: float = CONFIDENCE_THRES,
    iou_thres: float = IOU_THRES,
    classes: list[str] | None = None,
) -> list[Detection]:
    """Detections from a YOLOv8 output of shape [1, 4+C, N] (or [4+C, N])."""
    out = np.asarray(output, dtype=np.float32)
    if out.ndim == 3:
        if out.shape[0] != 1:
            raise ValueError(f"expected one image's output [1, 4+C, N], got {list(out.shape)}")
        out = out[0]
    if out.ndim != 2 or out.shape[0] < 5:
        raise ValueError(f"expected a YOLOv8 output [1, 4+C, N], got {list(np.shape(output))}")
    preds = out.T  # [N, 4+C]
    class_scores = preds[:, 4:]
    class_ids = np.argmax(class_scores, axis=1)
    scores = class_scores[np.arange(len(preds)), class_ids]
    mask = scores >= confidence_thres
    if not mask.any():
        return []
    xywh = preds[mask, :4]
    scores, class_ids = scores[mask], class_ids[mask]
    boxes = np.empty_like(xywh)
    boxes[:, 0] = xywh[:, 0] - xywh[:, 2] / 2
    boxes[:, 1] = xywh[:, 1] - xywh[:, 3] / 2
    boxes[:, 2] = xywh[:, 0] + xywh[:, 2] / 2
    boxes[:, 3] = xywh[:, 1] + xywh[:, 3] / 2
    keep = nms(boxes, scores, iou_thres)
    boxes, scores, class_ids = boxes[keep], scores[keep], class_ids[keep]
    if transform is not None:
        boxes = transform.unmap(boxes)
    return _detections(boxes, scores, class_ids, classes)


def from_rows(
    rows: np.ndarray, transform: Letterbox | None = None, classes: list[str] | None = None
) -> list[Detection]:
    """Detections from the engine's YOLO post-step output: rows of x1, y1, x2, y2 (model
    input pixels), score, class id."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
    boxes = rows[:, :4] if transform is None else transform.unmap(rows[:, :4])
    return _detections(boxes, rows[:, 4], rows[:, 5].astype(np.int64), classes)


def _detections(
    boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, classes: list[str] | None
) -> list[Detection]:
    names = classes or []
    return [
        Detection(
            int(c),
            names[c] if c < len(names) else str(int(c)),
            float(s),
            (float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        )
        for b, s, c in zip(boxes, scores, class_ids, strict=True)
    ]


def draw(image: np.ndarray, detections: list[Detection], path: str | Path) -> None:
    """Save ``image`` with a box and a "label score" tag per detection as a PNG."""
    from PIL import Image, ImageDraw

    img = Image.fromarray(image).convert("RGB")
    pen = ImageDraw.Draw(img)
    palette = [(255, 56, 56), (56, 56, 255), (56, 200, 56), (255, 157, 151), (255, 178, 29)]
    for det in detections:
        color = palette[det.class_id % len(palette)]
        x1, y1, x2, y2 = det.box
        pen.rectangle((x1, y1, x2, y2), outline=color, width=3)
        tag = f"{det.label} {det.score:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), tag)
        ty = max(0.0, y1 - (bottom - top) - 4)
        pen.rectangle((x1, ty, x1 + (right - left) + 6, ty + (bottom - top) + 4), fill=color)
        pen.text((x1 + 3, ty + 1), tag, fill=(255, 255, 255))
    img.save(path, format="PNG")


def class_names(metadata: dict[str, str]) -> list[str]:
    """Class names from an ONNX model's metadata: Ultralytics writes ``names`` as a Python
    dict literal such as ``{0: 'Normal', 1: 'Fall'}``. Empty when there are none."""
    import ast

    raw = metadata.get("names")
    if not raw:
        return []
    try:
        names = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return []
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        return [str(names[i]) for i in sorted(names)]
    return []


def class_names_from_onnx(path: str | Path) -> list[str]:
    """Class names that Ultralytics writes into an ONNX file's metadata (``names``)."""
    from edgepipe.onnxfile import runtime

    meta = runtime().InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    return class_names(meta.custom_metadata_map)
