"""The OIP v2 ``GRPCInferenceService``: a grpc.aio server beside the REST app, on the same
event loop and over the same data plane (models, metrics, limits and errors)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from ..codecs import Payload
from ..dataplane import DataPlane
from ..errors import EngineError
from . import codec, wire
from . import messages as pb

log = logging.getLogger("edgepipe.engine")

# The engine's HTTP statuses as gRPC codes.
STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    406: grpc.StatusCode.INVALID_ARGUMENT,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}

Method = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _errors(method: Method) -> Method:
    """The gRPC side of the error middleware: EngineErrors become their status code with
    the same message; anything else is INTERNAL and logged."""

    async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(request, context)
        except EngineError as exc:
            if exc.status >= 500:
                log.error("gRPC %s: %s", method.__name__, exc.message)
            await context.abort(STATUS.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            log.exception("unexpected error in gRPC %s", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {exc}")

    wrapped.__name__ = method.__name__
    return wrapped


def handler(plane: DataPlane) -> grpc.GenericRpcHandler:
    async def ServerLive(request, context):  # noqa: N802 (the protocol's method names)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(request, context):  # noqa: N802
        return pb.ServerReadyResponse(ready=plane.ready)

    async def ModelReady(request, context):  # noqa: N802
        plane.v2_target(request.name)  # NOT_FOUND / UNAVAILABLE when not
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(request, context):  # noqa: N802
        return pb.ServerMetadataResponse(**plane.server_metadata())

    async def ModelMetadata(request, context):  # noqa: N802
        meta = plane.v2_metadata(request.name)
        answer = pb.ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"]
        )
        for side in ("inputs", "outputs"):
            for t in meta[side]:
                getattr(answer, side).add(name=t["name"], datatype=t["datatype"], shape=t["shape"])
        return answer

    async def ModelInfer(request, context):  # noqa: N802
        async def read() -> Payload:
            size = request.size if isinstance(request, wire.InferRequest) else request.ByteSize()
            return Payload(request, size)  # its size on the wire

        if isinstance(request, wire.InferRequest):
            name = request.message.model_name
        else:
            name = request.model_name

        metadata = dict(context.invocation_metadata() or ())
        encoded = await plane.infer(name, read, lambda: codec.CODEC, models=True, headers=metadata)
        return encoded.body

    methods = {
        "ServerLive": (ServerLive, pb.ServerLiveRequest, pb.ServerLiveResponse),
        "ServerReady": (ServerReady, pb.ServerReadyRequest, pb.ServerReadyResponse),
        "ModelReady": (ModelReady, pb.ModelReadyRequest, pb.ModelReadyResponse),
        "ServerMetadata": (ServerMetadata, pb.ServerMetadataRequest, pb.ServerMetadataResponse),
        "ModelMetadata": (ModelMetadata, pb.ModelMetadataRequest, pb.ModelMetadataResponse),
        "ModelInfer": (ModelInfer, pb.ModelInferRequest, pb.ModelInferResponse),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(
            _errors(fn),
            request_deserializer=req.FromString,
            response_serializer=resp.SerializeToString,
        )
        for name, (fn, req, resp) in methods.items()
    }
    # ModelInfer's tensors go in and out as views of the wire bytes (oip/wire.py).
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        _errors(ModelInfer),
        request_deserializer=wire.parse_request,
        response_serializer=wire.serialize,
    )
    return grpc.method_handlers_generic_handler(pb.SERVICE, handlers)


def server(
    plane: DataPlane, max_message_bytes: int, interceptors: Sequence[Any] = ()
) -> grpc.aio.Server:
    """A grpc.aio server with the service; the caller binds a port and starts it.
    ``interceptors``: the token check (oip/auth.py) when the engine has tokens."""
    srv = grpc.aio.server(
        interceptors=list(interceptors),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )
    srv.add_generic_rpc_handlers((handler(plane),))
    return srv
