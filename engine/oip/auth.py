"""gRPC access: the token interceptor (metadata ``authorization``) and TLS credentials whose
certificate is re-read when its files change."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ..access import TlsFiles, Tokens
from ..errors import EngineError
from . import messages as pb

# The probes stay open, as /health/* does over REST.
OPEN_METHODS = frozenset(f"/{pb.SERVICE}/{name}" for name in ("ServerLive", "ServerReady"))
CODES = {401: grpc.StatusCode.UNAUTHENTICATED, 403: grpc.StatusCode.PERMISSION_DENIED}


def _refusal(exc: EngineError) -> grpc.RpcMethodHandler:
    """A handler that answers the error without reading (or parsing) the request."""
    code = CODES.get(exc.status, grpc.StatusCode.UNAUTHENTICATED)

    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, exc.message)

    return grpc.unary_unary_rpc_method_handler(refuse)


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """Asks every call but the probes for ``authorization: Bearer <token>``."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method not in OPEN_METHODS:
            header = None
            for key, value in details.invocation_metadata or ():
                if key == "authorization" and isinstance(value, str):
                    header = value
            try:
                self.tokens.check(header)
            except EngineError as exc:
                return _refusal(exc)
        return await continuation(details)


def credentials(tls: TlsFiles) -> grpc.ServerCredentials:
    """TLS credentials that pick up the files' new contents on the next handshake: the
    fetcher hands gRPC a new configuration once per reload (TlsFiles.version), else None
    (keep the current one). It only compares a number, so it never blocks."""

    def configuration() -> Any:
        key, chain, ca = tls.pem
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    given = tls.version

    def fetch() -> Any:
        nonlocal given
        if tls.version == given:
            return None
        given = tls.version
        return configuration()

    return grpc.dynamic_ssl_server_credentials(
        configuration(), fetch, require_client_authentication=tls.client_ca is not None
    )
