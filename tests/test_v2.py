"""Open Inference Protocol v2, driven by an off-the-shelf client (tritonclient)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from tests.helpers.engine_http import get, post
from tests.helpers.engines import EngineFactory, chain_config

httpclient = pytest.importorskip("tritonclient.http")


@pytest.fixture(scope="module")
def chain(start_engine: EngineFactory, models_dir):
    return start_engine(config=chain_config(models_dir))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_talks_to_the_engine(chain, binary: bool) -> None:
    client = httpclient.InferenceServerClient(url=chain.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("chain") and client.is_model_ready("add1")
    meta = client.get_model_metadata("chain")
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "z", "datatype": "FP32", "shape": [-1, 4]}]
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("z", binary_data=binary)
    result = client.infer("chain", [inp], outputs=[out])
    np.testing.assert_array_equal(result.as_numpy("z"), (x + 1) * 2)
    # A single model of the pipeline is addressable too.
    inp = httpclient.InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    result = client.infer("add1", [inp])
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
    assert result.get_response()["model_name"] == "add1"


def test_v2_errors(chain) -> None:
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(url=chain.url.removeprefix("http://"))
    with pytest.raises(InferenceServerException, match="unknown model"):
        client.get_model_metadata("nope")
    inp = httpclient.InferInput("x", [1, 3], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 3), np.float32))
    with pytest.raises(InferenceServerException, match="expected shape"):
        client.infer("chain", [inp])
    status, _, raw = post(
        chain.url + "/v2/models/chain/infer",
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}',
        "application/json",
    )
    assert status == 400 and orjson.loads(raw)["field"] == "x"
    assert get(chain.url + "/v2")[0] == 200
