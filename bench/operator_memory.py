"""Where the operator's memory goes: N Pipelines on a fresh test control plane, the operator
run under memray (native frames) or with tracemalloc, and each profiler's top allocators.

    .venv/bin/python bench/operator_memory.py memray --pipelines 200 --out DIR
    .venv/bin/python bench/operator_memory.py tracemalloc --pipelines 200 --out DIR

memray writes DIR/operator-N.bin (``memray summary``/``memray flamegraph`` read it) and
DIR/memray-N.txt (the allocators alive at the peak, largest first); tracemalloc writes
DIR/tracemalloc-N.txt (the Python heap by line and the asyncio tasks alive, 10 s after every
Pipeline is Running).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NAMESPACE = "scale"


def child(out: Path) -> None:
    """The operator itself: on SIGUSR1 a tracemalloc snapshot is written with the asyncio
    tasks alive then (kopf's per-object workers among them). One frame per allocation:
    with eight, each snapshot stalled the operator for many seconds on a loaded machine."""
    import tracemalloc

    tracemalloc.start(1)

    def dump(*_: object) -> None:
        snapshot = tracemalloc.take_snapshot()
        lines = [f"# traced {tracemalloc.get_traced_memory()[0] / 2**20:.1f} MiB", census()]
        for group in ("filename", "lineno"):
            lines.append(f"\n# top 25 by {group}")
            for stat in snapshot.statistics(group)[:25]:
                lines.append(f"{stat.size / 2**20:8.2f} MiB {stat.count:8d} {stat.traceback}")
        out.write_text("\n".join(lines) + "\n")

    signal.signal(signal.SIGUSR1, dump)
    from edgepipe_operator.cli import main

    main(["run", "--all-namespaces"])


def census() -> str:
    """The asyncio tasks alive, by their coroutine; the queued watch events."""
    import asyncio
    import gc
    from collections import Counter

    tasks: Counter[str] = Counter()
    queued = 0
    for obj in gc.get_objects():
        if isinstance(obj, asyncio.Task):
            tasks[obj.get_coro().__qualname__] += 1
        elif isinstance(obj, asyncio.Queue):
            queued += obj.qsize()
    top = ", ".join(f"{n} {name}" for name, n in tasks.most_common(6))
    return f"asyncio tasks: {sum(tasks.values())} ({top}); events queued: {queued}"


def operator_command(mode: str, n: int, out: Path) -> list[str]:
    if mode == "memray":
        memray = str(Path(sys.executable).parent / "memray")
        binary = out / f"operator-{n}.bin"
        binary.unlink(missing_ok=True)
        tracked = ["--native", "--trace-python-allocators"]  # every object, not pymalloc's arenas
        return [memray, "run", *tracked, "-q", "-o", str(binary), "-m", "edgepipe_operator.cli"]
    return [sys.executable, __file__, "child", str(out / f"tracemalloc-{n}.txt")]


def run(mode: str, n: int, out: Path) -> None:
    from tests.helpers.scale_cluster import ProcStats, ScaleCluster, pipeline, wait_until

    with tempfile.TemporaryDirectory(prefix="edgepipe-memory-") as tmp:
        cluster = ScaleCluster(Path(tmp) / "cp", pods=2 * n + 20).start()
        proc = None
        try:
            cluster.namespace(NAMESPACE)
            env = {
                **os.environ,
                "KUBECONFIG": cluster.info["operator_kubeconfig"],
                "EDGEPIPE_OPERATOR_ENGINE_IMAGE": "edgepipe:scale-a",
                "EDGEPIPE_OPERATOR_PROBE_ENGINES": "false",
            }
            command = operator_command(mode, n, out)
            args = [] if mode == "tracemalloc" else ["run", "--all-namespaces"]
            with open(out / f"operator-{mode}-{n}.log", "wb") as log:
                proc = subprocess.Popen(command + args, env=env, stdout=log, stderr=log)
                time.sleep(5)
                cluster.create(NAMESPACE, (pipeline(f"p{i:04d}", NAMESPACE) for i in range(n)))
                wait_until(
                    f"{n} Running",
                    lambda: cluster.phases(NAMESPACE).get("Running", 0) == n,
                    900,
                    2.0,
                )
                time.sleep(10)
                rss = ProcStats(proc.pid).memory_mb()
                print(f"{mode} N={n}: RSS now/peak MB {rss}", flush=True)
                if mode == "tracemalloc":
                    proc.send_signal(signal.SIGUSR1)
                    time.sleep(5)
                proc.send_signal(signal.SIGINT)
                proc.wait(120)
        finally:
            if proc and proc.poll() is None:
                proc.kill()
            cluster.stop()
    if mode == "memray":
        (out / f"memray-{n}.txt").write_text(peak_report(out / f"operator-{n}.bin"))


def peak_report(binary: Path, rows: int = 25) -> str:
    """What was alive at the high-water mark: by the native function that allocated it
    (under Python's own allocator, the Python line) and by the Python line that holds it."""
    from collections import Counter

    from memray import FileReader

    reader = FileReader(str(binary))
    by_native: Counter[str] = Counter()
    by_python: Counter[str] = Counter()
    total = 0
    for record in reader.get_high_watermark_allocation_records(merge_threads=True):
        total += record.size
        hybrid = record.hybrid_stack_trace(max_stacks=12)
        native = [f for f in hybrid if not f[1].endswith(".py")]
        python = [f for f in hybrid if f[1].endswith(".py")]
        top = native[0] if native else (hybrid[0] if hybrid else ("?", "?", 0))
        by_native[f"{top[0]} ({Path(top[1]).name})"] += record.size
        where = next((f for f in python if "site-packages" in f[1] or "edgepipe" in f[1]), None)
        holder = "(no Python frame: native threads, import)"
        if where:
            holder = f"{where[0]} {Path(where[1]).parent.name}/{Path(where[1]).name}:{where[2]}"
        by_python[holder] += record.size
    lines = [f"alive at the peak: {total / 2**20:.1f} MiB (memray --native)"]
    for title, counter in (("native allocator", by_native), ("Python frame", by_python)):
        lines.append(f"\n# top {rows} by {title}")
        for name, size in counter.most_common(rows):
            lines.append(f"{size / 2**20:8.2f} MiB  {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "child":
        return child(Path(sys.argv[2]))
    if len(sys.argv) > 2 and sys.argv[1] == "report":  # a .bin from an earlier run
        return print(peak_report(Path(sys.argv[2])))
    # Started in the background, SIGINT would be ignored: make both signals stop the run
    # through its finally blocks (the control plane is stopped, not left behind).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=["memray", "tracemalloc"])
    parser.add_argument("--pipelines", type=int, default=200)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    run(args.mode, args.pipelines, args.out)


if __name__ == "__main__":
    main()
