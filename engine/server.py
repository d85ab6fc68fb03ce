"""The HTTP transport: the aiohttp app factory, routes, and the one error middleware."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson
import pyarrow as pa
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import access, codecs, logservice
from .calls import Calls
from .codecs import Encoded, Payload
from .dataplane import DataPlane
from .errors import BadRequest, EngineError, NotFound, RequestTimeout
from .loader import load_pipelines
from .metrics import Metrics
from .ports import ports
from .settings import Settings

log = logging.getLogger("edgepipe.engine")

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
DATAPLANE = web.AppKey("dataplane", DataPlane)
ACCESS = web.AppKey("access", access.Access)
CALLS = web.AppKey("calls", Calls)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _http_error(exc: web.HTTPException, request: web.Request) -> dict[str, object]:
    if exc.status == 413:
        limit = request.app[SETTINGS].max_body_bytes
        return {
            "error": f"the request body is larger than the limit of {limit} bytes "
            "(EDGEPIPE_ENGINE_MAX_BODY_BYTES)",
            "field": "body",
        }
    if exc.status == 404:
        return {"error": f"no route for {request.method} {request.path}", "field": "path"}
    if exc.status == 405:
        return {
            "error": f"method {request.method} is not allowed on {request.path}",
            "field": "method",
        }
    return {"error": exc.reason, "field": None}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render every failure as ``{"error": …, "field": …}`` with its status."""
    try:
        return await handler(request)
    except EngineError as exc:
        if exc.status >= 500:
            log.error("%s %s: %s", request.method, request.path, exc.message)
        response = json_response(exc.to_dict(), exc.status)
        response.headers.update(exc.headers)
        if isinstance(exc, RequestTimeout):
            response.force_close()  # no keep-alive: the connection closes after the answer
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(_http_error(exc, request), exc.status)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return json_response({"error": f"internal error: {exc}", "field": None}, 500)


async def read_payload(request: web.Request) -> Payload:
    return Payload.of_bytes(await read_body(request))


async def read_body(request: web.Request) -> bytearray:
    """The request body, or a 408 when it has not all arrived within the body timeout (a
    client that trickles its body ties up a connection, never the event loop)."""
    limit = request.app[SETTINGS].body_timeout_seconds
    try:
        async with asyncio.timeout(limit):
            return await _read_body(request)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {limit} s "
            "(EDGEPIPE_ENGINE_BODY_TIMEOUT_SECONDS)",
            "body",
        ) from None


async def _read_body(request: web.Request) -> bytearray:
    """The request body in one buffer, filled in place as chunks arrive.

    ``request.read()`` gathers chunks and then copies them twice (into a bytearray, then
    into bytes); for a 5 MB tensor that is most of the transport's overhead. The limit is
    checked against Content-Length before reading, and while reading a chunked body.
    """
    limit = request.app[SETTINGS].max_body_bytes
    length = request.content_length
    if length is not None:
        if length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=length)
        buf = bytearray(length)
        view = memoryview(buf)
        pos = 0
        async for chunk in request.content.iter_any():
            end = pos + len(chunk)
            if end > length:
                raise BadRequest("the body is longer than its Content-Length", "body")
            view[pos:end] = chunk
            pos = end
        if pos != length:
            raise BadRequest(f"the body ended after {pos} of {length} bytes", "body")
        return buf
    buf = bytearray()
    async for chunk in request.content.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=len(buf))
    return buf


async def list_pipelines(request: web.Request) -> web.Response:
    return json_response({"pipelines": request.app[DATAPLANE].list_pipelines()})


async def list_models(request: web.Request) -> web.Response:
    return json_response({"models": request.app[DATAPLANE].list_models()})


async def describe_pipeline(request: web.Request) -> web.Response:
    return json_response(request.app[DATAPLANE].describe(request.match_info["name"]))


# Answers larger than this go out in slices of this size, straight from the encoded buffer.
ANSWER_SLICE = 1 << 20


async def _answer(request: web.Request, encoded: Encoded) -> web.StreamResponse:
    """The encoded answer, with its Content-Length, without a copy of its body.

    A ``web.Response`` body is joined with the headers into one new bytes object (aiohttp
    on Python < 3.12.9), and what the socket does not take at once is copied again into
    the transport's buffer: for a 7.5 MB JSON answer ~1 ms of the loop's CPU and 1.5-4 ms
    of wall (bench/README.md, issue 31). Large answers go out as the headers alone, then
    slices of the body as the socket drains.
    """
    body = memoryview(encoded.body).cast("B")
    if body.nbytes <= ANSWER_SLICE:
        return web.Response(body=body, headers=encoded.headers)
    response = web.StreamResponse(headers=encoded.headers)
    response.content_length = body.nbytes
    await response.prepare(request)
    await response.write(b"")  # the headers, on their own
    for start in range(0, body.nbytes, ANSWER_SLICE):
        await response.write(body[start : start + ANSWER_SLICE])
    await response.write_eof()
    return response


async def infer(request: web.Request) -> web.Response:
    headers = request.headers
    encoded = await request.app[DATAPLANE].infer(
        request.match_info["name"],
        lambda: read_payload(request),
        lambda: codecs.negotiate(headers.get("Content-Type", ""), headers.get("Accept", "")),
        headers=headers,
    )
    return await _answer(request, encoded)


async def v2_server(request: web.Request) -> web.Response:
    return json_response(request.app[DATAPLANE].server_metadata())


async def v2_model(request: web.Request) -> web.Response:
    return json_response(request.app[DATAPLANE].v2_metadata(request.match_info["name"]))


async def v2_model_ready(request: web.Request) -> web.Response:
    request.app[DATAPLANE].v2_target(request.match_info["name"])  # 404 / 503 when not
    return json_response({"name": request.match_info["name"], "ready": True})


async def v2_infer(request: web.Request) -> web.Response:
    header_length = request.headers.get(codecs.v2.HEADER)
    encoded = await request.app[DATAPLANE].infer(
        request.match_info["name"],
        lambda: read_payload(request),
        lambda: codecs.v2.codec(header_length),
        models=True,
        headers=request.headers,
    )
    return await _answer(request, encoded)


async def live(request: web.Request) -> web.Response:
    return json_response({"status": "live"})


async def ready(request: web.Request) -> web.Response:
    plane = request.app[DATAPLANE]
    if plane.ready:
        return json_response({"status": "ready"})
    if plane.draining:
        return json_response({"status": "not ready", "reason": "shutting down"}, 503)
    problems = {p.name: p.error for p in plane.pipelines.values() if p.error}
    return json_response({"status": "not ready", "errors": problems}, 503)


async def close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
    """While the engine drains, every answer closes its connection (``Connection: close``).

    A Service stops sending new connections to a terminating pod, but a client's keep-alive
    connection stays on it; were it still open when the port closes, a request the client
    sends on it just then is cut off unanswered. Closed after each answer while draining,
    the client's next request opens a new connection, to another pod."""
    plane = request.app.get(DATAPLANE)
    if plane is not None and plane.draining:
        response.force_close()
        # aiohttp writes the headers it prepared before this hook: say it, too.
        response.headers["Connection"] = "close"


async def metrics_endpoint(request: web.Request) -> web.Response:
    data = generate_latest(request.app[METRICS].registry)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _dataplane_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    loop = asyncio.get_running_loop()
    # Loading reads model files and builds sessions: keep it off the loop.
    pipelines = await loop.run_in_executor(None, load_pipelines, settings, app[CALLS])
    plane = DataPlane(settings, {p.name: p for p in pipelines}, app[METRICS], app[CALLS])
    app[DATAPLANE] = plane
    for p in pipelines:
        if p.error:
            log.error("pipeline %s: Error: %s", p.name, p.error)
        else:
            log.info("pipeline %s version %s: Running", p.name, p.config.version)
    trim = asyncio.create_task(plane.idle_trim.run(plane.decode_pool))
    yield
    trim.cancel()
    plane.close()


async def _log_ctx(app: web.Application) -> AsyncIterator[None]:
    """The local inference log (edge mode, or EDGEPIPE_ENGINE_LOG_INFERENCES=true)."""
    plane = app[DATAPLANE]
    names = [name for name, p in plane.pipelines.items() if not p.error]
    service = logservice.build(app[SETTINGS], names, app[METRICS])
    if service is None:
        yield
        return
    plane.inference_log = service
    async with logservice.lifecycle(service):
        yield


async def logs(request: web.Request) -> web.Response:
    """The local inference log: JSON, or Arrow IPC (``Accept`` or ``format=arrow``)."""
    service = request.app[DATAPLANE].inference_log
    if service is None:
        raise NotFound(
            "this engine keeps no inference log (EDGEPIPE_ENGINE_LOG_INFERENCES=true turns "
            "it on; edge mode has it on)",
            "path",
        )
    fmt = request.query.get("format") or (
        "arrow" if "arrow" in request.headers.get("Accept", "") else "json"
    )
    if fmt not in ("json", "arrow"):
        raise BadRequest(f"format={fmt!r}: expected json or arrow", "format")
    q = request.query
    found, more = await service.read(q.get("since"), q.get("limit"), fmt == "json")
    if fmt == "json":
        return json_response({"records": found, "count": len(found), "more": more})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, found.schema) as writer:
        writer.write_table(found)
    return web.Response(
        body=memoryview(sink.getvalue()),
        content_type="application/vnd.apache.arrow.stream",
        headers={"X-Edgepipe-More": str(more).lower()},
    )


async def _grpc_ctx(app: web.Application) -> AsyncIterator[None]:
    """OIP v2 over gRPC on its own port, beside REST (off when the port is 0)."""
    settings = app[SETTINGS]
    if not settings.grpc_port:
        yield
        return
    from .oip import auth, service  # grpc loads only when it serves

    guard = app[ACCESS]
    interceptors = [auth.TokenInterceptor(guard.tokens)] if guard.tokens.enabled else []
    srv = service.server(app[DATAPLANE], settings.max_body_bytes, interceptors)
    address = f"{settings.host}:{settings.grpc_port}"
    port = ports(settings)[1]
    # gRPC binds with SO_REUSEPORT (sharing a port another gRPC server holds) and prints
    # its own error lines: check plainly first.
    port.check_free()
    try:
        if guard.tls is None:
            srv.add_insecure_port(address)
        else:
            srv.add_secure_port(address, auth.credentials(guard.tls))
    except RuntimeError as exc:
        raise port.unavailable(exc) from None
    await srv.start()
    log.info("serving OIP v2 gRPC%s on %s", " over TLS" if guard.tls else "", address)
    yield
    await srv.stop(grace=settings.shutdown_timeout)


def _follow_pointer(app: web.Application, settings: Settings) -> None:
    """Edge mode: follow PIPELINE_URL to new versions (off with UPDATE_SECONDS=0)."""
    from . import updater

    if settings.update.seconds > 0:
        plane = lambda: app[DATAPLANE]  # noqa: E731 - set by _dataplane_ctx before this runs
        app.cleanup_ctx.append(updater.context(plane, settings, app[METRICS]))
        app.router.add_get("/status", updater.status_endpoint)


def create_app(settings: Settings) -> web.Application:
    guard = access.Access.from_settings(settings)  # StartupError: a token file, TLS files
    middlewares = [error_middleware]
    if guard.tokens.enabled:
        middlewares.append(access.middleware(guard.tokens, guard.metrics_open))
    app = web.Application(client_max_size=settings.max_body_bytes, middlewares=middlewares)
    app[SETTINGS] = settings
    app[ACCESS] = guard
    # The model calls of every model this app loads, now and after a swap.
    app[CALLS] = Calls(lone_threads=settings.cpus, spinning=settings.intra_op_spinning)
    app.on_response_prepare.append(close_when_draining)
    app.cleanup_ctx.append(access.watch_context(guard))
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(_dataplane_ctx)
    app.cleanup_ctx.append(_log_ctx)
    app.cleanup_ctx.append(_grpc_ctx)
    if settings.edge is not None:
        _follow_pointer(app, settings)
    app.router.add_get("/pipelines", list_pipelines)
    app.router.add_get("/pipelines/{name}", describe_pipeline)
    app.router.add_post("/pipelines/{name}", infer)
    app.router.add_get("/models", list_models)
    app.router.add_get("/health/live", live)
    app.router.add_get("/health/ready", ready)
    app.router.add_get("/metrics", metrics_endpoint)
    app.router.add_get("/logs", logs)
    # Open Inference Protocol v2: pipelines, and each model alone, by name.
    app.router.add_get("/v2", v2_server)
    app.router.add_get("/v2/health/live", live)
    app.router.add_get("/v2/health/ready", ready)
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        app.router.add_get(prefix, v2_model)
        app.router.add_get(prefix + "/ready", v2_model_ready)
        app.router.add_post(prefix + "/infer", v2_infer)
    return app
