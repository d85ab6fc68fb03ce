"""The benchmark's floor: raw float32 bytes in, run onnxruntime in a thread, raw bytes out.

``/infer`` is the floor for a tensor request (no codec, routing or checks); ``/echo``
answers its body as it is, the floor for a small request (aiohttp's own round trip).
Usage: floor_server.py MODEL PORT CPUS [THREADS]: with THREADS, each call gets that many
intra-op threads and CPUS calls run at once (the throughput floor: direct's best setting,
one thread per call and a call per core, behind HTTP); without, one call gets CPUS threads.
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
from aiohttp import web


def main() -> None:
    model, port, cpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    opts = ort.SessionOptions()
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else cpus
    opts.intra_op_num_threads = threads
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

    async def pool(app: web.Application) -> None:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(cpus))

    app = web.Application(client_max_size=1 << 30)
    if len(sys.argv) > 4:
        app.on_startup.append(pool)
    app.router.add_post("/infer", infer)
    app.router.add_post("/echo", echo)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
