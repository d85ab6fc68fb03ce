"""The edgepipe CLI as a user runs it: subprocesses against real engines, registry, cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.helpers.cli import ep, one_line_error
from tests.helpers.engines import EngineFactory

COMMANDS = [
    [],
    ["model"],
    ["model", "push"],
    ["model", "list"],
    ["pipeline"],
    ["pipeline", "apply"],
    ["pipeline", "get"],
    ["pipeline", "list"],
    ["pipeline", "deploy"],
    ["pipeline", "undeploy"],
    ["pipeline", "logs"],
    ["pipeline", "rollback"],
    ["infer"],
    ["publish"],
    ["publish", "create"],
    ["publish", "get"],
    ["publish", "list"],
    ["publish", "show"],
    ["publish", "push"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "edgepipe")
def test_every_command_has_help(command) -> None:
    proc = ep(*command, "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout


def test_infer_an_image_and_draw_the_boxes(
    start_engine: EngineFactory, trained_yolo_path, astronaut_path, tmp_path: Path
) -> None:
    engine = start_engine("--model", str(trained_yolo_path), env={"CONFIG_CPUS": "2"})
    out = tmp_path / "boxes.png"
    proc = ep(
        "infer",
        f"{engine.url}/pipelines/best-fp16",
        "--image",
        str(astronaut_path),
        "--draw",
        str(out),
        "-o",
        "json",
    )
    assert proc.returncode == 0, proc.stderr
    dets = json.loads(proc.stdout)
    assert dets and dets[0]["score"] >= 0.5 and len(dets[0]["box"]) == 4
    assert out.exists() and out.stat().st_size > 10000
    text = ep("infer", engine.url, "--image", str(astronaut_path))
    assert text.returncode == 0 and "score" in text.stdout  # the engine's one pipeline


def test_infer_an_input_file_and_the_failures(
    start_engine: EngineFactory, models_dir, tmp_path: Path
) -> None:
    engine = start_engine("--model", str(models_dir / "add1.onnx"))
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([{"x": [[1, 2, 3, 4]]}, {"x": [[5, 6, 7, 8]]}]))
    proc = ep("infer", "add1", "--engine", engine.url, "--input", str(rows))
    assert proc.returncode == 0 and "row 1: add1 / add1: Float[1, 4]" in proc.stdout
    recs = json.loads(
        ep("infer", "add1", "--engine", engine.url, "--input", str(rows), "-o", "json").stdout
    )
    assert recs[1]["outputs"][0]["Float"]["data"] == [6.0, 7.0, 8.0, 9.0]
    one_line_error(
        ep("infer", "ghost", "--engine", engine.url, "--input", str(rows)),
        "unknown pipeline 'ghost'",
    )
    one_line_error(
        ep("infer", "add1", "--engine", "http://127.0.0.1:1", "--input", str(rows)),
        "cannot reach the engine",
    )
    rows.write_text('[{"x": [[1, 2]]}]')
    one_line_error(
        ep("infer", "add1", "--engine", engine.url, "--input", str(rows)), "expected shape"
    )
    usage = ep("infer", "add1")
    assert usage.returncode == 2 and "--image FILE or --input FILE" in usage.stderr


def test_model_list(auth_registry, models_dir) -> None:
    env = {"OCI_USERNAME": auth_registry.username, "OCI_PASSWORD": auth_registry.password}
    assert (
        ep(
            "model",
            "push",
            str(models_dir / "two.onnx"),
            "--registry",
            f"{auth_registry.host}/cli",
            env=env,
        ).returncode
        == 0
    )
    proc = ep("model", "list", "--registry", f"{auth_registry.host}/cli", "-o", "json", env=env)
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)
    assert row["name"] == "two" and len(row["versions"]) == 1
    one_line_error(
        ep(
            "model",
            "list",
            "--registry",
            f"{auth_registry.host}/cli",
            env={"OCI_USERNAME": "x", "OCI_PASSWORD": "y"},
        ),
        "refused",
    )


@pytest.mark.cluster
def test_pipeline_and_publish_commands(
    operator, cluster, namespace, auth_registry, models_dir, kubectl, tmp_path: Path
) -> None:
    from tests.helpers.publishes import push_add1

    model = push_add1(auth_registry, models_dir)
    kube = ["--kubeconfig", str(cluster["kubeconfig"]), "-n", namespace]
    manifest = tmp_path / "p.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "edgepipe.io/v1alpha1",
                "kind": "Pipeline",
                "metadata": {"name": "cli"},
                "spec": {
                    "steps": [
                        {"model": {"name": "add1", "url": model.reference, "sha256": model.sha256}}
                    ]
                },
            }
        )
    )
    proc = ep("pipeline", "apply", str(manifest), *kube)
    assert proc.returncode == 0 and "pipeline.edgepipe.io/cli applied" in proc.stdout
    proc = ep("pipeline", "deploy", "cli", *kube)
    assert proc.returncode == 0, proc.stderr
    assert "is Running: http://cli-engine." in proc.stdout
    assert "pipeline cli: Running (1/1 ready)" in proc.stderr  # progress while waiting
    listing = ep("pipeline", "list", *kube).stdout
    assert "cli" in listing and "Running" in listing
    got = json.loads(ep("pipeline", "get", "cli", *kube, "-o", "json").stdout)
    assert got["status"]["phase"] == "Running"
    one_line_error(ep("pipeline", "get", "nope", *kube), "not found")
    logs = ep("pipeline", "logs", "cli", *kube)  # kwok's pods have no real container logs
    assert "Traceback" not in logs.stderr

    kubectl(
        "create",
        "secret",
        "generic",
        "creds",
        f"--from-literal=username={auth_registry.username}",
        f"--from-literal=password={auth_registry.password}",
    )
    proc = ep(
        "publish",
        "create",
        "cli-edge",
        "--pipeline",
        "cli",
        "--registry",
        f"{auth_registry.host}/edge",
        "--secret",
        "creds",
        "--plain-http",
        *kube,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Helm Chart Version:" in proc.stdout and "docker run" in proc.stdout
    assert "PendingPublish" in proc.stderr or "Published" in proc.stderr
    assert "cli-edge" in ep("publish", "list", *kube).stdout
    assert "Published" in ep("publish", "get", "cli-edge", *kube).stdout
    kubectl(
        "create",
        "secret",
        "generic",
        "bad",
        "--from-literal=username=x",
        "--from-literal=password=y",
    )
    one_line_error(
        ep(
            "publish",
            "create",
            "cli-bad",
            "--pipeline",
            "cli",
            "--registry",
            f"{auth_registry.host}/edge",
            "--secret",
            "bad",
            "--plain-http",
            *kube,
        ),
        "Unauthorized",
    )
    proc = ep("pipeline", "undeploy", "cli", *kube)
    assert proc.returncode == 0 and "Undeployed" in proc.stdout
    one_line_error(
        ep("pipeline", "list", "--kubeconfig", str(tmp_path / "missing")),
        f"kubeconfig {tmp_path / 'missing'} does not exist",
    )
