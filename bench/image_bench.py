"""Images in, batching and gRPC: each figure a ratio to the same work run in-process.

Run with ``make bench`` (after ``engine_bench.py``) or ``.venv/bin/python
bench/image_bench.py``. In one run, on this machine:

* the image decoders that install here as wheels, on the engine's letterbox path (a
  1280x1280 JPEG to a 640x640 model input);
* image -> boxes as a client sees it: the JPEG posted as the body to an engine with an
  image preprocess and the YOLOv8 postprocess, against the same work in this process
  (decode and letterbox with the engine's own preprocess, onnxruntime, YOLO decode);
* dynamic batching: throughput with 8 concurrent clients, batching on against off, and one
  client's p50, on two models with a dynamic batch dimension: a dense 4x2048 model (one
  row per call is memory-bound: every call reads 64 MB of weights) and a YOLOv8n-shaped
  convolutional one (compute-bound: a bigger batch costs proportionally more);
* gRPC binary tensors (tritonclient.grpc) against REST Arrow for the 1x3x640x640 input.

The photo is scikit-image's astronaut (a real photo, 512 px) enlarged to 1280x1280 and
saved as a quality-90 JPEG: no photo of 1280 px or more ships in a wheel here, and the
enlarged one keeps a person to detect, so the postprocess does real work. Variants run in
interleaved blocks, each reported by its least-disturbed block, as in engine_bench.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import yaml
from PIL import Image

from edgepipe import yolo
from edgepipe.config import ImagePreprocess
from edgepipe.engine.preprocess import ImageInput
from edgepipe.localengine import EngineProcess, free_port

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from engine_rounds import ARROW, Client, arrow_request, retry, throughput, timed

ROOT = Path(__file__).resolve().parent.parent
GAPPED = "1 client p50, batching off, requests maxDelayMs apart (ms)"


def photo_jpeg() -> bytes:
    from edgepipe.demo import astronaut_path

    with Image.open(astronaut_path()) as img:
        big = img.convert("RGB").resize((1280, 1280), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def decoders(jpeg: bytes) -> dict[str, Callable[[], object]]:
    """Each candidate decoding the JPEG and resizing it to 640x640, as the letterbox does."""
    out: dict[str, Callable[[], object]] = {}

    def pillow_draft() -> object:
        with Image.open(io.BytesIO(jpeg)) as img:
            img.draft("RGB", (640, 640))
            return np.asarray(img.convert("RGB").resize((640, 640), Image.Resampling.BILINEAR))

    def pillow_full() -> object:
        with Image.open(io.BytesIO(jpeg)) as img:
            return np.asarray(img.convert("RGB").resize((640, 640), Image.Resampling.BILINEAR))

    out["Pillow, draft (DCT scaling) [chosen]"] = pillow_draft
    out["Pillow, full decode"] = pillow_full
    try:
        import cv2

        buf = np.frombuffer(jpeg, np.uint8)
        out["OpenCV imdecode, full"] = lambda: cv2.resize(
            cv2.imdecode(buf, cv2.IMREAD_COLOR), (640, 640)
        )
        out["OpenCV imdecode, REDUCED_COLOR_2"] = lambda: cv2.resize(
            cv2.imdecode(buf, cv2.IMREAD_REDUCED_COLOR_2), (640, 640)
        )
    except ImportError:
        pass
    try:
        import simplejpeg

        out["simplejpeg (JPEG only), min 640"] = lambda: simplejpeg.decode_jpeg(
            jpeg, "RGB", min_height=640, min_width=640
        )
    except ImportError:
        pass
    return out


def arrow_table(x: np.ndarray, name: str) -> bytes:
    table = pa.table({name: pa.FixedShapeTensorArray.from_numpy_ndarray(x)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def clients_throughput(port: int, body: bytes, clients: int, seconds: float) -> float:
    """Calls per second with ``clients`` threads, each on a keep-alive connection."""
    import threading

    conns = iter([Client(port) for _ in range(clients)])
    local = threading.local()

    def call() -> None:
        if not hasattr(local, "c"):
            local.c = next(conns)
        local.c.post("/pipelines/b", body, ARROW, ARROW)

    return throughput(call, clients, seconds)


def batching_figures(model: Path, body: bytes, env: dict, tmp: Path, args) -> dict[str, float]:
    """8-client throughput and 1-client p50, with batching off and on."""
    out: dict[str, float] = {}
    for on in (False, True):
        step: dict = {"model": {"name": "m", "path": str(model)}}
        if on:
            step["batching"] = {"maxBatchSize": 8, "maxDelayMs": args.delay_ms}
        config = tmp / f"batch-{model.stem}-{on}.yaml"
        config.write_text(yaml.safe_dump({"name": "b", "steps": [step]}))
        label = "on" if on else "off"
        with EngineProcess("--config", str(config), env=env) as engine:
            lone = Client(engine.port)
            lone.post("/pipelines/b", body, ARROW, ARROW)
            out[f"8 clients, batching {label} (calls/s)"] = clients_throughput(
                engine.port, body, 8, args.tp_seconds
            )
            out[f"1 client p50, batching {label} (ms)"] = 1000 * statistics.median(
                timed(lambda c=lone: c.post("/pipelines/b", body, ARROW, ARROW), 30)
            )
            if not on:
                # A lone request with batching on reaches the model after an idle gap of
                # maxDelayMs, and an idle gap alone slows the next call (onnxruntime's
                # threads park, caches cool): the fair baseline for the wait's cost.
                gaps = []
                for _ in range(30):
                    time.sleep(args.delay_ms / 1000)
                    gaps.append(
                        timed(lambda c=lone: c.post("/pipelines/b", body, ARROW, ARROW), 1)[0]
                    )
                out[GAPPED] = 1000 * statistics.median(gaps)
    return out


def best_of_blocks(variants: dict[str, Callable[[], object]], blocks: int, per: int) -> dict:
    for fn in variants.values():
        fn()
    medians: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(blocks):
        for label, fn in variants.items():
            medians[label].append(statistics.median(timed(fn, per)))
    return {k: min(v) for k, v in medians.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=8)
    parser.add_argument("--tp-seconds", type=float, default=8.0)
    parser.add_argument("--delay-ms", type=float, default=10.0)
    args = parser.parse_args()
    from edgepipe.demo import trained_model_path
    from tests.helpers import onnx_models

    cpus = args.cpus
    model = trained_model_path()
    jpeg = photo_jpeg()
    tmp = Path(tempfile.mkdtemp(prefix="edgepipe-bench-"))
    logs = ROOT / "out"
    logs.mkdir(exist_ok=True)

    # -- decoders ---------------------------------------------------------------------
    dec = best_of_blocks(decoders(jpeg), args.blocks, args.per_block)

    # -- image -> boxes -----------------------------------------------------------------
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpus
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    dtype = np.dtype(np.float16 if spec.type == "tensor(float16)" else np.float32)
    pre = ImageInput.build(ImagePreprocess(), spec.name, (1, 3, 640, 640), dtype, 10**8, "bench")

    def in_process() -> object:
        tensor, frame = pre(jpeg, 0)
        (out,) = session.run(None, {spec.name: tensor})
        return yolo.decode(out.astype(np.float32), frame)

    config = {
        "name": "detect",
        "steps": [
            {
                "model": {"name": "yolo", "path": str(model)},
                "preprocess": {"kind": "image"},
                "postprocess": {"kind": "yolov8"},
            }
        ],
    }
    (tmp / "detect.yaml").write_text(yaml.safe_dump(config))
    env = {"CONFIG_CPUS": str(cpus)}
    with EngineProcess(
        "--config", str(tmp / "detect.yaml"), env=env, log_path=logs / "bench-image.log"
    ) as engine:
        client = Client(engine.port)
        boxes = best_of_blocks(
            {
                "in-process: decode, letterbox, onnxruntime, YOLO decode": in_process,
                "engine: JPEG body -> boxes (client-observed)": lambda: client.post(
                    "/pipelines/detect", jpeg, "image/jpeg"
                ),
            },
            args.blocks,
            args.per_block,
        )

    # -- batching -----------------------------------------------------------------------
    dyn = onnx_models.yolov8n_shaped(tmp / "yolov8n-dyn.onnx", dynamic_batch=True)
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    arrow_in = arrow_request(x)
    mlp = onnx_models.mlp(tmp / "mlp.onnx")
    row = np.random.default_rng(1).random((1, 2048), dtype=np.float32)
    models = {
        "dense 4x2048 (memory-bound)": (mlp, arrow_table(row, "x")),
        "YOLOv8n-shaped convs (compute-bound)": (dyn, arrow_in),
    }
    batching: dict[str, dict[str, float]] = {}
    for label, (path, body) in models.items():
        batching[label] = batching_figures(path, body, env, tmp, args)
    # -- gRPC against REST Arrow ------------------------------------------------------------
    import tritonclient.grpc as grpcclient

    direct = ort.InferenceSession(str(dyn), opts, providers=["CPUExecutionProvider"])
    floor_port = free_port()
    floor = subprocess.Popen(
        [sys.executable, str(ROOT / "bench/grpc_floor.py"), str(floor_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    with EngineProcess("--model", str(dyn), env=env) as engine:
        rest = Client(engine.port)
        grpc = grpcclient.InferenceServerClient(engine.grpc_target)
        bare = grpcclient.InferenceServerClient(f"127.0.0.1:{floor_port}")

        def grpc_call(client=grpc) -> object:
            inp = grpcclient.InferInput("images", [1, 3, 640, 640], "FP32")
            inp.set_data_from_numpy(x)
            return client.infer("yolov8n-dyn", [inp]).as_numpy("output0")

        retry(lambda: grpc_call(bare), 30)

        def rest_call() -> object:
            out = rest.post("/pipelines/yolov8n-dyn", arrow_in, ARROW, ARROW)
            return pa.ipc.open_file(pa.py_buffer(out)).read_all()

        wire = best_of_blocks(
            {
                "direct onnxruntime": lambda: direct.run(None, {"images": x}),
                "REST Arrow in/out": rest_call,
                "gRPC binary tensors (tritonclient.grpc)": grpc_call,
                "gRPC floor: bare grpc.aio server, no model": lambda: grpc_call(bare),
            },
            args.blocks,
            args.per_block,
        )
    floor.terminate()
    floor.wait()

    report(cpus, dec, boxes, batching, wire, args.delay_ms, len(jpeg))


def report(cpus, dec, boxes, batching, wire, delay_ms, jpeg_bytes) -> None:
    print(f"\nCONFIG_CPUS={cpus}, onnxruntime {ort.__version__}; JPEG {jpeg_bytes // 1024} KB")
    print("\n| decoder: 1280x1280 JPEG -> 640x640 RGB | median ms |")
    print("|---|---:|")
    for k, v in dec.items():
        print(f"| {k} | {v * 1000:.2f} |")
    base = boxes[next(iter(boxes))]
    print("\n| image -> boxes | median ms | x in-process |")
    print("|---|---:|---:|")
    for k, v in boxes.items():
        print(f"| {k} | {v * 1000:.1f} | {v / base:.2f} |")
    print(f"\n| dynamic batching (maxBatchSize 8, maxDelayMs {delay_ms:g}) | value |")
    print("|---|---:|")
    for model, figures in batching.items():
        for k, v in figures.items():
            print(f"| {model}: {k} | {v:.2f} |")
        off = figures["8 clients, batching off (calls/s)"]
        on = figures["8 clients, batching on (calls/s)"]
        print(f"| {model}: **throughput on / off** | **{on / off:.2f}x** |")
        on_p50 = figures["1 client p50, batching on (ms)"]
        lone = on_p50 - figures["1 client p50, batching off (ms)"]
        gap = on_p50 - figures[GAPPED]
        print(f"| {model}: 1-client p50 cost, back to back | {lone:+.1f} ms (bound {delay_ms:g}) |")
        print(f"| {model}: 1-client p50 cost, against the gapped baseline | {gap:+.1f} ms |")
    direct = wire["direct onnxruntime"]
    print("\n| 1x3x640x640 float32, one client | median ms | x direct |")
    print("|---|---:|---:|")
    for k, v in wire.items():
        print(f"| {k} | {v * 1000:.1f} | {v / direct:.2f} |")
    g, r = wire["gRPC binary tensors (tritonclient.grpc)"], wire["REST Arrow in/out"]
    print(f"| gRPC / REST Arrow | | {g / r:.2f} |")


if __name__ == "__main__":
    main()
