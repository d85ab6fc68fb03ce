"""Wire formats: decoders and encoders keyed by media type, and the checks they share."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import BadRequest, NotAcceptable, UnsupportedMediaType
from ..runtime import RunResult, TensorSpec

JSON_RECORDS = "application/json; format=pandas-records"
ARROW_FILE = "application/vnd.apache.arrow.file"
ARROW_STREAM = "application/vnd.apache.arrow.stream"

# Wallaroo-style type keys for the `outputs` list.
TYPE_KEYS: dict[np.dtype, str] = {
    np.dtype(np.float16): "Half",
    np.dtype(np.float32): "Float",
    np.dtype(np.float64): "Double",
    np.dtype(np.int8): "Int8",
    np.dtype(np.int16): "Int16",
    np.dtype(np.int32): "Int32",
    np.dtype(np.int64): "Int64",
    np.dtype(np.uint8): "Uint8",
    np.dtype(np.uint16): "Uint16",
    np.dtype(np.uint32): "Uint32",
    np.dtype(np.uint64): "Uint64",
    np.dtype(np.bool_): "Bool",
}


@dataclass(frozen=True)
class InputField:
    """A request field and the model input it feeds."""

    name: str
    spec: TensorSpec


@dataclass
class Decoded:
    rows: list[dict[str, np.ndarray]]
    original: list[Any] | None = None


@dataclass
class Response:
    """Everything an encoder needs to write one inference answer."""

    pipeline_name: str
    model_name: str
    model_version: str
    decode_ns: int
    result: RunResult
    original: list[Any] | None
    time_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


Decoder = Callable[[bytes, list[InputField], bool, bool], Decoded]
Encoder = Callable[[Response], Any]


def describe(spec: TensorSpec) -> str:
    return f"{spec.dtype} values in shape {spec.describe_shape()}"


def coerce(arr: np.ndarray, spec: TensorSpec, field: str, allow_nan: bool) -> np.ndarray:
    """Cast ``arr`` to the model input's dtype when that loses no kind of meaning.

    Integers go into integer inputs when every value fits, and into float inputs; floats
    go into float inputs. Floats into an integer input, or anything but booleans into a
    boolean input, is a wrong dtype (400). NaN and infinities
    are refused in float inputs unless allowed.
    """
    want = spec.dtype
    have = arr.dtype
    if have != want:
        ok = (
            (have.kind in "iu" and want.kind in "iuf")  # integers: range-checked below
            or (have.kind == "f" and want.kind == "f")
            or (have.kind == "b" and want.kind == "b")
        )
        if not ok:
            raise BadRequest(
                f"tensor field {field!r}: expected {describe(spec)}, got {have} values", field
            )
        if want.kind in "iu" and arr.size:
            info = np.iinfo(want)
            lo, hi = arr.min(), arr.max()
            if lo < info.min or hi > info.max:
                raise BadRequest(
                    f"tensor field {field!r}: values from {lo} to {hi} do not fit {want}", field
                )
        with np.errstate(over="ignore"):  # float64 -> float32 overflow is caught just below
            arr = arr.astype(want)
    if want.kind == "f" and not allow_nan and arr.size and not np.isfinite(arr).all():
        raise BadRequest(
            f"tensor field {field!r}: NaN or infinite values are not allowed; "
            f"expected finite {want} values",
            field,
        )
    return arr


def _media_type(header: str) -> tuple[str, dict[str, str]]:
    parts = [p.strip() for p in header.split(";")]
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"').lower()
    return parts[0].lower(), params


def pick_decoder(content_type: str) -> Decoder:
    """The decoder for a request's Content-Type, or 415 listing what is supported."""
    from . import arrow_ipc, json_records

    mtype, params = _media_type(content_type or "")
    if mtype == "application/json" and params.get("format", "pandas-records") == "pandas-records":
        return json_records.decode
    if mtype in (ARROW_FILE, ARROW_STREAM):
        return arrow_ipc.decode
    raise UnsupportedMediaType(
        f"unsupported Content-Type {content_type or '(none)'!r}; expected "
        f"{JSON_RECORDS!r} or {ARROW_FILE!r}",
        "Content-Type",
    )


def pick_encoder(accept: str) -> tuple[str, Encoder]:
    """The encoder for a request's Accept header (JSON unless Arrow is asked for)."""
    from . import arrow_ipc, json_records

    if not accept:
        return JSON_RECORDS, json_records.encode
    wanted = [_media_type(part)[0] for part in accept.split(",")]
    for mtype in wanted:
        if mtype == ARROW_FILE:
            return ARROW_FILE, arrow_ipc.encode
        if mtype in ("application/json", "*/*", "application/*"):
            return JSON_RECORDS, json_records.encode
    raise NotAcceptable(
        f"cannot answer with {accept!r}; expected {JSON_RECORDS!r} or {ARROW_FILE!r}", "Accept"
    )
