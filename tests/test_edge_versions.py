"""Past versions at the edge: the engine keeps the last N pipeline versions (and their
models) in its cache, so pointing PIPELINE_URL back at one starts with the registry down."""

from __future__ import annotations

import numpy as np

from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.publishing import edge_env, publish

X = [{"x": np.arange(4, dtype=np.float32).reshape(1, 4)}]


def answer(env: dict, log) -> np.ndarray:
    with EngineProcess(env=env, log_path=log) as engine:
        (rec,) = EngineClient(engine.url).infer_records("edge", X)
        return outputs_of(rec)[0]


def test_a_b_then_a_again_with_the_registry_down(own_registry, tmp_path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    configs = tmp_path / "configs"
    configs.mkdir()
    versions = {}
    for label, value in (("a", 1.0), ("b", 10.0), ("c", 100.0)):
        model = m.add_constant(models / f"{label}.onnx", value)
        config = {"name": "edge", "steps": [{"model": {"name": "add", "path": str(model)}}]}
        versions[label] = publish(config, configs, own_registry)
    cache = tmp_path / "cache"

    def env(label: str, keep: str = "2") -> dict:
        return {
            **edge_env({"status": versions[label]}, own_registry, cache),
            "EDGEPIPE_ENGINE_CACHE_VERSIONS": keep,
        }

    np.testing.assert_array_equal(answer(env("a"), tmp_path / "a.log"), X[0]["x"] + 1)
    np.testing.assert_array_equal(answer(env("b"), tmp_path / "b.log"), X[0]["x"] + 10)
    own_registry.stop()
    # Back to A with no registry: from the cache.
    np.testing.assert_array_equal(answer(env("a"), tmp_path / "a2.log"), X[0]["x"] + 1)
    assert "registry unreachable" in (tmp_path / "a2.log").read_text()
    own_registry.start()
    # A third version with room for two: the least recently used (B) goes, with its model.
    np.testing.assert_array_equal(answer(env("c"), tmp_path / "c.log"), X[0]["x"] + 100)
    assert len(list((cache / "pipelines").glob("*.json"))) == 2
    b_model = versions["b"]
    own_registry.stop()
    broken = EngineProcess(env=env("b"), log_path=tmp_path / "b2.log", wait_ready=False)
    try:
        broken.start()
        raise AssertionError("version B should have left the cache")
    except RuntimeError:
        assert "no cached copy" in broken.log(), broken.log()
    finally:
        broken.stop()
    np.testing.assert_array_equal(answer(env("a"), tmp_path / "a3.log"), X[0]["x"] + 1)
    assert b_model["pipelineVersion"] not in "".join(
        p.read_text() for p in (cache / "pipelines").glob("*.json")
    )
