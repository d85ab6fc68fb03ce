"""The codec interface: what a decoder returns, what an encoder is given, and the input
checks every wire format shares (dtype coercion).

Codecs live in their own modules and import only this one; ``codecs/__init__`` picks one
by media type.
"""

from __future__ import annotations

import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from google.protobuf.message import Message

from ..errors import BadRequest
from ..pipeline import RunResult
from ..preprocess import ImageInput
from ..runtime import TensorSpec

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
    """A request field and the model input it feeds; ``image`` when the field carries
    encoded images that the pipeline's preprocess decodes."""

    name: str
    spec: TensorSpec
    image: ImageInput | None = None


@dataclass
class Decoded:
    """A decoded request, before its inputs are coerced to the model's dtypes and shapes.

    A decoder gives either ``rows`` (one dict of arrays per row) or ``columns`` (one array
    per field, rows along the first axis, for formats that are columnar already, so that
    each field is coerced once, not once per row), plus ``num_rows``.
    """

    rows: list[dict[str, np.ndarray]] | None = None
    original: list[Any] | None = None
    columns: dict[str, np.ndarray] | None = None
    num_rows: int = 0
    request: Any = None  # what the encoder needs to know of the request (v2: its JSON)


@dataclass
class Response:
    """Everything an encoder needs to write one inference answer."""

    pipeline_name: str
    pipeline_version: str  # the pipeline's version, or a lone model's (OIP v2 answers)
    model_name: str
    model_version: str
    decode_ns: int
    result: RunResult
    original: list[Any] | None
    request: Any = None
    time_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)


@dataclass
class Encoded:
    body: Any  # bytes or a buffer
    headers: dict[str, str]


@dataclass(frozen=True)
class Payload:
    """A request as its transport received it, not yet decoded. ``data`` is what the codec
    decodes: the body's bytes over REST, the parsed ModelInferRequest over gRPC. ``size``
    is its length on the wire: an empty request, the echo limit, decoding off the loop."""

    data: bytes | bytearray | Message
    size: int

    @classmethod
    def of_bytes(cls, body: bytes | bytearray) -> Payload:
        return cls(body, len(body))


# decode(a Payload's data, the fields the pipeline reads, whether to keep the original rows)
Decoder = Callable[[Any, list[InputField], bool], Decoded]
Encoder = Callable[[Response], Encoded]


@dataclass(frozen=True)
class Codec:
    """The decoder of a request and the encoder of its answer."""

    decode: Decoder
    encode: Encoder


def describe(spec: TensorSpec) -> str:
    if spec.dtype.kind == "O":
        return "one encoded JPEG, PNG or WebP image per row (base64 in JSON, binary in Arrow)"
    return f"{spec.dtype} values in shape {spec.describe_shape()}"


def _kind(value: Any) -> str:
    """A JSON value's kind in words (simdjson's lazy Array and Object included)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "an object" if type(value).__name__ in ("dict", "Object") else "a list"


def image_bytes(value: Any, inp: InputField, row: int) -> bytes:
    """An image field's value as the encoded image: bytes as they are, base64 text decoded."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if not isinstance(value, str):
        raise BadRequest(
            f"row {row}: image field {inp.name!r} is {_kind(value)}; expected {describe(inp.spec)}",
            inp.name,
        )
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(
            f"row {row}: image field {inp.name!r} is not valid base64 ({exc})", inp.name
        ) from None


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
