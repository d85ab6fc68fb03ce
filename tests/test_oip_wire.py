"""oip/wire.py: ModelInfer requests split without copying their raw contents, and answers
with raw contents appended, read back by protobuf exactly as protobuf's own messages."""

from __future__ import annotations

import numpy as np
import pytest
from google.protobuf.message import DecodeError

from edgepipe.engine.oip import messages as pb
from edgepipe.engine.oip import wire


def request(raw: list[bytes]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m", model_version="2", id="r-1")
    req.parameters["k"].string_param = "v"
    for i, blob in enumerate(raw):
        req.inputs.add(name=f"x{i}", datatype="UINT8", shape=[len(blob)])
        req.raw_input_contents.append(blob)
    req.outputs.add(name="y")
    return req


@pytest.mark.parametrize(
    "raw", [[b"\x00\x01\x02\x03"], [b"", b"a" * 300], [bytes(range(256)) * 4000, b"z"]]
)
def test_a_request_splits_into_its_message_and_views_of_its_raw_contents(raw):
    original = request(raw)
    parsed = wire.parse_request(original.SerializeToString())
    assert isinstance(parsed, wire.InferRequest)
    assert [bytes(v) for v in parsed.raw] == raw
    assert all(isinstance(v, memoryview) for v in parsed.raw)
    expected = pb.ModelInferRequest()
    expected.CopyFrom(original)
    del expected.raw_input_contents[:]
    assert parsed.message == expected
    assert parsed.size == original.ByteSize()


def test_typed_contents_and_malformed_bytes_are_protobufs_own():
    typed = pb.ModelInferRequest(model_name="m")
    typed.inputs.add(name="x", datatype="FP32", shape=[2]).contents.fp32_contents.extend([1, 2])
    parsed = wire.parse_request(typed.SerializeToString())
    assert parsed == typed
    data = request([b"abcdef"]).SerializeToString()
    for cut in (1, 5, len(data) - 3):
        with pytest.raises(DecodeError):
            wire.parse_request(data[:cut])


def test_an_answer_with_raw_contents_appended_reads_back_as_protobufs_own():
    outs = [np.arange(12, dtype=np.float32).reshape(3, 4), np.arange(5, dtype=np.int64)[::2]]
    answer = pb.ModelInferResponse(model_name="m", id="r-1")
    answer.outputs.add(name="a", datatype="FP32", shape=[3, 4])
    answer.outputs.add(name="b", datatype="INT64", shape=[3])
    expected = pb.ModelInferResponse()
    expected.CopyFrom(answer)
    for arr in outs:
        expected.raw_output_contents.append(np.ascontiguousarray(arr).tobytes())
    body = wire.response_bytes(answer, outs)
    assert pb.ModelInferResponse.FromString(body) == expected
    assert wire.serialize(body) is body
    assert wire.serialize(answer) == answer.SerializeToString()
