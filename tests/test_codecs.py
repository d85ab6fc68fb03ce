"""Decoders and encoders, without a server: exact arrays in, 400s for bad input, never 500."""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgepipe.engine import codecs
from edgepipe.engine.codecs import Decoded, InputField, arrow_ipc, json_records
from edgepipe.engine.dataplane import coerce_rows
from edgepipe.engine.errors import BadRequest, NotAcceptable, UnsupportedMediaType
from edgepipe.engine.runtime import TensorSpec

DTYPES = ["float32", "float64", "int32", "int64", "uint8", "bool"]


def field(dtype="float32", shape=(None, 3), name="x") -> InputField:
    return InputField(name, TensorSpec(name, np.dtype(dtype), tuple(shape)))


def decode(codec, body: bytes, fields: list[InputField], allow_nan: bool, echo: bool) -> Decoded:
    """A codec's decode, then the data plane's dtype coercion: what a request goes through
    before its rows are fitted to the model's shapes."""
    decoded = codec.decode(body, fields, echo)
    return Decoded(coerce_rows(decoded, fields, allow_nan), decoded.original)


def pick_decoder(content_type: str):
    return codecs.negotiate(content_type, "").decode


def pick_encoder(accept: str):
    encode = codecs.negotiate("application/json", accept).encode
    media_type = {json_records.encode: codecs.JSON_RECORDS, arrow_ipc.encode: codecs.ARROW_FILE}
    return media_type[encode], encode


def json_body(rows) -> bytes:
    return orjson.dumps(rows, option=orjson.OPT_SERIALIZE_NUMPY)


def arrow_body(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


# -- JSON ---------------------------------------------------------------------------------


def test_json_nested_and_flat() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = decode(json_records, json_body([{"x": x}, {"x": x.ravel()}]), [field()], False, True)
    assert out.rows[0]["x"].dtype == np.float32 and out.rows[0]["x"].shape == (2, 3)
    np.testing.assert_array_equal(out.rows[0]["x"], x)
    np.testing.assert_array_equal(out.rows[1]["x"], x.ravel())
    assert out.original == [{"x": x.tolist()}, {"x": x.ravel().tolist()}]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"[{", "malformed JSON"),
        (b'{"x": [1]}', "JSON array of row objects"),
        (b"[]", "no rows"),
        (b"[1]", "row 0: expected an object"),
        (b'[{"y": [1]}]', "missing tensor field 'x'"),
        (b'[{"x": [[1,2,3],[4]]}]', "ragged"),
        (b'[{"x": [[1,2],[3,4,5,6]]}]', "ragged"),  # same count, different shape
        (b'[{"x": [1, [2], 3]}]', "ragged"),  # a list hidden where a number belongs
        (b'[{"x": [1, null, 3]}]', "ragged"),
        (b'[{"x": ["a", "b"]}]', "strings"),
        (b'[{"x": "abc"}]', "is a str"),
        (b'[{"x": [true, false]}]', "got bool"),
        (b'[{"x": [NaN]}]', "malformed JSON"),
        (b'[{"x": [1e400]}]', "malformed JSON"),
        (b'[{"x": [1e39]}]', "NaN or infinite"),  # finite in JSON, infinite as float32
    ],
)
def test_json_bad_input_is_400(body: bytes, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        decode(json_records, body, [field()], False, False)
    assert words in info.value.message
    assert info.value.status == 400


def test_json_dtype_rules() -> None:
    ints = decode(json_records, b'[{"x": [1, 2, 3]}]', [field("int32")], False, False)
    assert ints.rows[0]["x"].dtype == np.int32
    with pytest.raises(BadRequest, match="got float64"):
        decode(json_records, b'[{"x": [1.5, 2, 3]}]', [field("int64")], False, False)
    with pytest.raises(BadRequest, match="do not fit uint8"):
        decode(json_records, b'[{"x": [1, 256, 3]}]', [field("uint8")], False, False)
    bools = decode(json_records, b'[{"x": [true, false, true]}]', [field("bool")], False, False)
    assert bools.rows[0]["x"].tolist() == [True, False, True]


def test_json_side_columns_with_brackets_still_decode() -> None:
    body = b'[{"id": "a[b]", "tags": [1, 2], "x": [[1, 2, 3]]}]'
    out = decode(json_records, body, [field()], False, False)
    np.testing.assert_array_equal(out.rows[0]["x"], [[1, 2, 3]])


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
    data=st.data(),
)
def test_json_round_trips_random_tensors(dtype: str, shape, data) -> None:
    elements = None
    if dtype.startswith("float"):
        elements = st.floats(-1e6, 1e6, width=32 if dtype == "float32" else 64)
    arr = data.draw(hnp.arrays(np.dtype(dtype), shape, elements=elements))
    out = decode(json_records, json_body([{"x": arr}]), [field(dtype, shape)], False, False)
    got = out.rows[0]["x"]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, arr)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=3),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=2), children, max_size=2)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, dtype=st.sampled_from(DTYPES))
def test_json_arbitrary_values_decode_or_400(value, dtype: str) -> None:
    try:
        body = orjson.dumps([{"x": value}])
    except (TypeError, orjson.JSONEncodeError):
        return  # not expressible as JSON (NaN, huge ints): malformed cases are tested above
    try:
        out = decode(json_records, body, [field(dtype, (None,))], False, False)
    except BadRequest as exc:
        assert exc.status == 400 and exc.message
        return
    arr = out.rows[0]["x"]
    assert arr.dtype == np.dtype(dtype)
    assert arr.tolist() == np.asarray(value).astype(dtype).tolist()


# -- Arrow --------------------------------------------------------------------------------


def test_arrow_fixed_shape_tensor_is_zero_copy() -> None:
    x = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    body = arrow_body(pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)}))
    out = decode(arrow_ipc, body, [field(shape=(1, 3, 4))], False, False)
    row = out.rows[1]["x"]
    np.testing.assert_array_equal(row, x[1])
    # The array is a view into the request body, not a copy of it.
    assert np.shares_memory(row, np.frombuffer(body, dtype=np.uint8))


def test_arrow_permuted_tensor_hwc_to_chw() -> None:
    hwc = np.random.default_rng(0).random((2, 4, 5, 3), dtype=np.float32)  # N,H,W,C
    chw = hwc.transpose(0, 3, 1, 2)  # a transposed view, written with a permutation
    tensor = pa.FixedShapeTensorArray.from_numpy_ndarray(chw)
    assert tensor.type.permutation not in (None, [0, 1, 2])
    body = arrow_body(pa.table({"x": tensor}))
    out = decode(arrow_ipc, body, [field(shape=(1, 3, 4, 5))], False, False)
    for i in range(2):
        np.testing.assert_array_equal(out.rows[i]["x"], chw[i])


def test_arrow_canonical_permutation() -> None:
    # Physical [2,3,4] per row, logical dim i = physical dim permutation[i] -> [4,2,3].
    physical = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    ext = pa.fixed_shape_tensor(pa.float32(), [2, 3, 4], permutation=[2, 0, 1])
    storage = pa.FixedSizeListArray.from_arrays(pa.array(physical.ravel()), 24)
    body = arrow_body(pa.table({"x": pa.ExtensionArray.from_storage(ext, storage)}))
    out = decode(arrow_ipc, body, [field(shape=(4, 2, 3))], False, False)
    np.testing.assert_array_equal(out.rows[0]["x"], physical[0].transpose(2, 0, 1))


def test_arrow_nested_flat_and_scalar_columns() -> None:
    nested = pa.array([[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]]], type=pa.list_(pa.list_(pa.float32())))
    flat = pa.array([[1, 2, 3], [4, 5, 6]], type=pa.large_list(pa.int64()))
    scalar = pa.array([1.5, 2.5])
    table = pa.table({"a": nested, "b": flat, "c": scalar})
    fields = [
        field(shape=(1, 3), name="a"),
        field(shape=(None,), name="b"),
        field("float64", shape=(), name="c"),
    ]
    out = decode(arrow_ipc, arrow_body(table), fields, False, False)
    np.testing.assert_array_equal(out.rows[1]["a"], [[4, 5, 6]])
    assert out.rows[1]["b"].dtype == np.float32 and out.rows[1]["b"].tolist() == [4, 5, 6]
    assert out.rows[0]["c"] == 1.5


@pytest.mark.parametrize(
    ("table", "words"),
    [
        (pa.table({"x": pa.array([[1.0, 2.0], [3.0]])}), "ragged"),
        (pa.table({"x": pa.array([[1.0, None]])}), "null values"),
        (pa.table({"x": pa.array([["a"]])}), "Arrow values of type string"),
        (pa.table({"y": pa.array([[1.0]])}), "missing tensor field 'x'"),
        (pa.table({"x": pa.array([[1.5]])}), None),
        (pa.table({"x": pa.array([[float("nan")]], type=pa.list_(pa.float32()))}), "NaN"),
    ],
)
def test_arrow_bad_input_is_400(table: pa.Table, words: str | None) -> None:
    spec = field("int64", (None,)) if words is None else field(shape=(None,))
    with pytest.raises(BadRequest) as info:
        decode(arrow_ipc, arrow_body(table), [spec], False, False)
    assert info.value.status == 400
    assert (words or "got float64") in info.value.message


def test_arrow_not_arrow_is_400() -> None:
    with pytest.raises(BadRequest, match="not an Arrow IPC"):
        decode(arrow_ipc, b"definitely not arrow", [field()], False, False)


@settings(max_examples=100, deadline=None)
@given(
    dtype=st.sampled_from(["float32", "float64", "int32", "int64", "uint8"]),
    shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4),
    rows=st.integers(1, 3),
    data=st.data(),
)
def test_arrow_round_trips_random_tensors(dtype: str, shape, rows: int, data) -> None:
    elements = st.floats(-1e6, 1e6, width=32) if dtype == "float32" else None
    if dtype == "float64":
        elements = st.floats(-1e6, 1e6)
    arr = data.draw(hnp.arrays(np.dtype(dtype), (rows, *shape), elements=elements))
    body = arrow_body(pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(arr)}))
    out = decode(arrow_ipc, body, [field(dtype, shape)], False, False)
    for i in range(rows):
        np.testing.assert_array_equal(out.rows[i]["x"], arr[i])


# -- negotiation ----------------------------------------------------------------------------


def test_content_negotiation() -> None:
    assert pick_decoder("application/json; format=pandas-records") is json_records.decode
    assert pick_decoder("application/json") is json_records.decode
    assert pick_decoder("application/vnd.apache.arrow.file") is arrow_ipc.decode
    with pytest.raises(UnsupportedMediaType):
        pick_decoder("text/csv")
    with pytest.raises(UnsupportedMediaType):
        pick_decoder("application/json; format=split")
    assert pick_encoder("")[0].startswith("application/json")
    assert pick_encoder("*/*")[0].startswith("application/json")
    assert (
        pick_encoder("application/vnd.apache.arrow.file")[0] == "application/vnd.apache.arrow.file"
    )
    with pytest.raises(NotAcceptable):
        pick_encoder("text/html")
