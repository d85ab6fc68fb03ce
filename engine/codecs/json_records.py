"""pandas-records JSON: parsed straight into numpy buffers, answered with orjson.

Decoding has two paths that give the same arrays:

* The fast path parses with simdjson and asks it for each tensor as one flat buffer of
  doubles or int64s (C code, no Python object per element). It checks the nesting by
  walking the *lists* (for a 1x3x640x640 image: 1,925 lists, not 1.2 M numbers) and then
  checks that the body holds exactly as many ``[`` as those lists: a list hidden where a
  number belongs (``[1, [2]]``) cannot pass.
* The exact path (orjson + ``np.asarray``) runs when the fast path cannot decide: booleans,
  strings or nulls in a tensor, or extra ``[`` anywhere (array-valued side columns, or
  brackets inside strings). It produces precise messages for ragged and mixed input.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import orjson
import simdjson

from ..errors import BadRequest
from .base import TYPE_KEYS, Decoded, Encoded, InputField, Response, describe, image_bytes

# One parser for the process, used under a lock. A simdjson parser keeps buffers of about
# three times the largest document it has parsed (~40 MB after one 640x640 image), and a
# fresh parser per request costs ~9 ms more per image; one shared parser bounds the memory
# and keeps the speed. Two JSON decodes cannot overlap, which costs little: while one image
# is decoded the other core is usually busy in the model.
_lock = threading.Lock()
_shared: list[simdjson.Parser] = []


class _Fallback(Exception):
    """The fast path cannot decide; use the exact path."""


def _parse(body: bytes) -> Any:
    """Parse with the shared parser; the caller holds ``_lock``."""
    if not _shared:
        _shared.append(simdjson.Parser())
    try:
        return _shared[0].parse(body)
    except RuntimeError:
        # An earlier document is still referenced (say, by a traceback on its way to the
        # client), so that parser cannot be reused: take a fresh one.
        _shared[0] = simdjson.Parser()
        return _shared[0].parse(body)


def _fast_array(value: Any, inp: InputField, row: int) -> tuple[np.ndarray, int]:
    """(array, number of JSON lists it is made of) from a simdjson value."""
    spec = inp.spec
    if inp.image is not None:
        return image_bytes(value, inp, row), 0
    if not isinstance(value, simdjson.Array):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Fallback
        return np.asarray(value), 0
    dims: list[int] = []
    cur: Any = value
    while isinstance(cur, simdjson.Array):
        dims.append(len(cur))
        if not dims[-1]:
            break
        cur = cur[0]
    # Every list above the leaves must be a list of the same length as its siblings.
    level = [value]
    lists = 1
    for depth in range(1, len(dims)):
        want = dims[depth]
        nxt = []
        for parent in level:
            for child in parent:
                if not isinstance(child, simdjson.Array) or len(child) != want:
                    raise _ragged(inp, row)
                nxt.append(child)
        lists += len(nxt)
        level = nxt
    kind = spec.dtype.kind
    of_type = "d" if kind == "f" else "i"
    if kind not in "fiu":
        raise _Fallback
    try:
        buf = value.as_buffer(of_type=of_type)
    except TypeError:
        raise _Fallback from None  # bools, strings, nulls or floats for an int input
    arr = np.frombuffer(buf, dtype=np.float64 if of_type == "d" else np.int64)
    if arr.size != int(np.prod(dims, dtype=np.int64)):
        raise _ragged(inp, row)
    return arr.reshape(dims), lists


def _ragged(inp: InputField, row: int) -> BadRequest:
    return BadRequest(
        f"row {row}: tensor field {inp.name!r} is ragged or mixes lists and numbers; "
        f"expected {describe(inp.spec)}",
        inp.name,
    )


def _missing(inp: InputField, row: int, keys: list[str]) -> BadRequest:
    return BadRequest(
        f"row {row}: missing tensor field {inp.name!r} (expected {describe(inp.spec)}); "
        f"the row has {sorted(keys)}",
        inp.name,
    )


def _not_records(kind: str) -> BadRequest:
    return BadRequest(f"expected a JSON array of row objects (pandas-records), got {kind}", "body")


_CHUNK = 1 << 18


def _count_brackets(body: bytes) -> int:
    """How many ``[`` the body holds. numpy compares bytes about 3x as fast as
    ``bytes.count``; in 256 KiB chunks, its temporary stays in the cache instead of being
    13 MB of fresh pages for a 640x640 image (2.3 ms -> 1.0 ms)."""
    data = np.frombuffer(body, dtype=np.uint8)
    return sum(
        int(np.count_nonzero(data[i : i + _CHUNK] == 91)) for i in range(0, data.size, _CHUNK)
    )


def _decode_fast(body: bytes, fields: list[InputField]) -> list[dict]:
    try:
        doc = _parse(body)
    except ValueError as exc:
        raise BadRequest(f"malformed JSON: {exc}", "body") from None
    except RuntimeError:
        # simdjson's own limits (an integer beyond 64 bits, say): the exact path decides.
        raise _Fallback from None
    try:
        if not isinstance(doc, simdjson.Array):
            raise _not_records(type(doc).__name__.lower())
        if not len(doc):
            raise BadRequest("the request has no rows; expected at least one row object", "body")
        lists = 1
        rows = []
        for i, row in enumerate(doc):
            if not isinstance(row, simdjson.Object):
                raise BadRequest(f"row {i}: expected an object of tensor fields", f"[{i}]")
            out = {}
            for inp in fields:
                try:
                    value = row[inp.name]
                except KeyError:
                    raise _missing(inp, i, list(row.keys())) from None
                arr, n = _fast_array(value, inp, i)
                lists += n
                out[inp.name] = arr
            rows.append(out)
        if _count_brackets(body) != lists:
            raise _Fallback
    finally:
        del doc  # the parser may be reused only once its document is released
    return rows


def _exact_array(value: Any, inp: InputField, row: int) -> np.ndarray | bytes:
    if inp.image is not None:
        return image_bytes(value, inp, row)
    if value is None or isinstance(value, str | dict):
        kind = "null" if value is None else type(value).__name__
        raise BadRequest(
            f"row {row}: tensor field {inp.name!r} is a {kind}; expected {describe(inp.spec)}",
            inp.name,
        )
    try:
        arr = np.asarray(value)
    except ValueError:
        raise _ragged(inp, row) from None
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O":
            raise _ragged(inp, row)
        what = "strings" if arr.dtype.kind in "US" else f"{arr.dtype} values"
        raise BadRequest(
            f"row {row}: tensor field {inp.name!r} holds {what}; expected {describe(inp.spec)}",
            inp.name,
        )
    return arr


def _decode_exact(body: bytes, fields: list[InputField]) -> list[dict]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}", "body") from None
    if not isinstance(doc, list):
        raise _not_records(type(doc).__name__)
    if not doc:
        raise BadRequest("the request has no rows; expected at least one row object", "body")
    rows = []
    for i, row in enumerate(doc):
        if not isinstance(row, dict):
            raise BadRequest(f"row {i}: expected an object of tensor fields", f"[{i}]")
        out = {}
        for inp in fields:
            if inp.name not in row:
                raise _missing(inp, i, list(row))
            out[inp.name] = _exact_array(row[inp.name], inp, i)
        rows.append(out)
    return rows


def decode(body: bytes, fields: list[InputField], echo: bool) -> Decoded:
    try:
        with _lock:
            rows = _decode_fast(body, fields)
    except _Fallback:
        rows = _decode_exact(body, fields)
    original = orjson.loads(body) if echo else None
    return Decoded(rows, original, num_rows=len(rows))


# -- encoding -------------------------------------------------------------------------------

MEDIA_TYPE = "application/json; format=pandas-records"

_ORJSON_NATIVE = {"f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


def _tensor(arr: np.ndarray) -> dict[str, Any]:
    key = TYPE_KEYS.get(arr.dtype, str(arr.dtype))
    flat = arr.reshape(-1)
    if f"{flat.dtype.kind}{flat.dtype.itemsize}" not in _ORJSON_NATIVE:
        flat = flat.astype(np.float32)  # float16: orjson writes float32 exactly
    # orjson serialises C-contiguous numpy arrays natively, with no Python per element.
    return {key: {"data": np.ascontiguousarray(flat), "dim": list(arr.shape), "v": 1}}


def encode(resp: Response) -> Encoded:
    result = resp.result
    records = []
    for i, outs in enumerate(result.outputs):
        records.append(
            {
                "check_failures": result.check_failures[i],
                "elapsed": [resp.decode_ns, *result.step_ns[i]],
                "model_name": resp.model_name,
                "model_version": resp.model_version,
                "original_data": resp.original[i] if resp.original is not None else None,
                "outputs": [_tensor(o) for o in outs],
                "pipeline_name": resp.pipeline_name,
                "shadow_data": {
                    name: [_tensor(o) for o in outputs.values()]
                    for name, outputs in result.shadow_data[i].items()
                },
                "time": resp.time_ms,
            }
        )
    body = orjson.dumps(records, option=orjson.OPT_SERIALIZE_NUMPY)
    return Encoded(body, {"Content-Type": MEDIA_TYPE})
