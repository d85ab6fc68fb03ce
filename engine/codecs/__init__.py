"""Wire formats by media type: pandas-records JSON, Arrow IPC, raw images and OIP v2."""

from __future__ import annotations

from ..errors import NotAcceptable, UnsupportedMediaType
from . import arrow_ipc, image, json_records, v2
from .base import Codec, Decoded, Encoded, InputField, Payload, Response, coerce

JSON_RECORDS = json_records.MEDIA_TYPE
ARROW_FILE = arrow_ipc.MEDIA_TYPE
ARROW_STREAM = "application/vnd.apache.arrow.stream"

__all__ = [
    "ARROW_FILE",
    "ARROW_STREAM",
    "JSON_RECORDS",
    "Codec",
    "Decoded",
    "Encoded",
    "InputField",
    "Payload",
    "Response",
    "coerce",
    "negotiate",
    "v2",
]


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in header.split(";")]
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"').lower()
    return parts[0].lower(), params


def _decoder(content_type: str):
    mtype, params = _media_type(content_type or "")
    if mtype == "application/json" and params.get("format", "pandas-records") == "pandas-records":
        return json_records.decode
    if mtype in (ARROW_FILE, ARROW_STREAM):
        return arrow_ipc.decode
    if mtype in image.MEDIA_TYPES:
        return image.decode
    raise UnsupportedMediaType(
        f"unsupported Content-Type {content_type or '(none)'!r}; expected "
        f"{JSON_RECORDS!r}, {ARROW_FILE!r} or an image (image/jpeg, image/png, image/webp)",
        "Content-Type",
    )


def _encoder(accept: str):
    if not accept:
        return json_records.encode
    wanted = [_media_type(part)[0] for part in accept.split(",")]
    for mtype in wanted:
        if mtype == ARROW_FILE:
            return arrow_ipc.encode
        if mtype in ("application/json", "*/*", "application/*"):
            return json_records.encode
    raise NotAcceptable(
        f"cannot answer with {accept!r}; expected {JSON_RECORDS!r} or {ARROW_FILE!r}", "Accept"
    )


def negotiate(content_type: str, accept: str) -> Codec:
    """The codec pair for a pipeline request: the decoder its Content-Type names (or 415)
    and the encoder its Accept header asks for (JSON unless Arrow is asked for, or 406)."""
    return Codec(_decoder(content_type), _encoder(accept))
