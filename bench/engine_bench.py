"""Engine benchmark: every figure as a ratio to onnxruntime run directly in-process.

Run with ``make bench`` (or ``.venv/bin/python bench/engine_bench.py``). In one run, on one
machine, it measures on one YOLOv8 model (``--model``; by default ``shared/models/yolov8n.onnx``
beside the clone when it is there, else the trained YOLOv8s that ``scripts/setup`` installs)
with the same thread count:

* the baseline: ``session.run`` in this process;
* a floor: a minimal aiohttp server that takes raw float32 bytes, runs the same session in
  a thread and returns raw bytes (``bench/floor_server.py``);
* the engine over loopback HTTP: Arrow in and out, and pandas-records JSON in and out (the
  client uses orjson; its own encode/decode time is reported apart);
* throughput with 1 and 4 concurrent clients (Arrow), with one model call at a time and
  with one single-threaded call per core, against direct onnxruntime's best;
* the engine's RSS after start-up and after 100 and 500 mixed requests;
* the YOLOv8 decode (transpose, threshold, NMS) on a [1,84,8400] output.

onnxruntime on two shared cores sometimes runs whole stretches ~3x slower, so the variants
run in interleaved blocks and each is reported by its least-disturbed block (the block with
the lowest median).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pyarrow as pa

from edgepipe import yolo
from edgepipe.localengine import EngineProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
JSON = "application/json; format=pandas-records"
ARROW = "application/vnd.apache.arrow.file"


class Client:
    """One keep-alive HTTP connection, as a benchmark client would hold."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: bytes, ctype: str, accept: str | None = None) -> bytes:
        headers = {"Content-Type": ctype}
        if accept:
            headers["Accept"] = accept
        self.conn.request("POST", path, body=body, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:300]!r}")
        return data


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def arrow_request(x: np.ndarray, field: str = "images") -> bytes:
    table = pa.table({field: pa.FixedShapeTensorArray.from_numpy_ndarray(x)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def throughput(fn: Callable[[], object], clients: int, seconds: float) -> float:
    """Completed calls per second with ``clients`` threads calling ``fn`` in a loop."""
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def worker(i: int) -> None:
        while time.perf_counter() < stop:
            fn()
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model with a 1x3x640x640 input")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--per-block", type=int, default=8)
    parser.add_argument("--rss-requests", type=int, default=500)
    parser.add_argument("--tp-seconds", type=float, default=8.0)
    args = parser.parse_args()
    cpus = args.cpus
    if args.model is None:
        shared = ROOT.parent / "shared/models/yolov8n.onnx"
        if shared.exists():
            args.model = shared
        else:
            from edgepipe.demo import trained_model_path

            args.model = trained_model_path()

    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 640, 640), dtype=np.float32)
    raw_in = x.tobytes()
    json_in = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
    arrow_in = arrow_request(x)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpus
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])

    def direct() -> None:
        session.run(None, {"images": x})

    env = {"CONFIG_CPUS": str(cpus)}
    logdir = ROOT / "out"
    logdir.mkdir(exist_ok=True)
    engine = EngineProcess(
        "--model", str(args.model), env=env, log_path=logdir / "bench-engine.log"
    )
    floor_port = free_port()
    floor = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench/floor_server.py"),
            str(args.model),
            str(floor_port),
            str(cpus),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    engine.start()
    startup_rss = rss_mb(engine.proc.pid)
    try:
        deadline = time.time() + 30
        while True:
            try:
                Client(floor_port).post("/infer", raw_in, "application/octet-stream")
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        name = args.model.stem
        ec, fc = Client(engine.port), Client(floor_port)
        path = f"/pipelines/{name}"
        client_times: dict[str, list[float]] = {"encode": [], "decode": []}
        server_decode: list[float] = []

        def json_roundtrip() -> None:
            t0 = time.perf_counter()
            body = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
            t1 = time.perf_counter()
            out = ec.post(path, body, JSON)
            t2 = time.perf_counter()
            rec = orjson.loads(out)[0]
            np.asarray(rec["outputs"][0]["Float"]["data"], dtype=np.float32)
            t3 = time.perf_counter()
            client_times["encode"].append(t1 - t0)
            client_times["decode"].append(t3 - t2)
            server_decode.append(rec["elapsed"][0] / 1e9)

        def arrow_roundtrip() -> None:
            out = ec.post(path, arrow_in, ARROW, ARROW)
            t = pa.ipc.open_file(pa.py_buffer(out)).read_all()
            t.column("out.output0").chunk(0).to_numpy_ndarray()

        def floor_roundtrip() -> None:
            np.frombuffer(fc.post("/infer", raw_in, "application/octet-stream"), np.float32)

        variants = {
            "direct onnxruntime (baseline)": direct,
            "floor: raw-bytes aiohttp": floor_roundtrip,
            "engine Arrow in/out": arrow_roundtrip,
            "engine JSON in/out (client incl.)": json_roundtrip,
        }
        for fn in variants.values():  # warm-up
            fn()
            fn()
        client_times = {"encode": [], "decode": []}
        server_decode.clear()
        blocks: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(args.blocks):
            for label, fn in variants.items():
                blocks[label].append(statistics.median(timed(fn, args.per_block)))
        best = {k: min(v) for k, v in blocks.items()}
        base = best["direct onnxruntime (baseline)"]

        # Throughput. Direct onnxruntime's best: one session with all threads called from one
        # or two threads, or single-threaded calls side by side (usually the fastest).
        single = ort.SessionOptions()
        single.intra_op_num_threads = 1
        single.inter_op_num_threads = 1
        s1 = ort.InferenceSession(str(args.model), single, providers=["CPUExecutionProvider"])
        s1.run(None, {"images": x})
        tp_direct = {
            f"{cpus} threads/call, {n} caller(s)": throughput(direct, n, args.tp_seconds)
            for n in (1, 2)
        }
        tp_direct[f"1 thread/call, {cpus} callers"] = throughput(
            lambda: s1.run(None, {"images": x}), cpus, args.tp_seconds
        )
        tp_direct_best = max(tp_direct.values())

        def engine_throughput(port: int, clients: int) -> float:
            conns = [Client(port) for _ in range(clients)]
            it = iter(range(10**9))
            local = threading.local()

            def call() -> None:
                if not hasattr(local, "c"):
                    local.c = conns[next(it)]
                local.c.post(path, arrow_in, ARROW, ARROW)

            return throughput(call, clients, args.tp_seconds)

        tp_engine = {
            f"INFER_WORKERS=1, {n} client(s)": engine_throughput(engine.port, n) for n in (1, 4)
        }
        wide = EngineProcess(
            "--model",
            str(args.model),
            env={**env, "EDGEPIPE_ENGINE_INFER_WORKERS": str(cpus)},
            log_path=logdir / "bench-engine-wide.log",
        ).start()
        try:
            for n in (1, 4):
                tp_engine[f"INFER_WORKERS={cpus}, {n} client(s)"] = engine_throughput(wide.port, n)
        finally:
            wide.stop()

        # RSS under mixed requests: JSON and Arrow images, plus bad requests.
        rss = {"start-up": startup_rss}
        bad = b'[{"images": [[1, 2], [3]]}]'
        for i in range(1, args.rss_requests + 1):
            kind = i % 4
            if kind == 0:
                ec.post(path, json_in, JSON)
            elif kind == 1:
                ec.post(path, arrow_in, ARROW, ARROW)
            elif kind == 2:
                ec.post(path, arrow_in, ARROW)
            else:
                with contextlib.suppress(RuntimeError):
                    ec.post(path, bad, JSON)
            if i in (100, args.rss_requests):
                rss[f"after {i}"] = rss_mb(engine.proc.pid)

        # YOLO decode on a real-shaped output.
        out = session.run(None, {"images": x})[0]
        dec = timed(lambda: yolo.decode(out, confidence_thres=0.5, iou_thres=0.25), 50)
    finally:
        engine.stop()
        floor.terminate()
        floor.wait()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}, CONFIG_CPUS={cpus}"
    )
    print(
        f"model: {args.model.name}; {args.blocks} blocks x {args.per_block} requests, "
        "least-disturbed block median\n"
    )
    print(f"| {'variant':<36} | {'median ms':>9} | {'x direct':>8} |")
    print(f"|{'-' * 38}|{'-' * 11}|{'-' * 10}|")
    for label, v in best.items():
        print(f"| {label:<36} | {v * 1000:9.1f} | {v / base:8.2f} |")
    enc = statistics.median(client_times["encode"]) * 1000
    cdec = statistics.median(client_times["decode"]) * 1000
    sdec = statistics.median(server_decode) * 1000
    json_server = best["engine JSON in/out (client incl.)"] - (enc + cdec) / 1000
    print(
        f"| {'engine JSON in/out (client excl.)':<36} | {json_server * 1000:9.1f} | "
        f"{json_server / base:8.2f} |"
    )
    print(
        f"\nJSON client time: encode {enc:.1f} ms, decode {cdec:.1f} ms; engine-side JSON "
        f"decode {sdec:.1f} ms = {sdec / (base * 1000):.2f} x the model's own time"
    )
    print("\n| throughput (Arrow for the engine) | calls/s | x direct best |")
    print("|---|---:|---:|")
    for label, v in tp_direct.items():
        print(f"| direct onnxruntime, {label} | {v:.2f} | {v / tp_direct_best:.2f} |")
    for label, v in tp_engine.items():
        print(f"| engine, {label} | {v:.2f} | {v / tp_direct_best:.2f} |")
    print("\n| engine RSS | MB | x start-up |")
    print("|---|---:|---:|")
    for k, v in rss.items():
        print(f"| {k} | {v:.0f} | {v / rss['start-up']:.2f} |")
    print(f"\nYOLOv8 decode of [1,84,8400]: median {statistics.median(dec) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
