"""RSS and CPU per call of the engine under 4 clients with and without room for a second session.

``memory_guard.py [--model M] [VARIANT ...]``: each variant is one engine process, 4
clients posting one Arrow image for 2 x 6 s: RSS at start, while busy (peak), 2.5 s after;
calls/s and the server's CPU per call. Variants: ``room`` (no memory limit: the second
session is made), ``no-room`` (a fake cgroup, 980 of 1024 MiB in use: the calls take turns
on the one session), ``before`` (the engine package of ``--before DIR``, e.g. ``git archive
6e364a9 engine | tar -x -C DIR``). The fake cgroup is ``memory.CGROUP`` set in the engine
process (``memory_guard.py --engine CGROUP_DIR ENGINE_ARGS...``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.engine_rounds import ARROW, arrow_request, throughput  # noqa: E402
from bench.engine_tp import clients_call, process_cpu  # noqa: E402
from edgepipe.localengine import EngineProcess  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_engine(cgroup: str, args: list[str]) -> None:
    from edgepipe.engine import cli, memory

    memory.CGROUP = Path(cgroup)
    cli.main(args)


def measure(name: str, proc: EngineProcess, body: bytes, path: str) -> None:
    proc.start()
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(proc.url + "/health/ready", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        pid = proc.proc.pid
        start = rss_mb(pid)
        call = clients_call(proc.port, path, body, ARROW, ARROW)
        call()
        peak, stop = [0.0], threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_mb(pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        cpu0 = process_cpu(pid)
        rates = [throughput(call, 4, 6.0) for _ in range(2)]
        cpu_ms = (process_cpu(pid) - cpu0) * 1000 / (sum(rates) * 6.0)
        stop.set()
        sampler.join()
        time.sleep(2.5)
        print(
            f"{name}: RSS start {start:.0f} MB, busy peak {peak[0]:.0f}, 2.5 s idle "
            f"{rss_mb(pid):.0f}; calls/s {rates[0]:.1f} {rates[1]:.1f}; server CPU/call "
            f"{cpu_ms:.1f} ms; load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    finally:
        proc.stop()


def main() -> None:
    if sys.argv[1:2] == ["--engine"]:
        run_engine(sys.argv[2], sys.argv[3:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT.parent / "shared/models/yolov8n.onnx")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("variants", nargs="*", default=["room", "no-room"])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="edgepipe-guard-"))
    room, tight = tmp / "room", tmp / "tight"
    room.mkdir()
    tight.mkdir()
    (tight / "memory.max").write_text(f"{1024 << 20}\n")
    (tight / "memory.current").write_text(f"{980 << 20}\n")
    x = np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)
    body = arrow_request(x)
    from edgepipe.config import sanitize_name

    path = f"/pipelines/{sanitize_name(args.model.stem)}"
    for name in args.variants:
        proc = EngineProcess("--model", str(args.model), env={"CONFIG_CPUS": str(args.cpus)})
        if name == "before":
            proc.args[1:3] = [str(ROOT / "bench/engine_from.py"), str(args.before)]
        else:
            cgroup = tight if name == "no-room" else room
            proc.args[1:3] = [str(Path(__file__).resolve()), "--engine", str(cgroup)]
        measure(name, proc, body, path)


if __name__ == "__main__":
    main()
