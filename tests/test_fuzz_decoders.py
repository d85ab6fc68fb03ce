"""The image and gRPC decoders under Hypothesis: arbitrary bytes and near-misses (flipped
bytes, truncations, lying sizes and shapes) either decode or raise the engine's own 4xx
error, never anything that would be a 500."""

from __future__ import annotations

import base64
import struct

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepipe.config import ImagePreprocess
from edgepipe.engine.codecs import image as image_codec
from edgepipe.engine.codecs import json_records
from edgepipe.engine.codecs.base import InputField
from edgepipe.engine.dataplane import prepare_rows
from edgepipe.engine.errors import EngineError
from edgepipe.engine.oip import codec as grpc_codec
from edgepipe.engine.oip import messages as pb
from edgepipe.engine.preprocess import ImageInput
from edgepipe.engine.runtime import ENCODED, TensorSpec
from tests.helpers.fuzz_inputs import (
    ARROW_SAMPLE,
    DATATYPES,
    JSON_VALUES,
    SAMPLES,
)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def image_field(max_pixels: int = 4_000_000) -> InputField:
    pre = ImageInput.build(
        ImagePreprocess(), "images", (1, 3, 64, 64), np.dtype(np.float32), max_pixels, "fuzz"
    )
    return InputField("images", TensorSpec("images", ENCODED, (1,)), image=pre)


def decodes_or_4xx(decode) -> None:
    try:
        decode()
    except EngineError as exc:
        assert 400 <= exc.status < 500, exc
        assert exc.message


def image_body(body: bytes) -> None:
    field = image_field()
    decodes_or_4xx(lambda: prepare_rows(image_codec.decode(body, [field], False), [field], False))


@FUZZ
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_as_an_image(body: bytes) -> None:
    image_body(body)


@FUZZ
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    st.integers(0, 10**6),
)
def test_flipped_and_truncated_images(fmt: str, flips, cut: int) -> None:
    data = bytearray(SAMPLES[fmt])
    for pos, value in flips:
        data[pos % len(data)] = value
    image_body(bytes(data[: max(1, cut % (len(data) + 1))]))


@FUZZ
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1))
def test_png_headers_that_lie_about_their_size(width: int, height: int) -> None:
    png = bytearray(SAMPLES["PNG"])
    # The IHDR chunk: 8-byte signature, length, "IHDR", then width and height.
    png[16:24] = struct.pack(">II", width, height)
    image_body(bytes(png))


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200), st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode())
    )
)
def test_base64_strings_in_json(text: str) -> None:
    field = image_field()
    body = orjson.dumps([{"images": text}])
    decodes_or_4xx(lambda: prepare_rows(json_records.decode(body, [field], False), [field], False))


@FUZZ
@given(
    st.sampled_from(DATATYPES),
    st.lists(st.integers(-3, 2**40), max_size=5),
    st.lists(st.binary(max_size=64), max_size=3),
    st.booleans(),
)
def test_grpc_requests_that_lie(
    datatype: str, shape: list[int], raw: list[bytes], image: bool
) -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="images" if image else "x", datatype=datatype, shape=shape)
    for blob in raw:
        request.raw_input_contents.append(blob)
    field = (
        image_field()
        if image
        else InputField("x", TensorSpec("x", np.dtype(np.float32), (None, 4)))
    )
    decodes_or_4xx(lambda: prepare_rows(grpc_codec.decode(request, [field], False), [field], False))


@pytest.mark.parametrize("size", [0, 3, 5])
def test_bytes_contents_with_broken_length_prefixes(size: int) -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="images", datatype="BYTES", shape=[1])
    request.raw_input_contents.append(struct.pack("<I", 1000) + b"x" * size)
    field = image_field()
    with pytest.raises(EngineError) as err:
        grpc_codec.decode(request, [field], False)
    assert err.value.status == 400 and "BYTES" in err.value.message


@FUZZ
@given(
    st.one_of(st.none(), st.integers(-5, 10**6).map(str), st.text(max_size=5)),
    st.sampled_from(DATATYPES),
    st.lists(st.integers(-3, 2**40), max_size=4),
    st.one_of(st.none(), st.integers(-5, 10**6)),
    st.binary(max_size=64),
)
def test_v2_rest_bodies_with_lying_headers_and_sizes(header, datatype, shape, size, tail) -> None:
    from edgepipe.engine.codecs import v2

    item: dict = {"name": "x", "datatype": datatype, "shape": shape}
    if size is not None:
        item["parameters"] = {"binary_data_size": size}
    else:
        item["data"] = [1.0, 2.0, 3.0, 4.0]
    body = orjson.dumps({"inputs": [item]}) + tail
    field = InputField("x", TensorSpec("x", np.dtype(np.float32), (None, 4)))
    decodes_or_4xx(
        lambda: prepare_rows(v2.codec(header).decode(body, [field], False), [field], False)
    )


TENSOR = InputField("x", TensorSpec("x", np.dtype(np.float32), (None, 4)))


@FUZZ
@given(st.one_of(JSON_VALUES, st.lists(st.fixed_dictionaries({"x": JSON_VALUES}), max_size=3)))
def test_pandas_records_near_misses(doc) -> None:
    body = orjson.dumps(doc)
    decodes_or_4xx(lambda: prepare_rows(json_records.decode(body, [TENSOR], True), [TENSOR], False))


@pytest.mark.parametrize(
    "body",
    [
        b'[{"x": [[99999999999999999999999, 1, 2, 3]]}]',
        b'[{"x": [[1e400, 1, 2, 3]]}]',
        b'[{"x": [[-1e400, 1, 2, 3]]}]',
        b'[{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}]",
    ],
    ids=["int-beyond-64-bits", "float-overflow", "negative-overflow", "deep-nesting"],
)
def test_json_numbers_and_nesting_beyond_range(body: bytes) -> None:
    decodes_or_4xx(lambda: prepare_rows(json_records.decode(body, [TENSOR], True), [TENSOR], False))


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_as_json(body: bytes) -> None:
    decodes_or_4xx(lambda: prepare_rows(json_records.decode(body, [TENSOR], True), [TENSOR], False))


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    st.integers(0, 10**6),
)
def test_truncated_and_flipped_arrow_streams(flips, cut: int) -> None:
    from edgepipe.engine.codecs import arrow_ipc

    data = bytearray(ARROW_SAMPLE)
    for pos, value in flips:
        data[pos % len(data)] = value
    body = bytes(data[: max(1, cut % (len(data) + 1))])
    decodes_or_4xx(lambda: prepare_rows(arrow_ipc.decode(body, [TENSOR], False), [TENSOR], False))
