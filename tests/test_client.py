"""The Python API for notebooks: DataFrames, ndarrays and Arrow tables in and out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from edgepipe.client import EngineClient, EngineClientError
from tests.helpers.engines import EngineFactory, chain_config

COLUMNS = [
    "time",
    "pipeline_name",
    "model_name",
    "model_version",
    "elapsed",
    "check_failures",
    "shadow_data",
    "out.z",
]


@pytest.fixture(scope="module")
def chain(start_engine: EngineFactory, models_dir):
    return start_engine(config=chain_config(models_dir))


def test_dataframe_in_dataframe_out(chain) -> None:
    df = pd.DataFrame({"x": [np.full((1, 4), i, dtype=np.float32) for i in range(3)]})
    out = EngineClient(chain.url).infer(df)
    assert list(out.columns) == COLUMNS and len(out) == 3
    assert (out["pipeline_name"] == "chain").all() and (out["model_name"] == "double").all()
    assert pd.api.types.is_datetime64_any_dtype(out["time"])
    for i in range(3):
        np.testing.assert_array_equal(out["out.z"][i], np.full((1, 4), (i + 1) * 2))
        assert len(out["elapsed"][i]) == 3


def test_ndarray_in_dataframe_out(chain) -> None:
    out = EngineClient(chain.url, "chain").infer(np.ones((1, 4), dtype=np.float32))
    np.testing.assert_array_equal(out["out.z"][0], np.full((1, 4), 4.0))


def test_arrow_table_round_trip(chain) -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 1, 4)
    table = pa.table({"x": pa.FixedShapeTensorArray.from_numpy_ndarray(x)})
    out = EngineClient(chain.url).infer(table)
    assert isinstance(out, pa.Table) and out.num_rows == 3
    assert set(COLUMNS) - {"shadow_data", "out.z"} <= set(out.column_names)
    z = out.column("out.z").chunk(0).to_numpy_ndarray()
    np.testing.assert_array_equal(z, (x + 1) * 2)


def test_errors_are_one_exception_with_status_and_field(chain) -> None:
    with pytest.raises(EngineClientError) as info:
        EngineClient(chain.url).infer(pd.DataFrame({"y": [[1.0, 2.0]]}))
    assert info.value.status == 400 and info.value.field == "x"
    with pytest.raises(EngineClientError, match="cannot reach"):
        EngineClient("http://127.0.0.1:1").pipelines()
    with pytest.raises(TypeError, match="numpy array, a pandas DataFrame or a pyarrow"):
        EngineClient(chain.url).infer([1, 2, 3])
