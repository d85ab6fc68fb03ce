"""The pandas-records JSON request's engine share against direct onnxruntime and its floor.

Interleaved rounds on the 1x3x640x640 request (issue 31): each round calls direct
onnxruntime, the bare JSON floor server (``bench/json_floor.py``: simdjson, the model,
orjson, nothing else) and every engine ``--per-round`` times; a server's share is the
client-observed time minus the client's own orjson encode and decode, timed per call.
Also each server process's CPU per request (``/proc/PID/stat``).

    .venv/bin/python bench/json_ab.py [--before DIR] [--rounds 7] [--per-round 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.engine_bench import from_tree  # noqa: E402
from bench.engine_rounds import Client, retry  # noqa: E402
from edgepipe.config import sanitize_name  # noqa: E402
from edgepipe.localengine import EngineProcess, free_port  # noqa: E402

JSON = "application/json; format=pandas-records"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT.parent / "shared/models/yolov8n.onnx")
    parser.add_argument("--before", type=Path, action="append", default=[], help="a tree")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    env = {"CONFIG_CPUS": str(args.cpus)}
    trees = {"after": None} | {f"before{i or ''}": t for i, t in enumerate(args.before)}
    engines = {
        tag: from_tree(EngineProcess("--model", str(args.model), env=env), tree)
        for tag, tree in trees.items()
    }
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.cpus
    opts.inter_op_num_threads = 1
    direct = ort.InferenceSession(str(args.model), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    path = f"/pipelines/{sanitize_name(args.model.stem)}"
    floor_port = free_port()
    floor_args = [str(args.model), str(floor_port), str(args.cpus)]
    floor = subprocess.Popen([sys.executable, str(ROOT / "bench/json_floor.py"), *floor_args])
    for engine in engines.values():
        engine.start()
    try:
        clients = {tag: Client(e.port) for tag, e in engines.items()}
        clients["floor"] = Client(floor_port)
        first = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
        retry(lambda: clients["floor"].post("/infer", first, JSON), 60)
        pids = {tag: e.proc.pid for tag, e in engines.items()} | {"floor": floor.pid}
        paths = dict.fromkeys(engines, path) | {"floor": "/infer"}

        def json_call(tag: str) -> float:
            body = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
            t1 = time.perf_counter()
            out = clients[tag].post(paths[tag], body, JSON)
            t2 = time.perf_counter()
            (rec,) = orjson.loads(out)
            np.asarray(rec["outputs"][0]["Float"]["data"], dtype=np.float32)
            return t2 - t1

        def direct_call() -> float:
            t0 = time.perf_counter()
            direct.run(None, {"images": x})
            return time.perf_counter() - t0

        for tag in clients:
            for _ in range(3):
                json_call(tag)
        ratios: dict[str, list[float]] = {tag: [] for tag in clients}
        to_floor: dict[str, list[float]] = {tag: [] for tag in clients}
        cpu: dict[str, list[float]] = {tag: [] for tag in clients}
        shares: dict[str, list[float]] = {tag: [] for tag in clients}
        directs = []
        load0 = os.getloadavg()[0]
        for _ in range(args.rounds):
            d = statistics.median(direct_call() for _ in range(args.per_round))
            directs.append(d)
            for tag, pid in pids.items():
                c0 = cpu_s(pid)
                share = statistics.median(json_call(tag) for _ in range(args.per_round))
                cpu[tag].append((cpu_s(pid) - c0) / args.per_round)
                shares[tag].append(share)
                ratios[tag].append(share / d)
            for tag in clients:
                to_floor[tag].append(shares[tag][-1] / shares["floor"][-1])
        print(
            f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}; direct median "
            f"{statistics.median(directs) * 1e3:.1f} ms"
        )
        for tag in clients:
            r, f = ratios[tag], to_floor[tag]
            print(
                f"{tag}: share / direct {statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f}),"
                f" / the JSON floor {statistics.median(f):.2f} ({min(f):.2f}-{max(f):.2f}),"
                f" share {statistics.median(shares[tag]) * 1e3:.1f} ms,"
                f" CPU/request {statistics.median(cpu[tag]) * 1e3:.0f} ms"
            )
    finally:
        for engine in engines.values():
            engine.stop()
        floor.kill()
        floor.wait()


if __name__ == "__main__":
    main()
