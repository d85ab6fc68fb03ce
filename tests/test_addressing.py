"""Every model of a pipeline can be named: a step's own, its split's variants and its
shadows are listed in /models with their role, and each is served alone over OIP v2
(REST and gRPC), against the engine as a real process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.helpers import onnx_models as m
from tests.helpers.engine_http import get, post
from tests.helpers.engines import EngineFactory


@pytest.fixture(scope="module")
def engine(start_engine: EngineFactory, models_dir: Path, tmp_path_factory):
    d = tmp_path_factory.mktemp("addressing")
    add5 = m.add_constant(d / "add5.onnx", 5.0)
    twice = m.scale(d / "twice.onnx", 2.0, inp="x", out="twice")
    return start_engine(
        config={
            "name": "fall",
            "steps": [
                {
                    "model": {"name": "fall-a", "path": str(models_dir / "add1.onnx")},
                    "split": {"variants": [{"model": {"name": "fall-v", "path": str(add5)}}]},
                    "shadows": [{"name": "fall-b", "path": str(twice)}],
                }
            ],
        }
    )


def test_models_lists_shadows_and_variants_with_their_role(engine) -> None:
    status, body = get(engine.url + "/models")
    assert status == 200
    got = [(x["name"], x["role"], x["step"], x["status"]) for x in orjson.loads(body)["models"]]
    assert got == [
        ("fall-a", "step", "fall-a", "Running"),
        ("fall-v", "variant", "fall-a", "Running"),
        ("fall-b", "shadow", "fall-a", "Running"),
    ]


@pytest.mark.parametrize(
    ("name", "output", "expected"),
    [("fall-a", "y", 1.0), ("fall-v", "y", 5.0), ("fall-b", "twice", None)],
)
def test_each_model_is_served_alone_over_rest(engine, name, output, expected) -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    status, body = get(f"{engine.url}/v2/models/{name}")
    assert status == 200, body
    meta = orjson.loads(body)
    assert meta["name"] == name and [o["name"] for o in meta["outputs"]] == [output]
    assert get(f"{engine.url}/v2/models/{name}/ready")[0] == 200
    item = {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()}
    status, _, raw = post(
        f"{engine.url}/v2/models/{name}/infer",
        orjson.dumps({"inputs": [item]}),
        "application/json",
    )
    assert status == 200, raw
    answer = orjson.loads(raw)
    assert answer["model_name"] == name
    (out,) = answer["outputs"]
    assert out["name"] == output
    want = x * 2 if expected is None else x + expected
    np.testing.assert_array_equal(np.asarray(out["data"], np.float32).reshape(2, 4), want)


def test_each_model_is_served_alone_over_grpc(engine) -> None:
    grpcclient = pytest.importorskip("tritonclient.grpc")
    client = grpcclient.InferenceServerClient(engine.grpc_target)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    for name, output, want in [("fall-v", "y", x + 5), ("fall-b", "twice", x * 2)]:
        assert client.is_model_ready(name)
        inp = grpcclient.InferInput("x", [2, 4], "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(name, [inp])
        assert result.get_response().model_name == name
        np.testing.assert_array_equal(result.as_numpy(output), want)


def test_an_unknown_name_lists_every_model(engine) -> None:
    status, body = get(f"{engine.url}/v2/models/fall-c")
    assert status == 404
    error = orjson.loads(body)["error"]
    assert "unknown model 'fall-c'" in error
    assert all(name in error for name in ("fall", "fall-a", "fall-b", "fall-v"))


def test_a_pipeline_in_error_lists_every_model_with_its_role(
    start_engine: EngineFactory, models_dir: Path, tmp_path: Path
) -> None:
    engine = start_engine(
        config={
            "name": "broken",
            "steps": [
                {
                    "model": {"name": "a", "path": str(models_dir / "add1.onnx")},
                    "split": {"variants": [{"model": {"name": "v", "path": str(tmp_path / "no")}}]},
                    "shadows": [{"name": "s", "path": str(models_dir / "add1.onnx")}],
                }
            ],
        },
        wait_ready=False,
    )
    engine.wait_for("/health/ready", 503)
    models = orjson.loads(get(engine.url + "/models")[1])["models"]
    assert [(x["name"], x["role"], x["status"]) for x in models] == [
        ("a", "step", "Error"),
        ("v", "variant", "Error"),
        ("s", "shadow", "Error"),
    ]
