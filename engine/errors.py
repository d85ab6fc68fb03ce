"""The engine's errors: the request error family (each carries its HTTP status and the bad
field) and the start-up failure."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every error the engine reports to a client as ``{"error", "field"}``."""

    status = 500
    headers: dict[str, str] = {}  # sent with the answer (a 401's WWW-Authenticate)

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, object]:
        return {"error": self.message, "field": self.field}


class BadRequest(EngineError):
    """The request body is not what the pipeline expects (400): malformed JSON, a missing
    tensor field, wrong shape or dtype, ragged lists, NaN/Inf, a corrupt or truncated
    image, bad base64."""

    status = 400


class Unauthorized(EngineError):
    """The engine has tokens (``EDGEPIPE_ENGINE_API_TOKEN``) and the request sends none, or
    an ``Authorization`` header that is not ``Bearer <token>`` (401; gRPC UNAUTHENTICATED)."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="edgepipe-engine"'}


class Forbidden(EngineError):
    """The request's bearer token is none of the engine's (403; gRPC PERMISSION_DENIED).
    The answer never repeats the token."""

    status = 403


class RequestTimeout(EngineError):
    """The body did not arrive within ``EDGEPIPE_ENGINE_BODY_TIMEOUT_SECONDS`` (408); the
    connection is closed after the answer."""

    status = 408


class PayloadTooLarge(EngineError):
    """A body over ``EDGEPIPE_ENGINE_MAX_BODY_BYTES``, or an image over
    ``EDGEPIPE_ENGINE_MAX_IMAGE_PIXELS`` (413)."""

    status = 413


class NotFound(EngineError):
    """An unknown pipeline, model or route (404)."""

    status = 404


class UnsupportedMediaType(EngineError):
    """An unsupported ``Content-Type``, an image body to a pipeline without an image
    preprocess, a file that is not a JPEG, PNG or WebP (415)."""

    status = 415


class NotAcceptable(EngineError):
    """An unsupported ``Accept`` (406)."""

    status = 406


class ModelFailure(EngineError):
    """The model raised while running (500); the message is the runtime's own."""

    status = 500


class Unavailable(EngineError):
    """The pipeline failed to load (a missing or corrupt model) and cannot serve (503)."""

    status = 503


class StartupError(RuntimeError):
    """The engine cannot tell what to serve, or cannot fetch it; it exits with this message."""
