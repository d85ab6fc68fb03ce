"""Whether encoding a large JSON answer in slices while it is written gains anything (issue 31).

A bare aiohttp server answers the engine's pandas-records record for a [1,84,8400]
float32 output (7.5 MB of JSON) three ways, called in interleaved rounds by an
``http.client`` connection, as the benches' clients are:

* ``whole``: orjson encodes the answer in a thread, then the loop writes it in 1 MiB
  slices with its Content-Length (what ``engine/server.py`` does);
* ``chunked``: a thread encodes the array in slices (``--floats`` each) and hands each to
  the loop as it is ready, which writes it with chunked framing;
* ``known length``: the same slices with a Content-Length taken from a whole encode
  beforehand (the best case of streaming with a length: a server cannot know it).

    .venv/bin/python bench/json_answer_stream.py [--floats 65536] [--rounds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import orjson

TICK = os.sysconf("SC_CLK_TCK")
SLICE = 1 << 20
MARK = "\x00array"


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def record(data) -> list[dict]:
    out = {"Float": {"data": data, "dim": [1, 84, 8400], "v": 1}}
    return [
        {
            "check_failures": [],
            "elapsed": [1, 2],
            "model_name": "m",
            "model_version": "1",
            "original_data": None,
            "outputs": [out],
            "pipeline_name": "p",
            "shadow_data": {},
            "time": 1,
        }
    ]


def serve(port: int, floats: int) -> None:
    from aiohttp import web

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from json_floor import answer_in_slices

    pool = ThreadPoolExecutor(1)
    y = (np.random.default_rng(1).random(84 * 8400, dtype=np.float32) * 640).astype(np.float32)

    def whole() -> bytes:
        return orjson.dumps(record(y), option=orjson.OPT_SERIALIZE_NUMPY)

    def parts():
        head, tail = orjson.dumps(record(MARK)).split(orjson.dumps(MARK))
        yield head + b"["
        for start in range(0, y.size, floats):
            text = orjson.dumps(y[start : start + floats], option=orjson.OPT_SERIALIZE_NUMPY)
            yield (b"," if start else b"") + text[1:-1]
        yield b"]" + tail

    length = len(whole())

    async def answer_whole(request: web.Request) -> web.StreamResponse:
        body = await asyncio.get_running_loop().run_in_executor(pool, whole)
        return await answer_in_slices(request, body)

    async def answer_streamed(request: web.Request) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def produce() -> None:
            for part in parts():
                loop.call_soon_threadsafe(queue.put_nowait, part)
                time.sleep(0)  # let the loop take the GIL and write it
            loop.call_soon_threadsafe(queue.put_nowait, None)

        pool.submit(produce)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if request.path == "/known":
            response.content_length = length
        else:
            response.enable_chunked_encoding()
        await response.prepare(request)
        while (part := await queue.get()) is not None:
            await response.write(part)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/whole", answer_whole)
    app.router.add_get("/chunked", answer_streamed)
    app.router.add_get("/known", answer_streamed)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floats", type=int, default=65536, help="floats per streamed slice")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=10, help="calls per variant per round")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from edgepipe.localengine import free_port

    port = free_port()
    cmd = [sys.executable, __file__, "--serve", str(port), str(args.floats)]
    server = subprocess.Popen(cmd)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        deadline = time.time() + 60
        while True:
            try:
                conn.request("GET", "/whole")
                expected = conn.getresponse().read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                conn.close()
                time.sleep(0.2)
        paths = ("/whole", "/chunked", "/known")
        wall = {p: [] for p in paths}
        server_cpu = dict.fromkeys(paths, 0.0)
        client_cpu = dict.fromkeys(paths, 0.0)
        for path in paths:
            conn.request("GET", path)
            assert conn.getresponse().read() == expected, path  # the same bytes every way
        load0 = os.getloadavg()[0]
        for _ in range(args.rounds):
            for path in paths:
                s0, c0 = cpu_s(server.pid), time.process_time()
                for _ in range(args.calls):
                    t0 = time.perf_counter()
                    conn.request("GET", path)
                    conn.getresponse().read()
                    wall[path].append(time.perf_counter() - t0)
                server_cpu[path] += cpu_s(server.pid) - s0
                client_cpu[path] += time.process_time() - c0
        n = args.rounds * args.calls
        print(
            f"load {load0:.2f} -> {os.getloadavg()[0]:.2f}; {len(expected)} bytes; {n} calls each"
        )
        for path in paths:
            print(
                f"{path[1:]:<13} p50 {statistics.median(wall[path]) * 1e3:6.2f} ms, "
                f"server CPU {server_cpu[path] / n * 1e3:5.2f} ms, "
                f"client CPU {client_cpu[path] / n * 1e3:5.2f} ms per call"
            )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        main()
