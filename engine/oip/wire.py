"""ModelInfer messages on the wire, with their tensors' bytes never copied.

protobuf copies a ``bytes`` field at every step: parsing a request copies each
``raw_input_contents`` entry once more when it is read, and building an answer copies an
output three times (``tobytes``, the append, the serialisation). Here a request's raw
contents stay views of the bytes gRPC received (the rest of the message, a few hundred
bytes, is parsed by protobuf as usual), and an answer's raw contents are written once,
after the serialised rest: protobuf parsers merge a repeated field's entries wherever they
appear in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import messages as pb

RAW_INPUT_CONTENTS = 7  # ModelInferRequest.raw_input_contents
RAW_OUTPUT_CONTENTS = 6  # ModelInferResponse.raw_output_contents
LENGTH_DELIMITED = 2


@dataclass(frozen=True)
class InferRequest:
    """A ModelInferRequest without its raw contents, and those contents as views."""

    message: Any
    raw: list[memoryview]
    size: int  # on the wire


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _split(view: memoryview) -> tuple[list[memoryview], list[memoryview]]:
    """(raw_input_contents entries, every other top-level field's bytes)."""
    raw: list[memoryview] = []
    rest: list[memoryview] = []
    pos, end = 0, len(view)
    while pos < end:
        start = pos
        tag, pos = _varint(view, pos)
        wire_type = tag & 7
        if tag >> 3 == 0:
            raise ValueError("field number 0")
        if wire_type == 0:
            _, pos = _varint(view, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == LENGTH_DELIMITED:
            length, pos = _varint(view, pos)
            if tag >> 3 == RAW_INPUT_CONTENTS:
                if pos + length > end:
                    raise ValueError("truncated field")
                raw.append(view[pos : pos + length])
                pos += length
                continue
            pos += length
        else:
            raise ValueError("groups")  # protobuf decides on those
        if pos > end:
            raise ValueError("truncated field")
        rest.append(view[start:pos])
    return raw, rest


def parse_request(data: bytes) -> InferRequest | Any:
    """The request as an InferRequest; anything unusual is parsed by protobuf alone (a
    plain ModelInferRequest, or its own DecodeError)."""
    view = memoryview(data)
    try:
        raw, rest = _split(view)
    except ValueError:
        return pb.ModelInferRequest.FromString(data)
    if not raw:  # typed contents: protobuf parses them, from the bytes as received
        return pb.ModelInferRequest.FromString(data)
    return InferRequest(pb.ModelInferRequest.FromString(b"".join(rest)), raw, len(data))


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_RAW_OUTPUT_TAG = _varint_bytes(RAW_OUTPUT_CONTENTS << 3 | LENGTH_DELIMITED)


def response_bytes(answer: Any, raw: list[np.ndarray]) -> bytes:
    """The serialised ``answer`` with ``raw`` as its raw_output_contents (one copy each)."""
    parts: list[Any] = [answer.SerializeToString()]
    for arr in raw:
        data = memoryview(np.ascontiguousarray(arr)).cast("B")
        parts += [_RAW_OUTPUT_TAG, _varint_bytes(data.nbytes), data]
    return b"".join(parts)


def serialize(message: Any) -> bytes:
    """gRPC's response serialiser: bytes (from ``response_bytes``) go as they are."""
    return message if isinstance(message, bytes) else message.SerializeToString()
