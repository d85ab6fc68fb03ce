"""Open Inference Protocol v2 (KServe/Triton REST) bodies, JSON and binary tensor data.

A request is JSON, optionally followed by raw tensor bytes: the header
``Inference-Header-Content-Length`` says where the JSON ends, and each input with
``parameters.binary_data_size`` takes that many bytes, in order. Binary inputs become
numpy views of the body; outputs are written as binary when the request asks for it
(``parameters.binary_data`` on a requested output, or ``binary_data_output`` on the
request), else as JSON lists. A ``BYTES`` input is one encoded image: base64 text in
JSON, or binary data as Triton serializes it (a 4-byte length, then the bytes) or bare.
"""

from __future__ import annotations

import binascii
import math
import struct
from typing import Any

import numpy as np
import orjson

from ..errors import BadRequest
from ..runtime import TensorSpec
from .base import Codec, Decoded, Encoded, InputField, Response, describe

HEADER = "Inference-Header-Content-Length"

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
NAMES = {v: k for k, v in DATATYPES.items()}


def datatype(dtype: np.dtype) -> str:
    return NAMES.get(np.dtype(dtype), "BYTES")


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "datatype": datatype(spec.dtype),
        "shape": [d if isinstance(d, int) else -1 for d in spec.shape],
    }


# No tensor dimension product beyond this (2^40 elements is far past any body limit); it
# also keeps numpy from overflowing on shapes such as [0, 2852, 2852, 532249, 532618].
MAX_ELEMENTS = 1 << 40


def element_count(shape: list[int], name: str) -> int:
    """The number of elements of a request's tensor shape, or a 400 naming the input."""
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers", name)
    nonzero = math.prod(d for d in shape if d)
    if nonzero > MAX_ELEMENTS:
        raise BadRequest(f"input {name!r}: shape {shape} is far too large", name)
    return math.prod(shape)


def codec(header_length: str | None) -> Codec:
    """The v2 codec pair for a request with this ``Inference-Header-Content-Length``."""

    def decode(body: bytes, fields: list[InputField], echo: bool) -> Decoded:
        request, inputs = decode_request(body, header_length)
        return Decoded([row_of(inputs, fields)], num_rows=1, request=request)

    return Codec(decode, encode)


def row_of(inputs: dict[str, np.ndarray | bytes], fields: list[InputField]) -> dict[str, Any]:
    """The pipeline's fields from a v2 request's inputs (REST and gRPC alike): each one
    present, an encoded image (BYTES) where the pipeline decodes images, else a tensor."""
    row = {}
    for f in fields:
        if f.name not in inputs:
            raise BadRequest(
                f"missing input {f.name!r}; expected inputs {[x.name for x in fields]}", f.name
            )
        value = inputs[f.name]
        if (f.image is not None) != isinstance(value, bytes):
            want = "BYTES (one encoded image)" if f.image is not None else describe(f.spec)
            raise BadRequest(f"input {f.name!r}: expected {want}", f.name)
        row[f.name] = value
    return row


def unknown_datatype(name: str, given: object) -> BadRequest:
    return BadRequest(
        f"input {name!r}: datatype {given!r} is not one of {sorted([*DATATYPES, 'BYTES'])}", name
    )


def one_element(name: str, *counts: int) -> None:
    """A BYTES input carries one encoded image (a pipeline takes one per request): its
    shape's element count, and the elements sent, are each one."""
    if any(n != 1 for n in counts):
        raise BadRequest(f"input {name!r}: expected one BYTES element (one image)", name)


def _bytes_input(item: dict, body: bytes, offset: int) -> bytes:
    """A BYTES input's one element: its JSON data, or its binary data at ``offset``."""
    name = item["name"]
    size = (item.get("parameters") or {}).get("binary_data_size")
    if size is None:
        if item.get("data") is None:
            raise BadRequest(f"input {name!r}: no data and no binary_data_size", name)
        return _json_element(item["data"], name)
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(body) - offset:
        raise BadRequest(
            f"input {name!r}: binary_data_size {size} does not fit the body's "
            f"{len(body) - offset} remaining bytes",
            name,
        )
    return _binary_element(memoryview(body)[offset : offset + size])


def _binary_element(raw: memoryview) -> bytes:
    """One BYTES element from binary data: Triton's form (a 4-byte little-endian length,
    then the bytes), or the bare bytes (an image's first four bytes never read as its
    own length minus four)."""
    if len(raw) >= 4 and struct.unpack_from("<I", raw)[0] == len(raw) - 4:
        return bytes(raw[4:])
    return bytes(raw)


def _json_element(data: Any, name: str) -> bytes:
    """One BYTES element from JSON: a base64 string, alone or in (nested) one-item lists."""
    while isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, str):
        raise BadRequest(
            f"input {name!r}: expected one base64 string (an encoded image) as BYTES data", name
        )
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"input {name!r}: BYTES data is not valid base64 ({exc})", name) from None


def encode(resp: Response) -> Encoded:
    """The v2 answer: JSON, or JSON followed by binary output tensors."""
    names = [s.name for s in resp.result.output_specs]
    outputs = list(zip(names, resp.result.outputs[0], strict=True))
    body, header_length = encode_response(
        resp.request, resp.pipeline_name, resp.pipeline_version, outputs
    )
    if header_length is None:
        return Encoded(body, {"Content-Type": "application/json"})
    return Encoded(body, {"Content-Type": "application/octet-stream", HEADER: str(header_length)})


def decode_request(
    body: bytes, header_length: str | None
) -> tuple[dict, dict[str, np.ndarray | bytes]]:
    """(the JSON request, its inputs by name: numpy arrays, or bytes for BYTES)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(
                f"{HEADER}: expected a byte count, got {header_length!r}", HEADER
            ) from None
        if not 0 <= n <= len(body):
            raise BadRequest(f"{HEADER}: {n} is outside the body's {len(body)} bytes", HEADER)
    else:
        n = len(body)
    try:
        request = orjson.loads(memoryview(body)[:n])
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", "body") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise BadRequest("expected a JSON object with an 'inputs' list", "inputs")
    offset = n
    inputs: dict[str, np.ndarray | bytes] = {}
    for i, item in enumerate(request["inputs"]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadRequest(f"inputs[{i}]: expected an object with a name", f"inputs[{i}]")
        name = item["name"]
        is_bytes = item.get("datatype") == "BYTES"
        dtype = DATATYPES.get(item.get("datatype", ""))
        if dtype is None and not is_bytes:
            raise unknown_datatype(name, item.get("datatype"))
        shape = item.get("shape")
        if not isinstance(shape, list):
            raise BadRequest(f"input {name!r}: shape must be a list of non-negative integers", name)
        count = element_count(shape, name)
        size = (item.get("parameters") or {}).get("binary_data_size")
        if is_bytes:
            one_element(name, count)
            inputs[name] = _bytes_input(item, body, offset)
            offset += size or 0
            continue
        assert dtype is not None
        if size is not None:
            if (
                not isinstance(size, int)
                or size != count * dtype.itemsize
                or offset + size > len(body)
            ):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} does not fit shape "
                    f"{shape} of {item['datatype']}",
                    name,
                )
            arr = np.frombuffer(body, dtype=dtype, count=count, offset=offset)
            offset += size
        else:
            data = item.get("data")
            if data is None:
                raise BadRequest(f"input {name!r}: no data and no binary_data_size", name)
            try:
                arr = np.asarray(data)
            except ValueError:
                raise BadRequest(f"input {name!r}: ragged data", name) from None
            if arr.dtype.kind not in "biuf" or arr.size != count:
                raise BadRequest(
                    f"input {name!r}: expected {count} {item['datatype']} values for shape {shape}",
                    name,
                )
            arr = arr.astype(dtype)
        inputs[name] = arr.reshape(shape)
    return request, inputs


def encode_response(
    request: dict, model_name: str, model_version: str, outputs: list[tuple[str, np.ndarray]]
) -> tuple[bytes, int | None]:
    """(body, JSON header length when binary data follows it, else None)."""
    wanted = {o.get("name"): o for o in request.get("outputs") or [] if isinstance(o, dict)}
    default_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in outputs:
        if wanted and name not in wanted:
            continue
        params = (wanted.get(name) or {}).get("parameters") or {}
        binary = params.get("binary_data", default_binary)
        item: dict[str, Any] = {
            "name": name,
            "datatype": datatype(arr.dtype),
            "shape": list(arr.shape),
        }
        if binary:
            raw = np.ascontiguousarray(arr).tobytes()
            item["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            item["data"] = np.ascontiguousarray(arr).reshape(-1)
        items.append(item)
    doc = {"model_name": model_name, "model_version": model_version, "outputs": items}
    if "id" in request:
        doc["id"] = request["id"]
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)
