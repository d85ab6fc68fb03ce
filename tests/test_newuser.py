"""What a new user hits, without a cluster: registries with a password, files that are not
models, messages that say what to do, and output a person can read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.cli import ep, one_line_error
from tests.helpers.engines import EngineFactory
from tests.helpers.paths import ROOT


@pytest.fixture
def png(tmp_path: Path, astronaut_path: Path) -> Path:
    photo = tmp_path / "photo.png"
    photo.write_bytes(astronaut_path.read_bytes())
    return photo


def test_a_registry_with_a_password_and_no_credentials(auth_registry, models_dir) -> None:
    registry = f"{auth_registry.host}/newuser"
    bare = {"OCI_USERNAME": "", "OCI_PASSWORD": ""}
    model = str(models_dir / "add1.onnx")
    for args in (
        ["model", "push", model, "--registry", registry],
        ["model", "list", "--registry", registry],
        ["publish", "push", "--model", model, "--registry", registry],
    ):
        proc = ep(*args, env=bare)
        one_line_error(proc, f"registry {auth_registry.host} needs credentials")
        assert "OCI_USERNAME" in proc.stderr and "_basic_auth" not in proc.stderr


def test_the_edge_engine_without_credentials_says_so(auth_registry, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PIPELINE_URL": f"{auth_registry.host}/x/pipelines/p:1",
        "OCI_REGISTRY": auth_registry.host,
        "OCI_USERNAME": "",
        "OCI_PASSWORD": "",
        "OCI_PLAIN_HTTP": "true",
        "EDGEPIPE_ENGINE_CACHE_DIR": str(tmp_path),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "edgepipe.engine.cli", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "needs credentials" in proc.stderr and "Traceback" not in proc.stderr


def test_a_file_that_is_not_a_model_is_refused_plainly(auth_registry, png: Path) -> None:
    env = {"OCI_USERNAME": auth_registry.username, "OCI_PASSWORD": auth_registry.password}
    registry = f"{auth_registry.host}/newuser"
    for args in (
        ["model", "push", str(png), "--registry", registry],
        ["publish", "push", "--model", str(png), "--registry", registry],
    ):
        proc = ep(*args, env=env)
        one_line_error(proc, f"{png} is not an ONNX model: it looks like a PNG image")
    # Nothing was published.
    assert "photo" not in ep("model", "list", "--registry", registry, env=env).stdout


def test_yaml_errors_name_the_file_and_kinds_are_told_apart(auth_registry, tmp_path) -> None:
    other = tmp_path / "publish.yaml"
    other.write_text("kind: Publish\nmetadata: {name: p}\nspec: {pipeline: x}\n")
    proc = ep("publish", "push", str(other), "--registry", auth_registry.host)
    one_line_error(proc, "kind 'Publish' is not a pipeline; expected kind PipelineConfig")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: Pipeline\nspec: [unclosed\n")
    proc = ep("publish", "push", str(broken), "--registry", auth_registry.host)
    one_line_error(proc, f"{broken}: not valid YAML or JSON at line 3, column 1")
    assert "<unicode string>" not in proc.stderr


def test_input_files_and_images_that_are_not_what_they_say(
    start_engine: EngineFactory, models_dir: Path, tmp_path: Path
) -> None:
    engine = start_engine("--model", str(models_dir / "add1.onnx"))
    readme = ep("infer", "add1", "--engine", engine.url, "--input", str(ROOT / "README.md"))
    assert readme.returncode == 2 and "is not pandas-records JSON" in readme.stderr
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    proc = ep("infer", "add1", "--engine", engine.url, "--image", str(text))
    assert proc.returncode == 2 and "is not an image" in proc.stderr
    assert "Traceback" not in proc.stderr
    rows = tmp_path / "rows.json"
    rows.write_text('[{"x": [1, 2, 3, 4]}]')
    refused = ep("infer", "add1", "--engine", "http://127.0.0.1:1", "--input", str(rows))
    assert "kubectl port-forward svc/add1-engine 8080" in refused.stderr
    demo = subprocess.run(
        [sys.executable, "-m", "edgepipe.demo", "--image", str(text)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert demo.returncode != 0 and f"--image {text}" in demo.stderr
    assert "Traceback" not in demo.stderr


def test_class_names_travel_with_the_model(
    start_engine: EngineFactory, trained_yolo_path: Path, astronaut_path: Path, tmp_path: Path
) -> None:
    config = tmp_path / "fall.yaml"
    config.write_text(
        "kind: PipelineConfig\nname: fall\nsteps:\n"
        f"  - model: {{name: fall, path: {trained_yolo_path}}}\n"
        "    postprocess: {kind: yolov8}\n"
    )
    engine = start_engine("--config", str(config), env={"CONFIG_CPUS": "2"})
    proc = ep("infer", f"{engine.url}/pipelines/fall", "--image", str(astronaut_path))
    assert proc.returncode == 0 and proc.stdout.startswith("Normal"), proc.stdout
    # The raw model too: the CLI decodes with the names the engine reports.
    raw = start_engine("--model", str(trained_yolo_path), env={"CONFIG_CPUS": "2"})
    proc = ep("infer", raw.url, "--image", str(astronaut_path), "-o", "json")
    assert json.loads(proc.stdout)[0]["label"] == "Normal"
    # An --input file through the post-step prints boxes, not a tensor's shape.
    from edgepipe import yolo

    tensor, _ = yolo.letterbox(yolo.load_image(astronaut_path))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"images": tensor.tolist()}]))
    proc = ep("infer", f"{engine.url}/pipelines/fall", "--input", str(rows))
    assert proc.stdout.startswith("Normal") and "box [" in proc.stdout, proc.stdout


def test_version_and_json_everywhere() -> None:
    proc = ep("--version")
    assert proc.returncode == 0 and "edgepipe, version 0.1.0" in proc.stdout
    for command in (
        ["model", "push"],
        ["publish", "push"],
        ["publish", "show"],
        ["pipeline", "apply"],
        ["pipeline", "logs"],
    ):
        assert "json|yaml" in ep(*command, "--help").stdout.replace("text|", ""), command
    assert "--context" in ep("publish", "show", "--help").stdout


def test_registry_urls_with_a_scheme(auth_registry, models_dir: Path) -> None:
    env = {"OCI_USERNAME": auth_registry.username, "OCI_PASSWORD": auth_registry.password}
    proc = ep(
        "model", "push", str(models_dir / "add1.onnx"),
        "--registry", f"http://{auth_registry.host}/scheme", "-o", "json", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["reference"].startswith(f"oci://{auth_registry.host}/scheme/")
    one_line_error(ep("model", "list", "--registry", "ftp://x/y", env=env), "unknown scheme")
