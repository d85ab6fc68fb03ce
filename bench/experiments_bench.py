"""Shadows and validations: what they cost, as ratios in one run on this machine.

Run with ``make bench`` or ``.venv/bin/python bench/experiments_bench.py``:

* the answer's latency with one shadow of the same model, against no shadow, one client,
  on the YOLOv8n-shaped model (Arrow in and out) and on the demo's trained YOLOv8s (a JPEG
  in, boxes out). The bound: no more than EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS (its default)
  plus 10% over the answer without the shadow (the shadow runs at nice 19, yet still
  takes a little CPU from the model);
* how long a trained YOLOv8s shadow keeps the answer waiting, and how many answers carry
  its outputs at the old 100 ms and at the default (``shadow_wait``);
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

from edgepipe.engine.settings import DEFAULT_SHADOW_TIMEOUT_MS
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


def shadow_wait(model: Path, jpeg: bytes, tmp: Path, n: int = 9) -> None:
    """How long a trained YOLOv8s shadow (the same model) keeps an answer waiting beyond the
    model's own, and how many of ``n`` answers carry its outputs at the default timeout
    and at the old 100 ms: what the default of EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS is
    chosen from."""
    import orjson

    step = {
        "model": {"name": "m", "path": str(model)},
        "preprocess": {"kind": "image"},
        "postprocess": {"kind": "yolov8"},
    }
    shadowed = {**step, "shadows": [{"name": "shadow", "path": str(model)}]}

    def run(config: dict, env: dict[str, str]) -> tuple[list[float], int]:
        path = tmp / f"{config['name']}.yaml"
        path.write_text(yaml.safe_dump(config))
        with EngineProcess("--config", str(path), env=env) as engine:
            client = Client(engine.port)
            url = f"/pipelines/{config['name']}"
            client.post(url, jpeg, "image/jpeg")
            times, answered = [], 0
            for _ in range(n):
                t0 = time.perf_counter()
                (rec,) = orjson.loads(client.post(url, jpeg, "image/jpeg"))
                times.append(time.perf_counter() - t0)
                answered += bool(rec["shadow_data"])
        return times, answered

    print(
        f"\n| CONFIG_CPUS | answer, no shadow | shadow waited for: answer | its extra wait, "
        f"median / max | answers with shadow_data at 100 ms | at {DEFAULT_SHADOW_TIMEOUT_MS} ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for cpus in ("1", "2"):
        plain, _ = run({"name": "plain", "steps": [step]}, {"CONFIG_CPUS": cpus})
        waited, _ = run(
            {"name": "shadowed", "steps": [shadowed]},
            {"CONFIG_CPUS": cpus, "EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS": "60000"},
        )
        answered = [
            run(
                {"name": "shadowed", "steps": [shadowed]},
                {"CONFIG_CPUS": cpus, "EDGEPIPE_ENGINE_SHADOW_TIMEOUT_MS": str(ms)},
            )[1]
            for ms in (100, DEFAULT_SHADOW_TIMEOUT_MS)
        ]
        base = statistics.median(plain)
        extra = [t - base for t in waited]
        print(
            f"| {cpus} | {base * 1000:.0f} ms | {statistics.median(waited) * 1000:.0f} ms "
            f"| {statistics.median(extra) * 1000:.0f} / {max(extra) * 1000:.0f} ms "
            f"| {answered[0]} of {n} | {answered[1]} of {n} |"
        )


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
        bound = plain * 1.1 + DEFAULT_SHADOW_TIMEOUT_MS / 1000
        print(
            f"| {label} | {plain * 1000:.1f} | {shadow * 1000:.1f} | {shadow / plain:.2f} "
            f"| {bound * 1000:.0f} ms: {'met' if shadow <= bound else 'MISSED'} |"
        )

    shadow_wait(trained, jpeg, tmp)

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
