"""Engine benchmark: every figure as a ratio to its floor, measured side by side in one run.

Run with ``make bench`` (or ``.venv/bin/python bench/engine_bench.py``). On one YOLOv8
model (``--model``; by default ``shared/models/yolov8n.onnx`` beside the clone when it is
there, else the trained YOLOv8s that ``scripts/setup`` installs), with the same thread
count, in interleaved rounds (``engine_rounds.Rounds``: a ratio is taken within a round,
then the median over rounds, so that load from other jobs slows both sides alike):

* direct: ``session.run`` in this process;
* the HTTP floor (``bench/floor_server.py``): a bare aiohttp app taking raw float32 bytes,
  running the same session in a thread and answering raw bytes; and its ``/echo``, the
  floor of a small request;
* the engine over loopback HTTP: Arrow in and out; pandas-records JSON in and out (the
  client uses orjson; its own encode and decode are measured per call and taken off);
  a 1x4 JSON request to a one-op model;
* OIP v2 gRPC (tritonclient.grpc, binary tensors) on a YOLOv8n-shaped model with a dynamic
  batch (~6 ms), against ``bench/grpc_floor.py``: a bare grpc.aio server with the same
  messages and no model (the floor), and the same server running the model in a thread;
* throughput with 4 clients (Arrow) against direct onnxruntime's best (one session of one
  intra-op thread called by ``--cpus`` threads) and against the HTTP floor serving with
  that same setting, with each server's CPU per call (``engine_tp.py``);
* 4-client throughput with one model call at a time (``INFER_WORKERS=1``; the before
  tree: a call per core, ``INFER_WORKERS=--cpus``), and with onnxruntime's intra-op
  threads spinning after calls too and never (``INTRA_OP_SPINNING`` on and off; the
  default spins during calls only), and those two's Arrow latency;
* the engine's RSS after start-up and after 100 and 500 mixed requests;
* the YOLOv8 decode (transpose, threshold, NMS) on a [1,84,8400] output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import engine_tp  # noqa: E402
from bench.engine_rounds import (  # noqa: E402
    ARROW,
    Client,
    Rounds,
    arrow_request,
    retry,
    throughput,
    timed,
)
from edgepipe import yolo  # noqa: E402
from edgepipe.config import sanitize_name  # noqa: E402
from edgepipe.localengine import EngineProcess, free_port  # noqa: E402

__all__ = ["ARROW", "Client", "arrow_request", "throughput", "timed"]
JSON = "application/json; format=pandas-records"
OCTETS = "application/octet-stream"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def session(model: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])


def spawn(*args: str) -> subprocess.Popen:
    cmd = [sys.executable, *args]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def from_tree(proc: EngineProcess, tree: Path | None) -> EngineProcess:
    """The engine process run with the engine package of ``tree`` (bench/engine_from.py)."""
    if tree is not None:
        proc.args[1:3] = [str(ROOT / "bench/engine_from.py"), str(tree)]
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a model with a 1x3x640x640 input")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=8)
    parser.add_argument("--rss-requests", type=int, default=500)
    parser.add_argument("--tp-seconds", type=float, default=6.0)
    parser.add_argument("--tp-rounds", type=int, default=3)
    parser.add_argument("--skip-tp", action="store_true", help="latency rounds only")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="also run the engine package from this tree (holding engine/), side by side",
    )
    args = parser.parse_args()
    cpus = args.cpus
    if args.model is None:
        shared = ROOT.parent / "shared/models/yolov8n.onnx"
        if shared.exists():
            args.model = shared
        else:
            from edgepipe.demo import trained_model_path

            args.model = trained_model_path()
    from tests.helpers import onnx_models

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="edgepipe-bench-"))
    small_model = onnx_models.scale(tmp / "scale.onnx", 2.0)
    dyn_model = onnx_models.yolov8n_shaped(tmp / "yolov8n-dyn.onnx", dynamic_batch=True)
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 640, 640), dtype=np.float32)
    raw_in = x.tobytes()
    json_in = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
    arrow_in = arrow_request(x)
    small_in = b'[{"y": [1.5, 2.0, -3.25, 4.0]}]'
    direct_s, dyn_s = session(args.model, cpus), session(dyn_model, cpus)

    env = {"CONFIG_CPUS": str(cpus)}
    logdir = ROOT / "out"
    logdir.mkdir(exist_ok=True)
    trees = {"": None, "before ": args.before} if args.before else {"": None}
    engines: dict[str, EngineProcess] = {}
    other_workers = {"": "1", "before ": str(cpus)}
    for tag, tree in trees.items():
        for key, model, extra in (
            ("engine", args.model, {}),
            ("small", small_model, {}),
            ("dyn", dyn_model, {}),
            # the other setting of the model calls: one at a time on all the threads (the
            # before tree's default), or a call per core (the default since issue 31)
            ("other", args.model, {"EDGEPIPE_ENGINE_INFER_WORKERS": other_workers[tag]}),
            # onnxruntime's intra-op threads: spinning after calls too (onnxruntime's
            # default, and the before tree's) and never spinning; the default spins while
            # a call runs
            ("spin on", args.model, {"EDGEPIPE_ENGINE_INTRA_OP_SPINNING": "on"}),
            ("spin off", args.model, {"EDGEPIPE_ENGINE_INTRA_OP_SPINNING": "off"}),
        ):
            if key.startswith("spin") and tree is not None:
                continue
            log = logdir / f"bench-{tag.strip() or 'after'}-{key}.log"
            engines[tag + key] = from_tree(
                EngineProcess("--model", str(model), env={**env, **extra}, log_path=log), tree
            )
    # The engines bind their ports before the floors' are picked: a port picked free but
    # not yet bound could be picked twice.
    startup_rss = {}
    for key, proc in engines.items():
        proc.start()
        if key.endswith("engine"):
            startup_rss[key] = rss_mb(proc.proc.pid)
    floor_port, gfloor_port, gmodel_port = free_port(), free_port(), free_port()
    tp_floor_port = free_port()
    floors = [
        spawn(str(ROOT / "bench/floor_server.py"), str(args.model), str(floor_port), str(cpus)),
        # the throughput floor: direct's best setting (1 thread a call, a call a core)
        spawn(
            str(ROOT / "bench/floor_server.py"),
            *(str(args.model), str(tp_floor_port), str(cpus), "1"),
        ),
        spawn(str(ROOT / "bench/grpc_floor.py"), str(gfloor_port)),
        spawn(str(ROOT / "bench/grpc_floor.py"), str(gmodel_port), str(dyn_model), str(cpus)),
    ]
    import tritonclient.grpc as grpcclient

    try:
        name = sanitize_name(
            args.model.stem
        )  # the name the engine gives it (best_fp16 -> best-fp16)
        path = f"/pipelines/{name}"
        fc = Client(floor_port)
        retry(lambda: fc.post("/infer", raw_in, OCTETS), 60)
        retry(lambda: Client(tp_floor_port).post("/infer", raw_in, OCTETS), 60)
        grpc_targets = {"grpc floor": f"127.0.0.1:{gfloor_port}"}
        grpc_targets["grpc floor+model"] = f"127.0.0.1:{gmodel_port}"
        for tag in trees:
            grpc_targets[tag + "grpc"] = engines[tag + "dyn"].grpc_target
        grpc_clients = {k: grpcclient.InferenceServerClient(t) for k, t in grpc_targets.items()}

        def grpc_call(which: str):
            inp = grpcclient.InferInput("images", [1, 3, 640, 640], "FP32")
            inp.set_data_from_numpy(x)
            return grpc_clients[which].infer("yolov8n-dyn", [inp]).as_numpy("output0")

        for which in grpc_clients:
            retry(lambda w=which: grpc_call(w), 60)
        client_s: dict[str, list[float]] = {tag: [] for tag in trees}
        server_decode: list[float] = []

        def json_roundtrip(c: Client, tag: str) -> None:
            t0 = time.perf_counter()
            body = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
            t1 = time.perf_counter()
            out = c.post(path, body, JSON)
            t2 = time.perf_counter()
            rec = orjson.loads(out)[0]
            np.asarray(rec["outputs"][0]["Float"]["data"], dtype=np.float32)
            client_s[tag].append(t1 - t0 + time.perf_counter() - t2)
            server_decode.append(rec["elapsed"][0] / 1e9)

        def arrow_roundtrip(c: Client) -> None:
            out = c.post(path, arrow_in, ARROW, ARROW)
            t = pa.ipc.open_file(pa.py_buffer(out)).read_all()
            t.column("out.output0").chunk(0).to_numpy_ndarray()

        variants = {
            "direct": lambda: direct_s.run(None, {"images": x}),
            "floor": lambda: np.frombuffer(fc.post("/infer", raw_in, OCTETS), np.float32),
            "echo": lambda: fc.post("/echo", small_in, OCTETS),
            "direct dyn": lambda: dyn_s.run(None, {"images": x}),
            "grpc floor": lambda: grpc_call("grpc floor"),
            "grpc floor+model": lambda: grpc_call("grpc floor+model"),
        }
        for tag in trees:
            ec, sc = Client(engines[tag + "engine"].port), Client(engines[tag + "small"].port)
            variants[tag + "arrow"] = lambda c=ec: arrow_roundtrip(c)
            variants[tag + "json"] = lambda c=ec, t=tag: json_roundtrip(c, t)
            variants[tag + "small"] = lambda c=sc: c.post("/pipelines/scale", small_in, JSON)
            variants[tag + "grpc"] = lambda t=tag: grpc_call(t + "grpc")
        for key in ("spin on", "spin off"):
            spin_client = Client(engines[key].port)
            variants[f"{key} arrow"] = lambda c=spin_client: arrow_roundtrip(c)
        rounds = Rounds(variants, args.rounds, args.per_round)
        per = args.per_round
        json_client = {}
        for tag, times in client_s.items():
            times = times[2:]  # the warm-up's
            json_client[tag] = [
                statistics.median(times[i * per : (i + 1) * per]) for i in range(args.rounds)
            ]

        # RSS under mixed requests, one at a time (before the throughput rounds, whose
        # concurrent calls leave their own heap): JSON and Arrow images, bad requests.
        rss = {tag: {"start-up": startup_rss[tag + "engine"]} for tag in trees}
        bad = b'[{"images": [[1, 2], [3]]}]'
        for tag in trees:
            ec = Client(engines[tag + "engine"].port)
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
                    rss[tag][f"after {i}"] = rss_mb(engines[tag + "engine"].proc.pid)
            time.sleep(2.5)  # the engine gives freed heap back after 1 s idle
            rss[tag]["then 2.5 s idle"] = rss_mb(engines[tag + "engine"].proc.pid)

        tp = None
        if not args.skip_tp:
            s1 = session(args.model, 1)
            tp_engines = {}
            for tag in trees:
                for key in ("engine", "other"):
                    what = "defaults" if key == "engine" else f"INFER_WORKERS={other_workers[tag]}"
                    proc = engines[tag + key]
                    tp_engines[f"{tag}engine, {what}"] = (proc.port, proc.proc.pid)
            for key in ("spin on", "spin off"):
                proc = engines[key]
                tp_engines[f"engine, INTRA_OP_SPINNING={key[5:]}"] = (proc.port, proc.proc.pid)
            tp = engine_tp.rounds(
                variants["direct"],
                lambda: s1.run(None, {"images": x}),
                variants["direct"],
                (tp_floor_port, floors[1].pid),
                raw_in,
                tp_engines,
                path,
                arrow_in,
                cpus,
                args.tp_seconds,
                args.tp_rounds,
            )
            # The defaults' engines have just served 4 clients.
            pids = {tag: engines[tag + "engine"].proc.pid for tag in trees}
            for tag, pid in pids.items():
                rss[tag]["after 4 clients"] = rss_mb(pid)
            time.sleep(2.5)
            for tag, pid in pids.items():
                rss[tag]["then 2.5 s idle again"] = rss_mb(pid)

        out = direct_s.run(None, {"images": x})[0]
        dec = timed(lambda: yolo.decode(out, confidence_thres=0.5, iou_thres=0.25), 50)
    finally:
        for proc in engines.values():
            proc.stop()
        for floor in floors:
            floor.terminate()
            floor.wait()
    report(args, load_before, trees, rounds, json_client, client_s, server_decode, tp, rss, dec)


def report(args, load_before, trees, rounds, json_client, client_s, server_decode, tp, rss, dec):
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, onnxruntime {ort.__version__}, CONFIG_CPUS={args.cpus}"
    )
    load_after = os.getloadavg()
    print(
        f"model: {args.model.name}; {args.rounds} interleaved rounds x {args.per_round} calls; "
        f"load average (1/5/15 min) before {'/'.join(f'{v:.1f}' for v in load_before)}, after "
        f"{'/'.join(f'{v:.1f}' for v in load_after)}"
    )
    if args.before:
        print(f"'before': the engine package from {args.before}; the rest: this checkout")
    print("\n| variant | median ms | ratio | to | ratio range over rounds |")
    print("|---|---:|---:|---|---|")
    rows = [
        ("direct onnxruntime", "direct", "direct", None),
        ("HTTP floor: raw bytes, bare aiohttp", "floor", "direct", None),
        ("HTTP floor: /echo of the 1x4 body", "echo", "echo", None),
        ("direct onnxruntime, YOLOv8n-shaped dyn", "direct dyn", "direct dyn", None),
        ("gRPC floor: bare grpc.aio, no model", "grpc floor", "grpc floor", None),
        ("gRPC floor + the model in a thread", "grpc floor+model", "grpc floor", None),
    ]
    for tag in trees:
        rows += [
            (f"{tag}engine Arrow in/out", tag + "arrow", "floor", None),
            (f"{tag}engine Arrow in/out", tag + "arrow", "direct", None),
            (f"{tag}engine JSON in/out, client incl.", tag + "json", "direct", None),
            (f"{tag}engine JSON in/out, client excl.", tag + "json", "direct", json_client[tag]),
            (f"{tag}engine JSON 1x4 (one-op model)", tag + "small", "echo", None),
            (f"{tag}engine OIP v2 gRPC (tritonclient)", tag + "grpc", "grpc floor", None),
            (f"{tag}engine OIP v2 gRPC (tritonclient)", tag + "grpc", "grpc floor+model", None),
        ]
    for key in ("spin on", "spin off"):
        text = f"engine Arrow in/out, INTRA_OP_SPINNING={key[5:]}"
        rows += [(text, f"{key} arrow", "floor", None), (text, f"{key} arrow", "arrow", None)]
    for text, label, base, minus in rows:
        ms = rounds.ms(label)
        if minus is not None:
            ms -= statistics.median(minus) * 1000
        lo, hi = rounds.spread(label, base)
        print(
            f"| {text} | {ms:.1f} | {rounds.ratio(label, base, minus):.2f} | {base} | "
            f"{lo:.2f}-{hi:.2f} |"
        )
    for tag, times in client_s.items():
        print(
            f"\n{tag}JSON client (orjson encode + decode) median "
            f"{statistics.median(times) * 1000:.1f} ms"
        )
    print(f"engine-side JSON decode median {statistics.median(server_decode) * 1000:.1f} ms")
    if tp is not None:
        engine_tp.report(*tp)
    print("\n| engine RSS | MB | x start-up |")
    print("|---|---:|---:|")
    for tag, figures in rss.items():
        for k, v in figures.items():
            print(f"| {tag}{k} | {v:.0f} | {v / figures['start-up']:.2f} |")
    print(f"\nYOLOv8 decode of [1,84,8400]: median {statistics.median(dec) * 1000:.2f} ms")


if __name__ == "__main__":
    main()
