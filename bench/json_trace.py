"""One pandas-records request's timeline, stage by stage, in the engine and its client.

The engine runs in a child process with its stages wrapped (body read, simdjson parse,
the rest of the decode, coercion, the model, the encode, the answer write): each logs its
start and end on ``perf_counter`` (``CLOCK_MONOTONIC``, the client's clock too) and its
thread's CPU. The client logs when it starts sending and when it has the whole answer.

    .venv/bin/python bench/json_trace.py [--model M] [--calls 20] [--tree DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
JSON = "application/json; format=pandas-records"


def _wrap(mod, name: str, log, label: str | None = None) -> None:
    """Log every call of ``mod.name`` (sync or async): (label, start, end, thread CPU)."""
    import asyncio
    import functools

    fn = getattr(mod, name)
    label = label or name
    if asyncio.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapped(*a, **k):
            # the loop thread's CPU meanwhile: its own only while no other request runs
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return await fn(*a, **k)
            finally:
                log.append((label, t0, time.perf_counter(), time.thread_time() - c0))

    else:

        @functools.wraps(fn)
        def wrapped(*a, **k):
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                log.append((label, t0, time.perf_counter(), time.thread_time() - c0))

    setattr(mod, name, wrapped)


def engine_main(out: str, argv: list[str]) -> None:
    """In the child: wrap the stages, serve, and dump the log at exit (SIGTERM)."""
    import atexit

    from edgepipe.engine import cli, dataplane, server
    from edgepipe.engine.codecs import json_records
    from edgepipe.engine.pipeline import Pipeline

    log: list = []
    _wrap(server, "read_body", log, "read body")
    _wrap(json_records, "_parse", log, "simdjson parse")
    _wrap(json_records, "_count_brackets", log, "[ count")
    _wrap(json_records, "decode", log, "decode (all)")
    _wrap(dataplane, "prepare_rows", log, "coerce+fit")
    _wrap(Pipeline, "run", log, "model")
    _wrap(json_records, "encode", log, "encode")
    _wrap(server, "_answer", log, "answer write")

    atexit.register(lambda: Path(out).write_text(json.dumps(log)))
    cli.main(argv)


def main() -> None:
    import numpy as np
    import orjson

    from bench.engine_rounds import Client
    from edgepipe.config import sanitize_name
    from edgepipe.localengine import EngineProcess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT.parent / "shared/models/yolov8n.onnx")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--tree", type=Path, help="run the engine package of this tree")
    args = parser.parse_args()
    out = tempfile.mktemp(suffix=".json")
    proc = EngineProcess("--model", str(args.model), env={"CONFIG_CPUS": "2"})
    # python json_trace.py --engine OUT TREE|- ENGINE-ARGS...
    proc.args[1:3] = [str(Path(__file__).resolve()), "--engine", out, str(args.tree or "-")]
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    body = orjson.dumps([{"images": x}], option=orjson.OPT_SERIALIZE_NUMPY)
    path = f"/pipelines/{sanitize_name(args.model.stem)}"
    calls = []
    proc.start()
    try:
        c = Client(proc.port)
        for _ in range(3):
            c.post(path, body, JSON)
        for _ in range(args.calls):
            t0 = time.perf_counter()
            c.post(path, body, JSON)
            calls.append((t0, time.perf_counter()))
            time.sleep(0.05)
    finally:
        proc.proc.terminate()
        proc.proc.wait(30)
    log = json.loads(Path(out).read_text())
    rows: dict[str, list[tuple[float, float, float | None]]] = {}
    for t0, t1 in calls:
        for label, s, e, cpu in log:
            if t0 <= s and e <= t1 + 0.01:
                rows.setdefault(label, []).append((s - t0, e - t0, cpu))
    print(f"load {os.getloadavg()[0]:.2f}; {args.calls} calls; ms from the client's first byte")
    print(f"{'stage':<16} {'start':>7} {'end':>7} {'wall':>6} {'CPU':>6}")
    for label, v in sorted(rows.items(), key=lambda kv: statistics.median(s for s, _, _ in kv[1])):
        cpus = [c for _, _, c in v if c is not None]
        cpu = f"{statistics.median(cpus) * 1e3:6.1f}" if cpus else "      "
        s, e = statistics.median(a for a, _, _ in v), statistics.median(b for _, b, _ in v)
        wall = statistics.median(b - a for a, b, _ in v)
        print(f"{label:<16} {s * 1e3:7.1f} {e * 1e3:7.1f} {wall * 1e3:6.1f} {cpu}")
    total = statistics.median(t1 - t0 for t0, t1 in calls)
    print(f"{'client-observed':<16} {0:7.1f} {total * 1e3:7.1f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--engine"]:
        if sys.argv[3] != "-":  # the engine package of another tree (engine_from.py)
            where = Path(sys.argv[3]).resolve() / "engine"
            finder = next(m for n, m in sys.modules.items() if n.startswith("__editable__"))
            finder.MAPPING["edgepipe.engine"] = str(where)
        engine_main(sys.argv[2], sys.argv[4:])
    else:
        main()
