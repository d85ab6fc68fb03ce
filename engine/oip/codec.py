"""OIP v2 gRPC tensors to numpy and back: raw binary contents (what tritonclient sends)
as views of the request's bytes, typed ``contents`` lists as one conversion each."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ..codecs.base import Codec, Decoded, Encoded, InputField, Response
from ..codecs.v2 import DATATYPES, datatype, element_count, one_element, row_of, unknown_datatype
from ..errors import BadRequest
from . import messages as pb
from .wire import InferRequest, response_bytes

# Which typed list of InferTensorContents carries each datatype.
CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _bytes_elements(raw: bytes, name: str) -> list[bytes]:
    """BYTES tensor raw contents: each element a 4-byte little-endian length, then data."""
    out, pos = [], 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise BadRequest(f"input {name!r}: BYTES contents end inside a length prefix", name)
        (n,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + n > len(raw):
            raise BadRequest(f"input {name!r}: a BYTES element runs past the contents", name)
        out.append(raw[pos : pos + n])
        pos += n
    return out


def _tensor(tensor: Any, raw: bytes | None) -> np.ndarray | bytes:
    name = tensor.name
    shape = list(tensor.shape)
    count = element_count(shape, name)
    if tensor.datatype == "BYTES":
        elements = _bytes_elements(raw, name) if raw is not None else tensor.contents.bytes_contents
        one_element(name, count, len(elements))
        return bytes(elements[0])
    dtype = DATATYPES.get(tensor.datatype)
    if dtype is None:
        raise unknown_datatype(name, tensor.datatype)
    if raw is not None:
        if len(raw) != count * dtype.itemsize:
            raise BadRequest(
                f"input {name!r}: raw contents of {len(raw)} bytes do not fit shape {shape} "
                f"of {tensor.datatype} ({count * dtype.itemsize} bytes)",
                name,
            )
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    values = getattr(tensor.contents, CONTENTS.get(tensor.datatype, ""), None)
    if values is None or len(values) != count:
        have = 0 if values is None else len(values)
        raise BadRequest(
            f"input {name!r}: expected {count} {tensor.datatype} values for shape {shape}, "
            f"got {have}",
            name,
        )
    return np.asarray(values, dtype=dtype).reshape(shape)


def decode(request: Any, fields: list[InputField], echo: bool) -> Decoded:
    """A parsed ModelInferRequest's tensors as one row (an ``InferRequest``: its raw
    contents as views of the received bytes)."""
    if isinstance(request, InferRequest):
        request, raw = request.message, request.raw
    else:
        raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs",
            "raw_input_contents",
        )
    inputs = {t.name: _tensor(t, raw[i] if raw else None) for i, t in enumerate(request.inputs)}
    return Decoded([row_of(inputs, fields)], num_rows=1, request=request)


def encode(resp: Response) -> Encoded:
    """The answer with every output as raw binary contents, as Triton answers."""
    request = resp.request
    wanted = {o.name for o in request.outputs}
    answer = pb.ModelInferResponse(
        model_name=resp.pipeline_name, model_version=resp.pipeline_version, id=request.id
    )
    names = [s.name for s in resp.result.output_specs]
    raw = []
    for name, arr in zip(names, resp.result.outputs[0], strict=True):
        if wanted and name not in wanted:
            continue
        answer.outputs.add(name=name, datatype=datatype(arr.dtype), shape=list(arr.shape))
        raw.append(arr)
    return Encoded(response_bytes(answer, raw), {})


CODEC = Codec(decode, encode)
