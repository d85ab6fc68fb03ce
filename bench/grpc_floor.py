"""The gRPC floor for engine_bench/image_bench: a bare grpc.aio server answering every
ModelInfer with a fixed [1,84,8400] float32 output, no model and no data plane.

Usage: grpc_floor.py PORT
"""

from __future__ import annotations

import asyncio
import sys

import grpc
import numpy as np

from edgepipe.engine.oip import messages as pb

OUTPUT = np.zeros((1, 84, 8400), np.float32).tobytes()


async def main(port: int) -> None:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20)])

    async def infer(request, context):
        np.frombuffer(request.raw_input_contents[0], np.float32)
        answer = pb.ModelInferResponse(model_name=request.model_name)
        answer.outputs.add(name="output0", datatype="FP32", shape=[1, 84, 8400])
        answer.raw_output_contents.append(OUTPUT)
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
    asyncio.run(main(int(sys.argv[1])))
