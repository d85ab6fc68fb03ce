"""Edge fleet benchmark: the inference log's cost, uploads after an outage, verification.

Run with ``make bench-edge`` (or ``.venv/bin/python bench/edge_bench.py``). In one run:

* latency of Arrow requests with the inference log on against off (engines side by side,
  interleaved blocks, each variant's least-disturbed block), and both against
  onnxruntime's ``session.run`` in this process, for a 1x4 model, the YOLOv8n-shaped model
  with its postprocess (boxes logged), and the same without it (the raw [1,84,8400]
  output, 2.8 MB, logged as JSON: the heavy case);
* upload throughput after an outage: an edge engine serves requests with its registry
  stopped, then the registry comes back; records per second from its return until every
  record is uploaded;
* what signature verification adds to an edge cold start (process start to ready, fresh
  cache, from the registry) and to an offline start from the cache.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine_bench import ARROW, Client, arrow_request, timed  # noqa: E402
from edgepipe.localengine import EngineProcess  # noqa: E402
from edgepipe.oci import signing  # noqa: E402
from tests.helpers import onnx_models as m  # noqa: E402
from tests.helpers.engine_http import metric  # noqa: E402
from tests.helpers.oci_registry import Registry  # noqa: E402

# Both engines on the same core and this client on another: the two engines see the same
# machine, and the logging engine's writer thread competes with its own requests, as on a
# one-core device. (Unpinned, the two processes land on different cores and their
# difference is the cores', not the log's.)
CORES = sorted(os.sched_getaffinity(0))
PIN_ENGINE = ["taskset", "-c", str(CORES[-1])] if len(CORES) > 1 else []


def logging_latency(tmp: Path, blocks: int, n: int) -> list[tuple[str, float, float, float]]:
    from PIL import Image

    from edgepipe import demo, yolo

    small = m.add_constant(tmp / "add.onnx", 1.0)
    trained = demo.trained_model_path()
    photo, _ = yolo.letterbox(np.asarray(Image.open(demo.astronaut_path()).convert("RGB")))
    noise = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    cases = [
        ("1x4 add", small, None, "x", np.ones((1, 4), np.float32)),
        ("trained YOLOv8s + postprocess, astronaut (boxes logged)", trained, {"kind": "yolov8"}, "images", photo),
        ("YOLOv8n-shaped raw [1,84,8400] (2.8 MB logged)", m.yolov8n_shaped(tmp / "n.onnx"), None, "images", noise),
    ]  # fmt: skip
    rows = []
    if PIN_ENGINE:
        os.sched_setaffinity(0, set(CORES[:-1]))
    for label, model, post, field, x in cases:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # as the engines' CONFIG_CPUS=1
        sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        feed = {inp.name: x.astype(np.float16) if "16" in inp.type else x}
        step: dict = {"model": {"name": "m", "path": str(model)}, "tensorFields": [field]}
        if post:
            step["postprocess"] = post
        config = tmp / f"case{len(rows)}.yaml"
        config.write_text(yaml.safe_dump({"name": "p", "steps": [step]}))
        body = arrow_request(x, field)
        engines = {}
        for mode in ("off", "on"):
            env = {
                "EDGEPIPE_ENGINE_LOG_INFERENCES": "true" if mode == "on" else "false",
                "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp / f"cache-{mode}-{len(rows)}"),
                "CONFIG_CPUS": "1",
                # A segment per block: its write falls inside the block it logs.
                "EDGEPIPE_ENGINE_LOG_SEGMENT_RECORDS": str(n),
            }
            engine = EngineProcess("--config", str(config), env=env)
            engine.args = [*PIN_ENGINE, *engine.args]
            engines[mode] = engine.start()
        try:
            clients = {k: Client(e.port) for k, e in engines.items()}
            for c in clients.values():  # warm-up
                for _ in range(5):
                    c.post("/pipelines/p", body, ARROW, ARROW)
            medians: dict[str, list[float]] = {"ort": [], "off": [], "on": []}
            sent = 0
            for b in range(blocks):
                run = lambda s=sess, f=feed: s.run(None, f)  # noqa: E731
                medians["ort"].append(statistics.median(timed(run, n)))
                # Blocks take turns, and the logging engine's writer finishes its records
                # before the other engine's block starts: its work is charged to itself.
                for mode in ("off", "on") if b % 2 else ("on", "off"):
                    while metric(engines["on"], "edgepipe_log_records_total") < sent:
                        time.sleep(0.05)
                    post = lambda c=clients[mode], x=body: c.post("/pipelines/p", x, ARROW, ARROW)  # noqa: E731
                    medians[mode].append(statistics.median(timed(post, n)))
                    if mode == "on":
                        sent += n
        finally:
            for e in engines.values():
                e.stop()
        ort_ms, off_ms, on_ms = (min(medians[k]) * 1000 for k in ("ort", "off", "on"))
        rows.append((label, ort_ms, off_ms, on_ms))
        mid = {k: statistics.median(v) * 1000 for k, v in medians.items()}
        print(
            f"  {label}: median of block medians off {mid['off']:.3f} ms, on {mid['on']:.3f} ms "
            f"({mid['on'] / mid['off']:.3f}x)",
            flush=True,
        )
    os.sched_setaffinity(0, set(CORES))
    return rows


def publish(reg: Registry, tmp: Path, model: Path, name: str, key: Path | None) -> dict:
    import subprocess

    config = tmp / f"{name}.json"
    config.write_text(
        json.dumps({"name": name, "steps": [{"model": {"name": "m", "path": str(model)}}]})
    )
    args = [sys.executable, "-m", "edgepipe.cli", "publish", "push", str(config),
            "--registry", f"{reg.host}/edge", "-o", "json"]  # fmt: skip
    if key:
        args += ["--sign-key", str(key)]
    env = {"OCI_USERNAME": reg.username, "OCI_PASSWORD": reg.password, "PATH": "/usr/bin:/bin"}
    return json.loads(
        subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    )


def edge_env(reg: Registry, status: dict, cache: Path) -> dict[str, str]:
    return {
        "PIPELINE_URL": status["pipelineUrl"], "OCI_REGISTRY": reg.host,
        "OCI_USERNAME": reg.username or "", "OCI_PASSWORD": reg.password or "",
        "OCI_PLAIN_HTTP": "true", "EDGEPIPE_ENGINE_CACHE_DIR": str(cache), "EDGE_NAME": "bench",
    }  # fmt: skip


def upload_after_outage(tmp: Path, records: int) -> tuple[int, int, float]:
    reg = Registry(tmp / "reg-outage", auth=True).start()
    try:
        status = publish(reg, tmp, m.add_constant(tmp / "one.onnx", 1.0), "outage", None)
        env = {
            **edge_env(reg, status, tmp / "cache-outage"),
            "EDGEPIPE_ENGINE_LOG_SEGMENT_RECORDS": "100",
            "EDGEPIPE_ENGINE_LOG_SEGMENT_SECONDS": "0.5",
            "EDGEPIPE_ENGINE_LOG_UPLOAD_SECONDS": "0.2",
        }
        with EngineProcess(env=env) as engine:
            reg.stop()
            body = arrow_request(np.ones((1, 4), np.float32), "x")
            c = Client(engine.port)
            for _ in range(records):
                c.post("/pipelines/outage", body, ARROW, ARROW)
            while metric(engine, "edgepipe_log_records_total") < records:
                time.sleep(0.1)
            segments = len(list((tmp / "cache-outage" / "logs" / "pending").glob("*.arrow")))
            reg.start()
            t0 = time.perf_counter()
            while metric(engine, "edgepipe_log_uploaded_records_total") < records:
                time.sleep(0.02)
            took = time.perf_counter() - t0
    finally:
        reg.stop()
    return records, segments, took


def cold_starts(tmp: Path, runs: int) -> dict[str, float]:
    reg = Registry(tmp / "reg-sign", auth=True).start()
    signer = signing.Signer.generate()
    (tmp / "k.pem").write_text(signer.private_pem())
    times: dict[str, list[float]] = {
        k: [] for k in ("fresh", "fresh+verify", "cached", "cached+verify")
    }

    def start(kind: str, i: int, verify: bool) -> None:
        env = edge_env(reg, status, tmp / f"c{i}{verify}")
        env["EDGEPIPE_ENGINE_LOG_INFERENCES"] = "false"
        if verify:
            env["OCI_VERIFY_KEY"] = signer.public_pem()
        t0 = time.perf_counter()
        EngineProcess(env=env, timeout=120).start().stop()
        times[kind + ("+verify" if verify else "")].append(time.perf_counter() - t0)

    try:
        status = publish(reg, tmp, m.yolov8n_shaped(tmp / "y.onnx"), "signed", tmp / "k.pem")
        for kind in ("fresh", "cached"):  # from the registry, then with it stopped
            if kind == "cached":
                reg.stop()
            for i in range(runs):
                for verify in (False, True):
                    start(kind, i, verify)
    finally:
        reg.stop()
    return {k: statistics.median(v) for k, v in times.items()}


def verify_alone(n: int) -> float:
    """Milliseconds to check one signature (parse the manifest, ECDSA P-256 verify)."""
    signer = signing.Signer.generate()
    digest = "sha256:" + "a" * 64
    body = signing.payload("r/p", digest)
    layer_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    layer = {
        "mediaType": signing.SIMPLE_SIGNING,
        "digest": layer_digest,
        "annotations": {signing.SIGNATURE_ANNOTATION: base64.b64encode(signer.sign(body)).decode()},
    }
    sigs = signing.Signatures(json.dumps({"layers": [layer]}).encode(), {layer_digest: body})
    key = signing.load_public_key(signer.public_pem())
    return statistics.median(timed(lambda: signing.verify(sigs, digest, key, "x"), n)) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--n", type=int, default=40, help="requests per block")
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(
            "| Arrow request, one client | onnxruntime in-process | log off | log on | on/off | off/ort | on/ort |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, o, off, on in logging_latency(tmp, args.blocks, args.n):
            print(
                f"| {label} | {o:.3f} ms | {off:.3f} ms | {on:.3f} ms | {on / off:.3f}x | {off / o:.2f}x | {on / o:.2f}x |"
            )
        records, segments, took = upload_after_outage(tmp, args.records)
        print(f"\nupload after the outage: {records} records in {segments} segments, "
              f"{took:.2f} s from the registry's return: {records / took:.0f} records/s")  # fmt: skip
        starts = cold_starts(tmp, args.runs)
        print("\n| edge start (process to ready), median | without verification | with | added |")
        print("|---|---:|---:|---:|")
        for kind in ("fresh", "cached"):
            a, b = starts[kind], starts[kind + "+verify"]
            print(
                f"| {kind} ({'registry' if kind == 'fresh' else 'offline, from the cache'}) | {a:.2f} s | {b:.2f} s | {1000 * (b - a):+.0f} ms ({b / a:.2f}x) |"
            )
        print(
            f"\nverify one signature in process (parse, ECDSA P-256 check): {verify_alone(200):.3f} ms"
        )


if __name__ == "__main__":
    main()
