"""The container image, built from the Dockerfile with podman and run the way users do."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from edgepipe.client import EngineClient
from edgepipe.client.engine import outputs_of
from edgepipe.localengine import free_port
from tests.helpers.podman import PODMAN, inspect_image, podman, wait_engine_ready

# Budgets from the footprint issue (uncompressed, as podman reports them).
ENGINE_BUDGET_MB = 400
OPERATOR_BUDGET_MB = 300


def _importable(image: str, modules: list[str]) -> dict[str, bool]:
    """Which of ``modules`` import inside the image (one container for all of them)."""
    code = (
        "import importlib, json, sys\n"
        "ok = {}\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(m); ok[m] = True\n"
        "    except ImportError:\n"
        "        ok[m] = False\n"
        "print(json.dumps(ok))\n"
    )
    return json.loads(podman("run", "--rm", image, "python3", "-c", code, *modules).stdout)


def _signs_and_verifies(image: str) -> bool:
    """cryptography's (stripped) module signs and verifies inside the image."""
    code = (
        "from edgepipe.oci import signing\n"
        "s = signing.Signer.generate(); d = 'sha256:' + 'a' * 64; p = signing.payload('r/x', d)\n"
        "signing.load_public_key(s.public_pem()).verify(s.sign(p), p, "
        "signing.ec.ECDSA(signing.hashes.SHA256())); print('verified')\n"
    )
    return podman("run", "--rm", image, "python3", "-c", code).stdout.strip() == "verified"


def test_the_engine_image_holds_the_engine_only(image) -> None:
    assert podman("run", "--rm", image, "id", "-u").stdout.strip() == "10001"
    engine = podman("run", "--rm", image, "edgepipe-engine", "--help").stdout
    assert "--model" in engine and "--config" in engine
    present = ["onnxruntime", "pyarrow", "numpy", "aiohttp", "grpc", "PIL", "simdjson"]
    absent = ["kubernetes", "kopf", "jinja2", "click", "rich", "edgepipe_operator"]
    assert _importable(image, present + absent) == {
        **dict.fromkeys(present, True),
        **dict.fromkeys(absent, False),
    }
    assert _signs_and_verifies(image)
    for program in ("helm", "edgepipe-operator", "edgepipe"):
        assert podman("run", "--rm", image, program, check=False).returncode != 0, program
    info = inspect_image(image)
    assert info["Config"]["User"] == "10001"
    assert info["Config"]["Cmd"] == ["edgepipe-engine"]
    healthcheck = info.get("Healthcheck") or info["Config"].get("Healthcheck") or {}
    assert "/health/ready" in " ".join(healthcheck.get("Test", []))
    print(f"\nengine image {image}: {info['Size'] / 1e6:.0f} MB")
    assert info["Size"] / 1e6 <= ENGINE_BUDGET_MB


def test_the_operator_image_holds_the_operator_only(operator_image) -> None:
    image = operator_image
    assert "run" in podman("run", "--rm", image, "edgepipe-operator", "--help").stdout
    present = ["kopf", "aiohttp", "jinja2", "edgepipe.publish", "edgepipe.oci"]
    # kopf's aiohttp session is the operator's one HTTP stack: no second Kubernetes client.
    absent = ["kubernetes", "onnxruntime", "pyarrow", "numpy", "edgepipe.engine"]
    assert _importable(image, present + absent) == {
        **dict.fromkeys(present, True),
        **dict.fromkeys(absent, False),
    }
    assert podman("run", "--rm", image, "helm", check=False).returncode != 0
    assert _signs_and_verifies(image)
    info = inspect_image(image)
    assert info["Config"]["User"] == "10001"
    assert info["Config"]["Cmd"] == ["edgepipe-operator", "run"]
    print(f"\noperator image {image}: {info['Size'] / 1e6:.0f} MB")
    assert info["Size"] / 1e6 <= OPERATOR_BUDGET_MB


def _docker_run_as_podman(docker_run: str, name: str, port: int, volume: str) -> list[str]:
    """The printed ``docker run`` line, with the docker word swapped for podman, plus this
    machine's networking: host networking (the registry is on the host's loopback), so
    the engine's ports are chosen with EDGEPIPE_ENGINE_PORT and EDGEPIPE_ENGINE_GRPC_PORT
    instead of -p."""
    words = shlex.split(docker_run.replace("\\\n", " "))
    assert words[:2] == ["docker", "run"]
    extra = [
        "-d",
        "--name",
        name,
        "--network=host",
        "-e",
        f"EDGEPIPE_ENGINE_PORT={port}",
        "-e",
        f"EDGEPIPE_ENGINE_GRPC_PORT={free_port()}",
        "-v",
        f"{volume}:/var/cache/edgepipe",
    ]
    cmd = [PODMAN, "run", *extra, *words[2:]]
    # The printed line leaves $OCI_USERNAME/$OCI_PASSWORD to the shell; so does this.
    return [os.path.expandvars(w) for w in cmd]


def test_edge_journey_as_the_tutorial_types_it(
    image, own_registry, yolov8n_path, start_engine, monkeypatch
) -> None:
    monkeypatch.setenv("OCI_USERNAME", own_registry.username)
    monkeypatch.setenv("OCI_PASSWORD", own_registry.password)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgepipe.cli",
            "publish",
            "push",
            "--model",
            str(yolov8n_path),
            "--registry",
            f"{own_registry.host}/edge",
            "--engine-image",
            image,
            "-o",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    status = json.loads(proc.stdout)
    name = f"edge-{uuid.uuid4().hex[:6]}"
    volume = f"{name}-cache"
    port = free_port()
    cmd = _docker_run_as_podman(status["dockerRunCommand"], name, port, volume)
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        wait_engine_ready(port, timeout=120)
        x = np.random.default_rng(7).random((1, 3, 640, 640), dtype=np.float32)
        (inside,) = EngineClient(f"http://127.0.0.1:{port}").infer_records(
            "yolov8n", [{"images": x}]
        )
        local = start_engine("--model", str(yolov8n_path))
        (outside,) = EngineClient(local.url).infer_records("yolov8n", [{"images": x}])
        np.testing.assert_allclose(
            outputs_of(inside)[0], outputs_of(outside)[0], rtol=1e-5, atol=1e-5
        )
        logs = podman("logs", name).stderr + podman("logs", name).stdout
        for line in (
            "Login Succeeded",
            "Fetching manifest and config for pipeline",
            "digest: sha256:",
            "  name: yolov8n",
            "  type: model",
            "  runtime: onnx",
            "  version: ",
            "Fetched",
        ):
            assert line in logs, line

        # Restart offline: the registry is gone, the cache volume is not.
        own_registry.stop()
        podman("stop", "-t", "5", name)
        t0 = time.monotonic()
        podman("start", name)
        wait_engine_ready(port, timeout=60)
        (again,) = EngineClient(f"http://127.0.0.1:{port}").infer_records(
            "yolov8n", [{"images": x}]
        )
        first_answer = time.monotonic() - t0
        np.testing.assert_allclose(
            outputs_of(again)[0], outputs_of(outside)[0], rtol=1e-5, atol=1e-5
        )
        assert "registry unreachable" in podman("logs", name).stderr + podman("logs", name).stdout
        print(f"\nstart with models cached -> first answered inference: {first_answer:.2f}s")
    finally:
        podman("rm", "-f", name, check=False)
        podman("volume", "rm", "-f", volume, check=False)


@pytest.mark.cluster
def test_the_operator_in_a_container(operator_image, cluster, kubectl) -> None:
    name = f"op-{uuid.uuid4().hex[:6]}"
    kubeconfig = cluster["kubeconfig"]
    os.chmod(kubeconfig, 0o644)  # readable by the image's non-root user
    try:
        podman(
            "run",
            "-d",
            "--name",
            name,
            "--network=host",
            "-v",
            f"{kubeconfig}:/kube/config:ro",
            "-e",
            "KUBECONFIG=/kube/config",
            "-e",
            f"EDGEPIPE_OPERATOR_NAMESPACE={kubectl.namespace}",
            operator_image,  # its default command: edgepipe-operator run
        )
        from tests.helpers.pipelines import pipeline, wait_phase

        kubectl.apply(pipeline("boxed"))
        st = wait_phase(kubectl, "boxed", "Running", timeout=90)
        assert st["deployed"] is True and kubectl.get("deployment", "boxed-engine")
    finally:
        print(podman("logs", name, check=False).stderr[-2000:])
        podman("rm", "-f", name, check=False)
        os.chmod(kubeconfig, 0o600)
