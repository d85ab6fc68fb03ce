"""The 1x4 JSON request's latency, engines side by side: the spinning settings and a
before tree, many interleaved rounds (a sub-millisecond figure needs more calls than
engine_bench.py's rounds give it).

    .venv/bin/python bench/small_request_ab.py [--before DIR] [--rounds 20] [--calls 50]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.engine_bench import from_tree
from bench.engine_rounds import Client
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models

BODY = b'[{"y": [1.5, 2.0, -3.25, 4.0]}]'
JSON = "application/json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, help="a tree holding engine/, run beside")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=50, help="calls per engine per round")
    args = parser.parse_args()
    model = onnx_models.scale(Path(tempfile.mkdtemp()) / "scale.onnx", 2.0)
    env = {"CONFIG_CPUS": "2"}
    engines = {
        f"spinning {s}": EngineProcess(
            "--model", str(model), env={**env, "EDGEPIPE_ENGINE_INTRA_OP_SPINNING": s}
        )
        for s in ("calls", "on", "off")
    }
    if args.before:
        engines["before"] = from_tree(EngineProcess("--model", str(model), env=env), args.before)
    for engine in engines.values():
        engine.start()
    try:
        clients = {k: Client(e.port) for k, e in engines.items()}
        for client in clients.values():  # warm-up
            for _ in range(args.calls):
                client.post("/pipelines/scale", BODY, JSON)
        medians: dict[str, list[float]] = {k: [] for k in engines}
        for _ in range(args.rounds):
            for key, client in clients.items():
                times = []
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    client.post("/pipelines/scale", BODY, JSON)
                    times.append(time.perf_counter() - t0)
                medians[key].append(statistics.median(times))
        for key, values in medians.items():
            print(f"{key}: p50 {statistics.median(values) * 1e3:.3f} ms (median of rounds)")
    finally:
        for engine in engines.values():
            engine.stop()


if __name__ == "__main__":
    main()
