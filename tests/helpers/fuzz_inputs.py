"""Inputs the fuzz tests share: encoded sample photos, an Arrow stream, the OIP datatypes
and JSON values (a Hypothesis strategy)."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import strategies as st
from PIL import Image


def encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


SAMPLES = {fmt: encoded(fmt) for fmt in ("JPEG", "PNG", "WEBP")}


DATATYPES = ["FP32", "FP64", "INT64", "UINT8", "BOOL", "BYTES", "FP16", "nope", ""]


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False),
        st.text(max_size=5),
    ),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=30,
)


def arrow_sample() -> bytes:
    import pyarrow as pa

    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    table = pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


ARROW_SAMPLE = arrow_sample()
