"""The floor of a pandas-records JSON model server with the engine's libraries.

A bare aiohttp app that parses the body with simdjson, runs the model in a thread and
answers with orjson, with no checks, routing or metrics:

    json_floor.py MODEL PORT CPUS

POST /infer takes ``[{"images": [[[[...]]]]}]`` and answers ``[{"outputs": [{"Float":
{"data": [...], "dim": [...], "v": 1}}]}]``, as the engine does: the same libraries, the
same bytes in and nearly the same bytes out, none of the engine's shape, raggedness and
finiteness checks (bench/json_ab.py measures it beside the engine).
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import orjson
import simdjson
from aiohttp import web


def main() -> None:
    model, port, cpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpus
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    pool = ThreadPoolExecutor(1)
    parser = simdjson.Parser()

    def work(body: bytes) -> bytes:
        doc = parser.parse(body)
        value = doc[0][name]
        dims = []
        cur = value
        while isinstance(cur, simdjson.Array):
            dims.append(len(cur))
            cur = cur[0]
        x = np.frombuffer(value.as_buffer(of_type="d"), np.float64).reshape(dims)
        del value, cur, doc
        (y,) = session.run(None, {name: x.astype(np.float32)})
        out = {"Float": {"data": y.reshape(-1), "dim": list(y.shape), "v": 1}}
        return orjson.dumps([{"outputs": [out]}], option=orjson.OPT_SERIALIZE_NUMPY)

    async def infer(request: web.Request) -> web.Response:
        body = await request.read()
        answer = await asyncio.get_running_loop().run_in_executor(pool, work, body)
        return web.Response(body=answer, content_type="application/json")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
