"""Engine soak: clients send mixed requests (pandas-records JSON, Arrow, OIP v2 JSON and
binary, and bad ones) to the engine as a real process and check every answer; the engine's
RSS, file descriptors and threads are read from /proc after warm-up and at the end.

``make soak`` runs 10,000 requests from 4 clients; the test suite runs 1,000. Exit status
0 when every answer was the expected one and nothing grew past its bound; the summary is
printed as JSON either way.
"""

from __future__ import annotations

import argparse
import http.client
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgepipe.localengine import EngineProcess

JSON = "application/json; format=pandas-records"
ARROW = "application/vnd.apache.arrow.file"
V2 = "/v2/models/chain/infer"
PATH = "/pipelines/chain"


def proc_figures(pid: int) -> dict[str, int]:
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    return {
        "rss_kb": int(fields["VmRSS"].split()[0]),
        "threads": int(fields["Threads"]),
        "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
    }


def arrow_body(x: np.ndarray) -> bytes:
    table = pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x[:, np.newaxis, :])})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def one(conn: http.client.HTTPConnection, kind: int, rng: np.random.Generator) -> str | None:
    """Send one request of this kind; None when the answer is the expected one, else why."""
    x = rng.normal(size=(int(rng.integers(1, 4)), 4)).astype(np.float32)
    want = (x + 1) * 2
    if kind == 0:
        body, headers, path = (
            orjson.dumps([{"x": r} for r in x[:, np.newaxis, :].tolist()]),
            {"Content-Type": JSON},
            PATH,
        )
    elif kind == 1:
        body, headers, path = arrow_body(x), {"Content-Type": ARROW, "Accept": ARROW}, PATH
    elif kind == 2:
        doc = {
            "inputs": [
                {
                    "name": "x",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.ravel().tolist(),
                }
            ]
        }
        body, headers, path = orjson.dumps(doc), {"Content-Type": "application/json"}, V2
    elif kind == 3:
        head = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": list(x.shape),
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        )
        body = head + x.tobytes()
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(len(head)),
        }
        path = V2
    elif kind == 4:
        body, headers, path = b'[{"x": [[1, 2], [3]]}]', {"Content-Type": JSON}, PATH
    else:
        body, headers, path = b"x,y\n1,2", {"Content-Type": "text/csv"}, PATH
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    if kind >= 4:
        expected = 400 if kind == 4 else 415
        if resp.status != expected or "error" not in orjson.loads(data):
            return f"kind {kind}: HTTP {resp.status} {data[:200]!r}"
        return None
    if resp.status != 200:
        return f"kind {kind}: HTTP {resp.status} {data[:200]!r}"
    if kind == 0:
        got = np.asarray([r["outputs"][0]["Float"]["data"] for r in orjson.loads(data)], np.float32)
    elif kind == 1:
        table = pa.ipc.open_file(pa.py_buffer(data)).read_all()
        got = table.column("out.z").chunk(0).to_numpy_ndarray().reshape(len(x), 4)
    elif kind == 2:
        got = np.asarray(orjson.loads(data)["outputs"][0]["data"], np.float32)
    else:
        n = int(resp.getheader("Inference-Header-Content-Length"))
        got = np.frombuffer(data[n:], np.float32)
    if not np.array_equal(got.reshape(want.shape), want):
        return f"kind {kind}: wrong answer"
    return None


def soak(requests: int, clients: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="edgepipe-soak-"))
    from tests.helpers import onnx_models as m

    m.add_constant(tmp / "add1.onnx", 1.0)
    m.scale(tmp / "double.onnx", 2.0)
    steps = [{"model": {"name": n, "path": str(tmp / f"{n}.onnx")}} for n in ("add1", "double")]
    (tmp / "chain.yaml").write_text(yaml.safe_dump({"name": "chain", "steps": steps}))
    wrong: list[str] = []
    done = [0]
    lock = threading.Lock()
    warm = max(1, requests // 10)
    warmed = threading.Event()
    with EngineProcess("--config", str(tmp / "chain.yaml"), log_path=tmp / "engine.log") as engine:
        pid = engine.proc.pid

        def client(seed: int) -> None:
            rng = np.random.default_rng(seed)
            conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=60)
            for i in range(requests // clients):
                try:
                    why = one(conn, (i + seed) % 6, rng)
                except Exception as exc:  # a broken connection or answer is a wrong one
                    why = f"request {i}: {type(exc).__name__}: {exc}"
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", engine.port, timeout=60)
                with lock:
                    done[0] += 1
                    if why:
                        wrong.append(why)
                    if done[0] == warm:
                        warmed.set()
            conn.close()

        threads = [threading.Thread(target=client, args=(s,)) for s in range(clients)]
        for t in threads:
            t.start()
        while not warmed.wait(1) and any(t.is_alive() for t in threads):
            pass
        after_warmup = proc_figures(pid)
        for t in threads:
            t.join()
        end = proc_figures(pid)
    rss_growth = end["rss_kb"] / after_warmup["rss_kb"] - 1
    ok = (
        not wrong
        and done[0] == requests
        and rss_growth <= 0.10
        and end["fds"] <= after_warmup["fds"]
        and end["threads"] <= after_warmup["threads"]
    )
    return {
        "ok": ok,
        "requests": done[0],
        "wrong": wrong[:10],
        "after_warmup": after_warmup,
        "end": end,
        "rss_growth": round(rss_growth, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    summary = soak(args.requests, args.clients)
    print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    sys.exit(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
