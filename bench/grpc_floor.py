"""The gRPC floor for engine_bench/image_bench: a bare grpc.aio server answering every
ModelInfer, with no data plane: a fixed [1,84,8400] float32 output and no model (the
issue's floor), or, given a model, that model run in a thread on the raw input.

Usage: grpc_floor.py PORT [MODEL CPUS]
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np

from edgepipe.engine.oip import messages as pb

OUTPUT = np.zeros((1, 84, 8400), np.float32).tobytes()


def model_call(path: str, cpus: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpus
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


async def main(port: int, model: str | None, cpus: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])
    run = model_call(model, cpus) if model else None
    loop = asyncio.get_running_loop()

    async def infer(request, context):
        shape = list(request.inputs[0].shape)
        x = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(shape)
        answer = pb.ModelInferResponse(model_name=request.model_name)
        if run is None:
            answer.outputs.add(name="output0", datatype="FP32", shape=[1, 84, 8400])
            answer.raw_output_contents.append(OUTPUT)
            return answer
        out = await loop.run_in_executor(None, run, x)
        answer.outputs.add(name="output0", datatype="FP32", shape=list(out.shape))
        answer.raw_output_contents.append(out.tobytes())
        return answer

    handler = grpc.unary_unary_rpc_method_handler(
        infer,
        request_deserializer=pb.ModelInferRequest.FromString,
        response_serializer=pb.ModelInferResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(pb.SERVICE, {"ModelInfer": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    argv = sys.argv[1:]
    model = argv[1] if len(argv) > 1 else None
    asyncio.run(main(int(argv[0]), model, int(argv[2]) if len(argv) > 2 else 1))
