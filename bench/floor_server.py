"""The benchmark's floor: raw float32 bytes in, run onnxruntime in a thread, raw bytes out.

``/infer`` is the floor for a tensor request (no codec, routing or checks); ``/echo``
answers its body as it is, the floor for a small request (aiohttp's own round trip).
Usage: floor_server.py MODEL PORT CPUS
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import onnxruntime as ort
from aiohttp import web


def main() -> None:
    model, port, cpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpus
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]

    async def infer(request: web.Request) -> web.Response:
        x = np.frombuffer(await request.read(), dtype=np.float32).reshape(shape)
        out = await asyncio.get_running_loop().run_in_executor(
            None, lambda: session.run(None, {inp.name: x})[0]
        )
        return web.Response(body=out.tobytes(), content_type="application/octet-stream")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read(), content_type="application/octet-stream")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_post("/infer", infer)
    app.router.add_post("/echo", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
