"""Shadows and validations: what they cost, as ratios in one run on this machine.

Run with ``make bench`` or ``.venv/bin/python bench/experiments_bench.py``:

* the answer's latency with one shadow of the same model, against no shadow, one client,
  on the YOLOv8n-shaped model (Arrow in and out) and on the demo's trained YOLOv8s (a JPEG
  in, boxes out). The bound: no more than EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS (100 ms) plus
  10% over the answer without the shadow (the shadow runs at nice 19, yet still takes a
  little CPU from the model);
* the cost per row of a validation rule on detections (``any(detections[:, 4] > 0.9)``).
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine_bench import ARROW, Client, arrow_request, timed

from edgepipe.expressions import parse
from edgepipe.localengine import EngineProcess


def latency(config: dict, tmp: Path, body: bytes, ctype: str, accept: str | None, n: int) -> float:
    path = tmp / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {"CONFIG_CPUS": str(os.cpu_count() or 1)}
    with EngineProcess("--config", str(path), env=env) as engine:
        client = Client(engine.port)
        for _ in range(3):
            client.post(f"/pipelines/{config['name']}", body, ctype, accept)
        blocks = [
            statistics.median(
                timed(lambda: client.post(f"/pipelines/{config['name']}", body, ctype, accept), n)
            )
            for _ in range(3)
        ]
    return min(blocks)


def main() -> None:
    from edgepipe.demo import astronaut_path, trained_model_path
    from tests.helpers import onnx_models

    tmp = Path(tempfile.mkdtemp(prefix="edgepipe-bench-"))
    small = onnx_models.yolov8n_shaped(tmp / "y.onnx")
    trained = trained_model_path()
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    with Image.open(astronaut_path()) as img:
        buf = io.BytesIO()
        img.convert("RGB").resize((1280, 1280)).save(buf, "JPEG", quality=90)
    jpeg = buf.getvalue()
    cases = {
        "YOLOv8n-shaped, Arrow tensors": (small, {}, arrow_request(x), ARROW, ARROW, 10),
        "trained YOLOv8s, JPEG -> boxes": (
            trained,
            {"preprocess": {"kind": "image"}, "postprocess": {"kind": "yolov8"}},
            jpeg,
            "image/jpeg",
            None,
            5,
        ),
    }
    print("\n| one client, median ms | no shadow | one shadow (same model) | ratio | bound |")
    print("|---|---:|---:|---:|---:|")
    for label, (model, extra, body, ctype, accept, n) in cases.items():
        step = {"model": {"name": "m", "path": str(model)}, **extra}
        plain = latency({"name": "plain", "steps": [step]}, tmp, body, ctype, accept, n)
        shadowed = {**step, "shadows": [{"name": "shadow", "path": str(model)}]}
        shadow = latency({"name": "shadowed", "steps": [shadowed]}, tmp, body, ctype, accept, n)
        bound = plain * 1.1 + 0.1
        print(
            f"| {label} | {plain * 1000:.1f} | {shadow * 1000:.1f} | {shadow / plain:.2f} "
            f"| {bound * 1000:.0f} ms: {'met' if shadow <= bound else 'MISSED'} |"
        )

    rule = parse("any(detections[:, 4] > 0.9)", frozenset({"detections"}))
    dets = np.random.default_rng(1).random((10, 6)).astype(np.float32)
    outputs = {"detections": dets}
    for _ in range(1000):
        rule.holds(outputs)
    t0 = time.perf_counter()
    for _ in range(20000):
        rule.holds(outputs)
    per_row = (time.perf_counter() - t0) / 20000 * 1e6
    print(f"\nvalidation any(detections[:, 4] > 0.9) on 10 boxes: {per_row:.1f} us per row")


if __name__ == "__main__":
    main()
