"""A Pipeline in the cluster whose steps are a ModelPack artifact pushed by oras and a KServe
modelcar image (issue 30): the operator resolves both with the Pipeline's registry Secret,
and the engine serves the config it wrote with onnxruntime's outputs."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest

from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.config import PipelineConfig
from tests.helpers import onnx_models as m
from tests.helpers.modeltools import (
    build_modelcar,
    build_oras,
    modelpack_config,
    oras_run,
    push_modelcar,
)
from tests.helpers.pipelines import pipeline, wait_phase
from tests.helpers.publishing import creds_env

pytestmark = pytest.mark.cluster

X = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_a_pipeline_of_an_oras_artifact_and_a_modelcar_serves(
    operator, kubectl, auth_registry, start_engine, tmp_path
) -> None:
    work = tmp_path / "oras"
    work.mkdir()
    add = m.add_constant(work / "add.onnx", 7.0)
    digest = "sha256:" + hashlib.sha256(add.read_bytes()).hexdigest()
    (work / "config.json").write_bytes(modelpack_config("add7", digest))
    (work / "annotations.json").write_text('{"add.onnx": {"org.cncf.model.filepath": "add.onnx"}}')
    artifact = f"{auth_registry.host}/team/add7:v1"
    oras_run(
        build_oras(), auth_registry, tmp_path, "push", artifact,
        "--artifact-type", "application/vnd.cncf.model.manifest.v1+json",
        "--config", "config.json:application/vnd.cncf.model.config.v1+json",
        "--annotation-file", "annotations.json",
        "add.onnx:application/vnd.cncf.model.weight.v1.raw", cwd=work,
    )  # fmt: skip
    double = m.scale(tmp_path / "model.onnx", 2.0)
    modelcar = f"{auth_registry.host}/team/double:v1"
    build_modelcar(modelcar, {"model.onnx": double}, tmp_path / "build")
    push_modelcar(modelcar, auth_registry, tmp_path)

    kubectl(
        "create", "secret", "generic", "model-creds",
        f"--from-literal=username={auth_registry.username}",
        f"--from-literal=password={auth_registry.password}",
    )  # fmt: skip
    steps = [
        {"model": {"name": "add7", "url": f"oci://{artifact}"}},
        {"model": {"name": "double", "url": f"oci://{modelcar}"}},
    ]
    manifest = pipeline("interop", steps=steps)
    manifest["spec"]["registry"] = {"secretRef": {"name": "model-creds"}}
    kubectl.apply(manifest)
    wait_phase(kubectl, "interop", "Running", timeout=120)
    cm = kubectl.get("configmap", "interop-pipeline")
    config = PipelineConfig.model_validate_json(cm["data"]["pipeline.json"])
    shas = [step.model.sha256 for step in config.steps]
    assert shas == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (add, double)]

    # The engine pod's part: the config the operator wrote, the models from the registry.
    engine = start_engine(
        env={**creds_env(auth_registry), "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp_path / "cache")},
        config=json.loads(config.to_json()),
    )
    (rec,) = EngineClient(engine.url).infer_records("interop", [{"x": X}])
    y = ort.InferenceSession(str(add)).run(None, {"x": X})[0]
    z = ort.InferenceSession(str(double)).run(None, {"y": y})[0]
    np.testing.assert_array_equal(outputs_of(rec)[0], z)
