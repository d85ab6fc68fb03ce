"""OCI artifacts, publish without a cluster, the generated chart, and the engine at the edge."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import orjson
import pytest
import yaml

from edgepipe import oci
from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.localengine import EngineProcess
from tests.helpers.cli import cli
from tests.helpers.helm import helm
from tests.helpers.publishing import creds_env, edge_env


def test_push_a_model_and_pull_it_back(auth_registry, yolov8n_path, tmp_path) -> None:
    client = oci.Client(
        auth_registry.host,
        oci.Credentials(auth_registry.username, auth_registry.password),
        plain_http=True,
    )
    seen = []
    pushed = oci.push_model(
        client,
        yolov8n_path,
        name="yolov8n",
        repository="t/models/yolov8n",
        progress=lambda done, total: seen.append((done, total)),
    )
    assert pushed.uploaded and seen[-1][0] == seen[-1][1] == yolov8n_path.stat().st_size
    ref = oci.Reference.parse(pushed.reference)
    manifest, digest = client.get_manifest(ref)
    assert (
        digest == pushed.manifest_digest and manifest["artifactType"] == oci.modelpack.ARTIFACT_TYPE
    )
    (layer,) = manifest["layers"]
    ann = layer["annotations"]
    assert ann["io.edgepipe.model.name"] == "yolov8n"
    assert ann["io.edgepipe.model.runtime"] == "onnx"
    assert json.loads(ann["io.edgepipe.model.inputs"])[0]["shape"] == [1, 3, 640, 640]
    out = client.pull_blob(ref.repository, layer["digest"], tmp_path / "back.onnx")
    assert out.read_bytes() == yolov8n_path.read_bytes()
    assert f"sha256:{pushed.sha256}" == layer["digest"]
    again = oci.push_model(client, yolov8n_path, name="yolov8n", repository="t/models/yolov8n")
    assert not again.uploaded and again.reference == pushed.reference
    assert (
        oci.model_sha256(
            pushed.reference, oci.Credentials(auth_registry.username, auth_registry.password)
        )
        == pushed.sha256
    )


def test_bad_credentials_fail_clearly(auth_registry, models_dir) -> None:
    bad = oci.Client(
        auth_registry.host, oci.Credentials(auth_registry.username, "wrong"), plain_http=True
    )
    with pytest.raises(oci.AuthError, match="refused the credentials"):
        oci.push_model(bad, models_dir / "add1.onnx", name="add1", repository="t/models/add1")
    proc = cli(
        "model",
        "push",
        str(models_dir / "add1.onnx"),
        "--registry",
        f"{auth_registry.host}/t",
        check=False,
        env={"OCI_USERNAME": "edge", "OCI_PASSWORD": "nope"},
    )
    assert proc.returncode != 0
    assert "refused the credentials" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli(
        "model", "push", str(models_dir / "add1.onnx"), "--registry", "127.0.0.1:1/t", check=False
    )
    assert proc.returncode != 0 and "cannot reach registry" in proc.stderr


def test_cli_model_push_prints_the_reference(auth_registry, models_dir) -> None:
    proc = cli(
        "model",
        "push",
        str(models_dir / "double.onnx"),
        "--registry",
        f"{auth_registry.host}/t",
        "--name",
        "double",
        env=creds_env(auth_registry),
    )
    ref = proc.stdout.strip().splitlines()[-1]
    assert ref.startswith(f"oci://{auth_registry.host}/t/models/double@sha256:")
    assert "sha256" in proc.stderr and "uploaded" in proc.stderr


@pytest.fixture(scope="module")
def published(auth_registry, models_dir, tmp_path_factory):
    """A two-step pipeline published without a cluster, from a config of local files."""
    d = tmp_path_factory.mktemp("pub")
    config = d / "chain.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "chain",
                "steps": [
                    {"model": {"name": "add1", "path": str(models_dir / "add1.onnx")}},
                    {
                        "model": {"name": "double", "path": str(models_dir / "double.onnx")},
                        "batchConfig": "batch",
                    },
                ],
                "engine": {"cpus": 1, "memory": "256Mi"},
            }
        )
    )
    proc = cli(
        "publish",
        "push",
        str(config),
        "--registry",
        f"{auth_registry.host}/edge",
        "--engine-image",
        "edgepipe:test",
        "-o",
        "json",
        env=creds_env(auth_registry),
    )
    return {"status": json.loads(proc.stdout), "config": config, "dir": d}


def test_publish_push_reports_every_field(published, auth_registry) -> None:
    st = published["status"]
    host = auth_registry.host
    version = st["pipelineVersion"]
    assert st["pipelineUrl"] == f"{host}/edge/pipelines/chain:{version}"
    assert st["helmChartUrl"] == f"{host}/edge/charts/chain"
    assert st["helmChartReference"].startswith(f"{host}/edge/charts/chain@sha256:")
    assert st["helmChartVersion"] == f"0.0.1-{version}"
    assert st["engineUrl"] == "edgepipe:test"
    assert st["engineConfig"] == {"replicas": 1, "cpus": 1.0, "memory": "256Mi", "gpus": 0}
    assert st["createdAt"] and st["updatedAt"]
    assert f"-e PIPELINE_URL={st['pipelineUrl']}" in st["dockerRunCommand"]
    # The pipeline artifact: the config document plus the two models, by digest.
    client = oci.Client(
        host, oci.Credentials(auth_registry.username, auth_registry.password), plain_http=True
    )
    ref = oci.Reference.parse(st["pipelineUrl"])
    manifest, _ = client.get_manifest(ref)
    assert manifest["artifactType"] == oci.PIPELINE_ARTIFACT
    config = json.loads(client.get_blob(ref.repository, manifest["config"]["digest"]))
    assert config["version"] == version and [s["model"]["name"] for s in config["steps"]] == [
        "add1",
        "double",
    ]
    assert {layer["annotations"]["io.edgepipe.model.name"] for layer in manifest["layers"]} == {
        "add1",
        "double",
    }


@pytest.fixture(scope="module")
def chart(published, auth_registry) -> Path:
    st = published["status"]
    out = published["dir"] / "pulled"
    out.mkdir()
    helm(
        "pull",
        f"oci://{st['helmChartUrl']}",
        "--version",
        st["helmChartVersion"],
        "--plain-http",
        "--username",
        auth_registry.username,
        "--password",
        auth_registry.password,
        "-d",
        str(out),
    )
    (tgz,) = out.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extractall(out, filter="data")
    return out / "chain"


def test_the_chart_needs_only_the_three_registry_values(chart, auth_registry, tmp_path) -> None:
    assert (
        helm(
            "lint",
            str(chart),
            "--set",
            "ociRegistry.registry=r",
            "--set",
            "ociRegistry.username=u",
            "--set",
            "ociRegistry.password=p",
        ).returncode
        == 0
    )
    values = tmp_path / "local-values.yaml"
    values.write_text(
        yaml.safe_dump(
            {"ociRegistry": {"registry": auth_registry.host, "username": "edge", "password": "pw"}}
        )
    )
    rendered = list(
        yaml.safe_load_all(helm("template", "edge", str(chart), "--values", str(values)).stdout)
    )
    kinds = {(d["kind"], d["metadata"]["name"]) for d in rendered if d}
    assert ("Service", "engine-svc") in kinds and ("Secret", "edge-chain-oci") in kinds
    dep = next(d for d in rendered if d and d["kind"] == "Deployment")
    env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PIPELINE_URL"]["value"].startswith(f"{auth_registry.host}/edge/pipelines/chain:")
    assert env["OCI_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "password"
    assert env["CONFIG_CPUS"]["value"] == "1"
    assert env["EDGEPIPE_ENGINE_GRPC_PORT"]["value"] == "8081"
    # Unsigned: no verification key; the edge is named after the release unless set.
    assert "OCI_VERIFY_KEY" not in env
    assert env["EDGE_NAME"]["value"] == "edge"
    assert env["LOCAL_INFERENCE_STORAGE"]["value"] == "1Gi"
    named = helm(
        "template", "edge", str(chart), "--values", str(values), "--set", "edgeName=store-9"
    )
    assert 'value: "store-9"' in named.stdout
    bad = helm(
        "template",
        "edge",
        str(chart),
        "--values",
        str(values),
        "--set",
        "edgeName=Store_9",
        check=False,
    )
    assert bad.returncode != 0 and "edgeName" in bad.stderr
    svc = next(d for d in rendered if d and d["kind"] == "Service")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 8080, "grpc": 8081}
    # Without the required values, or with a wrong type, helm says what is wrong.
    missing = helm("template", "edge", str(chart), check=False)
    assert missing.returncode != 0 and "ociRegistry" in missing.stderr
    values.write_text(
        yaml.safe_dump(
            {
                "ociRegistry": {"registry": "r", "username": "u", "password": "p"},
                "replicaCount": "two",
            }
        )
    )
    wrong = helm("template", "edge", str(chart), "--values", str(values), check=False)
    assert wrong.returncode != 0 and "replicaCount" in wrong.stderr
    notes = (chart / "templates" / "NOTES.txt").read_text()
    assert "port-forward svc/" in notes and "curl" in notes


ROWS = [{"x": np.arange(4, dtype=np.float32).reshape(1, 4) + i} for i in range(3)]


def test_edge_engine_serves_the_published_pipeline(
    published, auth_registry, start_engine, tmp_path
) -> None:
    edge = start_engine(env=edge_env(published, auth_registry, tmp_path / "cache"))
    local = start_engine("--config", str(published["config"]))
    a = EngineClient(edge.url).infer_records("chain", ROWS)
    b = EngineClient(local.url).infer_records("chain", ROWS)
    for ra, rb in zip(a, b, strict=True):
        np.testing.assert_array_equal(outputs_of(ra)[0], outputs_of(rb)[0])
    np.testing.assert_array_equal(outputs_of(a[2])[0], (ROWS[2]["x"] + 1) * 2)
    log = edge.log()
    for line in (
        "Fetching manifest and config for pipeline",
        "Login Succeeded",
        "Fetching model layers",
        "  name: add1",
        "  type: model",
        "  runtime: onnx",
        "  version: ",
        "Fetched",
    ):
        assert line in log, line
    assert EngineClient(edge.url).pipelines() == [{"id": "chain", "status": "Running"}]


def test_offline_restart_and_a_corrupted_cache(
    published, auth_registry, own_registry, tmp_path
) -> None:
    # Publish to a registry this test can stop.
    st = json.loads(
        cli(
            "publish",
            "push",
            str(published["config"]),
            "--registry",
            f"{own_registry.host}/edge",
            "-o",
            "json",
            env=creds_env(own_registry),
        ).stdout
    )
    cache = tmp_path / "cache"
    env = {**edge_env({"status": st}, own_registry, cache)}
    with EngineProcess(env=env, log_path=tmp_path / "1.log") as engine:
        assert EngineClient(engine.url).infer_records("chain", ROWS[:1])
    own_registry.stop()
    with EngineProcess(env=env, log_path=tmp_path / "2.log") as engine:  # offline: cache only
        (rec,) = EngineClient(engine.url).infer_records("chain", ROWS[:1])
        np.testing.assert_array_equal(outputs_of(rec)[0], (ROWS[0]["x"] + 1) * 2)
        assert "registry unreachable" in engine.log()
    blob = next((cache / "blobs" / "sha256").iterdir())
    blob.write_bytes(blob.read_bytes()[:-10] + b"corrupted!")
    broken = EngineProcess(env=env, log_path=tmp_path / "3.log", wait_ready=False)
    with pytest.raises(RuntimeError, match="exited"):
        broken.start()  # corrupt, and nothing to refetch from: refuse to serve
    assert "corrupt" in broken.log() and "registry is unreachable" in broken.log()
    broken.stop()
    own_registry.start()
    assert not blob.exists()  # the corrupt copy was thrown away, not kept
    with EngineProcess(env=env, log_path=tmp_path / "4.log") as engine:  # refetched
        assert EngineClient(engine.url).infer_records("chain", ROWS[:1])
    assert oci.file_digest(blob)[0] == f"sha256:{blob.name}"


def test_publish_show_needs_a_cluster_and_says_so(tmp_path) -> None:
    proc = cli("publish", "show", "nothing", "--kubeconfig", str(tmp_path / "none"), check=False)
    # The missing kubeconfig is named, with where it came from.
    assert proc.returncode != 0 and f"kubeconfig {tmp_path / 'none'} does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert orjson.dumps  # the module's JSON tooling is used above
