"""Models the ecosystem already has (issue 30), with the real tools and a registry with
htpasswd: oras reads what edgepipe pushes and pushes what edgepipe serves; a KServe modelcar
image built with podman is served by an engine and at the edge; bad inputs are refused in
one line naming the reference, writing nothing outside the cache; an edge whose cache
holds edgepipe's earlier media types still starts offline."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgepipe import oci
from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.engine.edge import fetch_model
from edgepipe.engine.settings import Settings
from edgepipe.localengine import EngineProcess
from tests.helpers import onnx_models as m
from tests.helpers.cli import ep
from tests.helpers.modeltools import (
    as_earlier_edgepipe,
    build_modelcar,
    build_oras,
    modelpack_config,
    oras_run,
    push_artifact,
    push_modelcar,
    push_modelcar_index,
    tar_layer,
)
from tests.helpers.publishing import creds_env, edge_env, publish

X = np.arange(8, dtype=np.float32).reshape(2, 4)


@pytest.fixture(scope="module")
def oras() -> Path:
    return build_oras()


def onnxruntime_answer(model: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})[0]


def served(url: str, reg, folder: Path, start_engine) -> np.ndarray:
    """An engine process whose config names the model by its oci:// reference."""
    config = {"name": "interop", "steps": [{"model": {"name": "m", "url": url}}]}
    env = {**creds_env(reg), "EDGEPIPE_ENGINE_CACHE_DIR": str(folder / "cache")}
    engine = start_engine(env=env, config=config)
    (rec,) = EngineClient(engine.url).infer_records("interop", [{"x": X}])
    return outputs_of(rec)[0]


def test_oras_reads_a_model_edgepipe_pushed(oras, auth_registry, models_dir, tmp_path) -> None:
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    client = oci.Client(auth_registry.host, creds, plain_http=True)
    pushed = oci.push_model(client, models_dir / "add1.onnx", name="add1", repository="io/add1")
    target = pushed.reference.removeprefix("oci://")
    manifest = json.loads(oras_run(oras, auth_registry, tmp_path, "manifest", "fetch", target))
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    oras_run(oras, auth_registry, tmp_path, "pull", target, "-o", str(tmp_path / "out"))
    pulled = tmp_path / "out" / "add1.onnx"
    assert pulled.read_bytes() == (models_dir / "add1.onnx").read_bytes()


def test_a_modelpack_artifact_pushed_by_oras_is_served(
    oras, auth_registry, start_engine, tmp_path
) -> None:
    work = tmp_path / "push"
    work.mkdir()
    model = m.add_constant(work / "model.onnx", 7.0)
    digest = "sha256:" + hashlib.sha256(model.read_bytes()).hexdigest()
    (work / "config.json").write_bytes(modelpack_config("add7", digest))
    (work / "annotations.json").write_text(
        json.dumps({"model.onnx": {"org.cncf.model.filepath": "model.onnx"}})
    )
    ref = f"{auth_registry.host}/io/oras-model:v1"
    oras_run(
        oras,
        auth_registry,
        tmp_path,
        "push",
        ref,
        "--artifact-type",
        "application/vnd.cncf.model.manifest.v1+json",
        "--config",
        "config.json:application/vnd.cncf.model.config.v1+json",
        "--annotation-file",
        "annotations.json",
        "model.onnx:application/vnd.cncf.model.weight.v1.raw",
        cwd=work,
    )
    answer = served(f"oci://{ref}", auth_registry, tmp_path, start_engine)
    np.testing.assert_array_equal(answer, onnxruntime_answer(model))
    np.testing.assert_array_equal(answer, X + 7)


def test_a_modelcar_image_is_served_by_an_engine_and_at_the_edge(
    auth_registry, start_engine, tmp_path
) -> None:
    model = m.add_constant(tmp_path / "model.onnx", 3.0)
    tag = f"{auth_registry.host}/io/modelcar:v1"
    build_modelcar(tag, {"model.onnx": model}, tmp_path / "build")
    push_modelcar(tag, auth_registry, tmp_path)
    answer = served(f"oci://{tag}", auth_registry, tmp_path, start_engine)
    np.testing.assert_array_equal(answer, onnxruntime_answer(model))
    # At the edge: a publish copies the ONNX file out of the image into the pipeline.
    config = {"name": "edge", "steps": [{"model": {"name": "m", "url": f"oci://{tag}"}}]}
    configs = tmp_path / "configs"
    configs.mkdir()
    published = publish(config, configs, auth_registry)
    env = edge_env({"status": published}, auth_registry, tmp_path / "edge-cache")
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"x": [[1, 2, 3, 4]]}]))
    with EngineProcess(env=env, log_path=tmp_path / "edge.log") as engine:
        (rec,) = EngineClient(engine.url).infer_records("edge", [{"x": X}])
        cli = ep("infer", "edge", "--engine", engine.url, "--input", str(rows), "-o", "json")
    np.testing.assert_array_equal(outputs_of(rec)[0], X + 3)
    assert json.loads(cli.stdout)[0]["outputs"][0]["Float"]["data"] == [4.0, 5.0, 6.0, 7.0]


def test_a_modelcar_with_several_models_serves_the_one_path_names(
    auth_registry, start_engine, tmp_path
) -> None:
    a = m.add_constant(tmp_path / "a.onnx", 1.0)
    b = m.add_constant(tmp_path / "b.onnx", 2.0)
    tag = f"{auth_registry.host}/io/modelcar-two:v1"
    build_modelcar(tag, {"a.onnx": a, "b.onnx": b}, tmp_path / "build")
    push_modelcar(tag, auth_registry, tmp_path)
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    with pytest.raises(oci.ModelNotFound, match=r"several ONNX files .*\?path=FILE"):
        oci.model_info(f"oci://{tag}", creds)
    answer = served(f"oci://{tag}?path=/models/b.onnx", auth_registry, tmp_path, start_engine)
    np.testing.assert_array_equal(answer, X + 2)


def test_a_modelcar_pushed_as_an_image_index_is_served(
    auth_registry, start_engine, tmp_path
) -> None:
    model = m.add_constant(tmp_path / "model.onnx", 5.0)
    image = f"{auth_registry.host}/io/modelcar-arch:v1"
    build_modelcar(image, {"model.onnx": model}, tmp_path / "build")
    index = f"{auth_registry.host}/io/modelcar-index:v1"
    push_modelcar_index(image, index, auth_registry, tmp_path)
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    client = oci.Client(auth_registry.host, creds, plain_http=True)
    listed, _ = client.get_manifest(oci.Reference.parse(index), oci.modelfiles.ACCEPT)
    assert "manifests" in listed  # an index indeed
    answer = served(f"oci://{index}", auth_registry, tmp_path, start_engine)
    np.testing.assert_array_equal(answer, onnxruntime_answer(model))


def test_an_edge_with_a_cache_from_before_modelpack_starts_offline(
    own_registry, models_dir, tmp_path
) -> None:
    """A publish in edgepipe's earlier media types is served, cached, and served again
    with the registry down."""
    config = {
        "name": "edge",
        "steps": [{"model": {"name": "add1", "path": str(models_dir / "add1.onnx")}}],
    }
    configs = tmp_path / "configs"
    configs.mkdir()
    published = publish(config, configs, own_registry)
    creds = oci.Credentials(own_registry.username, own_registry.password)
    client = oci.Client(own_registry.host, creds, plain_http=True)
    as_earlier_edgepipe(client, published["pipelineUrl"])
    env = edge_env({"status": published}, own_registry, tmp_path / "cache")
    for label in ("online", "offline"):
        with EngineProcess(env=env, log_path=tmp_path / f"{label}.log") as engine:
            (rec,) = EngineClient(engine.url).infer_records("edge", [{"x": X}])
        np.testing.assert_array_equal(outputs_of(rec)[0], X + 1)
        own_registry.stop()
    cached = next((tmp_path / "cache" / "pipelines").glob("*.json")).read_text()
    assert oci.MODEL_LAYER in cached and oci.modelpack.WEIGHT_RAW not in cached
    assert "registry unreachable" in (tmp_path / "offline.log").read_text()


@pytest.mark.parametrize("media_type", ["tar", "tar+gzip"])
def test_a_modelpack_tar_weight_is_read(auth_registry, models_dir, tmp_path, media_type) -> None:
    """A weight layer may be a tar (plain or gzip'd) holding the file its filepath names."""
    onnx = (models_dir / "add1.onnx").read_bytes()
    layer = tar_layer([("add1.onnx", onnx)])
    if media_type == "tar+gzip":
        layer = gzip.compress(layer, mtime=0)
    creds = oci.Credentials(auth_registry.username, auth_registry.password)
    client = oci.Client(auth_registry.host, creds, plain_http=True)
    weight = f"application/vnd.cncf.model.weight.v1.{media_type}"
    tag = media_type.replace("+", "-")
    url = push_artifact(client, "io/tar-weight", [(weight, layer, "add1.onnx")], tag)
    info = oci.model_info(url, creds)
    assert info.sha256 == hashlib.sha256(onnx).hexdigest()
    settings = Settings(
        cache_dir=tmp_path / "cache", oci_username=creds.username, oci_password=creds.password
    )
    path = fetch_model(url, settings)
    assert path.read_bytes() == onnx and path.name == info.sha256
