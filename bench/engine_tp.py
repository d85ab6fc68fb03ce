"""engine_bench's throughput rounds: calls/s and CPU per call, direct, HTTP floor, engines."""

from __future__ import annotations

import http.client
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bench.engine_rounds import ARROW, Rounds, throughput

HZ = os.sysconf("SC_CLK_TCK")
CLIENTS = 4


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process, all its threads."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / HZ


class Sink:
    """One keep-alive connection whose answers are read into one reused buffer, as a
    client that only counts its answers would: no 2.8 MB allocation (and its fresh pages)
    per answer on the cores the server needs."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.buf = bytearray(1 << 20)

    def post(self, path: str, body: bytes, ctype: str, accept: str | None = None) -> None:
        headers = {"Content-Type": ctype, **({"Accept": accept} if accept else {})}
        self.conn.request("POST", path, body=body, headers=headers)
        resp = self.conn.getresponse()
        length = int(resp.getheader("Content-Length") or 0)
        if resp.status != 200 or not length:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {resp.read()[:300]!r}")
        if len(self.buf) < length:
            self.buf = bytearray(length)
        view = memoryview(self.buf)[:length]
        while view.nbytes:
            n = resp.readinto(view)
            if not n:
                raise RuntimeError(f"{path}: the answer ended early")
            view = view[n:]


def clients_call(port: int, path: str, body: bytes, ctype: str, accept: str | None):
    """A call for ``throughput``: each client thread posts on its own connection."""
    local = threading.local()

    def call() -> None:
        if not hasattr(local, "c"):
            local.c = Sink(port)
        local.c.post(path, body, ctype, accept)

    return call


class Measured:
    """Throughput variants whose CPU per call is kept too: the serving process's
    (``pid``; None: the model runs in this process) and this process's (the clients', or
    direct onnxruntime's own)."""

    def __init__(self) -> None:
        self.cpu: dict[str, list[tuple[float, float]]] = {}

    def variant(
        self, label: str, call: Callable[[], object], callers: int, seconds: float, pid=None
    ) -> Callable[[], float]:
        def run() -> float:
            s0 = process_cpu(pid) if pid else 0.0
            c0, t0 = time.process_time(), time.perf_counter()
            calls_s = throughput(call, callers, seconds)
            calls = calls_s * (time.perf_counter() - t0)
            server = (process_cpu(pid) - s0) / calls if pid else 0.0
            self.cpu.setdefault(label, []).append((server, (time.process_time() - c0) / calls))
            return calls_s

        return run


def rounds(
    direct: Callable[[], object],
    direct_1: Callable[[], object],
    direct_wide: Callable[[], object],
    floor: tuple[int, int],
    raw_in: bytes,
    engines: dict[str, tuple[int, int]],
    path: str,
    arrow_in: bytes,
    cpus: int,
    seconds: float,
    n: int,
) -> tuple[Rounds, Measured]:
    """Interleaved throughput rounds: direct's best (``direct_1``: a session of 1 thread,
    ``cpus`` callers) first, the base of every ratio; ``floor`` and each of ``engines``
    (label -> it): (port, pid)."""
    m = Measured()
    v = {}
    best = f"direct, 1 thread/call, {cpus} callers"
    v[best] = m.variant(best, direct_1, cpus, seconds)
    label = f"direct, {cpus} threads/call, 1 caller"
    v[label] = m.variant(label, direct, 1, seconds)
    label = f"direct, {cpus} threads/call, {cpus} callers (one session)"
    v[label] = m.variant(label, direct_wide, cpus, seconds)
    label = f"HTTP floor, 1 thread/call, {cpus} calls at once, {CLIENTS} clients"
    call = clients_call(floor[0], "/infer", raw_in, "application/octet-stream", None)
    v[label] = m.variant(label, call, CLIENTS, seconds, floor[1])
    for label, (port, pid) in engines.items():
        label = f"{label}, {CLIENTS} clients"
        call = clients_call(port, path, arrow_in, ARROW, ARROW)
        v[label] = m.variant(label, call, CLIENTS, seconds, pid)
    return Rounds(v, n, 1, figures=True), m


def report(tp: Rounds, m: Measured) -> None:
    base = next(iter(tp.medians))
    floor = next(k for k in tp.medians if k.startswith("HTTP floor"))
    print(
        "\n| throughput (Arrow for the engine, raw bytes for the floor), interleaved rounds "
        "| calls/s | x direct best | x HTTP floor | server CPU ms/call | this process's "
        "CPU ms/call |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, v in tp.medians.items():
        ratios = [
            statistics.median(a / b for a, b in zip(v, tp.medians[k], strict=True))
            for k in (base, floor)
        ]
        server = statistics.median(s for s, _ in m.cpu[label]) * 1000
        own = statistics.median(c for _, c in m.cpu[label]) * 1000
        print(
            f"| {label} | {statistics.median(v):.2f} | {ratios[0]:.2f} | {ratios[1]:.2f} | "
            f"{server:.1f} | {own:.1f} |"
        )
