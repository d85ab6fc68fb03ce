"""engine_bench's tools: a keep-alive client, timers, and interleaved rounds that give
each variant's time and its ratio to another variant measured in the same rounds."""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa

ARROW = "application/vnd.apache.arrow.file"


class Client:
    """One keep-alive HTTP connection, as a benchmark client would hold."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, body: bytes, ctype: str, accept: str | None = None) -> bytes:
        headers = {"Content-Type": ctype}
        if accept:
            headers["Accept"] = accept
        try:
            self.conn.request("POST", path, body=body, headers=headers)
            resp = self.conn.getresponse()
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            # The server closed the idle keep-alive connection (aiohttp: after 75 s; a
            # round on a loaded machine can take longer): once more, on a new one.
            self.conn.close()
            self.conn.request("POST", path, body=body, headers=headers)
            resp = self.conn.getresponse()
        except OSError:
            # Refused (the server not up yet): closed, so that a retry can send again.
            self.conn.close()
            raise
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}: {data[:300]!r}")
        return data


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def retry(call: Callable[[], object], seconds: float) -> None:
    """Call ``call`` until it returns without raising; after ``seconds`` its error is raised."""
    deadline = time.time() + seconds
    while True:
        try:
            call()
            return
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(0.2)


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


class Rounds:
    """Variants run in interleaved rounds (each round: ``per`` calls of every variant in
    turn, its median kept). A ratio is taken within each round, then the median over the
    rounds: a stretch of load slows both sides of a ratio alike. ``figures``: each call
    returns its own figure (a throughput), once per round."""

    def __init__(
        self, variants: dict[str, Callable[[], object]], rounds: int, per: int, figures=False
    ):
        for fn in () if figures else variants.values():  # warm-up
            fn()
            fn()
        self.medians: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(rounds):
            for label, fn in variants.items():
                if figures:  # fn returns its own figure (a throughput)
                    self.medians[label].append(float(fn()))  # type: ignore[arg-type]
                else:
                    self.medians[label].append(statistics.median(timed(fn, per)))

    def ms(self, label: str) -> float:
        return statistics.median(self.medians[label]) * 1000

    def ratio(self, label: str, base: str, minus: list[float] | None = None) -> float:
        """Median over rounds of label / base (``minus``: seconds taken off label's
        round medians first, e.g. the client's own encode and decode)."""
        off = minus or [0.0] * len(self.medians[label])
        return statistics.median(
            (a - m) / b
            for a, b, m in zip(self.medians[label], self.medians[base], off, strict=True)
        )

    def spread(self, label: str, base: str) -> tuple[float, float]:
        r = [a / b for a, b in zip(self.medians[label], self.medians[base], strict=True)]
        return min(r), max(r)
