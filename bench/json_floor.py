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

SLICE = 1 << 20


async def answer_in_slices(request: web.Request, answer: bytes) -> web.StreamResponse:
    """Write a JSON answer as the engine does: its length, then 1 MiB slices."""
    body = memoryview(answer)
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = body.nbytes
    await response.prepare(request)
    for start in range(0, body.nbytes, SLICE):
        await response.write(body[start : start + SLICE])
    await response.write_eof()
    return response


def main() -> None:
    model, port, cpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpus
    opts.inter_op_num_threads = 1
    # onnxruntime's threads as the engine's defaults set them: spinning only while a call runs
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    pool = ThreadPoolExecutor(1)
    parser = simdjson.Parser()

    def work(body: bytearray) -> bytes:
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

    async def infer(request: web.Request) -> web.StreamResponse:
        # The transport at its cheapest, as the engine's: the body read into one buffer as
        # it arrives, the answer written in slices of the encoded bytes, with its length.
        body = bytearray(request.content_length or 0)
        view, pos = memoryview(body), 0
        async for chunk in request.content.iter_any():
            view[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        answer = await asyncio.get_running_loop().run_in_executor(pool, work, body)
        return await answer_in_slices(request, answer)

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/infer", infer)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
